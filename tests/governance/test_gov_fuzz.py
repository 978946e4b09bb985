"""Fuzzing the bundle importer and the command line with malformed and hostile input.

Contract: bad input ends in one of our exceptions (``BundleError`` for a bundle) or, on the
command line, a non-zero exit status with a message -- never a traceback -- and nothing is
written (the vault's memory, version and audit counts and the index are unchanged).

Bundles are mutated two ways: raw (the manifest's hashes then catch the damage) and
*re-signed* (the manifest is recomputed after the damage, so the parser itself must refuse).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sqlite3
import string
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memos_core import BundleError, MemOS, MemOSConfig
from memos_core.cli import main

FILES = ("memories.jsonl", "edges.jsonl")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemOS]:
    mos = MemOS(tmp_path_factory.mktemp("fuzz"), config=MemOSConfig(show_progress=False))
    a = mos.add("Ana grows basil on the balcony.", user_id="ana", tags=["garden"])
    b = mos.add("Ana's basil got aphids.", user_id="ana", session_id="s1")
    mos.update(b.id, "Ana's basil recovered from aphids.", user_id="ana")
    mos.compress([a.id, b.id], "Ana's balcony basil story.", user_id="ana")
    gone = mos.add("Ana's old note.", user_id="ana")
    mos.forget(gone.id, user_id="ana")
    yield mos
    mos.close()


@pytest.fixture(scope="module")
def pristine(store: MemOS, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return store.export(tmp_path_factory.mktemp("bundle") / "b", user_id="ana")


def snapshot(mos: MemOS) -> tuple[Any, ...]:
    stats = mos.vault.stats()
    return (stats["memories"], stats["versions"], stats["audit_records"], stats["edges"],
            mos.index.count())


def resign(bundle: Path) -> None:
    """Recompute the manifest's file entries, as a hostile bundle maker would."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    for name in FILES:
        data = (bundle / name).read_bytes()
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def assert_refused(mos: MemOS, bundle: Path, user: str = "importer") -> None:
    before = snapshot(mos)
    with pytest.raises(BundleError) as info:
        mos.import_(bundle, user_id=user)
    assert str(info.value), "a BundleError must say what is wrong"
    assert snapshot(mos) == before, "a refused bundle wrote something"


def _lines(bundle: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (bundle / "memories.jsonl").read_text().splitlines()]


def _write_lines(bundle: Path, rows: list[Any]) -> None:
    (bundle / "memories.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def _first_version(bundle: Path, **changes: Any) -> None:
    rows = _lines(bundle)
    rows[0]["versions"][0].update(changes)
    _write_lines(bundle, rows)


def _manifest(bundle: Path, **changes: Any) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest.update(changes)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


#: name -> (damage, resign afterwards?)
HOSTILE: dict[str, tuple[Callable[[Path], None], bool]] = {
    "no manifest": (lambda b: (b / "manifest.json").unlink(), False),
    "manifest not json": (lambda b: (b / "manifest.json").write_text("{not json"), False),
    "manifest a list": (lambda b: (b / "manifest.json").write_text("[1, 2]"), False),
    "manifest not utf-8": (lambda b: (b / "manifest.json").write_bytes(b"\xff\xfe{}"), False),
    "manifest nested to death": (lambda b: (b / "manifest.json").write_text("[" * 50_000 + "]" * 50_000), False),
    "wrong format": (lambda b: _manifest(b, format="zip"), False),
    "future version": (lambda b: _manifest(b, format_version=2), False),
    "path in files": (lambda b: _manifest(b, files={"../memories.jsonl": {}, "edges.jsonl": {}}), False),
    "absolute path": (lambda b: _manifest(b, files={"/etc/passwd": {"sha256": "0", "bytes": 1},
                                                     "edges.jsonl": {"sha256": "0", "bytes": 1}}), False),
    "declared count not a number": (lambda b: _manifest(b, memories="lots"), True),
    "declared count null": (lambda b: _manifest(b, memories=None), True),
    "huge size": (lambda b: _manifest(b, files={n: {"sha256": "0", "bytes": 10**12} for n in FILES}), False),
    "truncated": (lambda b: (b / "memories.jsonl").write_bytes((b / "memories.jsonl").read_bytes()[:-40]), False),
    "symlinked file": (lambda b: ((b / "edges.jsonl").unlink(), (b / "edges.jsonl").symlink_to("/etc/hostname")), False),
    "line not json": (lambda b: (b / "memories.jsonl").write_text("{oops\n"), True),
    "line nested to death": (lambda b: (b / "memories.jsonl").write_text("[" * 50_000 + "]" * 50_000 + "\n"), True),
    "line not an object": (lambda b: (b / "memories.jsonl").write_text("[1]\n"), True),
    "not utf-8": (lambda b: (b / "memories.jsonl").write_bytes(b'{"id": "\xff"}\n'), True),
    "no versions": (lambda b: _write_lines(b, [{"id": _lines(b)[0]["id"], "versions": []}]), True),
    "bad id": (lambda b: _write_lines(b, [{**_lines(b)[0], "id": "../../etc"}]), True),
    "id mismatch": (lambda b: _first_version(b, id="00000000-0000-4000-8000-000000000000"), True),
    "versions renumbered": (lambda b: _first_version(b, version=7), True),
    "empty text": (lambda b: _first_version(b, text="  "), True),
    "NUL in text": (lambda b: _first_version(b, text="a\x00b"), True),
    "text too big": (lambda b: _first_version(b, text="x" * 1_000_001), True),
    "unknown state": (lambda b: _first_version(b, state="immortal"), True),
    "negative ttl": (lambda b: _first_version(b, governance={"ttl_seconds": -5}), True),
    "duplicate id": (lambda b: _write_lines(b, _lines(b) + _lines(b)[:1]), True),
    "edge to nowhere": (lambda b: (b / "edges.jsonl").write_text(json.dumps(
        {"src": _lines(b)[0]["id"], "dst": "00000000-0000-4000-8000-000000000001", "kind": "derived_from"}) + "\n"), True),
    "edge of unknown kind": (lambda b: (b / "edges.jsonl").write_text(json.dumps(
        {"src": _lines(b)[0]["id"], "dst": _lines(b)[0]["id"], "kind": "owns"}) + "\n"), True),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_bundles_are_refused_and_write_nothing(store: MemOS, pristine: Path, tmp_path: Path,
                                                      name: str) -> None:
    bundle = Path(shutil.copytree(pristine, tmp_path / "b"))
    damage, signed = HOSTILE[name]
    damage(bundle)
    if signed:
        resign(bundle)
    assert_refused(store, bundle)


def test_the_pristine_bundle_imports(store: MemOS, pristine: Path, tmp_path: Path) -> None:
    """The control: without damage, the same bundle imports (into a fresh store)."""
    with MemOS(tmp_path / "fresh", config=MemOSConfig(show_progress=False)) as fresh:
        result = fresh.import_(pristine, user_id="importer")
        assert result["imported"] == 4 and fresh.vault.verify_audit()[0]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), resigned=st.booleans())
