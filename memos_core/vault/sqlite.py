"""SQLite vault (WAL): the embedded source of truth.

Tables: ``memories`` (the current version of each memory, with the columns filters need),
``versions`` (every version ever written, as JSON), ``usage`` (counters, not versioned: a
retrieval hit is not a change of the memory), ``edges`` (explicit relations) and ``audit``
(append-only and hash-chained; forget removes the reasons of a forgotten memory's records,
which the chain covers through a salted commitment: :mod:`~memos_core.vault.audit_chain`); the integration storage lives in the same file: ``item_keys``
(:mod:`~memos_core.vault.sqlite_keyed`), ``conversation_log``
(:mod:`~memos_core.vault.sqlite_log`) and ``cp_*`` (:mod:`~memos_core.vault.sqlite_checkpoints`). Every mutation runs in one transaction with its audit record,
so a crash leaves either the whole change or none of it.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from memos_core.cube import MemCube, State, Usage, bump_heat, require_canonical_ids, utcnow
from memos_core.errors import (
    ConflictError,
    CorruptDataError,
    MemoryDeletedError,
    MemoryNotFoundError,
    MemOSError,
    first_line,
)
from memos_core.vault.base import (
    Actor,
    AuditRecord,
    Edge,
    ItemKey,
    ListQuery,
    NamespaceGrant,
    OnDamaged,
)
from memos_core.vault.audit_chain import (
    AUDIT_HEAD,
    GENESIS_HASH,
    chain_tail,
    parse_head,
    record_details,
    seal,
    upgrade_sqlite,
    verify_chain,
)
from memos_core.vault import sqlite_checkpoints, sqlite_graph, sqlite_keyed, sqlite_log
from memos_core.vault.grants import SQLiteGrantsMixin, check_grants
from memos_core.vault.sqlite_checkpoints import SQLiteCheckpointsMixin
from memos_core.vault.sqlite_graph import SQLiteGraphMixin, shared_select
from memos_core.vault.sqlite_keyed import (
    SQLiteKeyedMixin,
    bind_imported,
    check_imported_keys,
    drop_bindings,
)
from memos_core.vault.sqlite_log import SQLiteLogMixin
from memos_core.vault.damaged import COLUMNS, stand_in
from memos_core.vault.sqlite_text import damaged, damaged_row, lenient_rows, shown, undecodable
from memos_core.vault.scrub import (
    migrate_drop_digests,
    migrate_scrub_flags,
    rewrite_below,
    scrub,
)

__all__ = ["GENESIS_HASH", "SCHEMA_VERSION", "SQLiteVault", "scrub"]

#: 2: the scrubbed flag and the audit head; 3: no digest of a forgotten text; 4: audit records
#: commit to their reason (``reason_salt``, ``reason_commit``; :mod:`.audit_chain`)
SCHEMA_VERSION = 4

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS memories (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    agent_id TEXT,
    session_id TEXT,
    version INTEGER NOT NULL,
    state TEXT NOT NULL,
    type TEXT NOT NULL,
    tags TEXT NOT NULL,
    readers TEXT NOT NULL,
    occurred_at REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    superseded INTEGER NOT NULL,
    entities TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS memories_user ON memories(user_id, seq);
CREATE INDEX IF NOT EXISTS memories_session ON memories(user_id, session_id, seq);
CREATE INDEX IF NOT EXISTS memories_seq ON memories(seq);
CREATE TABLE IF NOT EXISTS versions (
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    recorded_at REAL NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (id, version)
);
CREATE TABLE IF NOT EXISTS usage (
    id TEXT PRIMARY KEY,
    access_count INTEGER NOT NULL,
    last_access REAL,
    heat REAL NOT NULL,
    tier TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS edges (
    src TEXT NOT NULL, dst TEXT NOT NULL, kind TEXT NOT NULL, PRIMARY KEY (src, dst, kind)
);
CREATE INDEX IF NOT EXISTS edges_dst ON edges(dst);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    user_id TEXT NOT NULL,
    agent_id TEXT,
    action TEXT NOT NULL,
    memory_id TEXT,
    version INTEGER,
    reason TEXT,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    reason_salt TEXT,
    reason_commit TEXT,
    legacy_hash TEXT
);
CREATE INDEX IF NOT EXISTS audit_memory ON audit(memory_id);
CREATE INDEX IF NOT EXISTS audit_user ON audit(user_id, seq);
CREATE INDEX IF NOT EXISTS audit_user_action ON audit(user_id, action, seq);
CREATE INDEX IF NOT EXISTS audit_by
    ON audit(CASE WHEN json_valid(details) THEN json_extract(details, '$.by') END);
CREATE TABLE IF NOT EXISTS grants (
    owner TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    grantee TEXT NOT NULL,
    scope TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (owner, agent_id, session_id, grantee)
);
"""

_CUBE_COLUMNS = "doc"
#: a memory's plain columns, its document and the copy of it in ``versions`` (a stand-in's)
_STAND_IN_SQL = (f"SELECT {', '.join(f'm.{c}' for c in COLUMNS)}, m.doc, v.doc FROM memories m "
                 "LEFT JOIN versions v ON v.id = m.id AND v.version = m.version WHERE m.id=?")
_NOT_UTF8 = "not valid UTF-8: a byte of it was damaged on disk"

logger = logging.getLogger("memos_core")
#: How long a call waits for another connection's lock on the file before it fails.
BUSY_TIMEOUT_MS = 5000


def _ts(dt: datetime | None) -> float | None:
    return None if dt is None else dt.timestamp()


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc)


def _recorded(ts: Any, otherwise: datetime) -> datetime:
    """A version row's ``recorded_at`` as a datetime; ``otherwise`` if it is damaged too."""
    try:
        return _dt(ts) or otherwise
    except (TypeError, ValueError, OverflowError, OSError):
        return otherwise


