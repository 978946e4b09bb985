"""A stored text that is no longer valid UTF-8 (one byte damaged on disk) in the SQLite vault.

SQLite does not check TEXT for UTF-8 and ``PRAGMA integrity_check`` says ok, so the store
opens; the driver then failed every query that read the damaged row with a raw
``sqlite3.OperationalError: Could not decode to UTF-8 column 'doc' with text '...'``, which
quoted the whole record: the owner's list, get, search, export and verify_audit all broke.
Now a damaged memory is a :class:`CorruptDataError` naming it (``memory_id``), as a
document that is not JSON is; ``verify_audit`` names the damaged audit record; every other
read of a damaged text is a ``CorruptDataError`` naming the column. No message (nor its
traceback) repeats the damaged text. Each test closes a real store, changes bytes of its
file, and opens it again.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from memos_core import MemOS, MemOSConfig
from memos_core.cube import MemCube, Namespace
from memos_core.errors import CorruptDataError
from memos_core.vault import Actor, SQLiteVault
from memos_core.vault.base import CheckpointRecord, ItemKey, NamespaceGrant
from memos_core.vault.sqlite_text import damaged, lenient_rows

BAD_TEXT = "the zebra crossed the river at dawn"
NEEDLE = b"zebra crossed"  # the byte after "ze" is damaged; the rest must not be shown


def _config() -> MemOSConfig:
    return MemOSConfig(show_progress=False, admin_users=("root",))


def _damage(file: Path, needle: bytes, at: int = 2) -> None:
    """Set byte ``at`` of every copy of ``needle`` in ``file`` to 0xFF (never valid UTF-8)."""
    raw = bytearray(file.read_bytes())
    start, hits = raw.find(needle), 0
    while start >= 0:
        raw[start + at] = 0xFF
        hits += 1
        start = raw.find(needle, start + 1)
    assert hits, f"{needle!r} is not in {file}"
    file.write_bytes(bytes(raw))
    db = sqlite3.connect(file)  # the premise: SQLite itself finds nothing wrong
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()


def _shows_no_text(exc: BaseException, *fragments: str) -> None:
    """Neither the message nor an exception a traceback prints with it repeats the text."""
    chain: list[str] = []
    seen: BaseException | None = exc
    while seen is not None:  # what a traceback prints: causes, and context not suppressed
        chain.append(f"{type(seen).__name__}: {seen}")
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    printed = "\n".join(chain)
    assert "Could not decode" not in printed
    for fragment in fragments:
        assert fragment not in printed


def _store(data: Path) -> tuple[str, str, str]:
    """ana's memory that gets damaged, ana's other (non-ASCII) one, and bob's."""
    with MemOS(data, config=_config()) as mos:
        bad = mos.add(BAD_TEXT, user_id="ana").id
        good = mos.add("Café au lait at 東京 station 🦓 on Mondays", user_id="ana").id
        bobs = mos.add("Bob keeps his kayak in the garage", user_id="bob").id
    return bad, good, bobs


def test_a_memory_whose_text_is_not_utf8_is_named_and_the_rest_stays_readable(
        tmp_path: Path) -> None:
    data = tmp_path / "d"
    bad, good, bobs = _store(data)
    _damage(data / "vault.sqlite3", NEEDLE)  # the current record and its version
    with MemOS(data, config=_config()) as mos:
        reads: dict[str, Callable[[], Any]] = {
            "get": lambda: mos.get(bad, user_id="ana"),
            "history": lambda: mos.history(bad, user_id="ana"),
        }
        # the reads of many memories leave it out (tests/governance/test_gov_damaged_records.py)
        assert [c.id for c in mos.list(user_id="ana")] == [good]
        assert bad not in [h.id for h in mos.search("zebra river", user_id="ana")]
        for name, read in reads.items():
            with pytest.raises(CorruptDataError, match="not valid UTF-8") as info:
                read()
            assert info.value.memory_id == bad, name
            _shows_no_text(info.value, "crossed the river")
        assert mos.get(good, user_id="ana").text == "Café au lait at 東京 station 🦓 on Mondays"
        assert [h.id for h in mos.search("kayak garage", user_id="bob", k=1)] == [bobs]
        assert mos.verify_audit(user_id="root")[0]  # the audit log holds no text of it


def test_a_damaged_old_version_is_named_and_the_current_one_stays_readable(
        tmp_path: Path) -> None:
    path = tmp_path / "vault.sqlite3"
    vault = SQLiteVault(path)
    first = MemCube(namespace=Namespace(user_id="ana"), text=BAD_TEXT)
    vault.insert([first], Actor("ana"))
    vault.put_version(first.model_copy(update={"version": 2, "text": "moved to the lake"}), 1,
                      Actor("ana"), "update")
    vault.close()
    _damage(path, NEEDLE)  # only version 1 still holds the old text
    vault = SQLiteVault(path)
    try:
        current = vault.get(first.id)
        assert current is not None and current.text == "moved to the lake"
        for read in (lambda: vault.get_version(first.id, 1), lambda: vault.history(first.id)):
            with pytest.raises(CorruptDataError, match=f"memory {first.id}") as info:
                read()
            _shows_no_text(info.value, "crossed the river")
    finally:
        vault.close()


