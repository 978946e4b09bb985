"""PostgreSQL vault: the source of truth shared by every process of a server-mode deployment.

The same tables as the SQLite vault (:mod:`memos_core.vault.sqlite`) -- ``memories``,
``versions``, ``usage``, ``edges``, ``audit`` (hash-chained, with its head record in
``meta``), ``grants`` -- plus ``changes``, the change feed (:mod:`memos_core.vault.pg_feed`).
Schema and migrations: :mod:`memos_core.vault.pg_schema`.

Concurrency: every mutation is one transaction that first takes a transaction-scoped advisory
lock (``WRITE_LOCK``). Mutations from every process are therefore totally ordered, which is
what the audit chain (each record names its predecessor's hash), the gapless audit and change
sequence numbers, and the version check of :meth:`put_version` (no lost update) need. The lock
is held only for the transaction's SQL (embedding happens before it), and a commit releases it
after the transaction became visible, so a reader that sees change ``n`` sees every change
before it. Usage counters take row locks only (they are not changes).

Connections come from a :class:`psycopg_pool.ConnectionPool` in autocommit mode: a read is one
statement and one round trip (no ``BEGIN``/``COMMIT`` around it); every write opens its own
transaction (``conn.transaction()``). A connection is checked (one extra round trip) on
checkout only when it sat idle for more than ``CHECK_IDLE_S`` or after a call lost its
connection, so a connection the server dropped (a restart) is replaced on the next checkout
without taxing every query. A call that loses its connection raises
:class:`~memos_core.errors.ServerUnavailableError` (a mutation that raised it was not
acknowledged).
"""

from __future__ import annotations