def test_random_byte_damage_is_refused(store: MemOS, pristine: Path, tmp_path: Path,
                                       data: st.DataObject, resigned: bool) -> None:
    target = tmp_path / f"b{uuid.uuid4().hex}"
    bundle = Path(shutil.copytree(pristine, target))
    name = data.draw(st.sampled_from([*FILES, "manifest.json"]))
    raw = bytearray((bundle / name).read_bytes())
    # every draw is made whatever the bytes are (positions are taken modulo the length), so
    # hypothesis sees the same data shape on replay even if the pristine export differs
    for _ in range(data.draw(st.integers(1, 8))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, 1 << 20)) % max(1, len(raw))
        flip, cut = data.draw(st.integers(1, 255)), data.draw(st.integers(1, 64))
        insert = data.draw(st.binary(min_size=1, max_size=16))
        if kind == "flip" and raw:
            raw[pos] ^= flip
        elif kind == "cut":
            del raw[pos:pos + cut]
        else:
            raw[pos:pos] = insert
    (bundle / name).write_bytes(bytes(raw))
    if resigned and name != "manifest.json":
        resign(bundle)
    before = snapshot(store)
    try:
        store.import_(bundle, user_id="fuzz")
    except BundleError:
        assert snapshot(store) == before
    # some damage is harmless (whitespace, a field's value that is still valid): that may import
    shutil.rmtree(target)


# -- the command line ------------------------------------------------------------------------

JUNK = st.one_of(
    st.sampled_from(["", " ", "\x00", "é🙂", "x" * 300, "-", "*", "0", "-1", "99999999999",
                     "not-a-date", "2024-13-45", "2024-05-07", "admin", "read", "write", "fact",
                     "pii", "../..", "/dev/null", "00000000-0000-4000-8000-000000000000"]),
    st.text(alphabet=string.printable + "éß🙂", max_size=12),
)
NUMBER = st.one_of(st.integers(-5, 10**12).map(str), JUNK)
#: command -> (positional slots, {option: value kind or None for a flag})
GRAMMAR: dict[str, tuple[tuple[str, ...], dict[str, str | None]]] = {
    "add": (("text",), {"--session": "v", "--type": "v", "--tag": "v", "--occurred-at": "v",
                        "--supersedes": "id", "--sensitivity": "v", "--file": "v"}),
    "search": (("text",), {"-k": "n", "--session": "v", "--type": "v", "--tag": "v",
                           "--after": "v", "--before": "v", "--include-archived": None,
                           "--allow-sensitive": "v"}),
    "get": (("id",), {"--version": "n", "--as-of": "v"}),
    "history": (("id",), {}),
    "forget": (("id",), {"--reason": "v"}),
    "update": (("id", "text"), {}),
    "share": (("id?",), {"--with": "v", "--scope": "v", "--session": "v"}),
    "revoke": (("id?",), {"--with": "v", "--session": "v"}),
    "export": (("v",), {"--include-sensitive": None}),
    "import": (("v",), {}),
    "audit": (("v?",), {"--memory": "id", "--limit": "n", "--action": "v"}),
    "stats": ((), {}),
}


