"""Fixtures for the MCP server tests (see mcp_helpers for the clients)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp_helpers import HttpFixture

from memos_core import MemOS, MemOSConfig
from memos_core.mcp_server import HttpServerThread, TokenStore, build_http_server


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[HttpFixture]:
    mos = MemOS(tmp_path / "data", config=MemOSConfig(show_progress=False))
    tokens = TokenStore.for_data_dir(tmp_path / "data")
    fixture = HttpFixture(url="", mos=mos, tokens=tokens)
    for user in ("alice", "bob"):
        token, record = tokens.add(user, label=f"{user}'s test client")
        fixture.token[user], fixture.token_id[user] = token, record.id
    thread = HttpServerThread(build_http_server(mos, tokens=tokens, port=0), port=0).start()
    fixture.url, fixture.thread = thread.url, thread
    try:
        yield fixture
    finally:
        thread.stop()
        mos.close()
