"""``memos mcp --http``: streamable HTTP with bearer tokens, driven by the SDK's client.

The server runs in a background thread on a free loopback port (see conftest). Refusals are
checked on the wire (status 401); isolation, sharing and concurrency through real sessions.
"""

from __future__ import annotations

import asyncio
import json
import stat
from typing import Any

import httpx
import pytest
from mcp_helpers import HttpFixture, error_text, http_session, payload

HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {},
    "clientInfo": {"name": "raw-test", "version": "0"}}}


def _post(url: str, token: str | None, body: dict[str, Any],
          session_id: str | None = None) -> httpx.Response:
    headers = dict(HEADERS)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if session_id is not None:
        headers["mcp-session-id"] = session_id
    with httpx.Client(timeout=30) as client:  # loopback only: the fixture's own server
        return client.post(url, json=body, headers=headers)


def test_token_file_is_private_and_holds_no_token(http_server: HttpFixture) -> None:
    path = http_server.tokens.path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    content = path.read_text()
    for token in http_server.token.values():
        assert token not in content and token[len("memos_"):] not in content
    assert json.loads(content)["tokens"][0]["user_id"] == "alice"


@pytest.mark.parametrize("authorization", [
    None, "Bearer memos_", "Bearer memos_wrong", "Bearer " + "memos_" + "x" * 300,
    "Basic YWxpY2U6eA==", "alice"], ids=["none", "prefix", "wrong", "huge", "basic", "bare"])
def test_missing_or_wrong_token_is_refused(http_server: HttpFixture, authorization: str | None
                                           ) -> None:
    headers = dict(HEADERS) if authorization is None else {**HEADERS, "Authorization": authorization}
    with httpx.Client(timeout=30) as client:
        response = client.post(http_server.url, json=INITIALIZE, headers=headers)
    assert response.status_code == 401
    assert "invalid_token" in response.headers["www-authenticate"]


def test_good_token_opens_a_session_and_revoked_token_is_refused(http_server: HttpFixture) -> None:
    ok = _post(http_server.url, http_server.token["alice"], INITIALIZE)
    assert ok.status_code == 200 and ok.headers["mcp-session-id"]
    http_server.tokens.revoke(http_server.token_id["alice"])
    again = _post(http_server.url, http_server.token["alice"], INITIALIZE)
    assert again.status_code == 401
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}  # the open session too
    assert _post(http_server.url, http_server.token["alice"], ping,
                 ok.headers["mcp-session-id"]).status_code == 401
    assert _post(http_server.url, http_server.token["bob"], INITIALIZE).status_code == 200


def test_a_session_cannot_be_used_with_another_token(http_server: HttpFixture) -> None:
    alice = _post(http_server.url, http_server.token["alice"], INITIALIZE)
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "search", "arguments": {"query": "anything"}}}
    hijack = _post(http_server.url, http_server.token["bob"], call, alice.headers["mcp-session-id"])
    assert hijack.status_code == 404


async def test_isolation_between_two_tokens(http_server: HttpFixture) -> None:
    url, token = http_server.url, http_server.token
    async with http_session(url, token["alice"]) as alice, http_session(url, token["bob"]) as bob:
        mine = payload(await alice.call_tool("store", {"text": "Alice's locker code is 2468.",
                                                        "user_id": "bob"}))["stored"]
        assert mine["owner"] == "alice"
        theirs = payload(await bob.call_tool("store", {"text": "Bob's locker code is 1357."}))
        assert theirs["stored"]["owner"] == "bob"
        # bob finds only his own, whatever he passes as user_id
        for args in ({"query": "locker code"}, {"query": "locker code", "user_id": "alice"}):
            hits = payload(await bob.call_tool("search", args))["hits"]
            assert [h["owner"] for h in hits] == ["bob"]
        for name, args in (("get", {}), ("history", {}), ("forget", {}),
                           ("update", {"text": "hacked"}), ("share", {"with_user": "bob"}),
                           ("compress", None)):
            arguments = {"memory_ids": [mine["id"]], "summary": "s"} if args is None \
                else {"memory_id": mine["id"], **args}
            message = error_text(await bob.call_tool(name, arguments))
            assert message.split(": ", 1)[1].startswith(("denied", "not found")), message
        recent = json.loads((await bob.read_resource("memos://memories/recent")).contents[0].text)
        assert recent["user"] == "bob" and "2468" not in json.dumps(recent)
        prompt = await bob.get_prompt("recall", {"question": "What is the locker code?"})
        assert "2468" not in prompt.messages[0].content.text

        # sharing is explicit, and revocable
        payload(await alice.call_tool("share", {"memory_id": mine["id"], "with_user": "bob"}))
        assert payload(await bob.call_tool("get", {"memory_id": mine["id"]}))["memory"]["text"] \
            == "Alice's locker code is 2468."
        # bob's recall prompt says whose it is: the model must not take it for bob's own
        prompt = await bob.get_prompt("recall", {"question": "What is the locker code?"})
        assert "Alice's locker code is 2468. (shared by alice)" in prompt.messages[0].content.text
        assert "denied" in error_text(await bob.call_tool("forget", {"memory_id": mine["id"]}))
        payload(await alice.call_tool("revoke", {"memory_id": mine["id"], "with_user": "bob"}))
        assert "denied" in error_text(await bob.call_tool("get", {"memory_id": mine["id"]}))
    # nothing bob tried changed alice's memory
    cube = http_server.mos.get(mine["id"], user_id="alice")
    assert cube.text == "Alice's locker code is 2468."


