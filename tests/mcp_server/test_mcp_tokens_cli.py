"""The token file, ``memos mcp token add|list|revoke``, ``--http`` parsing, and that importing
memos_core (or its CLI) does not import the MCP SDK."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from memos_core import CorruptDataError, InvalidInputError, MemoryNotFoundError
from memos_core.cli import main
from memos_core.mcp_server import TokenStore
from memos_core.mcp_server.hosts import parse_http


def test_add_verify_revoke(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "t.json")
    assert store.verify("memos_anything") is None  # no file: nobody
    token, record = store.add("alice", label="laptop")
    assert token.startswith("memos_") and len(token) >= 40
    assert store.verify(token) == record and record.user_id == "alice"
    other, _ = store.add("bob")
    assert store.verify(other).user_id == "bob"
    for bad in (None, 42, "", token[:-1], token + "x", token.upper(), "memos_" + "a" * 500):
        assert store.verify(bad) is None
    revoked = store.revoke(record.id)
    assert revoked.revoked_at is not None and store.verify(token) is None
    assert store.revoke(record.id).revoked_at == revoked.revoked_at  # idempotent
    # another process's revoke is seen at the next check (the file is re-read)
    TokenStore(tmp_path / "t.json").revoke(store.verify(other).id)
    assert store.verify(other) is None
    with pytest.raises(MemoryNotFoundError, match="token list"):
        store.revoke("tok_missing")
    with pytest.raises(InvalidInputError):
        store.add("")


def test_file_mode_and_corruption(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    store = TokenStore(path)
    token, _ = store.add("alice")
    os.chmod(path, 0o644)
    with pytest.raises(InvalidInputError, match="chmod 600"):
        store.verify(token)
    os.chmod(path, 0o600)
    assert store.verify(token) is not None
    path.write_text("{not json")
    os.chmod(path, 0o600)
    with pytest.raises(CorruptDataError, match="unreadable"):
        TokenStore(path).verify(token)


def test_a_token_for_a_new_data_directory_makes_it_private(tmp_path: Path) -> None:
    """`memos mcp token add` on a data directory that does not exist yet creates it 0700,
    as MemOS does (it was 0755, and the next open warned)."""
    assert main(["mcp", "token", "add", "--user", "alice", "--data-dir", str(tmp_path / "new")]) == 0
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700


def test_token_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--data-dir", str(tmp_path / "data")]
    assert main(["mcp", "token", "add", "--user", "alice", "--label", "desk", "--json", *base]) == 0
    added = json.loads(capsys.readouterr().out)
    assert added["user_id"] == "alice" and added["token"].startswith("memos_")
    assert TokenStore.for_data_dir(tmp_path / "data").verify(added["token"]).id == added["id"]
    assert main(["mcp", "token", "list", *base]) == 0
    listed = capsys.readouterr().out
    assert added["id"] in listed and "active" in listed and added["token"] not in listed
    assert main(["mcp", "token", "revoke", added["id"], *base]) == 0
    assert f"revoked {added['id']} (alice)" in capsys.readouterr().out
    assert main(["mcp", "token", "list", "--json", *base]) == 0
    assert json.loads(capsys.readouterr().out)[0]["revoked_at"]
    assert main(["mcp", "token", "revoke", "tok_nope", *base]) == 2
    assert "token list" in capsys.readouterr().err


# One process's share of a race on a token file: wait for the go file, then add tokens (argv
# "add", a user, a count) or revoke ids (argv "revoke", ids...), printing each id done.
_RACER = """
import sys, time
from pathlib import Path
from memos_core.mcp_server import TokenStore
path, go, action, *rest = sys.argv[1:]
store = TokenStore(path)
print("ready", flush=True)
while not Path(go).exists():
    time.sleep(0.005)
if action == "add":
    for _ in range(int(rest[1])):
        print(store.add(rest[0])[1].id, flush=True)
else:
    for token_id in rest:
        print(store.revoke(token_id).id, flush=True)
