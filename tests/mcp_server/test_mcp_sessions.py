"""Session limits of the streamable-HTTP server, over a real server on a loopback port.

One token used to be able to open sessions without closing them until the SDK's server-wide
cap (10,000) was full, and every other user then got 503 for the 30 minutes the idle sessions
lived. Now each token has its own cap (small here: 3), the request past it gets 429 saying
what to do, the count drops as sessions end (DELETE or idle expiry), and others are served.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp_helpers import http_session, payload

from memos_core import MemOS, MemOSConfig
from memos_core.errors import InvalidInputError
from memos_core.mcp_server import HttpServerThread, TokenStore, build_http_server

HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {},
    "clientInfo": {"name": "raw-test", "version": "0"}}}
CAP = 3


@dataclass
class Capped:
    url: str
    token: dict[str, str]
    thread: HttpServerThread


def _serve(tmp_path: Path, **limits: Any) -> Iterator[Capped]:
    with MemOS(tmp_path / "data", config=MemOSConfig(show_progress=False)) as mos:
        tokens = TokenStore.for_data_dir(tmp_path / "data")
        token = {user: tokens.add(user)[0] for user in ("alice", "bob")}
        server = build_http_server(mos, tokens=tokens, port=0, **limits)
        with HttpServerThread(server, port=0) as thread:
            yield Capped(thread.url, token, thread)


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[Capped]:
    yield from _serve(tmp_path, max_sessions_per_token=CAP, session_idle_timeout=300)


def _open(client: httpx.Client, url: str, token: str) -> httpx.Response:
    return client.post(url, json=INITIALIZE, headers={**HEADERS, "Authorization": f"Bearer {token}"})


def _status_of(exc: BaseException) -> int | None:
    """The HTTP status the SDK client failed with, looked for inside its exception groups."""
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code
    for inner in getattr(exc, "exceptions", ()):
        if (status := _status_of(inner)) is not None:
            return status
    return None


async def test_a_token_at_its_cap_gets_429_and_locks_no_one_else_out(capped: Capped) -> None:
    alice, bob = capped.token["alice"], capped.token["bob"]
    async with AsyncExitStack() as stack:
        sessions = [await stack.enter_async_context(http_session(capped.url, alice))
                    for _ in range(CAP)]
        with pytest.raises(BaseException) as refused:  # the SDK client raises a group
            async with http_session(capped.url, alice):
                pass
        assert _status_of(refused.value) == 429, refused.value
        with httpx.Client(timeout=30) as client:
            raw = _open(client, capped.url, alice)
        assert raw.status_code == 429
        message = raw.json()["error"]["message"]
        assert f"{CAP} are open and the limit is {CAP} per token" in message, message
        assert "DELETE" in message and "300 s" in message, message
        # another token is served, and alice's open sessions still work
        async with http_session(capped.url, bob) as theirs:
            payload(await theirs.call_tool("store", {"text": "Bob keeps bees."}))
        hits = payload(await sessions[0].call_tool("search", {"query": "bees"}))["hits"]
        assert hits == []  # bob's memory is not alice's
    # the SDK client closed its sessions (DELETE): the cap is free again
    async with AsyncExitStack() as stack:
        for _ in range(CAP):
            await stack.enter_async_context(http_session(capped.url, alice))


def test_idle_sessions_expire_and_give_their_place_back(tmp_path: Path) -> None:
    # 5 s: long enough that a loaded machine opens the three sessions before any expires
    for served in _serve(tmp_path, max_sessions_per_token=2, session_idle_timeout=5.0):
        with httpx.Client(timeout=30) as client:
            opened = [_open(client, served.url, served.token["alice"]) for _ in range(2)]
            assert [r.status_code for r in opened] == [200, 200]  # never closed (no DELETE)
            assert _open(client, served.url, served.token["alice"]).status_code == 429
            deadline, status = time.monotonic() + 30, 429
            while status == 429 and time.monotonic() < deadline:
                time.sleep(0.25)
                status = _open(client, served.url, served.token["alice"]).status_code
            assert status == 200  # idle ones expired, so one more fits
            expired = client.post(served.url, json={"jsonrpc": "2.0", "id": 2, "method": "ping"},
                                  headers={**HEADERS, "Authorization": f"Bearer {served.token['alice']}",
                                           "mcp-session-id": opened[0].headers["mcp-session-id"]})
            assert expired.status_code == 404


def test_the_defaults_are_a_cap_of_64_and_ten_idle_minutes(tmp_path: Path) -> None:
    with MemOS(tmp_path / "data", config=MemOSConfig(show_progress=False)) as mos:
        server = build_http_server(mos, tokens=TokenStore.for_data_dir(tmp_path / "data"), port=0)
        manager: Any = server.mcp.session_manager
        assert manager.max_sessions_per_token == 64
        assert manager.session_idle_timeout == server.mcp.settings.session_idle_timeout == 600


@pytest.mark.parametrize("limits", [
    {"max_sessions_per_token": 0}, {"max_sessions_per_token": -1},
    {"max_sessions_per_token": True}, {"max_sessions_per_token": "3"},
    {"session_idle_timeout": 0}, {"session_idle_timeout": -5.0},
    {"session_idle_timeout": math.nan}, {"session_idle_timeout": math.inf},
    {"session_idle_timeout": "60"}])
def test_unusable_limits_are_refused(tmp_path: Path, limits: dict[str, Any]) -> None:
    with MemOS(tmp_path / "data", config=MemOSConfig(show_progress=False)) as mos:
        tokens = TokenStore.for_data_dir(tmp_path / "data")
        with pytest.raises(InvalidInputError, match=next(iter(limits))):
            build_http_server(mos, tokens=tokens, port=0, **limits)