class SQLiteVault(SQLiteGrantsMixin, SQLiteKeyedMixin, SQLiteLogMixin, SQLiteCheckpointsMixin,
                  SQLiteGraphMixin):
    """The embedded vault. Thread-safe: one connection, serialised by a lock."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        #: memories whose damaged usage counters were logged (once per open vault)
        self._bad_usage: set[str] = set()
        if self.path.is_file() and self.path.stat().st_size == 0:
            raise CorruptDataError(
                f"The vault at {self.path} is an empty file (0 bytes): its memories were lost "
                "(truncated or overwritten). Restore it from a backup or an export bundle; to "
                "start an empty store here instead, delete the file."
            )
        db: sqlite3.Connection | None = None
        try:
            if not self.path.exists():
                self._create()
            db = self._db = self._connect(self.path)
            self._check_schema()
            self._fill_graph_tables()
            self._remove_stale_creations()
            self._fold_leftover_wal()
        except sqlite3.DatabaseError as exc:
            if db is not None:
                db.close()  # a failed open must not keep the file open (or locked)
            translated = self._storage_error(exc)
            if translated is not None and undecodable(exc):
                raise translated from None  # names the column; the driver's message quotes the text
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise MemOSError(
                    f"The vault at {self.path} is locked by another connection ({exc}); close "
                    "the other program using it and retry."
                ) from exc
            if translated is not None and not isinstance(translated, CorruptDataError):
                raise translated from exc  # a full disk, an I/O error: the file may be fine
            raise CorruptDataError(
                f"The vault at {self.path} is not a readable SQLite database ({exc}). "
                "Restore it from a backup or an export bundle (memos import)."
            ) from exc
        except BaseException:
            if db is not None:
                db.close()
            raise

    # -- plumbing -----------------------------------------------------------------------

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        """A connection with the vault's settings and its tables (created if missing)."""
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                             timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable across process crashes
            db.execute("PRAGMA secure_delete=ON")  # forgotten text is zeroed on disk
            db.execute("PRAGMA foreign_keys=ON")
            db.executescript(_SCHEMA + sqlite_keyed.SCHEMA + sqlite_log.SCHEMA
                             + sqlite_checkpoints.SCHEMA + sqlite_graph.SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    def _remove_stale_creations(self) -> None:
        """Delete the private files of openers that died in :meth:`_create` (empty schemas)."""
        for leftover in self.path.parent.glob(f".{self.path.name}.new-*"):
            pid = leftover.name.split(".new-", 1)[1].split("-", 1)[0]
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                leftover.unlink(missing_ok=True)
            except (ValueError, PermissionError):
                continue

    def _fold_leftover_wal(self) -> None:
        """Fold a WAL found at open into the file and truncate it. A clean close leaves it
        empty; a process killed between a forget's tombstone and the truncation after it
        left page images holding the forgotten text there, which nothing else removed
        before the next forget or close."""
        wal = self.path.with_name(self.path.name + "-wal")
        if wal.is_file() and wal.stat().st_size > 0:
            busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy:  # pragma: no cover - the data directory lock keeps other writers out
                logger.warning("could not truncate the WAL of %s found at open", self.path)

    def _create(self) -> None:
        """Create a new vault file whole or not at all.

        The tables and schema version are written to a private file that is then linked into
        place, so a crash during the first open leaves either no vault or a complete empty
        one, never the zero-byte file that means "truncated" (refused above). ``os.link``
        fails if another opener got there first; its file is then the vault.
        """
        tmp = self.path.with_name(f".{self.path.name}.new-{os.getpid()}-{threading.get_ident()}")
        try:
            self._db = self._connect(tmp)
            try:
                self._check_schema()
            finally:
                self._db.close()  # the last connection: SQLite folds the WAL into the file
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass
        finally:
            for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
                leftover.unlink(missing_ok=True)

    def _check_schema(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is not None and int(row[0]) > SCHEMA_VERSION:
            raise MemOSError(
                f"The vault at {self.path} has schema {row[0]}, newer than this memos-core "
                f"understands ({SCHEMA_VERSION}). Upgrade memos-core."
            )
        if row is not None and int(row[0]) == SCHEMA_VERSION:
            return
        found = None if row is None else int(row[0])
        rewritten, problem = 0, None
        with self._tx() as db:
            if found is not None and found < 2:  # schema 1: flag the versions its forget scrubbed
                migrate_scrub_flags(db)
            if found is not None and found < 3:  # schemas 1 and 2 kept a digest of each forgotten text
                rewritten = migrate_drop_digests(db)
            if found is None or found < 2:
                # a new vault's head is the genesis; one from before the head record gets its
                # current tail (the chain before this point is trusted as found, as far as a
                # cut tail goes); a later one keeps its head, which the upgrade checks
                db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                           (AUDIT_HEAD, json.dumps(chain_tail(db))))
            if found is not None:  # schema 3 -> 4: audit records commit to their reasons
                converted, problem = upgrade_sqlite(db)
                rewritten += converted
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)",
                       (str(SCHEMA_VERSION),))
        if problem is not None:
            logger.warning("The audit log of %s does not verify (%s): its records were left as "
                           "they are, and forget cannot remove the reasons of those written "
                           "before schema 4.", self.path, problem)
        if rewritten:  # the WAL still holds the pages with the digests or the reasons
            with self._lock:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _damaged(self, what: str, problem: Exception | str, memory_id: str | None = None
                 ) -> CorruptDataError:
        """The error for one damaged record: ``what`` names it, ``problem`` says what is
        wrong (an exception's first line); never the record's text."""
        if isinstance(problem, Exception):
            problem = first_line(problem)
        advice = ("Restore the vault from a backup or an export bundle (memos import)"
                  if memory_id is None else
                  f"Its owner can forget it (memos forget {memory_id}), or restore the vault "
                  "from a backup or an export bundle (memos import); it is left out of the "
                  "index, lists, searches and exports meanwhile")
        return CorruptDataError(
            f"The vault at {self.path} holds a damaged record: {shown(what)} ({problem}). "
            f"{advice}.", memory_id=memory_id)

    def _cube(self, doc: str, what: str, memory_id: str | None = None) -> MemCube:
        """A stored document as a MemCube; a damaged one is a :class:`CorruptDataError`
        naming it (not a pydantic traceback), with ``memory_id`` for a current record. A
        document read by a ``lenient`` :meth:`_query` may hold bytes that are not UTF-8."""
        if damaged(doc):
            raise self._damaged(what, f"its stored text is {_NOT_UTF8}", memory_id)
        try:
            return MemCube.model_validate_json(doc)
        except (ValidationError, ValueError, TypeError) as exc:
            raise self._damaged(what, exc, memory_id) from None

    def _storage_error(self, exc: sqlite3.DatabaseError) -> MemOSError | None:
        """What SQLite's error means for the user: a damaged file (:class:`CorruptDataError`,
        restore it), a full disk or an I/O failure (:class:`MemOSError`: the file may be
        intact, do not restore it), or None for anything else (a bug, raised as is)."""
        column = undecodable(exc)
        if column is not None:  # the driver's message quotes the damaged text: not repeated
            return CorruptDataError(
                f"The vault at {self.path} holds a damaged record: a stored text (column "
                f"{column!r}) is {_NOT_UTF8}. Restore the vault from a backup or an export bundle "
                "(memos import).")
        code = getattr(exc, "sqlite_errorname", "") or ""
        if code in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or type(exc) is sqlite3.DatabaseError:
            return CorruptDataError(
                f"The vault at {self.path} is damaged ({exc}). Restore it from a backup or an "
                "export bundle (memos import).")
        if code == "SQLITE_FULL" or "disk is full" in str(exc):
            return MemOSError(f"The disk holding {self.path} is full ({exc}); nothing was "
                              "written. Free some space and retry: the vault is not damaged.")
        if code.startswith(("SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN")):
            return MemOSError(f"The vault at {self.path} could not be read or written ({exc}). "
                              "Check the disk and the file's permissions, then retry.")
        return None

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction; commits on success, rolls back on any exception. A
        damaged file, a full disk or an I/O failure is a :class:`MemOSError` that says so."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                translated = self._storage_error(exc)
                if translated is None:
                    raise
                raise translated from (None if undecodable(exc) else exc)

    def _query(self, sql: str, params: Sequence[Any] = (), *,
               lenient: bool = False) -> list[tuple[Any, ...]]:
        """The rows of ``sql``. A stored text that is not valid UTF-8 (a damaged byte) is a
        :class:`CorruptDataError` naming its column; with ``lenient`` the rows are read again
        with such text decoded with surrogate escapes instead (:mod:`.sqlite_text`), for a
        caller that checks them and names the damaged record (:meth:`_cube`)."""
        with self._lock:
            try:
                try:
                    return self._db.execute(sql, params).fetchall()
                except sqlite3.OperationalError as exc:
                    if not (lenient and undecodable(exc)):
                        raise
                return lenient_rows(self._db, sql, params)
            except sqlite3.DatabaseError as exc:
                translated = self._storage_error(exc)
                if translated is None:
                    raise
                raise translated from (None if undecodable(exc) else exc)

    def checkpoint(self) -> None:
        """Rebuild the database file (``VACUUM``), then copy the WAL into it and truncate
        the WAL to zero bytes.

        ``secure_delete`` zeroes the space a deleted or shrunk row frees, but not every
        stale copy of a row: when SQLite rebalances a table's pages it moves live rows to
        a neighbouring page and rebuilds the page without zeroing the space they left, so
        a row that moved once and is scrubbed later can keep an old copy there (found by a
        crash-consistency probe, rarely; ``tests/vault/test_vault_rebuild.py`` makes such
        copies in a table whose rows change size). ``VACUUM`` writes every live row into
        fresh pages, which leaves no such copy. After a forget, the WAL still holds the page images
        written before the tombstone (the original text among them) until they are
        checkpointed and overwritten; truncating removes them from disk at once.

        Raises:
            MemOSError: the WAL could not be truncated (another connection reads it).
        """
        self._checkpoint(wait=True, rebuild=True)

    def _checkpoint(self, *, wait: bool, rebuild: bool) -> None:
        """:meth:`checkpoint` (``rebuild``: with the ``VACUUM``); with ``wait=False`` it
        does not wait for another connection's reads to end (up to the connection's 5 s busy
        timeout, with every other call of this vault held behind the lock meanwhile) but
        reports them at once."""
        with self._lock:
            if not wait:
                self._db.execute("PRAGMA busy_timeout=0")
            try:
                try:
                    if rebuild:  # (no transaction is open under the lock)
                        self._db.execute("VACUUM")
                except sqlite3.OperationalError as exc:  # a full disk: VACUUM needs a copy
                    raise MemOSError(
                        f"Could not rebuild {self.path} after a delete ({exc}): stale copies "
                        "of deleted rows may stay in the file until it is rebuilt. Free disk "
                        "space (a rebuild needs room for a copy of the vault) and forget the "
                        "memory again: that rebuilds it too.") from exc
                busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                if not wait:
                    self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if busy:
            raise MemOSError(
                f"Could not truncate the WAL of {self.path}: another connection is reading it. "
                "Close other readers of the vault and call checkpoint() again."
            )

    def _truncate_after_delete(self, count: int, what: str) -> None:
        """After a commit that deleted ``count`` rows of ``what`` (conversation messages,
        thread checkpoints): truncate the WAL, so that their text leaves the disk when the
        delete returns (``secure_delete`` zeroed it in the file; the WAL keeps the pages
        written before until it is truncated, at the next forget or close, maybe hours
        away). Another connection reading the vault only delays that, with a warning: the
        delete is committed, and this call does not wait for the reader (a delete is not
        worth holding every other call of the vault for). The file is not rebuilt (a
        ``VACUUM`` grows with the vault, about 0.75 s at 50,000 memories): a stale copy
        page rebalancing left of a deleted row goes at the next forget (:meth:`checkpoint`)."""
        if count:
            try:
                self._checkpoint(wait=False, rebuild=False)
            except MemOSError as exc:
                logger.warning("Deleted %d %s, but %s", count, what, exc)

    def close(self) -> None:
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self._db.close()

    # -- meta ------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key=?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def meta_items(self, prefix: str) -> list[tuple[str, str]]:
        # substr, not LIKE: a prefix may hold % or _
        rows = self._query("SELECT key, value FROM meta WHERE substr(key, 1, ?) = ? ORDER BY key",
                           (len(prefix), prefix))
        return [(str(k), str(v)) for k, v in rows]

    # -- writes ----------------------------------------------------------------------------

    def _write_current(self, db: sqlite3.Connection, cube: MemCube, seq: int | None) -> None:
        doc = cube.model_dump_json(exclude={"usage"})
        if seq is None:
            row = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM memories").fetchone()
            seq = int(row[0])
        db.execute(
            "INSERT OR REPLACE INTO memories(id, seq, user_id, agent_id, session_id, version, "
            "state, type, tags, readers, occurred_at, created_at, updated_at, superseded, entities, "
            "doc) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                cube.id, seq, cube.namespace.user_id, cube.namespace.agent_id,
                cube.namespace.session_id, cube.version, cube.state.value, cube.type.value,
                json.dumps(list(cube.tags)), json.dumps(list(cube.governance.readers)),
                _ts(cube.occurred_at), _ts(cube.created_at), _ts(cube.updated_at),
                int(cube.valid_to is not None), json.dumps(list(cube.entities)), doc,
            ),
        )
        db.execute(
            "INSERT INTO versions(id, version, recorded_at, doc) VALUES (?,?,?,?)",
            (cube.id, cube.version, _ts(cube.updated_at), doc),
        )

    def _audit(self, db: sqlite3.Connection, actor: Actor, action: str,
               memory_id: str | None, version: int | None, details: dict[str, Any]) -> None:
        row = db.execute("SELECT hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        prev = row[0] if row else GENESIS_HASH
        at = utcnow().timestamp()
        sealed = seal(prev, {"at": at, "user_id": actor.user_id, "agent_id": actor.agent_id,
                             "action": action, "memory_id": memory_id, "version": version,
                             "details": details}, actor.reason)
        cursor = db.execute(
            "INSERT INTO audit(at, user_id, agent_id, action, memory_id, version, reason, "
            "details, prev_hash, hash, reason_salt, reason_commit) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (at, actor.user_id, actor.agent_id, action, memory_id, version, actor.reason,
             json.dumps(details, sort_keys=True, default=str), prev, sealed.hash, sealed.salt,
             sealed.commit),
        )
        head = db.execute("SELECT value FROM meta WHERE key=?", (AUDIT_HEAD,)).fetchone()
        count = (parse_head(head[0]) or {}).get("count", 0) if head else 0
        db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (AUDIT_HEAD, json.dumps(
            {"count": int(count) + 1, "seq": cursor.lastrowid, "hash": sealed.hash})))

    @staticmethod
    def _scrub_reasons(db: sqlite3.Connection, memory_id: str) -> None:
        """Remove the reasons of the forgotten memory's audit records -- its own and those its
        writing operation made (``details['by']``: a fact it superseded, the sources a summary
        archived) -- with their salts; the commitments stay, so the chain still verifies.
        Records without a commitment (older ones the schema 4 upgrade could not convert) keep
        theirs: their hash covers it."""
        for where in ("memory_id=?",  # the index's expression: damaged details read as NULL
                      "CASE WHEN json_valid(details) THEN json_extract(details, '$.by') END=?"):
            db.execute("UPDATE audit SET reason=NULL, reason_salt=NULL "
                       f"WHERE {where} AND reason_salt IS NOT NULL", (memory_id,))

    def audit(self, actor: Actor, action: str, memory_id: str | None = None,
              version: int | None = None, details: dict[str, Any] | None = None) -> None:
        """Record an operation that changes no memory (an export, a share, a schedule run)."""
        with self._tx() as db:
            self._audit(db, actor, action, memory_id, version, details or {})

    def insert(self, cubes: Sequence[MemCube], actor: Actor, action: str = "add", *,
               replacements: Sequence[tuple[MemCube, int]] = (), edges: Sequence[Edge] = (),
               replacement_action: str = "supersede",
               grants: Sequence[NamespaceGrant] | None = None) -> None:
        """Store new memories in one transaction, with optional new versions of existing ones
        (``(cube, expected_version)``: a fact the new one supersedes, sources a summary
        archives) and relations; see :meth:`memos_core.vault.base.Vault.insert`."""
        require_canonical_ids([*cubes, *(c for c, _ in replacements)])
        with self._tx() as db:
            check_grants(db, cubes, grants)
            self._insert(db, cubes, actor, action)
            for cube, expected in replacements:
                self._put_version(db, cube, expected, actor, replacement_action, {"by": cubes[-1].id})
            db.executemany(
                "INSERT OR IGNORE INTO edges(src, dst, kind) VALUES (?,?,?)",
                [(e.src, e.dst, e.kind) for e in edges],
            )

    def _insert(self, db: sqlite3.Connection, cubes: Sequence[MemCube], actor: Actor,
                action: str) -> None:
        row = db.execute("SELECT COALESCE(MAX(seq), 0) FROM memories").fetchone()
        seq = int(row[0])
        for cube in cubes:
            if db.execute("SELECT 1 FROM memories WHERE id=?", (cube.id,)).fetchone():
                raise MemOSError(f"A memory with id {cube.id} already exists; use update.")
            seq += 1
            self._write_current(db, cube, seq)
            db.execute(
                "INSERT OR REPLACE INTO usage(id, access_count, last_access, heat, tier) "
                "VALUES (?,?,?,?,?)",
                (cube.id, cube.usage.access_count, _ts(cube.usage.last_access),
                 cube.usage.heat, cube.usage.tier.value),
            )
            details: dict[str, Any] = {"session_id": cube.namespace.session_id, "type": cube.type.value}
            if cube.governance.readers:  # born shared (a namespace grant, a superseded memory's shares)
                details["shared_with"] = {u: "write" if u in cube.governance.writers else "read"
                                          for u in cube.governance.readers}
            self._audit(db, actor, action, cube.id, cube.version, details)

    def import_histories(self, histories: Sequence[Sequence[MemCube]], edges: Sequence[Edge],
                         actor: Actor, keys: Sequence[tuple[ItemKey, str]] = ()) -> int:
        """Write whole version histories (from a bundle), relations and key bindings in one
        transaction; returns how many keys were bound."""
        require_canonical_ids(c for versions in histories for c in versions)
        check_imported_keys(histories, keys)
        with self._tx() as db:
            for versions in histories:
                if versions and db.execute("SELECT 1 FROM memories WHERE id=?",
                                           (versions[0].id,)).fetchone():
                    raise ConflictError(f"Memory {versions[0].id} exists already; nothing was "
                                        "imported. Import again: memories that exist are "
                                        "skipped.")
            row = db.execute("SELECT COALESCE(MAX(seq), 0) FROM memories").fetchone()
            seq = int(row[0])
            for versions in histories:
                seq += 1
                for cube in versions:
                    self._write_current(db, cube, seq)
                last = versions[-1]
                db.execute(
                    "INSERT OR REPLACE INTO usage(id, access_count, last_access, heat, tier) "
                    "VALUES (?,?,?,?,?)", (last.id, 0, None, 0.0, "plaintext"),
                )
                self._audit(db, actor, "import", last.id, last.version, {})
            db.executemany(
                "INSERT OR IGNORE INTO edges(src, dst, kind) VALUES (?,?,?)",
                [(e.src, e.dst, e.kind) for e in edges],
            )
            return bind_imported(db, keys)

    def put_version(self, cube: MemCube, expected_version: int, actor: Actor, action: str,
                    details: dict[str, Any] | None = None, *,
                    rewrite_earlier: Callable[[MemCube], MemCube | None] | None = None) -> None:
        """Write ``cube`` as the next version; raises if someone else wrote in between.
        ``rewrite_earlier``: the earlier versions rewritten in the same transaction."""
        with self._tx() as db:
            self._put_version(db, cube, expected_version, actor, action, details or {})
            if rewrite_earlier is not None:
                rewrite_below(db, "?", cube.id, cube.version, rewrite_earlier)

    def put_versions(self, changes: Sequence[tuple[MemCube, int]], actor: Actor, action: str,
                     details: dict[str, Any] | None = None) -> None:
        """Several :meth:`put_version` calls as one transaction (e.g. a fact and its supersession)."""
        with self._tx() as db:
            for cube, expected in changes:
                self._put_version(db, cube, expected, actor, action, details or {})

    def _put_version(self, db: sqlite3.Connection, cube: MemCube, expected_version: int,
                     actor: Actor, action: str, details: dict[str, Any]) -> None:
        row = db.execute("SELECT version, seq, state FROM memories WHERE id=?", (cube.id,)).fetchone()
        if row is None:
            raise MemoryNotFoundError(f"No memory with id {cube.id!r}.")
        if row[2] == State.DELETED.value:
            raise MemoryDeletedError(f"Memory {cube.id} was forgotten; it cannot be changed.")
        if row[0] != expected_version or cube.version != expected_version + 1:
            raise ConflictError(
                f"Memory {cube.id} is at version {row[0]}, not {expected_version}: it changed "
                "concurrently. Read it again and retry."
            )
        self._write_current(db, cube, int(row[1]))
        self._audit(db, actor, action, cube.id, cube.version, details)

    def tombstone(self, memory_id: str, actor: Actor,
                  details: dict[str, Any] | None = None) -> MemCube:
        """Forget a memory: scrub its text from every version and write a tombstone version.

        The tombstone keeps the id, namespace and version history shape; nothing of the text
        stays in the vault, not even a digest (SQLite's secure_delete zeroes freed pages).
        """
        with self._tx() as db:
            # read leniently: a damaged record (its owner forgets it) gets a stand-in from its
            # columns, and each of its versions is scrubbed as well
            rows = lenient_rows(db, _STAND_IN_SQL, (memory_id,))
            if not rows:
                raise MemoryNotFoundError(f"No memory with id {memory_id!r}.")
            try:
                cube = self._cube(rows[0][-2], f"memory {memory_id}", memory_id)
            except CorruptDataError:
                cube = self._stand_in(rows[0])[0]
            if cube.state is State.DELETED:
                return cube
            self._scrub_versions(db, memory_id, cube)
            tomb = scrub(cube).model_copy(
                update={"version": cube.version + 1, "state": State.DELETED, "updated_at": utcnow()}
            )
            self._put_version(db, tomb, cube.version, actor, "forget", details or {})
            self._scrub_reasons(db, memory_id)  # the forget's own reason too: it may repeat it
            self._drop_for_tombstone(db, memory_id)
            return tomb

    def _drop_for_tombstone(self, db: sqlite3.Connection, memory_id: str) -> None:
        """A tombstone's key bindings, usage counters and relations go, but for the
        ``derived_from`` relations of its summaries: the forget's cascade reads those after
        the tombstone commits, then drops them (:meth:`drop_relations`)."""
        drop_bindings(db, memory_id)
        db.execute("DELETE FROM usage WHERE id=?", (memory_id,))
        db.execute("DELETE FROM edges WHERE src=? OR (dst=? AND kind<>'derived_from')",
                   (memory_id, memory_id))

    def drop_relations(self, memory_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM edges WHERE src=? OR dst=?", (memory_id, memory_id))

    def unfinished_forgets(self) -> list[str]:
        rows = self._query(
            "SELECT DISTINCT e.dst FROM edges e JOIN memories m ON m.id = e.dst "
            "WHERE e.kind='derived_from' AND m.state=? ORDER BY e.dst", (State.DELETED.value,))
        return [r[0] for r in rows]

    def scrub_tombstone(self, memory_id: str) -> int:
        """Scrub every version of the forgotten memory ``memory_id`` that still holds content
        (its ``scrubbed`` flag is not set) and drop what :meth:`tombstone` drops; returns how
        many versions were scrubbed (0 for a proper tombstone, or for a memory that is not forgotten).

        A repair for tombstones written by something other than :meth:`tombstone`."""
        with self._tx() as db:
            row = db.execute("SELECT state FROM memories WHERE id=?", (memory_id,)).fetchone()
            if row is None or row[0] != State.DELETED.value:
                return 0
            scrubbed = self._scrub_versions(db, memory_id)
            cur = db.execute("SELECT doc FROM memories WHERE id=?", (memory_id,)).fetchone()
            current = MemCube.model_validate_json(cur[0])
            if not current.scrubbed:
                db.execute("UPDATE memories SET doc=?, tags='[]', entities='[]' WHERE id=?",
                           (scrub(current).model_dump_json(exclude={"usage"}), memory_id))
            self._scrub_reasons(db, memory_id)
            self._drop_for_tombstone(db, memory_id)
            return scrubbed

    def redact_versions(self, memory_id: str, rewrite: Callable[[MemCube], MemCube | None], *,
                        below: int) -> int:
        with self._tx() as db:
            return rewrite_below(db, "?", memory_id, below, rewrite)

    def _scrub_versions(self, db: sqlite3.Connection, memory_id: str,
                        current: MemCube | None = None) -> int:
        """Scrub the unscrubbed versions of ``memory_id`` in place; returns how many. A
        damaged version (not UTF-8, not a MemCube) is replaced by ``current`` scrubbed,
        numbered as it was; without ``current`` it raises :class:`CorruptDataError`."""
        count = 0
        for vid, vdoc, recorded in lenient_rows(
                db, "SELECT version, doc, recorded_at FROM versions WHERE id=?", (memory_id,)):
                try:
                    old = self._cube(vdoc, f"version {vid} of memory {memory_id}")
                except CorruptDataError:
                    if current is None:
                        raise
                    # its own time: as of then, get gives this version (and an export of the
                    # history keeps its versions in time order)
                    old = current.model_copy(update={
                        "version": vid, "updated_at": _recorded(recorded, current.updated_at)})
                if old.scrubbed:
                    continue
                db.execute(
                    "UPDATE versions SET doc=? WHERE id=? AND version=?",
                    (scrub(old).model_dump_json(exclude={"usage"}), memory_id, vid),
                )
                count += 1
        return count

    def record_usage(self, memory_ids: Iterable[str], now: datetime, half_life_s: float) -> None:
        """Count a retrieval hit on each memory: access count +1, heat decayed then +1."""
        ids = list(dict.fromkeys(memory_ids))
        if not ids:
            return
        t = now.timestamp()
        with self._tx() as db:
            for mid in ids:
                row = db.execute(
                    "SELECT access_count, last_access, heat FROM usage WHERE id=?", (mid,)
                ).fetchone()
                if row is None:
                    continue
                heat = bump_heat(row[2], _dt(row[1]), now, half_life_s)
                db.execute(
                    "UPDATE usage SET access_count=?, last_access=?, heat=? WHERE id=?",
                    (row[0] + 1, t, heat, mid),
                )

    def set_tier(self, memory_id: str, tier: str, *, expected: str | None = None) -> bool:
        with self._tx() as db:
            if expected is None:
                cur = db.execute("UPDATE usage SET tier=? WHERE id=?", (tier, memory_id))
            else:
                cur = db.execute("UPDATE usage SET tier=? WHERE id=? AND tier=?",
                                 (tier, memory_id, expected))
            return cur.rowcount > 0

    def add_edges(self, edges: Sequence[Edge]) -> None:
        with self._tx() as db:
            db.executemany(
                "INSERT OR IGNORE INTO edges(src, dst, kind) VALUES (?,?,?)",
                [(e.src, e.dst, e.kind) for e in edges],
            )

    # -- reads -----------------------------------------------------------------------------

    def _by_ids(self, select: str, ids: Sequence[str], *,
                lenient: bool = False) -> list[tuple[Any, ...]]:
        """The rows of ``select`` (a ``SELECT ... FROM table`` with an ``id`` column) whose
        id is among ``ids``, read 500 ids per statement (SQLite's parameter limit);
        ``lenient`` as in :meth:`_query`."""
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(ids), 500):
            chunk = list(ids[start:start + 500])
            rows += self._query(f"{select} WHERE id IN ({','.join('?' * len(chunk))})", chunk,
                                lenient=lenient)
        return rows

    def _with_usage(self, docs: list[tuple[str, str]],
                    on_damaged: OnDamaged | None = None) -> list[MemCube]:
        """Parse documents (read ``lenient``: a damaged one is named by :meth:`_cube`) and
        attach their usage counters. A damaged memory raises, or with ``on_damaged`` is
        passed to it and left out. Damaged usage counters are not a damaged memory: they are
        no version, only a count of hits, so the memory comes with fresh ones (logged once)."""
        if not docs:
            return []
        usage: dict[str, Usage] = {}
        for mid, count, last, heat, tier in self._by_ids(
                "SELECT id, access_count, last_access, heat, tier FROM usage",
                [d[0] for d in docs], lenient=True):
            try:
                usage[mid] = Usage(access_count=count, last_access=_dt(last), heat=heat, tier=tier)
            except (ValidationError, ValueError, TypeError, OverflowError) as exc:
                if mid not in self._bad_usage:
                    self._bad_usage.add(mid)
                    logger.warning("The usage counters of memory %s in %s are damaged (%s): it "
                                   "is read with fresh counters; the memory itself is intact.",
                                   mid, self.path, first_line(exc))
        out = []
        for mid, doc in docs:
            try:
                cube = self._cube(doc, f"memory {mid}", mid)
            except CorruptDataError as exc:
                if on_damaged is None:
                    raise exc from None
                on_damaged(exc)
                continue
            if mid in usage:
                cube = cube.model_copy(update={"usage": usage[mid]})
            out.append(cube)
        return out

    def get(self, memory_id: str) -> MemCube | None:
        rows = self._query("SELECT id, doc FROM memories WHERE id=?", (memory_id,), lenient=True)
        cubes = self._with_usage(rows)
        return cubes[0] if cubes else None

    def get_many(self, memory_ids: Sequence[str], *,
                 on_damaged: OnDamaged | None = None) -> dict[str, MemCube]:
        rows = self._by_ids("SELECT id, doc FROM memories", list(dict.fromkeys(memory_ids)),
                            lenient=True)
        return {c.id: c for c in self._with_usage(rows, on_damaged)}

    def texts(self, memory_ids: Sequence[str], *,
              on_damaged: OnDamaged | None = None) -> dict[str, str]:
        ids = list(dict.fromkeys(memory_ids))
        try:
            rows = self._by_ids("SELECT id, json_extract(doc, '$.text') FROM memories", ids,
                                lenient=True)
        except sqlite3.OperationalError as exc:
            if "malformed JSON" not in str(exc):
                raise
            # a document cut short fails the whole statement: read again, checking each
            rows = self._by_ids("SELECT id, CASE WHEN json_valid(doc) THEN "
                                "json_extract(doc, '$.text') END FROM memories", ids,
                                lenient=True)
        found: dict[str, str] = {}
        for mid, text in rows:
            if isinstance(text, str) and not damaged_row((mid, text)):
                found[mid] = text
                continue
            problem = (f"its stored text is {_NOT_UTF8}" if text is not None
                       else "its stored document is not a memory record: JSON cut short "
                            "or overwritten")
            error = self._damaged(f"memory {mid}", problem, mid)
            if on_damaged is None:
                raise error
            on_damaged(error)
        return found

    def get_version(self, memory_id: str, version: int) -> MemCube | None:
        rows = self._query(
            "SELECT doc FROM versions WHERE id=? AND version=?", (memory_id, version), lenient=True
        )
        return self._cube(rows[0][0], f"version {version} of memory {memory_id}") if rows else None

    def get_as_of(self, memory_id: str, when: datetime) -> MemCube | None:
        """The version that was current at ``when`` (None if the memory did not exist yet)."""
        rows = self._query(
            "SELECT doc FROM versions WHERE id=? AND recorded_at<=? ORDER BY version DESC LIMIT 1",
            (memory_id, when.timestamp()), lenient=True,
        )
        return self._cube(rows[0][0], f"a version of memory {memory_id}") if rows else None

    def history(self, memory_id: str) -> list[MemCube]:
        rows = self._query(
            "SELECT doc FROM versions WHERE id=? ORDER BY version", (memory_id,), lenient=True
        )
        return [self._cube(r[0], f"a version of memory {memory_id}") for r in rows]

    def _where(self, q: ListQuery) -> tuple[list[str], list[Any]]:
        """The conditions (to be joined by ``AND``, on unqualified ``memories`` columns) and
        parameters of the filters of ``q`` other than its users (:meth:`_select` adds those)."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("agent_id", q.agent_id), ("session_id", q.session_id)):
            if value is not None:
                clauses.append(f"{column}=?")
                params.append(value)
        for column, values in (("type", q.types), ("state", q.states)):
            if values is not None:
                clauses.append(f"{column} IN ({','.join('?' * len(values))})")
                params += list(values)
        if q.tags:
            clauses.append(
                f"EXISTS (SELECT 1 FROM json_each(tags) WHERE value IN ({','.join('?' * len(q.tags))}))"
            )
            params += list(q.tags)
        if q.occurred_after is not None:
            clauses.append("occurred_at >= ?")
            params.append(q.occurred_after.timestamp())
        if q.occurred_before is not None:
            clauses.append("occurred_at <= ?")
            params.append(q.occurred_before.timestamp())
        if not q.include_superseded:
            clauses.append("superseded = 0")
        for key, value in q.metadata_equals.items():
            path = f'$.metadata."{key}"'
            if isinstance(value, bool):  # json_extract reads true as 1: compare the JSON type
                clauses.append("json_type(doc, ?) = ?")
                params += [path, "true" if value else "false"]
            else:
                clauses.append("json_extract(doc, ?) = ? AND json_type(doc, ?) NOT IN "
                               "('true', 'false')")
                params += [path, value, path]
        if q.contains_any is not None:
            groups = ["(" + " AND ".join(["instr(doc, ?) > 0"] * len(g)) + ")"
                      for g in q.contains_any if g]
            clauses.append("(" + (" OR ".join(groups) or "0") + ")")
            params += [s for g in q.contains_any if g for s in g]
        return clauses, params

    def _select(self, q: ListQuery, columns: Sequence[str]) -> tuple[str, list[Any]]:
        """``SELECT`` of the ``memories`` ``columns`` (names) of the memories ``q`` selects
        (unordered; with ``seq`` among them, ready for ``ORDER BY seq``). The memories users
        own and those shared with them are ``SELECT``s joined by ``UNION ALL``: one ``OR`` of
        the two would read every memory of the store (no index serves it), and ``ORDER BY
        seq`` then merges index-ordered reads -- the shared ones' through ``memory_readers``'
        ``(reader, seq)`` key (:func:`.sqlite_graph.shared_select`), so that a page stops
        after its rows however many are shared with the users. Without ``q.shared`` only the
        first: the shared ones are not even read."""
        clauses, params = self._where(q)
        own = ", ".join(f"m.{c}" for c in columns)
        if q.user_ids is None:
            where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
            return f"SELECT {own} FROM memories m{where}", params
        users = list(dict.fromkeys(q.user_ids))
        rest = "".join(f" AND {c}" for c in clauses)
        marks = ",".join("?" * len(users))
        sql = f"SELECT {own} FROM memories m WHERE m.user_id IN ({marks}){rest}"
        if not q.shared or not users:
            return sql, [*users, *params]
        shared, more = shared_select(columns, users, rest, params)
        return f"{sql} UNION ALL {shared}", [*users, *params, *more]

    def list(self, query: ListQuery, *, on_damaged: OnDamaged | None = None) -> list[MemCube]:
        sql, params = self._select(query, ("id", "doc", "seq"))
        order = "DESC" if query.newest_first else "ASC"
        rows = self._query(f"{sql} ORDER BY seq {order} LIMIT ? OFFSET ?",
                           [*params, query.limit, query.offset], lenient=True)
        return self._with_usage([(r[0], r[1]) for r in rows], on_damaged)

    def damaged_stand_in(self, memory_id: str) -> tuple[MemCube, str] | None:
        """For a memory whose stored document is damaged: a stand-in built from its plain
        columns and what of the document (or of its copy in ``versions``) can be read
        (:func:`.damaged.stand_in`), with what became of its text; None for an unknown id."""
        rows = self._query(_STAND_IN_SQL, (memory_id,), lenient=True)
        return self._stand_in(rows[0]) if rows else None

    def _stand_in(self, row: Sequence[Any]) -> tuple[MemCube, str]:
        """:meth:`damaged_stand_in` of a row of :data:`_STAND_IN_SQL`."""
        try:
            columns = dict(zip(COLUMNS, row))
            for key in ("occurred_at", "created_at", "updated_at"):  # epoch seconds there
                columns[key] = _dt(columns[key])
            return stand_in(columns, row[-2], row[-1])
        except (ValidationError, ValueError, TypeError, OverflowError) as exc:
            raise self._damaged(f"columns of memory {row[0]}", exc) from None

    def count(self, query: ListQuery | None = None) -> int:
        sql, params = self._select(query or ListQuery(), ("seq",))
        return int(self._query(f"SELECT COUNT(*) FROM ({sql})", params)[0][0])

    def iter_current(self, batch_size: int = 1000, *,
                     on_damaged: OnDamaged | None = None) -> Iterator[builtins.list[MemCube]]:
        """Every memory (tombstones included), in insertion order, in batches."""
        last = 0
        while True:
            rows = self._query(
                "SELECT seq, id, doc FROM memories WHERE seq > ? ORDER BY seq LIMIT ?",
                (last, batch_size), lenient=True,
            )
            if not rows:
                return
            last = rows[-1][0]
            yield self._with_usage([(r[1], r[2]) for r in rows], on_damaged)

    def current_versions(self) -> dict[str, tuple[int, str]]:
        """{id: (version, state)} for every memory; reconciliation compares it with the index."""
        return {r[0]: (r[1], r[2]) for r in self._query("SELECT id, version, state FROM memories")}

    def graph_rows(self) -> builtins.list[dict[str, Any]]:
        """The fields the graph and filters need, for every memory, without parsing documents."""
        rows = self._query(
            "SELECT id, seq, user_id, agent_id, session_id, version, state, type, tags, readers, "
            "occurred_at, superseded, entities FROM memories ORDER BY seq"
        )
        keys = ("id", "seq", "user_id", "agent_id", "session_id", "version", "state", "type",
                "tags", "readers", "occurred_at", "superseded", "entities")
        out = []
        for r in rows:
            row = dict(zip(keys, r))
            for k in ("tags", "readers", "entities"):
                row[k] = json.loads(row[k])
            row["superseded"] = bool(row["superseded"])
            out.append(row)
        return out

    def edges(self) -> builtins.list[Edge]:
        return [Edge(*r) for r in self._query("SELECT src, dst, kind FROM edges")]

    def derived_from(self, memory_id: str) -> builtins.list[str]:
        """Ids of the memories recorded as derived from ``memory_id`` (e.g. its summaries)."""
        rows = self._query(
            "SELECT src FROM edges WHERE dst=? AND kind='derived_from' ORDER BY src", (memory_id,)
        )
        return [r[0] for r in rows]

    def stats(self) -> dict[str, Any]:
        by_state = dict(self._query("SELECT state, COUNT(*) FROM memories GROUP BY state"))
        return {
            "memories": sum(by_state.values()),
            "by_state": by_state,
            "users": self._query("SELECT COUNT(DISTINCT user_id) FROM memories")[0][0],
            "versions": self._query("SELECT COUNT(*) FROM versions")[0][0],
            "audit_records": self._query("SELECT COUNT(*) FROM audit")[0][0],
            "edges": self._query("SELECT COUNT(*) FROM edges")[0][0],
        }

    def user_stats(self, user_id: str) -> dict[str, Any]:
        """The counts :meth:`stats` gives, restricted to what ``user_id`` owns or did."""
        by_state = dict(self._query(
            "SELECT state, COUNT(*) FROM memories WHERE user_id=? GROUP BY state", (user_id,)))
        own = "SELECT id FROM memories WHERE user_id=?"
        return {
            "memories": sum(by_state.values()),
            "by_state": by_state,
            "versions": self._query(
                f"SELECT COUNT(*) FROM versions WHERE id IN ({own})", (user_id,))[0][0],
            "audit_records": self._query(
                "SELECT COUNT(*) FROM audit WHERE user_id=?", (user_id,))[0][0],
            # a join, not ``src IN (own) AND dst IN (own)``: SQLite probed every pair of the
            # user's ids once any edge existed (1.1 s at 4,000 memories and one summary)
            "edges": self._query(
                "SELECT COUNT(*) FROM edges e JOIN memories s ON s.id=e.src "
                "JOIN memories d ON d.id=e.dst WHERE s.user_id=? AND d.user_id=?",
                (user_id, user_id))[0][0],
            "shared_with_me": self._query(
                "SELECT COUNT(*) FROM memories WHERE user_id<>? AND state<>'deleted' AND id IN "
                "(SELECT id FROM memory_readers WHERE reader=?)", (user_id, user_id))[0][0],
        }

    # -- audit -----------------------------------------------------------------------------

    def audit_log(self, memory_id: str | None = None, user_id: str | None = None,
                  action: str | None = None, limit: int = 100) -> builtins.list[AuditRecord]:
        clauses, params = [], []
        for column, value in (("memory_id", memory_id), ("user_id", user_id), ("action", action)):
            if value is not None:
                clauses.append(f"{column}=?")
                params.append(value)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self._query(
            f"SELECT seq, at, user_id, agent_id, action, memory_id, version, reason, details, "
            f"prev_hash, hash FROM audit{where} ORDER BY seq DESC LIMIT ?",
            [*params, limit], lenient=True,
        )
        for r in reversed(rows):  # the oldest damaged record, as verify_audit names it
            if damaged_row(r):
                raise CorruptDataError(
                    f"Audit record {r[0]} is damaged: a stored text of it is {_NOT_UTF8}. Run "
                    "verify_audit (memos audit verify) and restore the vault from a backup.")
        return [
            AuditRecord(r[0], datetime.fromtimestamp(r[1], timezone.utc), r[2], r[3], r[4], r[5], r[6], r[7],
                        record_details(r[0], r[8]),
                        r[9], r[10])
            for r in reversed(rows)
        ]

    def verify_audit(self) -> tuple[bool, str]:
        """Recompute the hash chain and check it against the head record and the memories;
        returns (ok, message naming the first problem). See :mod:`memos_core.vault.audit_chain`.
        It reads one snapshot through a read-only connection of its own (WAL: nobody waits):
        read statement by statement, a write between the log and the head record looked
        like a cut tail."""
        reader = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                 isolation_level=None, check_same_thread=False)
        try:
            reader.execute("BEGIN")  # the snapshot is taken at the first read

            def query(sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
                try:  # a damaged text is read as is: the chain check names its record
                    return list(reader.execute(sql, params).fetchall())
                except sqlite3.OperationalError as exc:
                    if not undecodable(exc):
                        raise
                return lenient_rows(reader, sql, params)

            try:
                return verify_chain(query)
            finally:
                reader.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            translated = self._storage_error(exc)
            if translated is None:
                raise
            raise translated from exc
        finally:
            reader.close()