"""


def test_adds_and_revokes_in_several_processes_at_once_all_stick(tmp_path: Path) -> None:
    """Processes adding and revoking tokens on one file at once (``memos mcp token revoke``
    beside ``token add``): each read the file, changed it and wrote it back under a thread
    lock only, so one overwrote another's change -- a revoke printed its revoked_at and the
    file still held the token active (a running server accepted it); an added token was
    printed and never stored. Each change now holds the file's lock and re-reads it."""
    path, go = tmp_path / "data" / "mcp-tokens.json", tmp_path / "go"
    store = TokenStore(path)
    victims = dict(store.add("alice", label=f"stolen {i}") for i in range(8))
    revoker = [sys.executable, "-c", _RACER, str(path), str(go), "revoke",
               *(record.id for record in victims.values())]
    adders = [[sys.executable, "-c", _RACER, str(path), str(go), "add", f"user{i}", "12"]
              for i in range(4)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for cmd in [revoker, *adders]]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        go.touch()
        outs = [proc.communicate(timeout=120)[0].split() for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert [proc.returncode for proc in procs] == [0] * len(procs)
    added = [token_id for out in outs[1:] for token_id in out]
    assert len(added) == 4 * 12 and sorted(outs[0]) == sorted(r.id for r in victims.values())
    on_disk = {record.id: record for record in TokenStore(path).list()}
    assert [token_id for token_id in added if token_id not in on_disk] == []  # none lost
    assert [r.id for r in victims.values() if on_disk[r.id].active] == []  # every revoke stuck
    assert all(on_disk[token_id].active for token_id in added)
    assert [t for t in victims if TokenStore(path).verify(t) is not None] == []
    assert path.stat().st_mode & 0o777 == 0o600
    assert store.lock_path.exists() and store.lock_path.stat().st_mode & 0o777 == 0o600


ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def test_token_datetimes_end_with_z(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every --json datetime of the CLI is ISO 8601 with Z for UTC; the token commands wrote
    +00:00. A file written before (+00:00) reads the same way."""
    base = ["--data-dir", str(tmp_path / "data")]
    assert main(["mcp", "token", "add", "--user", "alice", "--json", *base]) == 0
    token_id = json.loads(capsys.readouterr().out)["id"]
    assert main(["mcp", "token", "revoke", token_id, "--json", *base]) == 0
    assert ISO_UTC.fullmatch(json.loads(capsys.readouterr().out)["revoked_at"])
    assert main(["mcp", "token", "list", "--json", *base]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert ISO_UTC.fullmatch(row["created_at"]) and ISO_UTC.fullmatch(row["revoked_at"]), row
    path = tmp_path / "data" / "mcp-tokens.json"
    old = json.loads(path.read_text())
    old["tokens"][0].update(created_at="2025-06-14T08:00:00+00:00", revoked_at="2025-06-14T10:00:00+02:00")
    path.write_text(json.dumps(old))
    assert main(["mcp", "token", "list", "--json", *base]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["created_at"], row["revoked_at"]) == ("2025-06-14T08:00:00Z", "2025-06-14T08:00:00Z")


def test_a_label_that_is_not_utf8_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A byte that is not UTF-8 in --label (a lone surrogate) was stored, and every later
    `token list` failed on a strict UTF-8 stdout."""
    base = ["--data-dir", str(tmp_path / "data")]
    assert main(["mcp", "token", "add", "--user", "alice", "--label", "laptop\udcff", *base]) == 2
    assert "memos: error: label holds an unpaired surrogate" in capsys.readouterr().err
    assert TokenStore.for_data_dir(tmp_path / "data").list() == []
    with pytest.raises(InvalidInputError, match="label holds a NUL character"):
        TokenStore(tmp_path / "t.json").add("alice", label="a\x00b")


def test_options_given_before_token_are_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # `memos mcp --user X token add` once dropped --user (the subcommand reset it to None).
    data = str(tmp_path / "data")
    assert main(["mcp", "--user", "bob", "--data-dir", data, "--json", "token", "add"]) == 0
    added = json.loads(capsys.readouterr().out)
    assert added["user_id"] == "bob"
    assert TokenStore.for_data_dir(tmp_path / "data").verify(added["token"]).user_id == "bob"


@pytest.mark.parametrize(("value", "expected"), [
    ("127.0.0.1:8765", ("127.0.0.1", 8765)), (":9000", ("127.0.0.1", 9000)),
    ("9001", ("127.0.0.1", 9001)), ("[::1]:8000", ("::1", 8000)),
    ("localhost:0", ("localhost", 0))])
def test_parse_http(value: str, expected: tuple[str, int]) -> None:
    assert parse_http(value) == expected


@pytest.mark.parametrize("value", ["host", "h:port", "h:70000", "h:-1"])
def test_parse_http_rejects(value: str) -> None:
    with pytest.raises(InvalidInputError, match="--http"):
        parse_http(value)


def test_importing_memos_core_does_not_import_mcp() -> None:
    code = ("import sys, memos_core, memos_core.cli, memos_core.mcp_server; "
            "print(sorted(m for m in sys.modules if m == 'mcp' or m.startswith('mcp.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("kwargs", [{}, {"user_id": "a", "tokens": "both"}, {"user_id": ""},
                                    {"user_id": 7}], ids=["neither", "both", "empty", "int"])
def test_server_needs_exactly_one_principal_source(kwargs: dict, tmp_path: Path) -> None:
    from memos_core import MemOS, MemOSConfig
    from memos_core.mcp_server import MemoryServer

    if kwargs.get("tokens") == "both":
        kwargs["tokens"] = TokenStore(tmp_path / "t.json")
    with MemOS(tmp_path / "data", config=MemOSConfig(show_progress=False)) as mos:
        with pytest.raises(InvalidInputError, match="user_id"):
            MemoryServer(mos, **kwargs)