import builtins
import json
import logging
import re
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from memos_core.cube import MemCube, State, Usage, require_canonical_ids, utcnow
from memos_core.errors import (
    ConflictError,
    InvalidInputError,
    MemoryDeletedError,
    MemoryNotFoundError,
    MemOSError,
    ServerUnavailableError,
    first_line,
    pool_busy,
)
from memos_core.vault.audit_chain import (
    AUDIT_HEAD,
    GENESIS_HASH,
    parse_head,
    record_details,
    seal,
    verify_chain,
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
from memos_core.vault import pg_sql
from memos_core.vault.pg_async import PgAsyncMixin
from memos_core.vault.pg_feed import FeedMixin, Tx
from memos_core.vault.pg_graph import PgGraphMixin
from memos_core.vault.pg_integrations import (
    PgCheckpointsMixin,
    check_grants,
    PgGrantsMixin,
    PgKeyedMixin,
    PgLogMixin,
    bind_imported,
)
from memos_core.vault.pg_schema import SCHEMA_VERSION, migrate
from memos_core.vault.pg_url import hide_secrets, redact_url
from memos_core.vault.pg_usage import Pending, PendingUsage, write_batch
from memos_core.vault.scrub import rewrite_below, scrub
from memos_core.vault.sqlite_keyed import check_imported_keys

__all__ = ["PostgresVault", "is_postgres_url", "redact_url"]

logger = logging.getLogger("memos_core")


def _drop_broken(pool: Any) -> None:
    """After a call lost its connection: test the pool's idle connections now and replace the
    broken ones (a server restart breaks them all), so one call fails, not one per pooled
    connection. Best effort: the server may still be down."""
    try:
        pool.check()
    except Exception:  # noqa: BLE001 - the pool keeps reconnecting in the background
        pass


def is_postgres_url(value: object) -> bool:
    """True for a ``postgresql://`` (or ``postgres://``) URL: the server mode."""
    return isinstance(value, str) and value.split("://", 1)[0].lower() in ("postgresql", "postgres") \
        and "://" in value


def _ts(dt: datetime | None) -> float | None:
    return None if dt is None else dt.timestamp()


def _inserted(tx: Tx) -> dict[str, tuple[str, MemCube, Usage]] | None:
    """The new memories a committed transaction inserted whole, decoded as a read would
    decode them (None if there are none or one does not decode: nothing is kept then)."""
    try:
        return {mid: (xmin, MemCube.model_validate_json(doc), usage)
                for mid, (xmin, doc, usage) in tx.inserted.items() if usage is not None} or None
    except Exception:  # noqa: BLE001 - keeping is an optimisation; the drop must happen
        logger.warning("could not keep the memories a write inserted", exc_info=True)
        return None


#: a number in exponent form with a positive exponent (a float of 1e16 or more); may also
#: match inside a string, which only costs the slow path of :func:`doc_json`
_BIG_EXPONENT = re.compile(r"[0-9][eE]\+?[0-9]")


def doc_json(cube: MemCube) -> str:
    """The JSON of ``cube`` for a ``doc`` column. JSONB stores numbers as ``numeric`` and
    prints ``1e+20`` back as the integer ``100000000000000000000``: a float that large is
    written out in decimals with a fraction (``100000000000000000000.0``), which reads back
    a float. (Key order, and the sign of ``-0.0``, JSONB does not keep: docs/scale_out.md.)"""
    doc = cube.model_dump_json(exclude={"usage"})
    if not _BIG_EXPONENT.search(doc):
        return doc
    numbers: dict[str, str] = {}
    tag = uuid.uuid4().hex

    def marked(value: Any) -> Any:
        if isinstance(value, float) and "e+" in repr(value):
            mark = f"{tag}:{len(numbers)}"
            numbers[json.dumps(mark)] = format(Decimal(repr(value)), "f") + ".0"
            return mark
        if isinstance(value, dict):
            return {k: marked(v) for k, v in value.items()}
        if isinstance(value, list):
            return [marked(v) for v in value]
        return value

    text = json.dumps(marked(cube.model_dump(mode="json", exclude={"usage"})),
                      ensure_ascii=False, separators=(",", ":"))
    for mark, number in numbers.items():
        text = text.replace(mark, number)
    return text


class PostgresVault(FeedMixin, PgGrantsMixin, PgKeyedMixin, PgLogMixin, PgCheckpointsMixin,
                    PgAsyncMixin, PgGraphMixin):
    """The vault in a PostgreSQL database (server mode). Thread-safe and multi-process safe.

    Args:
        url: ``postgresql://user:password@host:port/database``.
        pool_size: most connections this vault opens (each process has its own pool).
        connect_timeout: seconds to wait for the server on open and per checkout.
        usage_flush_s: :meth:`record_usage` keeps the accesses in memory and writes them
            every this many seconds and at :meth:`close` (0: at once); semantics in
            :mod:`memos_core.vault.pg_usage`.
        cube_cache: how many decoded memories :meth:`get` and :meth:`get_many` keep (0:
            none). Every read still reads each memory's current row, rights and state
            included; the server sends a document again only when the row changed since
            (:class:`~memos_core.vault.pg_sql.CubeCache`).

    Raises:
        InvalidInputError: ``url`` is not a PostgreSQL URL, or not one libpq reads (an
            unknown query parameter).
        ServerUnavailableError: the server cannot be reached (says where and what to check).
        MemOSError: the schema is newer than this memos-core.
    """

    def __init__(self, url: str, *, pool_size: int = 4, connect_timeout: float = 10.0,
                 usage_flush_s: float = 0.2, cube_cache: int = 4096) -> None:
        if not is_postgres_url(url):
            raise InvalidInputError(
                f"Not a PostgreSQL URL: {redact_url(str(url))!r}. Use postgresql://user:password@host:port/database.")
        if isinstance(usage_flush_s, bool) or not isinstance(usage_flush_s, (int, float)) \
                or not usage_flush_s >= 0:
            raise InvalidInputError(f"usage_flush_s must be seconds >= 0, got {usage_flush_s!r}.")
        if isinstance(cube_cache, bool) or not isinstance(cube_cache, int) or cube_cache < 0:
            raise InvalidInputError(f"cube_cache must be a count >= 0, got {cube_cache!r}.")
        #: decoded documents of memories read lately, checked by row version on every read
        self._cubes = pg_sql.CubeCache(cube_cache)
        import psycopg
        from psycopg_pool import ConnectionPool

        self.url = url
        self.where = redact_url(url)
        self._psycopg = psycopg
        try:  # libpq's own reading of the URL (an unknown ?parameter): bad input
            psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise InvalidInputError(f"The PostgreSQL URL {self.where!r} is not one libpq reads: "
                                    f"{hide_secrets(str(exc).strip(), url)}.") from None
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(connect_timeout))) as conn:
                self.schema_found = migrate(conn, where=self.where)
        except psycopg.OperationalError as exc:
            raise ServerUnavailableError(
                f"Cannot reach the PostgreSQL server at {self.where}: "
                f"{hide_secrets(str(exc).strip(), url)}. Check "
                "that the server runs, the host, port, user, password and database are right, "
                "and that it accepts connections from this host (pg_hba.conf)."
            ) from exc
        except psycopg.Error as exc:
            raise MemOSError(f"Could not set up the vault schema in {self.where}: {exc}") from exc
        #: connection -> when a call last used it successfully (see :meth:`_check`)
        self._used: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self._in_use = 0  # connections handed out by _conn now (the pool's stats also
        self._in_use_lock = threading.Lock()  # count those it is trying to open)
        self._pool = ConnectionPool(
            url, min_size=1, max_size=max(1, pool_size), open=True, timeout=connect_timeout,
            check=self._check, kwargs={"autocommit": True}, name="memos-vault",
        )
        self._closed = False
        self._own_lock = threading.Lock()
        self._usage = PendingUsage(self._write_usage, usage_flush_s, written=self._cubes.flushed)
        self._cubes.usage_epoch = self._usage.epoch
        #: searches served from the cube cache without a read (:meth:`cached_many`)
        self.cached_reads = 0
        self._init_feed()

    # -- plumbing -----------------------------------------------------------------------------

    #: a pooled connection used successfully within this many seconds is not checked again
    #: on checkout (the check is a round trip of its own)
    CHECK_IDLE_S = 2.0

    def _check(self, conn: Any) -> None:
        """The pool's checkout check: a round trip (``SELECT 1``) only for a connection idle
        longer than :attr:`CHECK_IDLE_S` (or never used, or after any call lost its
        connection); raises if the server dropped it, and the pool replaces it."""
        used = self._used.get(conn)
        if used is not None and time.monotonic() - used < self.CHECK_IDLE_S:
            return
        from psycopg_pool import ConnectionPool

        ConnectionPool.check_connection(conn)

    def _pool_full(self) -> bool:
        """Every connection of the pool is in use by this process's calls (a wait for one
        that timed out is then this process's doing, not the server's)."""
        with self._in_use_lock:
            return self._in_use >= self._pool.max_size

    @contextmanager
    def _conn(self) -> Iterator[Any]:
        """A pooled connection in autocommit mode: each statement commits by itself; use
        ``conn.transaction()`` for anything that writes more than one statement."""
        from psycopg_pool import PoolTimeout

        try:
            with self._pool.connection() as conn:
                with self._in_use_lock:
                    self._in_use += 1
                try:
                    yield conn
                    self._used[conn] = time.monotonic()
                finally:
                    with self._in_use_lock:
                        self._in_use -= 1
        except self._psycopg.DataError as exc:  # e.g. a NUL character: nothing was written
            raise InvalidInputError(f"PostgreSQL refused a value: {first_line(exc)}") from exc
        except self._psycopg.OperationalError as exc:
            if isinstance(exc, PoolTimeout) and self._pool_full():  # the server is fine
                raise pool_busy(self.where, exc) from exc
            self._used.clear()  # the server may have restarted: check every connection again
            _drop_broken(self._pool)
            raise ServerUnavailableError(
                f"Lost the connection to the PostgreSQL server at {self.where} "
                f"({str(exc).strip()}); the call was not acknowledged. Retry once the server "
                "is back (the pool reconnects by itself)."
            ) from exc

    @contextmanager
    def _tx(self) -> Iterator[Tx]:
        """One mutation: a transaction under the write lock; its change rows and NOTIFY are
        written at the end, inside it. Commits on success, rolls back on any exception."""
        changed: list[str | None] = []
        committed = False
        # a drop by anyone else from here on means the new memories are not kept (one may
        # stand for a change committed after this one)
        began = self._cubes.generation
        try:
            with self._conn() as conn, conn.transaction():
                lock = pg_sql.lock_step()
                conn.execute(lock.sql, lock.params)
                tx = Tx(conn)
                try:
                    yield tx
                    seqs = self._write_changes(tx)
                finally:
                    changed = [mid for mid, _kind, _detail in tx.changes]
            committed = True
        finally:  # after the commit: the old text of a changed memory leaves this process
            self._cubes.drop(changed, keep=_inserted(tx) if committed else None, began=began)
        if seqs:  # only now: until its own changes are dropped, the feed must drop them
            self._committed(seqs)

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._conn() as conn:
            return list(conn.execute(sql, params).fetchall())

    def checkpoint(self) -> None:
        """After a forget: nothing to truncate here. PostgreSQL keeps the old row versions
        (dead tuples) until VACUUM and in its WAL and backups; docs/scale_out.md says how to
        make them unrecoverable (``VACUUM`` after forgets, WAL and backup expiry)."""

    #: tables whose rows hold user text (or keys/labels) that a forget rewrites or deletes
    TEXT_TABLES = ("memories", "versions", "usage", "edges", "item_keys", "conversation_log",
                   "cp_checkpoints", "cp_blobs", "cp_writes", "changes", "audit")

    def vacuum(self, *, full: bool = False) -> list[str]:
        """``VACUUM`` (``full``: ``VACUUM FULL``, which rewrites each table into new files
        and locks it meanwhile) the tables a forget rewrites, so the dead row versions that
        still hold forgotten text are reclaimed; returns the tables vacuumed. What VACUUM
        does not reach (WAL segments, backups, freed disk blocks): docs/scale_out.md.

        Raises:
            ServerUnavailableError: the server cannot be reached.
            MemOSError: the user may not vacuum these tables (needs ownership).
        """
        psycopg = self._psycopg
        try:
            with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
                for table in self.TEXT_TABLES:
                    conn.execute(f"VACUUM {'FULL ' if full else ''}{table}")
        except psycopg.OperationalError as exc:
            raise ServerUnavailableError(
                f"Cannot reach the PostgreSQL server at {self.where}: {str(exc).strip()}.") from exc
        except psycopg.Error as exc:
            raise MemOSError(f"VACUUM failed in {self.where} ({exc}); run it as the tables' "
                             "owner (the user memos-core connects as).") from exc
        return list(self.TEXT_TABLES)

    def close(self) -> None:
        if getattr(self, "_closed", True):
            return
        self._closed = True
        try:
            self._usage.close()
        finally:
            self._close_feed()
            self._close_async()
            self._pool.close()
            self._cubes.clear()

    # -- meta ---------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key=%s", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._conn() as conn, conn.transaction():
            conn.execute("INSERT INTO meta(key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE "
                         "SET value = EXCLUDED.value", (key, value))

    def meta_items(self, prefix: str) -> list[tuple[str, str]]:
        rows = self._query("SELECT key, value FROM meta WHERE starts_with(key, %s) ORDER BY key",
                           (prefix,))
        return [(str(k), str(v)) for k, v in rows]

    def set_meta_default(self, key: str, value: str) -> str:
        """Set ``key`` unless it is set; returns the value that is stored (first writer wins,
        across processes)."""
        with self._conn() as conn, conn.transaction():
            conn.execute("INSERT INTO meta(key, value) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                         (key, value))
            return str(conn.execute("SELECT value FROM meta WHERE key=%s", (key,)).fetchone()[0])

    # -- writes -------------------------------------------------------------------------------

    def _write_current(self, tx: Tx, cube: MemCube, seq: int | None) -> None:
        doc = doc_json(cube)
        row = (cube.id, seq, cube.namespace.user_id, cube.namespace.agent_id,
               cube.namespace.session_id, cube.version, cube.state.value, cube.type.value,
               json.dumps(list(cube.tags)), json.dumps(list(cube.governance.readers)),
               _ts(cube.occurred_at), _ts(cube.created_at), _ts(cube.updated_at),
               cube.valid_to is not None, json.dumps(list(cube.entities)), doc)
        tx.inserted.pop(cube.id, None)  # written again: not kept as inserted
        if seq is None:
            tx.conn.execute(
                "UPDATE memories SET user_id=%s, agent_id=%s, session_id=%s, version=%s, state=%s, "
                "type=%s, tags=%s, readers=%s, occurred_at=%s, created_at=%s, updated_at=%s, "
                "superseded=%s, entities=%s, doc=%s WHERE id=%s", (*row[2:], cube.id))
        else:
            xmin = tx.conn.execute(
                "INSERT INTO memories(id, seq, user_id, agent_id, session_id, version, state, type, "
                "tags, readers, occurred_at, created_at, updated_at, superseded, entities, doc) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (id) DO UPDATE "
                "SET version=EXCLUDED.version, state=EXCLUDED.state, type=EXCLUDED.type, "
                "tags=EXCLUDED.tags, readers=EXCLUDED.readers, occurred_at=EXCLUDED.occurred_at, "
                "updated_at=EXCLUDED.updated_at, superseded=EXCLUDED.superseded, "
                "entities=EXCLUDED.entities, doc=EXCLUDED.doc RETURNING xmin::text", row).fetchone()[0]
            if cube.version == 1:  # a new memory, unless an import's history goes on
                tx.inserted[cube.id] = (xmin, doc, None)
        tx.conn.execute("INSERT INTO versions(id, version, recorded_at, doc) VALUES (%s,%s,%s,%s)",
                        (cube.id, cube.version, _ts(cube.updated_at), doc))
        tx.change(cube.id, "version", {"version": cube.version})

    def _audit(self, tx: Tx, actor: Actor, action: str, memory_id: str | None,
               version: int | None, details: dict[str, Any]) -> None:
        """Append one chained audit record (the write lock makes its predecessor the tail)."""
        head_row = tx.conn.execute("SELECT value FROM meta WHERE key=%s", (AUDIT_HEAD,)).fetchone()
        head = parse_head(head_row[0]) if head_row else None
        if head is None:
            raise MemOSError(f"The audit head record in {self.where} is missing or unreadable; "
                             "run verify_audit and restore the vault from a backup.")
        prev, seq = (head["hash"], int(head.get("seq", 0)) + 1) if head["count"] else (GENESIS_HASH, 1)
        at = utcnow().timestamp()
        sealed = seal(prev, {"at": at, "user_id": actor.user_id, "agent_id": actor.agent_id,
                             "action": action, "memory_id": memory_id, "version": version,
                             "details": details}, actor.reason)
        tx.conn.execute(
            "INSERT INTO audit(seq, at, user_id, agent_id, action, memory_id, version, reason, "
            "details, prev_hash, hash, reason_salt, reason_commit) "
            "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            (seq, at, actor.user_id, actor.agent_id, action, memory_id, version, actor.reason,
             json.dumps(details, sort_keys=True, default=str), prev, sealed.hash, sealed.salt,
             sealed.commit))
        tx.conn.execute("UPDATE meta SET value=%s WHERE key=%s", (
            json.dumps({"count": int(head["count"]) + 1, "seq": seq, "hash": sealed.hash}),
            AUDIT_HEAD))

    @staticmethod
    def _scrub_reasons(tx: Tx, memory_id: str) -> None:
        """Remove the reasons of the forgotten memory's audit records, its own and those its
        writing operation made (``details['by']``), with their salts; the commitments stay,
        so the chain still verifies (:mod:`memos_core.vault.audit_chain`). Records without
        a commitment (older ones migration 7 could not convert) keep theirs: their hash
        covers it."""
        for where in ("memory_id=%s", "memos_audit_by(details) = %s"):
            tx.conn.execute("UPDATE audit SET reason=NULL, reason_salt=NULL "
                            f"WHERE {where} AND reason_salt IS NOT NULL", (memory_id,))

    def audit(self, actor: Actor, action: str, memory_id: str | None = None,
              version: int | None = None, details: dict[str, Any] | None = None) -> None:
        with self._tx() as tx:
            self._audit(tx, actor, action, memory_id, version, details or {})

    def _next_seq(self, tx: Tx) -> int:
        return int(tx.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM memories").fetchone()[0])

    def _add_edges(self, tx: Tx, edges: Sequence[Edge]) -> None:
        for e in edges:
            tx.conn.execute("INSERT INTO edges(src, dst, kind) VALUES (%s,%s,%s) "
                            "ON CONFLICT DO NOTHING", (e.src, e.dst, e.kind))
            tx.change(e.src, "edge", {"src": e.src, "dst": e.dst, "kind": e.kind})

    def _set_usage(self, tx: Tx, cube: MemCube) -> None:
        u = cube.usage
        tx.conn.execute(
            "INSERT INTO usage(id, access_count, last_access, heat, tier) VALUES (%s,%s,%s,%s,%s) "
            "ON CONFLICT (id) DO UPDATE SET access_count=EXCLUDED.access_count, "
            "last_access=EXCLUDED.last_access, heat=EXCLUDED.heat, tier=EXCLUDED.tier",
            (cube.id, u.access_count, _ts(u.last_access), u.heat, u.tier.value))
        if cube.id in tx.inserted:  # its stored counters are known: it can be kept
            xmin, doc, _ = tx.inserted[cube.id]
            tx.inserted[cube.id] = (xmin, doc, u)

    def insert(self, cubes: Sequence[MemCube], actor: Actor, action: str = "add", *,
               replacements: Sequence[tuple[MemCube, int]] = (), edges: Sequence[Edge] = (),
               replacement_action: str = "supersede",
               grants: Sequence[NamespaceGrant] | None = None) -> None:
        require_canonical_ids([*cubes, *(c for c, _ in replacements)])
        with self._tx() as tx:  # under the write lock: the grants read here are current
            check_grants(tx, cubes, grants)
            self._insert_cubes(tx, cubes, actor, action)
            for cube, expected in replacements:
                self._put_version(tx, cube, expected, actor, replacement_action,
                                  {"by": cubes[-1].id})
            self._add_edges(tx, edges)

    def _insert_cubes(self, tx: Tx, cubes: Sequence[MemCube], actor: Actor, action: str) -> None:
        """Insert new memories (version 1) with their usage rows and audit records."""
        seq = self._next_seq(tx)
        for cube in cubes:
            if tx.conn.execute("SELECT 1 FROM memories WHERE id=%s", (cube.id,)).fetchone():
                raise MemOSError(f"A memory with id {cube.id} already exists; use update.")
            seq += 1
            self._write_current(tx, cube, seq)
            self._set_usage(tx, cube)
            details: dict[str, Any] = {"session_id": cube.namespace.session_id,
                                       "type": cube.type.value}
            if cube.governance.readers:
                details["shared_with"] = {u: "write" if u in cube.governance.writers else "read"
                                          for u in cube.governance.readers}
            self._audit(tx, actor, action, cube.id, cube.version, details)

    def import_histories(self, histories: Sequence[Sequence[MemCube]], edges: Sequence[Edge],
                         actor: Actor, keys: Sequence[tuple[ItemKey, str]] = ()) -> int:
        require_canonical_ids(c for versions in histories for c in versions)
        check_imported_keys(histories, keys)
        with self._tx() as tx:
            ids = [versions[0].id for versions in histories if versions]
            taken = tx.conn.execute("SELECT id FROM memories WHERE id = ANY(%s) LIMIT 1",
                                    (ids,)).fetchone()
            if taken is not None:
                raise ConflictError(f"Memory {taken[0]} exists already (stored since the "
                                    "import looked); nothing was imported. Import again: "
                                    "memories that exist are skipped.")
            seq = self._next_seq(tx)
            for versions in histories:
                seq += 1
                for cube in versions:
                    self._write_current(tx, cube, seq)
                last = versions[-1]
                tx.conn.execute(
                    "INSERT INTO usage(id, access_count, last_access, heat, tier) VALUES "
                    "(%s, 0, NULL, 0.0, 'plaintext') ON CONFLICT (id) DO UPDATE SET access_count=0, "
                    "last_access=NULL, heat=0.0, tier='plaintext'", (last.id,))
                self._audit(tx, actor, "import", last.id, last.version, {})
            self._add_edges(tx, edges)
            return bind_imported(tx, keys)

    def put_version(self, cube: MemCube, expected_version: int, actor: Actor, action: str,
                    details: dict[str, Any] | None = None, *,
                    rewrite_earlier: Callable[[MemCube], MemCube | None] | None = None) -> None:
        with self._tx() as tx:
            self._put_version(tx, cube, expected_version, actor, action, details or {})
            if rewrite_earlier is not None:
                rewrite_below(tx.conn, "%s", cube.id, cube.version, rewrite_earlier,
                              doc="doc::text")

    def put_versions(self, changes: Sequence[tuple[MemCube, int]], actor: Actor, action: str,
                     details: dict[str, Any] | None = None) -> None:
        with self._tx() as tx:
            for cube, expected in changes:
                self._put_version(tx, cube, expected, actor, action, details or {})

    def _put_version(self, tx: Tx, cube: MemCube, expected_version: int, actor: Actor,
                     action: str, details: dict[str, Any]) -> None:
        row = tx.conn.execute("SELECT version, state FROM memories WHERE id=%s FOR UPDATE",
                              (cube.id,)).fetchone()
        if row is None:
            raise MemoryNotFoundError(f"No memory with id {cube.id!r}.")
        if row[1] == State.DELETED.value:
            raise MemoryDeletedError(f"Memory {cube.id} was forgotten; it cannot be changed.")
        if row[0] != expected_version or cube.version != expected_version + 1:
            raise ConflictError(
                f"Memory {cube.id} is at version {row[0]}, not {expected_version}: it changed "
                "concurrently. Read it again and retry.")
        self._write_current(tx, cube, None)
        self._audit(tx, actor, action, cube.id, cube.version, details)

    def tombstone(self, memory_id: str, actor: Actor,
                  details: dict[str, Any] | None = None) -> MemCube:
        with self._tx() as tx:
            row = tx.conn.execute("SELECT doc::text FROM memories WHERE id=%s FOR UPDATE",
                                  (memory_id,)).fetchone()
            if row is None:
                raise MemoryNotFoundError(f"No memory with id {memory_id!r}.")
            cube = MemCube.model_validate_json(row[0])
            if cube.state is State.DELETED:
                return cube
            self._scrub_versions(tx, memory_id)
            tomb = scrub(cube).model_copy(
                update={"version": cube.version + 1, "state": State.DELETED, "updated_at": utcnow()})
            self._put_version(tx, tomb, cube.version, actor, "forget", details or {})
            self._scrub_reasons(tx, memory_id)  # the forget's own reason too: it may repeat it
            self._drop_relations(tx, memory_id)
        self._usage.drop(memory_id)
        return tomb

    def _drop_relations(self, tx: Tx, memory_id: str) -> None:
        """A tombstone's key bindings, usage counters and relations go, but for the
        ``derived_from`` relations of its summaries: the forget's cascade reads those after
        the tombstone commits, then drops them (:meth:`drop_relations`)."""
        tx.conn.execute("DELETE FROM item_keys WHERE memory_id=%s", (memory_id,))
        tx.conn.execute("DELETE FROM usage WHERE id=%s", (memory_id,))
        tx.conn.execute("DELETE FROM edges WHERE src=%s OR (dst=%s AND kind<>'derived_from')",
                        (memory_id, memory_id))
        tx.change(memory_id, "forget", {})

    def drop_relations(self, memory_id: str) -> None:
        with self._tx() as tx:
            tx.conn.execute("DELETE FROM edges WHERE src=%s OR dst=%s", (memory_id, memory_id))

    def unfinished_forgets(self) -> builtins.list[str]:
        rows = self._query(
            "SELECT DISTINCT e.dst FROM edges e JOIN memories m ON m.id = e.dst "
            "WHERE e.kind='derived_from' AND m.state=%s ORDER BY e.dst", (State.DELETED.value,))
        return [r[0] for r in rows]

    def scrub_tombstone(self, memory_id: str) -> int:
        with self._tx() as tx:
            row = tx.conn.execute("SELECT state, doc::text FROM memories WHERE id=%s FOR UPDATE",
                                  (memory_id,)).fetchone()
            if row is None or row[0] != State.DELETED.value:
                return 0
            scrubbed = self._scrub_versions(tx, memory_id)
            current = MemCube.model_validate_json(row[1])
            if not current.scrubbed:
                tx.conn.execute(
                    "UPDATE memories SET doc=%s, tags='[]', entities='[]' WHERE id=%s",
                    (doc_json(scrub(current)), memory_id))
            self._scrub_reasons(tx, memory_id)
            self._drop_relations(tx, memory_id)
            return scrubbed

    def redact_versions(self, memory_id: str, rewrite: Callable[[MemCube], MemCube | None], *,
                        below: int) -> int:
        with self._tx() as tx:
            return rewrite_below(tx.conn, "%s", memory_id, below, rewrite, doc="doc::text")

    def _scrub_versions(self, tx: Tx, memory_id: str) -> int:
        count = 0
        for vid, vdoc in tx.conn.execute(
                "SELECT version, doc::text FROM versions WHERE id=%s", (memory_id,)).fetchall():
            old = MemCube.model_validate_json(vdoc)
            if old.scrubbed:
                continue
            tx.conn.execute("UPDATE versions SET doc=%s WHERE id=%s AND version=%s",
                            (doc_json(scrub(old)), memory_id, vid))
            count += 1
        return count

    def record_usage(self, memory_ids: Iterable[str], now: datetime, half_life_s: float) -> None:
        """Count an access of each memory. Usage counters are not changes: they are written
        in the background (``usage_flush_s``; row locks only, in id order), this process's
        reads see them at once, and a forgotten memory's row is never re-created
        (:mod:`memos_core.vault.pg_usage`)."""
        self._usage.add(memory_ids, now, half_life_s)

    def flush_usage(self) -> int:
        """Write the pending usage counters now; returns for how many memories.

        Raises:
            ServerUnavailableError: the server cannot be reached (they stay pending).
        """
        return self._usage.flush()

    def _write_usage(self, batch: Pending) -> None:
        with self._conn() as conn:
            write_batch(conn, batch)

    def set_tier(self, memory_id: str, tier: str, *, expected: str | None = None) -> bool:
        with self._conn() as conn, conn.transaction():
            if expected is None:
                cur = conn.execute("UPDATE usage SET tier=%s WHERE id=%s", (tier, memory_id))
            else:
                cur = conn.execute("UPDATE usage SET tier=%s WHERE id=%s AND tier=%s",
                                   (tier, memory_id, expected))
            written = bool(cur.rowcount > 0)
        self._cubes.stale_usage([memory_id])
        return written

    def add_edges(self, edges: Sequence[Edge]) -> None:
        with self._tx() as tx:
            self._add_edges(tx, edges)

    # -- reads --------------------------------------------------------------------------------

    # get, get_many, list, history: statement programs shared with the native async view
    # (memos_core.vault.pg_sql; PostgresVault.native_async)

    def _with_usage(self, docs: Sequence[tuple[str, str]]) -> builtins.list[MemCube]:
        with self._usage.reading():
            return self._run(pg_sql.with_usage(docs, self._usage.overlay))

    def get(self, memory_id: str) -> MemCube | None:
        with self._usage.reading():
            return self._run(pg_sql.get(memory_id, self._usage.overlay, self._cubes))

    def get_many(self, memory_ids: Sequence[str], *,
                 on_damaged: OnDamaged | None = None) -> dict[str, MemCube]:
        # on_damaged is never called: PostgreSQL checks text and JSON on input
        with self._usage.reading():
            return self._run(pg_sql.get_many(memory_ids, self._usage.overlay, self._cubes))

    #: how old the usage counters a search serves from the cube cache may be: other
    #: processes' accesses show up at most ``usage_flush_s`` plus this much later there
    #: (this process's own, at once)
    CACHED_USAGE_S = 30.0

    def cached_many(self, memory_ids: Sequence[str]) -> dict[str, MemCube] | None:
        """:meth:`get_many` without a round trip, from the decoded memories this process
        keeps -- or None unless every one of ``memory_ids`` is kept with usage counters read
        within :attr:`CACHED_USAGE_S` (then :meth:`get_many` reads them).

        Only current if the caller knows that every change committed before its call began
        was applied to this process's cache (dropped): the search checks the change feed's
        head, read alongside its index query, against the follower's cursor
        (:meth:`memos_core.store.kernel.MemoryStore.current_for_search`)."""
        ids = list(dict.fromkeys(memory_ids))
        # no flush runs meanwhile, and each one before added its batch to the kept counters
        # (inside the flush): kept counters and pending accesses count every access once
        with self._usage.reading():
            held = self._cubes.fresh(ids, self.CACHED_USAGE_S)
            if held is None:
                return None
            cubes = {base.id: pg_sql.served(base, usage, self._usage.overlay) for base, usage in held}
        self.cached_reads += 1
        return cubes

    def texts(self, memory_ids: Sequence[str], *,
              on_damaged: OnDamaged | None = None) -> dict[str, str]:
        ids = list(dict.fromkeys(memory_ids))
        if not ids:
            return {}
        return dict(self._query("SELECT id, doc->>'text' FROM memories WHERE id = ANY(%s)",
                                (ids,)))

    def damaged_stand_in(self, memory_id: str) -> tuple[MemCube, str] | None:
        """None: PostgreSQL checks text and JSON on input, so no record is damaged the way
        an embedded vault's can be (:meth:`memos_core.vault.base.Vault.damaged_stand_in`)."""
        return None

    def get_version(self, memory_id: str, version: int) -> MemCube | None:
        return self._run(pg_sql.get_version(memory_id, version))

    def get_as_of(self, memory_id: str, when: datetime) -> MemCube | None:
        return self._run(pg_sql.get_as_of(memory_id, when))

    def history(self, memory_id: str) -> builtins.list[MemCube]:
        return self._run(pg_sql.history(memory_id))

    def list(self, query: ListQuery, *,
             on_damaged: OnDamaged | None = None) -> builtins.list[MemCube]:
        with self._usage.reading():
            return self._run(pg_sql.list_memories(query, self._usage.overlay))

    def count(self, query: ListQuery | None = None) -> int:
        where, params = pg_sql.list_where(query or ListQuery())
        return int(self._query(f"SELECT COUNT(*) FROM memories{where}", params)[0][0])

    def iter_current(self, batch_size: int = 1000, *,
                     on_damaged: OnDamaged | None = None) -> Iterator[builtins.list[MemCube]]:
        last = 0
        while True:
            rows = self._query("SELECT seq, id, doc::text FROM memories WHERE seq > %s "
                               "ORDER BY seq LIMIT %s", (last, batch_size))
            if not rows:
                return
            last = rows[-1][0]
            yield self._with_usage([(r[1], r[2]) for r in rows])

    def current_versions(self) -> dict[str, tuple[int, str]]:
        return {r[0]: (r[1], r[2]) for r in self._query("SELECT id, version, state FROM memories")}

    _GRAPH_KEYS = ("id", "seq", "user_id", "agent_id", "session_id", "version", "state", "type",
                   "tags", "readers", "occurred_at", "superseded", "entities")

    def graph_rows(self, ids: Sequence[str] | None = None) -> builtins.list[dict[str, Any]]:
        """The graph's fields for every memory (or those in ``ids``), in insertion order."""
        sql = ("SELECT id, seq, user_id, agent_id, session_id, version, state, type, tags, "
               "readers, occurred_at, superseded, entities FROM memories")
        rows = self._query(sql + " ORDER BY seq") if ids is None else \
            self._query(sql + " WHERE id = ANY(%s) ORDER BY seq", (list(ids),))
        return [dict(zip(self._GRAPH_KEYS, r)) for r in rows]

    def edges(self) -> builtins.list[Edge]:
        return [Edge(*r) for r in self._query("SELECT src, dst, kind FROM edges")]

    def derived_from(self, memory_id: str) -> builtins.list[str]:
        rows = self._query("SELECT src FROM edges WHERE dst=%s AND kind='derived_from' "
                           "ORDER BY src", (memory_id,))
        return [r[0] for r in rows]

    def stats(self) -> dict[str, Any]:
        by_state = {s: int(n) for s, n in self._query(
            "SELECT state, COUNT(*) FROM memories GROUP BY state")}
        (users, versions, audits, edges, changes), = self._query(
            "SELECT (SELECT COUNT(DISTINCT user_id) FROM memories), (SELECT COUNT(*) FROM versions), "
            "(SELECT COUNT(*) FROM audit), (SELECT COUNT(*) FROM edges), "
            "(SELECT COALESCE(MAX(seq), 0) FROM changes)")
        return {"memories": sum(by_state.values()), "by_state": by_state, "users": users,
                "versions": versions, "audit_records": audits, "edges": edges,
                "change_seq": changes, "server": self.where, "schema_version": SCHEMA_VERSION}

    def user_stats(self, user_id: str) -> dict[str, Any]:
        by_state = {s: int(n) for s, n in self._query(
            "SELECT state, COUNT(*) FROM memories WHERE user_id=%s GROUP BY state", (user_id,))}
        own = "SELECT id FROM memories WHERE user_id=%s"
        (versions, audits, edges, shared), = self._query(
            f"SELECT (SELECT COUNT(*) FROM versions WHERE id IN ({own})), "
            "(SELECT COUNT(*) FROM audit WHERE user_id=%s), "
            "(SELECT COUNT(*) FROM edges e JOIN memories s ON s.id=e.src JOIN memories d "
            "ON d.id=e.dst WHERE s.user_id=%s AND d.user_id=%s), "
            "(SELECT COUNT(*) FROM memories WHERE user_id<>%s AND state<>'deleted' AND readers ? %s)",
            (user_id, user_id, user_id, user_id, user_id, user_id))
        return {"memories": sum(by_state.values()), "by_state": by_state, "versions": versions,
                "audit_records": audits, "edges": edges, "shared_with_me": shared}

    # -- audit --------------------------------------------------------------------------------

    def audit_log(self, memory_id: str | None = None, user_id: str | None = None,
                  action: str | None = None, limit: int = 100) -> builtins.list[AuditRecord]:
        clauses, params = [], []
        for column, value in (("memory_id", memory_id), ("user_id", user_id), ("action", action)):
            if value is not None:
                clauses.append(f"{column}=%s")
                params.append(value)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self._query(
            "SELECT seq, at, user_id, agent_id, action, memory_id, version, reason, details, "
            f"prev_hash, hash FROM audit{where} ORDER BY seq DESC LIMIT %s", [*params, limit])
        return [AuditRecord(r[0], datetime.fromtimestamp(r[1], timezone.utc), r[2], r[3], r[4],
                            r[5], r[6], r[7], record_details(r[0], r[8]), r[9], r[10])
                for r in reversed(rows)]

    def verify_audit(self) -> tuple[bool, str]:
        """Recompute the hash chain and check it against the head record and the memories
        (:func:`memos_core.vault.audit_chain.verify_chain`), all in one read-only snapshot:
        read statement by statement, a commit of another process between the log and the
        head record looked like a cut tail."""
        with self._conn() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")

            def query(sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
                return list(conn.execute(sql.replace("?", "%s"), params).fetchall())

            return verify_chain(query)


#: what a process-wide hook receives after a commit: the change seqs it wrote
CommitHook = Callable[[Sequence[int]], None]