def _argv(data: st.DataObject, command: str, ids: list[str]) -> list[str]:
    """A command line that mostly gets past argparse, so the facade's checks are reached."""
    value = {"v": JUNK, "text": JUNK, "n": NUMBER, "id": st.one_of(st.sampled_from(ids), JUNK)}
    positional, options = GRAMMAR[command]
    args: list[str] = []
    for slot in positional:
        if not slot.endswith("?") or data.draw(st.booleans()):
            args.append(data.draw(value[slot.rstrip("?")]))
    chosen = data.draw(st.lists(st.sampled_from(sorted(options)), max_size=3, unique=True)) \
        if options else []
    for option in chosen:
        kind = options[option]
        args += [option] if kind is None else [option, data.draw(value[kind])]
    if data.draw(st.integers(0, 9)) == 0:  # now and then, plain noise
        args += data.draw(st.lists(JUNK, max_size=3))
    return args


@pytest.fixture
def cli_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    """A data directory with memories of the fuzzing user and another user (their ids are
    fuzzing tokens too); every path the fuzzer could name stays inside tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("MEMOS_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setattr(sys, "stdin", io.StringIO("text from stdin"))
    with MemOS(tmp_path / "d", config=MemOSConfig(show_progress=False)) as mos:
        ids = [mos.add("Fuzz's own note about kites.", user_id="fuzz").id,
               mos.add("Someone else's note.", user_id="other").id]
    return tmp_path / "d", ids


def vault_counts(data_dir: Path) -> tuple[int, ...]:
    """Rows in the vault's tables, read without opening a MemOS (cheap, no index)."""
    if not (data_dir / "vault.sqlite3").exists():
        return (0, 0, 0, 0)
    db = sqlite3.connect(data_dir / "vault.sqlite3")
    try:
        return tuple(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                     for t in ("memories", "versions", "audit", "edges"))
    finally:
        db.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(sorted(GRAMMAR)), data=st.data())
def test_cli_never_crashes_and_fails_cleanly(cli_home: tuple[Path, list[str]],
                                           capsys: pytest.CaptureFixture[str], command: str,
                                           data: st.DataObject) -> None:
    home, ids = cli_home
    argv = [command, "--data-dir", str(home), "--user", "fuzz", "--json", *_argv(data, command, ids)]
    before = vault_counts(home)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own refusal of the command line
        code = exc.code
        assert code == 2
    err = capsys.readouterr().err
    assert code in (0, 1, 2, 3), code
    if code != 0:
        assert err.strip(), f"exit {code} without a message for {argv!r}"
        assert vault_counts(home) == before, f"failed {argv!r} wrote to the store"


@pytest.mark.parametrize("argv", [
    ["add", "--user", "u\udcff", "hello"],
    ["add", "--tag", "t\udcff", "hello"],
    ["add", "--sensitivity", "p\udcff", "hello"],
    ["add", "--agent", "a\udcff", "hello"],
    ["search", "--tag", "t\udcff", "hello"],
    ["list", "--session", "s\udcff"],
])
def test_a_non_utf8_argument_ends_in_a_message(cli_home: tuple[Path, list[str]],
                                               capsys: pytest.CaptureFixture[str],
                                               argv: list[str]) -> None:
    """A byte that is not UTF-8 on the command line reaches Python as a lone surrogate; it
    went on to SQLite or pydantic and ended in a traceback (exit 1)."""
    home, _ = cli_home
    before = vault_counts(home)
    assert main([argv[0], "--data-dir", str(home), "--user", "fuzz", *argv[1:]]) == 2
    assert "unpaired surrogate" in capsys.readouterr().err
    assert vault_counts(home) == before


@pytest.mark.parametrize("argv, code, message", [
    (["export", "\x00"], 2, "without NUL"),           # found by the fuzzer: a traceback before
    (["import", "\x00"], 2, "without NUL"),
    (["add", "--file", "\x00"], 2, "without NUL"),
    (["export", "/proc/memos-cannot-be-made"], 1, "memos: error:"),
])
def test_unusable_paths_end_in_a_message(cli_home: tuple[Path, list[str]],
                                         capsys: pytest.CaptureFixture[str], argv: list[str],
                                         code: int, message: str) -> None:
    home, _ = cli_home
    assert main([argv[0], "--data-dir", str(home), "--user", "fuzz", *argv[1:]]) == code
    assert message in capsys.readouterr().err
