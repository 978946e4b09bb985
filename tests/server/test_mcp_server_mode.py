"""MCP bearer tokens in server mode: kept in the vault, so every MCP server process on the
database knows the tokens added on any host. Two ``MemOS("postgresql://...")`` instances (each
with its own cache directory, as two hosts would have), the official SDK's client over
streamable HTTP on loopback, the ``memos mcp token`` commands; real PostgreSQL, nothing
mocked."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import psycopg
import pytest

pytest.importorskip("mcp")

from mcp import ClientSession  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402

from memos_core import MemOS, MemOSConfig, MemoryNotFoundError  # noqa: E402
from memos_core.cli import main  # noqa: E402
from memos_core.mcp_server import HttpServerThread, TokenStore, build_http_server  # noqa: E402
from memos_core.mcp_server.tokens import VaultTokenStore, tokens_for  # noqa: E402
from memos_core.testing.processes import interrupt

INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {},
    "clientInfo": {"name": "raw-test", "version": "0"}}}


def _initialize(url: str, token: str) -> int:
    """The HTTP status of an MCP initialize request carrying ``token``."""
    headers = {"Accept": "application/json, text/event-stream",
               "Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=30) as client:  # loopback only: the test's own server
        return client.post(url, json=INITIALIZE, headers=headers).status_code


@asynccontextmanager
async def _session(url: str, token: str) -> AsyncIterator[ClientSession]:
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as client, \
            streamable_http_client(url, http_client=client) as (read, write, _), \
            ClientSession(read, write) as session:
        await session.initialize()
        yield session


def _payload(result: Any) -> dict[str, Any]:
    assert not result.isError, result.content[0].text
    return json.loads(result.content[0].text)


@pytest.fixture
def two_hosts(pg_url, tmp_path):
    """Two instances on one database, each with its own cache directory (two hosts)."""
    opened = [MemOS(pg_url, config=MemOSConfig(show_progress=False, cache_dir=tmp_path / name))
              for name in ("host-a", "host-b")]
    yield opened
    for mos in reversed(opened):
        mos.close()


@pytest.fixture
def serve_b(two_hosts):
    """Host B's MCP server over HTTP, checking tokens against B's token store."""
    _, b = two_hosts
    thread = HttpServerThread(build_http_server(b, tokens=tokens_for(b), port=0), port=0).start()
    yield thread.url
    thread.stop()


async def test_a_token_added_on_one_host_works_on_the_other_and_revoke_reaches_it(
        two_hosts, serve_b, pg_url):
    a, b = two_hosts
    on_a, on_b = tokens_for(a), tokens_for(b)
    assert isinstance(on_a, VaultTokenStore) and isinstance(on_b, VaultTokenStore)
    token, record = on_a.add("alice", label="alice's laptop")
    other, _ = on_a.add("bob")

    async with _session(serve_b, token) as alice:  # host B's server knows host A's token
        stored = _payload(await alice.call_tool(
            "store", {"text": "Alice keeps her passport in the blue drawer."}))["stored"]
        assert stored["owner"] == "alice"
        found = _payload(await alice.call_tool("search", {"query": "where is the passport?"}))
        assert [h["id"] for h in found["hits"]][:1] == [stored["id"]]
    assert a.get(stored["id"], user_id="alice").text.startswith("Alice keeps")  # one vault
    assert {r.id for r in on_b.list()} == {record.id, on_b.verify(other).id}

    on_a.revoke(record.id)  # revoked on host A: host B refuses it at the next request
    assert _initialize(serve_b, token) == 401
    assert _initialize(serve_b, other) == 200
    revoked = {r.id: r for r in on_b.list()}[record.id]
    assert on_b.verify(token) is None and revoked.revoked_at is not None
    assert on_a.revoke(record.id).revoked_at == revoked.revoked_at  # idempotent
    with pytest.raises(MemoryNotFoundError, match="token list"):
        on_b.revoke("tok_missing")

    # audited once per change (the idempotent revoke adds nothing), in the verified chain
    audit = [r for r in b.vault.audit_log(user_id="alice", limit=1000)
             if r.action.startswith("mcp_token:")]
    assert sorted((r.action, r.details["token_id"], r.agent_id) for r in audit) == [
        ("mcp_token:add", record.id, "mcp-tokens"), ("mcp_token:revoke", record.id, "mcp-tokens")]
    assert b.vault.verify_audit()[0]

    # hashed at rest: no table holds a token, only its SHA-256
    with psycopg.connect(pg_url) as conn:
        tables = [t for (t,) in conn.execute(
            "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname='public'")]
        for table in tables:
            for secret in (token, other):
                n = conn.execute(f"SELECT COUNT(*) FROM {table} x WHERE x::text LIKE %s",
                                 (f"%{secret[len('memos_'):]}%",)).fetchone()[0]
                assert n == 0, f"a token is stored in clear in {table}"


def _drop_connections(pg_url: str, admin_url: str | None = None) -> int:
    """End every connection to the test's database (a restart, a failover); how many.
    ``admin_url``: connect there instead (when the database takes no new connections)."""
    dbname = psycopg.conninfo.conninfo_to_dict(pg_url)["dbname"]
    with psycopg.connect(admin_url or pg_url, autocommit=True) as admin:
        return admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
            (dbname,)).fetchone()[0]


def test_a_valid_token_is_accepted_right_after_the_connections_dropped(two_hosts, serve_b,
                                                                      pg_url):
    """After PostgreSQL dropped the server's connections, the next request with a valid
    token got 401 invalid_token once (the lookup lost its connection, and any error
    refused the token). The lookup is now tried once more, on a new connection."""
    a, _ = two_hosts
    token, _ = tokens_for(a).add("alice")
    assert _initialize(serve_b, token) == 200
    for _ in range(2):
        assert _drop_connections(pg_url) > 0
        assert _initialize(serve_b, token) == 200


def test_tokens_that_cannot_be_checked_get_503_not_401(two_hosts, pg_url, pg_server):
    """When the vault stays unreachable, a request gets 503 with Retry-After (retry later),
    not 401 (which tells the client its token is bad); once the database is back, 200.
    The server's tokens are read through a vault that waits 1 s for a connection."""
    from memos_core.mcp_server.http_checks import RETRY_AFTER
    from memos_core.vault.postgres import PostgresVault

    a, b = two_hosts
    token, _ = tokens_for(a).add("alice")
    admin_url, dbname = pg_server[0], psycopg.conninfo.conninfo_to_dict(pg_url)["dbname"]
    vault = PostgresVault(pg_url, pool_size=1, connect_timeout=1)
    thread = HttpServerThread(build_http_server(b, tokens=VaultTokenStore(vault), port=0),
                              port=0).start()
    headers = {"Accept": "application/json, text/event-stream",
               "Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    try:
        assert _initialize(thread.url, token) == 200
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
        try:
            _drop_connections(pg_url, admin_url)
            with httpx.Client(timeout=60) as client:
                refused = client.post(thread.url, json=INITIALIZE, headers=headers)
        finally:
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == str(RETRY_AFTER)
        assert refused.json()["error"] == "temporarily_unavailable"
        deadline = time.monotonic() + 60  # the pool reconnects by itself, with a back-off
        while (status := _initialize(thread.url, token)) == 503 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert status == 200
    finally:
        thread.stop()
        vault.close()


def test_token_commands_in_server_mode_reach_a_running_server(two_hosts, serve_b, pg_url,
                                                               capsys, tmp_path):
    # `memos --db URL mcp token add` on any host: the running MCP server on host B takes it
    assert main(["mcp", "--db", pg_url, "--user", "carol", "--json", "token", "add"]) == 0
    added = json.loads(capsys.readouterr().out)
    assert added["user_id"] == "carol"
    assert _initialize(serve_b, added["token"]) == 200
    assert main(["mcp", "token", "list", "--db", pg_url, "--json"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [added["id"]]
    assert main(["mcp", "token", "revoke", added["id"], "--db", pg_url]) == 0
    assert f"revoked {added['id']} (carol)" in capsys.readouterr().out
    assert _initialize(serve_b, added["token"]) == 401
    # an explicit --token-file still means that file, in server mode too
    path = tmp_path / "t.json"
    assert main(["mcp", "--db", pg_url, "--user", "dan", "--json", "token", "add",
                 "--token-file", str(path)]) == 0
    assert TokenStore(path).verify(json.loads(capsys.readouterr().out)["token"]) is not None
    assert [r.user_id for r in tokens_for(two_hosts[1]).list()] == ["carol"]


def test_embedded_mode_keeps_its_token_file(tmp_path):
    with MemOS(tmp_path / "data", config=MemOSConfig(show_progress=False)) as mos:
        store = tokens_for(mos)
        assert type(store) is TokenStore and store.path == tmp_path / "data" / "mcp-tokens.json"
    with pytest.raises(Exception, match="server-mode"):
        VaultTokenStore(object())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_http_server_in_server_mode_takes_tokens_from_the_vault(two_hosts, pg_url, capsys):
    # `memos --db URL mcp --http` (a process of its own, another "host") accepts a token
    # that host A made, and one made by `memos mcp token add` while it runs; a revoke
    # anywhere refuses it.
    a, _ = two_hosts
    early, record = tokens_for(a).add("alice")
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "memos_core.cli", "mcp", "--db", pg_url,
                             "--http", f"127.0.0.1:{port}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else "server exited"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "memos mcp --http did not listen"
                time.sleep(0.2)
        url = f"http://127.0.0.1:{port}/mcp"
        assert _initialize(url, early) == 200
        assert main(["mcp", "--db", pg_url, "--user", "bob", "--json", "token", "add"]) == 0
        late = json.loads(capsys.readouterr().out)
        assert _initialize(url, late["token"]) == 200
        tokens_for(a).revoke(late["id"])
        assert _initialize(url, late["token"]) == 401
        assert main(["mcp", "token", "revoke", record.id, "--db", pg_url]) == 0
        assert _initialize(url, early) == 401
    finally:
        interrupt(proc)
    assert proc.returncode in (0, 130), proc.stderr.read() if proc.stderr else ""