def test_a_damaged_text_does_not_stop_the_store_opening_or_reindexing(tmp_path: Path) -> None:
    """Rebuilding a lost index reads every memory: the damaged one is left out, the others
    (non-ASCII text included, read back exactly) are indexed."""
    data = tmp_path / "d"
    bad, good, bobs = _store(data)
    _damage(data / "vault.sqlite3", NEEDLE)
    shutil.rmtree(data / "index")
    with MemOS(data, config=_config()) as mos:
        hits = mos.search("café au lait", user_id="ana", k=5)
        assert [(h.id, h.text) for h in hits] == [
            (good, "Café au lait at 東京 station 🦓 on Mondays")]
        assert mos.reindex() == {"indexed": 2}
        assert set(mos.index.versions()) == {good, bobs}


def test_verify_audit_names_an_audit_record_whose_hash_is_not_utf8(tmp_path: Path) -> None:
    data = tmp_path / "d"
    bad, good, _ = _store(data)
    db = sqlite3.connect(data / "vault.sqlite3")
    seq, prev = db.execute("SELECT seq, prev_hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    db.close()
    # the hash of record seq-1, which record seq repeats as its prev_hash: the first named
    _damage(data / "vault.sqlite3", prev.encode(), at=10)
    with MemOS(data, config=_config()) as mos:
        ok, message = mos.verify_audit(user_id="root")
        assert not ok and f"audit record {seq - 1} is unreadable" in message
        assert prev[11:] not in message
        with pytest.raises(CorruptDataError, match=f"Audit record {seq - 1} is damaged") as info:
            mos.audit_log(user_id="ana")  # record seq-1 is the add of her second memory
        _shows_no_text(info.value, prev[11:])
        # the memories are untouched: the owner still reads and searches them
        assert {m.id for m in mos.list(user_id="ana")} == {bad, good}
        assert mos.search("zebra river", user_id="ana", k=1)[0].id == bad


def _grant(vault: SQLiteVault) -> None:
    vault.change_grants(add=[NamespaceGrant("ana", "grantee-zebra crossed", "read")],
                        actor=Actor("ana"), action="share", details={})


def _keyed(vault: SQLiteVault) -> None:
    vault.put_keyed(ItemKey("ana", ("notes",), "key-zebra crossed"),
                    MemCube(namespace=Namespace(user_id="ana"), text="plain"), None,
                    Actor("ana"), "add")


def _checkpoint(vault: SQLiteVault) -> None:
    vault.cp_put(CheckpointRecord("t1", "", "c1", None, None, ("type-zebra crossed", b"x"),
                                  ("json", b"{}")), [])


#: (write a row holding the needle, read it back) of each other table that holds text
OTHER_TEXTS: dict[str, tuple[Callable[[SQLiteVault], Any], Callable[[SQLiteVault], Any]]] = {
    "grants": (_grant, lambda v: v.grants()),
    "conversation_log": (
        lambda v: v.log_append("ana", "chat", [("m1", '{"content": "the zebra crossed"}')],
                               "active"),
        lambda v: v.log_read("ana", "chat", None)),
    "item_keys": (_keyed, lambda v: v.list_keyed("ana")),
    "checkpoints": (_checkpoint, lambda v: v.cp_list("t1")),
    "meta": (lambda v: v.set_meta("note", "the zebra crossed"), lambda v: v.get_meta("note")),
}


@pytest.mark.parametrize("table", sorted(OTHER_TEXTS))
def test_other_damaged_texts_are_a_corrupt_data_error(tmp_path: Path, table: str) -> None:
    """Grants, conversation logs, keyed items, checkpoints, meta: the read is a
    CorruptDataError naming the column, not the driver's error quoting the text."""
    write, read = OTHER_TEXTS[table]
    path = tmp_path / "vault.sqlite3"
    vault = SQLiteVault(path)
    write(vault)
    vault.close()
    _damage(path, NEEDLE)
    vault = SQLiteVault(path)
    try:
        with pytest.raises(CorruptDataError, match="not valid UTF-8") as info:
            read(vault)
        _shows_no_text(info.value, "crossed")
    finally:
        vault.close()


def test_lenient_rows_keep_valid_text_exactly_and_mark_only_damaged_bytes(
        tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "t.sqlite3")
    try:
        valid = "Café 東京 🦓 \u00e9\u0301 \U0010fffd"
        db.execute("CREATE TABLE t (k INTEGER, v TEXT)")
        db.execute("INSERT INTO t VALUES (1, ?), (2, CAST(? AS TEXT))",
                   (valid, b"ab\xffcd\xed\xa0\x80"))  # a stray byte; an encoded surrogate
        with pytest.raises(sqlite3.OperationalError, match="Could not decode"):
            db.execute("SELECT v FROM t ORDER BY k").fetchall()
        rows = lenient_rows(db, "SELECT v FROM t ORDER BY k")
        assert rows[0][0] == valid and not damaged(rows[0][0])
        assert damaged(rows[1][0])
        assert db.execute("SELECT v FROM t WHERE k=1").fetchone()[0] == valid  # decoder restored
    finally:
        db.close()
