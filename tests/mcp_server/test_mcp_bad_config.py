"""What a damaged token file and a bad ``--http HOST:PORT`` do: a clear error, never a
traceback, a 500 or the "denied" exit status.

* A token file with fields of the wrong type (a hand edit, a bad merge) is refused as a whole
  with a ``CorruptDataError`` naming the file and the field: the HTTP server answers 401 and
  logs one line (it once answered 500 with a ``TypeError`` traceback), ``memos mcp token ...``
  exits 1 with the message.
* ``--http`` takes an IP address or a host name and a port 0..65535 (a host pydantic's URL
  type refused once gave a raw ``ValidationError``); a host that does not resolve or a port
  that cannot be bound exits 1 with the reason (uvicorn's startup failure was exit status 3,
  which ``memos`` uses for "denied"), and "serving" is printed only once the port is bound.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp_helpers import HttpFixture, http_session, payload, server_env

from memos_core import CorruptDataError, InvalidInputError, MemOS, MemOSConfig
from memos_core.cli import main
from memos_core.mcp_server import TokenStore, build_http_server
from memos_core.mcp_server.hosts import parse_http
from memos_core.mcp_server.tokens import VaultTokenStore
from memos_core.testing.processes import interrupt

HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {},
    "clientInfo": {"name": "raw-test", "version": "0"}}}
CLI = [sys.executable, "-m", "memos_core.cli", "mcp"]

Edit = Callable[[dict[str, Any]], Any]


def _set(field: str, value: Any, entry: int = 1) -> Edit:
    return lambda data: data["tokens"][entry].__setitem__(field, value)


# (what is wrong, how to break a good file, what the message names)
DAMAGE: list[tuple[str, Edit, str]] = [
    ("sha256-int", _set("sha256", 12345), "sha256 is a JSON number"),
    ("sha256-non-ascii", _set("sha256", "é" * 64), "sha256 is not 64 lowercase hex"),
    ("sha256-upper-case", lambda d: d["tokens"][1].__setitem__(
        "sha256", d["tokens"][1]["sha256"].upper()), "sha256 is not 64 lowercase hex"),
    ("sha256-short", lambda d: d["tokens"][1].__setitem__(
        "sha256", d["tokens"][1]["sha256"][:-1]), "sha256 is not 64 lowercase hex"),
    ("user-int", _set("user_id", 7), "user_id is a JSON number"),
    ("user-empty", _set("user_id", " "), "user_id must be a non-empty str"),
    ("user-nul", _set("user_id", "bo\x00b"), "user_id holds a NUL character"),
    ("id-list", _set("id", ["tok_1"]), "id is a JSON array"),
    ("id-newline", _set("id", "tok_1\nforged log line"), "id is not 1 to 64 letters"),
    ("created-at-bool", _set("created_at", True), "created_at is a JSON boolean"),
    ("revoked-at-text", _set("revoked_at", "yesterday"), "revoked_at is not an ISO 8601"),
    ("revoked-at-bool", _set("revoked_at", False), "revoked_at is a JSON boolean"),
    ("label-object", _set("label", {"a": 1}), "label is a JSON object"),
    ("label-long", _set("label", "x" * 201), "label is longer than 200"),
    ("unknown-field", _set("admin", True), "unknown fields ['admin']"),
    ("missing-field", lambda d: d["tokens"][1].pop("sha256"), "missing fields ['sha256']"),
    ("entry-not-object", lambda d: d["tokens"].append("memos_x"), "token 3: a JSON string"),
    ("duplicate-id", lambda d: d["tokens"][1].__setitem__("id", d["tokens"][0]["id"]),
     "another token has the same id"),
    ("tokens-not-list", lambda d: d.__setitem__("tokens", {"a": 1}), '"tokens" array'),
    ("other-format", lambda d: d.__setitem__("format", 2), "format is not 1"),
]


def _damage(path: Path, edit: Edit) -> str:
    """Break the token file at ``path`` with ``edit`` (mode stays 0600); returns the good
    content, to put back."""
    good = path.read_text()
    data = json.loads(good)
    edit(data)
    path.write_text(json.dumps(data))
    os.chmod(path, 0o600)
    return good


def _two_tokens(path: Path) -> dict[str, str]:
    store = TokenStore(path)
    return {user: store.add(user)[0] for user in ("alice", "bob")}


# -- the token file ----------------------------------------------------------------------------

@pytest.mark.parametrize(("edit", "named"), [d[1:] for d in DAMAGE], ids=[d[0] for d in DAMAGE])
def test_a_damaged_token_file_is_refused_with_what_is_wrong(tmp_path: Path, edit: Edit,
                                                            named: str) -> None:
    path = tmp_path / "t.json"
    tokens = _two_tokens(path)
    _damage(path, edit)
    for check in (lambda s: s.verify(tokens["bob"]), lambda s: s.verify(tokens["alice"]),
                  lambda s: s.list()):
        with pytest.raises(CorruptDataError) as info:
            check(TokenStore(path))  # a fresh store, and one that had read the good file
        message = str(info.value)
        assert str(path) in message and named in message, message
    assert "forged" not in message and "é" not in message  # no damaged value echoed


def test_a_good_token_file_still_verifies(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    tokens = _two_tokens(path)
    store = TokenStore(path)
    record = store.verify(tokens["bob"])
    assert record is not None and record.user_id == "bob"
    store.revoke(record.id)  # revoked_at set, label None: still a valid file
    assert store.verify(tokens["bob"]) is None and store.verify(tokens["alice"]) is not None
    data = json.loads(path.read_text())
    del data["tokens"][0]["label"], data["tokens"][0]["revoked_at"]  # optional fields
    path.write_text(json.dumps(data))
    os.chmod(path, 0o600)
    assert TokenStore(path).verify(tokens["alice"]).user_id == "alice"


def test_a_damaged_vault_token_row_is_refused() -> None:
    # server mode keeps the same records in the vault's meta table: checked the same way
    row = {"id": "tok_0123456789ab", "user_id": "alice", "sha256": 5,
           "created_at": "2025-01-01T00:00:00+00:00", "label": None, "revoked_at": None}
    with pytest.raises(CorruptDataError, match="sha256 is a JSON number"):
        VaultTokenStore._parse(json.dumps(row), "mcp_token:x")
    row["sha256"] = "ab" * 32
    assert VaultTokenStore._parse(json.dumps(row), "mcp_token:x").user_id == "alice"


def _post(url: str, token: str) -> httpx.Response:
    with httpx.Client(timeout=30) as client:  # loopback only: the fixture's own server
        return client.post(url, json=INITIALIZE, headers={**HEADERS,
                                                          "Authorization": f"Bearer {token}"})


@pytest.mark.parametrize("which", ["sha256-int", "sha256-non-ascii", "user-int",
                                   "revoked-at-bool"])
async def test_a_damaged_token_file_refuses_http_requests_with_401(
        http_server: HttpFixture, which: str, capfd: pytest.CaptureFixture[str]) -> None:
    edit = next(d[1] for d in DAMAGE if d[0] == which)
    good = _damage(http_server.tokens.path, edit)
    for user in ("alice", "bob"):  # the damaged entry is bob's; nobody gets in (fail closed)
        response = _post(http_server.url, http_server.token[user])
        assert response.status_code == 401, response.text
        assert "invalid_token" in response.headers["www-authenticate"]
    log = capfd.readouterr().err
    assert f"memos mcp: token file {http_server.tokens.path} is unreadable" in log, log
    assert "Traceback" not in log and "TypeError" not in log, log
    http_server.tokens.path.write_text(good)  # mended: served again, no restart
    async with http_session(http_server.url, http_server.token["bob"]) as bob:
        assert payload(await bob.call_tool("store", {"text": "Bob is back."}))["stored"]


@pytest.mark.parametrize("command", [["list"], ["list", "--json"], ["add", "--user", "carol"],
                                     ["revoke", "tok_0123456789ab"]])
def test_token_commands_on_a_damaged_file_exit_1_with_the_reason(
        tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    _two_tokens(data / "mcp-tokens.json")
    good = _damage(data / "mcp-tokens.json", _set("sha256", 12345))
    assert main(["mcp", "token", *command, "--data-dir", str(data)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"memos: error: token file {data / 'mcp-tokens.json'}")
    assert "sha256 is a JSON number" in err and "Traceback" not in err
    assert (data / "mcp-tokens.json").read_text() != good  # nothing written over it


def test_token_list_subprocess_on_a_damaged_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _two_tokens(data / "mcp-tokens.json")
    _damage(data / "mcp-tokens.json", _set("sha256", "é" * 64))
    result = subprocess.run([*CLI, "token", "list", "--data-dir", str(data)], env=server_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "sha256 is not 64 lowercase hex" in result.stderr
    assert "Traceback" not in result.stderr


# -- --http HOST:PORT --------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    "999.1.1.1:8765", "a b:8765", "256.256.256.256:0", "1.2.3.4.5:80", "127.1:80",
    "host.123:80", "-host:80", "ho%st:80", "bücher.example:80", "[127.0.0.1]:80", "[::1:80",
    "::1]:80", "[fe80::1%eth0]:80", "h:8_0", "h: 80", "h:+80", "h:", "h:123456",
    "x" * 300 + ":80", "a..b:80"])
def test_parse_http_rejects_bad_hosts(value: str) -> None:
    with pytest.raises(InvalidInputError, match="--http"):
        parse_http(value)


@pytest.mark.parametrize(("value", "expected"), [
    ("0.0.0.0:0", ("0.0.0.0", 0)), ("[::]:80", ("::", 80)), ("::1:8000", ("::1", 8000)),
    ("my-host.example.org:443", ("my-host.example.org", 443)), ("LOCALHOST:1", ("LOCALHOST", 1)),
    ("db_1:8765", ("db_1", 8765)), ("host.:65535", ("host.", 65535))])
def test_parse_http_accepts_addresses_and_host_names(value: str, expected: tuple[str, int]
                                                     ) -> None:
    assert parse_http(value) == expected


@pytest.mark.parametrize(("host", "port"), [("999.1.1.1", 80), ("a b", 80), (None, 80),
                                            ("127.0.0.1", 70000), ("127.0.0.1", "80")])
def test_build_http_server_rejects_a_bad_host_or_port(tmp_path: Path, host: Any, port: Any
                                                      ) -> None:
    with MemOS(tmp_path / "data", config=MemOSConfig(show_progress=False)) as mos:
        with pytest.raises(InvalidInputError, match="host|port"):
            build_http_server(mos, tokens=TokenStore(tmp_path / "t.json"), host=host, port=port)


def _memos_mcp_http(value: str, data: Path, timeout: float = 180
                    ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "--http", value, "--data-dir", str(data)], env=server_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("value", ["999.1.1.1:8765", "a b:8765", "256.256.256.256:0"])
def test_cli_bad_host_is_a_usage_error(tmp_path: Path, value: str) -> None:
    result = _memos_mcp_http(value, tmp_path / "data")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("memos: error: --http host"), result.stderr
    assert "Traceback" not in result.stderr and "ValidationError" not in result.stderr


def test_cli_unresolvable_host_exits_1_before_serving(tmp_path: Path) -> None:
    result = _memos_mcp_http("no-such-host.invalid:8765", tmp_path / "data")
    assert result.returncode == 1, result.stderr  # not 3 ("denied")
    assert "memos: error: cannot serve on no-such-host.invalid:8765" in result.stderr
    assert "does not resolve" in result.stderr
    assert "serving" not in result.stderr and "Traceback" not in result.stderr


def test_cli_port_in_use_exits_1_before_serving(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _memos_mcp_http(f"127.0.0.1:{port}", tmp_path / "data")
    assert result.returncode == 1, result.stderr
    assert f"memos: error: cannot serve on 127.0.0.1:{port}" in result.stderr
    assert "serving" not in result.stderr and "Traceback" not in result.stderr


def test_cli_port_0_says_the_bound_port_once_listening(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = subprocess.Popen([*CLI, "--http", "127.0.0.1:0", "--data-dir", str(data)],
                            env=server_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stderr is not None
        deadline, line = time.monotonic() + 180, ""
        while "serving" not in line:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "memos mcp --http exited"
            assert time.monotonic() < deadline, "memos mcp --http said nothing"
        found = re.search(r"serving http://127\.0\.0\.1:(\d+)/mcp$", line.strip())
        assert found and int(found.group(1)) != 0, line
        # bound before it said so: the first request is answered (401: no token)
        with httpx.Client(timeout=30) as client:
            assert client.post(f"http://127.0.0.1:{found.group(1)}/mcp", json=INITIALIZE,
                               headers=HEADERS).status_code == 401
    finally:
        interrupt(proc)
    assert proc.returncode in (0, 130)
