"""Helpers for the MCP server tests: real servers, real clients, nothing mocked.

* ``stdio_params(data_dir, user)``: how the SDK's ``stdio_client`` starts ``memos mcp`` as a
  subprocess (this interpreter, offline).
* ``http_server``: a MemOS in tmp_path served over streamable HTTP on a free loopback port
  (port 0) in a background thread, with tokens for alice and bob; stopped after the test.
* ``http_session(url, token)``: an initialised ``ClientSession`` over streamable HTTP.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcp import ClientSession, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from memos_core import MemOS
from memos_core.mcp_server import HttpServerThread, TokenStore

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def server_env() -> dict[str, str]:
    return {**os.environ, **OFFLINE}


def stdio_params(data_dir: Path, user: str, *extra: str) -> StdioServerParameters:
    """``python -m memos_core.cli mcp --data-dir DIR --user USER``."""
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "memos_core.cli", "mcp", "--data-dir", str(data_dir), "--user", user, *extra],
        env=server_env())


def payload(result: Any) -> dict[str, Any]:
    """The JSON a successful tool call returned (its text content)."""
    assert not result.isError, result.content[0].text
    return json.loads(result.content[0].text)


def error_text(result: Any) -> str:
    assert result.isError, result.content
    return result.content[0].text


@asynccontextmanager
async def http_session(url: str, token: str | None) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else None
    async with create_mcp_http_client(headers=headers) as client, \
            streamable_http_client(url, http_client=client) as (read, write, _), \
            ClientSession(read, write) as session:
        await session.initialize()
        yield session


@dataclass
class HttpFixture:
    url: str
    mos: MemOS
    tokens: TokenStore
    token: dict[str, str] = field(default_factory=dict)  # user -> token
    token_id: dict[str, str] = field(default_factory=dict)
    thread: HttpServerThread | None = None