async def test_recall_across_http_sessions(http_server: HttpFixture) -> None:
    url, token = http_server.url, http_server.token["alice"]
    async with http_session(url, token) as first:
        stored = payload(await first.call_tool("store", {"text": "Alice's cat is named Miso."}))
    async with http_session(url, token) as second:
        hits = payload(await second.call_tool("search", {"query": "what is the cat called"}))
    assert hits["hits"][0]["id"] == stored["stored"]["id"]


async def test_wrongly_typed_numbers_are_refused_as_the_facade_refuses_them(
        http_server: HttpFixture) -> None:
    """``get(version=true)`` read version 1, ``search(k=true)`` returned one hit and
    ``k="2"`` two: the tools converted what ``MemOS`` refuses."""
    url, token = http_server.url, http_server.token["alice"]
    async with http_session(url, token) as session:
        mid = payload(await session.call_tool("store", {"text": "Alice likes tea."}))["stored"]["id"]
        for name, args in (("get", {"memory_id": mid, "version": True}),
                           ("get", {"memory_id": mid, "version": "1"}),
                           ("search", {"query": "tea", "k": True}),
                           ("search", {"query": "tea", "k": "2"}),
                           ("search", {"query": "tea", "include_archived": 1})):
            assert "validation error" in error_text(await session.call_tool(name, args)), args


CLIENTS, ROUNDS = 8, 3


async def _client(url: str, token: str, n: int) -> list[str]:
    ids = []
    async with http_session(url, token) as session:
        for i in range(ROUNDS):
            text = f"Client {n} remembers fact number {i}: the sky over town {n} is color {i}."
            ids.append(payload(await session.call_tool("store", {"text": text}))["stored"]["id"])
            hits = payload(await session.call_tool("search", {"query": f"town {n} sky color",
                                                              "k": 10}))["hits"]
            assert ids[-1] in {h["id"] for h in hits}
    return ids


async def test_eight_concurrent_http_clients(http_server: HttpFixture) -> None:
    """8 sessions (alice and bob alternating) store and search at once: no error, every
    memory stored once and visible to its owner only. Bounded: 8 x 3 rounds, 300 s."""
    users = ["alice" if n % 2 else "bob" for n in range(CLIENTS)]
    results = await asyncio.wait_for(asyncio.gather(*(
        _client(http_server.url, http_server.token[user], n) for n, user in enumerate(users))),
        timeout=300)
    assert sum(len(ids) for ids in results) == CLIENTS * ROUNDS
    for user, ids in zip(users, results):
        for memory_id in ids:
            assert http_server.mos.get(memory_id, user_id=user).namespace.user_id == user
    assert len(http_server.mos.list(user_id="alice")) == CLIENTS // 2 * ROUNDS


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2"])
def test_a_loopback_server_refuses_other_hosts_and_origins(tmp_path: Any, host: str) -> None:
    """DNS-rebinding protection on every loopback address, not only the three the SDK knows:
    a request naming another Host (a rebound name) or coming from another web origin is
    refused before the token is looked at."""
    from memos_core import MemOS, MemOSConfig
    from memos_core.mcp_server import HttpServerThread, TokenStore, build_http_server

    with MemOS(tmp_path / "data", config=MemOSConfig(show_progress=False)) as mos:
        tokens = TokenStore.for_data_dir(tmp_path / "data")
        token, _ = tokens.add("alice")
        server = build_http_server(mos, tokens=tokens, host=host, port=0)
        thread = HttpServerThread(server, host=host, port=0).start()
        try:
            auth = {**HEADERS, "Authorization": f"Bearer {token}"}
            with httpx.Client(timeout=30) as client:
                ok = client.post(thread.url, json=INITIALIZE, headers=auth)
                rebound = client.post(thread.url, json=INITIALIZE, headers={
                    **auth, "Host": f"attacker.example:{thread.port}"})
                foreign = client.post(thread.url, json=INITIALIZE, headers={
                    **auth, "Origin": "http://attacker.example"})
        finally:
            thread.stop()
    assert ok.status_code == 200
    assert rebound.status_code == 421 and foreign.status_code == 403


