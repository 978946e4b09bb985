"""``memos mcp --http`` as users run it: a subprocess on a free loopback port, a token made
with ``memos mcp token add``, refused without it, served with it, stopped with SIGINT."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from mcp_helpers import http_session, payload, server_env

from memos_core import MemOS, MemOSConfig
from memos_core.testing.processes import interrupt


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "server exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"memos mcp --http did not listen on {port} within {timeout} s")


async def test_cli_http_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cli = [sys.executable, "-m", "memos_core.cli", "mcp"]
    added = subprocess.run([*cli, "token", "add", "--user", "alice", "--json", "--data-dir",
                            str(data)], capture_output=True, text=True, check=True, timeout=120)
    token = json.loads(added.stdout)["token"]
    port = _free_port()
    proc = subprocess.Popen([*cli, "--http", f"127.0.0.1:{port}", "--data-dir", str(data)],
                            env=server_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        _wait_listening(port, proc)
        url = f"http://127.0.0.1:{port}/mcp"
        async with httpx.AsyncClient(timeout=30) as client:
            refused = await client.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert refused.status_code == 401
        async with http_session(url, token) as session:
            stored = payload(await session.call_tool("store", {"text": "Alice plays the oboe."}))
            hits = payload(await session.call_tool("search", {"query": "instrument"}))["hits"]
        assert hits[0]["id"] == stored["stored"]["id"] and hits[0]["owner"] == "alice"
    finally:
        interrupt(proc)
    assert proc.returncode in (0, 130), proc.stderr.read() if proc.stderr else ""
    with MemOS(data, config=MemOSConfig(show_progress=False)) as mos:  # released, intact
        assert mos.get(stored["stored"]["id"], user_id="alice").text == "Alice plays the oboe."


def test_cli_on_a_loopback_name_guards_and_caps(tmp_path: Path) -> None:
    """``--http LOCALHOST:PORT`` binds loopback: it used to get no DNS-rebinding guard and a
    warning that it was reachable from other machines (only the exact name ``localhost``
    counted). ``--max-sessions-per-token`` reaches the server."""
    from memos_core.mcp_server import TokenStore

    data = tmp_path / "data"
    token, _ = TokenStore.for_data_dir(data).add("alice")
    other, _ = TokenStore.for_data_dir(data).add("bob")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "memos_core.cli", "mcp", "--http",
                             f"LOCALHOST:{port}", "--max-sessions-per-token", "1",
                             "--allowed-host", "proxy.internal", "--data-dir", str(data)],
                            env=server_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    headers = {"Accept": "application/json, text/event-stream",
               "Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "raw-test", "version": "0"}}}
    try:
        _wait_listening(port, proc)
        url = f"http://127.0.0.1:{port}/mcp"
        with httpx.Client(timeout=30) as client:
            rebound = client.post(url, json=initialize,
                                  headers={**headers, "Host": f"attacker.example:{port}"})
            named = client.post(url, json=initialize,
                                headers={**headers, "Host": f"LOCALHOST:{port}"})
            second = client.post(url, json=initialize, headers=headers)
            proxied = client.post(url, json=initialize, headers={
                **headers, "Authorization": f"Bearer {other}", "Host": "proxy.internal"})
    finally:
        interrupt(proc)
    err = proc.stderr.read() if proc.stderr else ""
    assert rebound.status_code == 421, err
    assert named.status_code == 200 and second.status_code == 429, err
    assert proxied.status_code == 200, err  # --allowed-host, without a port
    assert "reachable from other machines" not in err
    assert f"serving http://LOCALHOST:{port}/mcp" in err


@pytest.mark.parametrize(("option", "message"), [
    (["--session-idle-timeout", "60"], "give them with --http"),
    (["--allowed-host", "proxy.internal"], "give it with --http")], ids=["limits", "host"])
def test_http_options_need_http(tmp_path: Path, option: list[str], message: str) -> None:
    result = subprocess.run([sys.executable, "-m", "memos_core.cli", "mcp", "--user", "alice",
                             *option, "--data-dir", str(tmp_path / "d")],
                            env=server_env(), capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
    assert result.returncode != 0 and message in result.stderr, result.stderr
