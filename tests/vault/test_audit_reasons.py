"""Audit reasons under the hash chain, on both vaults (SQLite, and a real PostgreSQL server):

* a reason a record keeps cannot be changed, nor removed from a memory that is not
  forgotten, without ``verify_audit`` saying so (the chain covers a salted commitment to it);
* records written before the commitment (SQLite schema 3, PostgreSQL schema 6) still verify,
  and the upgrade converts them -- the chain verified first, each old hash kept in
  ``legacy_hash`` -- and removes the reasons of memories forgotten before it;
* a legacy chain that does not verify is left as it is: its reasons stay, the break is still
  reported.

The tampering goes through each database's own SQL, from a second connection.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from memos_core.cube import MemCube, Namespace
from memos_core.vault import Actor, SQLiteVault, Vault
from memos_core.vault.audit_chain import AUDIT_HEAD, GENESIS_HASH, audit_hash, verify_chain

SECRET = "PASSPORT-X99413"
LIVE_REASON = "the user asked to keep this"


@dataclass
class Backend:
    """How to open one kind of vault and reach its database behind its back."""

    name: str
    open: Callable[[], Vault]
    #: ``sql(statement, params)`` with ``?`` placeholders; rows for a query, [] otherwise
    sql: Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]
    legacy_schema: str  # the schema version before the reason commitment
    schema: str


def _sqlite(path: Path) -> Backend:
    from memos_core.vault.sqlite import SCHEMA_VERSION

    def sql(statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(path)
        try:
            with db:
                return db.execute(statement, params).fetchall()
        finally:
            db.close()

    return Backend("sqlite", lambda: SQLiteVault(path), sql, "3", str(SCHEMA_VERSION))


def _postgres(url: str) -> Backend:
    import psycopg

    from memos_core.vault.pg_schema import SCHEMA_VERSION
    from memos_core.vault.postgres import PostgresVault

    def sql(statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(url, autocommit=True) as conn:
            cur = conn.execute(statement.replace("?", "%s"), params)
            return list(cur.fetchall()) if cur.description else []

    return Backend("postgres", lambda: PostgresVault(url), sql, "6", str(SCHEMA_VERSION))


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return _sqlite(tmp_path / "vault.sqlite3")
    return _postgres(request.getfixturevalue("pg_url"))


@pytest.fixture
def vault(backend: Backend) -> Iterator[Vault]:
    v = backend.open()
    yield v
    v.close()


def cube(text: str) -> MemCube:
    return MemCube(namespace=Namespace(user_id="alice"), text=text)


def _memories(vault: Vault) -> dict[str, MemCube]:
    """A live memory, and one written and updated with the secret in its reasons, forgotten."""
    live, gone = cube("Alice likes tea."), cube(f"Alice's passport is {SECRET}.")
    vault.insert([live], Actor("alice", None, LIVE_REASON))
    vault.insert([gone], Actor("alice", None, f"user said: my passport is {SECRET}"))
    vault.put_version(gone.model_copy(update={"version": 2, "text": "renewed"}), 1,
                      Actor("alice", None, f"renewed {SECRET}"), "update")
    vault.tombstone(gone.id, Actor("alice", None, f"forget {SECRET}"))
    return {"live": live, "gone": gone}


@pytest.mark.parametrize("tamper, which, message", [
    ("UPDATE audit SET reason='edited' WHERE memory_id=? AND action='add'", "live", "altered"),
    ("UPDATE audit SET reason=NULL, reason_salt=NULL WHERE memory_id=? AND action='add'", "live",
     "was removed, but"),
    ("UPDATE audit SET reason_salt=NULL WHERE memory_id=? AND action='add'", "live", "altered"),
    ("UPDATE audit SET reason_commit=NULL WHERE memory_id=? AND action='add'", "live", "altered"),
    ("UPDATE audit SET reason='it said nothing' WHERE memory_id=? AND action='add'", "gone",
     "altered"),
    ("UPDATE audit SET reason_salt='00' WHERE memory_id=? AND action='add'", "gone", "altered"),
])
def test_a_kept_reason_cannot_change_and_only_forget_removes_one(
        backend: Backend, vault: Vault, tamper: str, which: str, message: str) -> None:
    made = _memories(vault)
    assert vault.verify_audit() == (True, "audit chain intact")
    backend.sql(tamper, (made[which].id,))
    ok, said = vault.verify_audit()
    assert not ok and message in said, said


def _make_legacy(backend: Backend, reasons: dict[str, str]) -> list[str]:
    """Turn the vault's audit log into what a memos-core before the commitment wrote: every
    record hashes its reason (``reasons``: memory id -> the reason its records had, put
    back), no commitment columns, the old schema version. Returns the old hashes."""
    for memory_id, reason in reasons.items():
        backend.sql("UPDATE audit SET reason=? WHERE memory_id=?", (reason, memory_id))
    prev, hashes = GENESIS_HASH, []
    rows = backend.sql("SELECT seq, at, user_id, agent_id, action, memory_id, version, reason, "
                       "details FROM audit ORDER BY seq", ())
    for r in rows:
        digest = audit_hash(prev, {"at": r[1], "user_id": r[2], "agent_id": r[3], "action": r[4],
                                   "memory_id": r[5], "version": r[6], "reason": r[7],
                                   "details": json.loads(r[8])})
        backend.sql("UPDATE audit SET prev_hash=?, hash=?, reason_salt=NULL, reason_commit=NULL "
                    "WHERE seq=?", (prev, digest, r[0]))
        prev = digest
        hashes.append(digest)
    backend.sql("UPDATE meta SET value=? WHERE key=?", (json.dumps(
        {"count": len(rows), "seq": rows[-1][0], "hash": prev}), AUDIT_HEAD))
    # the legacy records verify as they are (the commitment columns are NULL), and verify
    # says that forget cannot remove their reasons
    ok, message = verify_chain(lambda sql, params=(): backend.sql(sql, tuple(params)))
    assert ok and message.startswith("audit chain intact") and "forget cannot remove" in message
    backend.sql("DROP INDEX audit_by", ())
    for column in ("reason_salt", "reason_commit", "legacy_hash"):
        backend.sql(f"ALTER TABLE audit DROP COLUMN {column}", ())
    backend.sql("UPDATE meta SET value=? WHERE key='schema_version'", (backend.legacy_schema,))
    return hashes


def _holding(backend: Backend, path: Path, needle: str) -> bool:
    """Whether the database still holds ``needle``: any file of the SQLite vault, any live
    row of the PostgreSQL audit table."""
    if backend.name == "sqlite":
        return any(needle.encode() in p.read_bytes() for p in path.parent.iterdir() if p.is_file())
    return bool(backend.sql("SELECT 1 FROM audit a WHERE a::text LIKE ?", (f"%{needle}%",)))


def test_the_upgrade_converts_legacy_records_and_removes_forgotten_reasons(
        backend: Backend, tmp_path: Path) -> None:
    vault = backend.open()
    made = _memories(vault)
    later = cube("Alice's locker is 7781.")  # forgotten after the upgrade
    vault.insert([later], Actor("alice", None, "locker LOCKER-7781"))
    vault.close()
    old = _make_legacy(backend, {made["gone"].id: f"user said: my passport is {SECRET}"})
    assert _holding(backend, tmp_path / "vault.sqlite3", SECRET)

    vault = backend.open()
    try:
        assert vault.get_meta("schema_version") == backend.schema
        rows = backend.sql("SELECT hash, reason_commit, legacy_hash FROM audit ORDER BY seq", ())
        assert all(r[1] is not None for r in rows)
        # a hash copied elsewhere before the upgrade still names its record
        assert [r[2] for r in rows] == old and not {r[0] for r in rows} & set(old)
        assert [r.reason for r in vault.audit_log(memory_id=made["gone"].id)] == [None] * 3
        assert [r.reason for r in vault.audit_log(memory_id=made["live"].id)] == [LIVE_REASON]
        assert vault.verify_audit() == (True, "audit chain intact")
        vault.tombstone(later.id, Actor("alice"))  # a converted record's reason goes now
        assert [r.reason for r in vault.audit_log(memory_id=later.id)] == [None, None]
        assert vault.verify_audit() == (True, "audit chain intact")
        backend.sql("UPDATE audit SET reason='edited' WHERE memory_id=?", (made["live"].id,))
        assert "altered" in vault.verify_audit()[1]
    finally:
        vault.close()
    assert not _holding(backend, tmp_path / "vault.sqlite3", SECRET)


def test_a_legacy_chain_that_does_not_verify_is_left_as_it_is(
        backend: Backend, caplog: pytest.LogCaptureFixture) -> None:
    vault = backend.open()
    made = _memories(vault)
    vault.close()
    _make_legacy(backend, {made["gone"].id: f"user said: my passport is {SECRET}"})
    backend.sql("UPDATE audit SET action='nothing' WHERE memory_id=? AND action='add'",
                (made["live"].id,))
    with caplog.at_level(logging.WARNING, logger="memos_core"):
        vault = backend.open()
    try:
        assert "does not verify" in caplog.text
        assert vault.get_meta("schema_version") == backend.schema
        assert not backend.sql("SELECT 1 FROM audit WHERE reason_commit IS NOT NULL", ())
        ok, message = vault.verify_audit()
        assert not ok and "altered" in message and "forget cannot remove" in message
        # its old records cannot lose their reasons without breaking the chain: they keep them
        assert SECRET in str(vault.audit_log(memory_id=made["gone"].id)[0].reason)
        newer = cube("A note written after the upgrade.")
        vault.insert([newer], Actor("alice", None, f"note {SECRET}"))
        vault.tombstone(newer.id, Actor("alice"))
        assert [r.reason for r in vault.audit_log(memory_id=newer.id)] == [None, None]
        assert vault.verify_audit() == (ok, message)  # the same first problem, no new one
    finally:
        vault.close()