def test_a_loopback_server_takes_a_host_without_a_port_and_the_allowed_hosts(tmp_path: Any
                                                                             ) -> None:
    """Only ``NAME:*`` Host patterns were allowed, so a Host header without a port (what a
    client sends to a server on port 80, what a proxy on this machine passes on) got 421 on
    every request, and no option allowed another name. Now each allowed name counts with or
    without a port, with its http:// and https:// origins, and ``allowed_hosts`` adds
    names; other hosts are still refused."""
    from memos_core import InvalidInputError, MemOS, MemOSConfig
    from memos_core.mcp_server import HttpServerThread, TokenStore, build_http_server

    with MemOS(tmp_path / "data", config=MemOSConfig(show_progress=False)) as mos:
        tokens = TokenStore.for_data_dir(tmp_path / "data")
        token, _ = tokens.add("alice")
        with pytest.raises(InvalidInputError, match="allowed host"):
            build_http_server(mos, tokens=tokens, allowed_hosts=["bad host"])
        server = build_http_server(mos, tokens=tokens, port=0,
                                   allowed_hosts=["Memos.Proxy.Internal"])
        thread = HttpServerThread(server, port=0).start()
        auth = {**HEADERS, "Authorization": f"Bearer {token}"}
        try:
            with httpx.Client(timeout=30) as client:
                def status(**headers: str) -> int:
                    return client.post(thread.url, json=INITIALIZE,
                                       headers={**auth, **headers}).status_code

                accepted = [status(Host=host) for host in (
                    "127.0.0.1", "localhost", "memos.proxy.internal", "Memos.Proxy.Internal",
                    "memos.proxy.internal:443")]
                origins = [status(Host="localhost", Origin=origin) for origin in (
                    "http://localhost", "https://localhost", "https://memos.proxy.internal",
                    "http://127.0.0.1:8080")]
                refused = [status(Host="attacker.example"), status(Host="attacker.example:80"),
                           status(Origin="https://attacker.example")]
        finally:
            thread.stop()
    assert accepted == [200] * 5 and origins == [200] * 4
    assert refused == [421, 421, 403]


def test_the_rebinding_guard_follows_the_addresses_bound_not_the_name(tmp_path: Any) -> None:
    """A name that resolves to loopback only (``LOCALHOST``, an ``/etc/hosts`` alias) got no
    guard: only the exact name ``localhost`` counted. Now the bound sockets decide, and the
    name is an allowed Host, as given and in lower case."""
    import socket

    from memos_core import MemOS, MemOSConfig
    from memos_core.mcp_server import TokenStore, build_http_server
    from memos_core.mcp_server.server import bind_http, bound_to_loopback

    with MemOS(tmp_path / "data", config=MemOSConfig(show_progress=False)) as mos:
        server = build_http_server(mos, tokens=TokenStore.for_data_dir(tmp_path / "data"),
                                   host="My-Alias", port=0)
        assert server.mcp.settings.transport_security is None  # by the name: not loopback
        loopback = bind_http("127.0.0.1", 0)
        try:
            assert bound_to_loopback(loopback)
            server.guard_for_bound("My-Alias", loopback)
        finally:
            for sock in loopback:
                sock.close()
        guard = server.mcp.settings.transport_security
        assert guard is not None and guard.enable_dns_rebinding_protection
        assert {"My-Alias:*", "my-alias:*", "127.0.0.1:*"} <= set(guard.allowed_hosts)
        assert server.mcp.session_manager.security_settings is guard  # new sessions use it
        with socket.socket() as everywhere:  # bound, never listening: nothing can connect
            everywhere.bind(("0.0.0.0", 0))
            assert not bound_to_loopback([everywhere])
            server.guard_for_bound("My-Alias", [everywhere])
        guard = server.mcp.settings.transport_security
        assert guard is not None and not guard.enable_dns_rebinding_protection
