"""Integration storage in the PostgreSQL vault: keyed items, conversation logs, thread
checkpoints (mixins of :class:`~memos_core.vault.postgres.PostgresVault`).

The same tables and semantics as the SQLite vault (:mod:`~memos_core.vault.sqlite_keyed`,
:mod:`~memos_core.vault.sqlite_log`, :mod:`~memos_core.vault.sqlite_checkpoints`), created by
schema migration 3 (:mod:`~memos_core.vault.pg_schema`). Keyed writes and log writes run under
the vault's write lock (so ``put_keyed`` checks and binds atomically across processes, and
log rows are numbered in commit order); checkpoint writes take only their rows' locks.

The statements of the calls a framework makes on every step -- checkpoint reads and writes,
conversation-log reads and writes, keyed-item reads -- are statement programs
(:mod:`memos_core.vault.pg_sql`) in :class:`CheckpointSQL`, :class:`LogSQL` and
:class:`KeyedSQL`: the mixins below run them on the vault's sync pool, and
:class:`memos_core.vault.pg_async.AsyncPgVault` runs the very same programs on its native
async pool. Keyed writes (a memory change: index, audit, change feed) and the forget-time
redactions stay sync only.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from memos_core.cube import MemCube, require_canonical_ids, utcnow
from memos_core.errors import ConflictError, InvalidInputError, MemoryNotFoundError
from memos_core.vault.base import Actor, CheckpointRecord, ItemKey, LogRow, NamespaceGrant, Typed
from memos_core.vault.grants import require_grants
from memos_core.vault.pg_sql import Exec, Many, Program, Rows, one, run, with_usage
from memos_core.vault.sqlite_keyed import SEP, _check_item, ns_path
from memos_core.vault.sqlite_log import STATUSES

T = TypeVar("T")


def bind_imported(tx: Any, keys: Sequence[tuple[ItemKey, str]]) -> int:
    """Bind imported memories to their keys (inside the import's transaction ``tx``, after
    :func:`check_imported_keys`); a key bound already keeps its memory. Returns how many
    were bound."""
    bound = 0
    for item, memory_id in keys:
        cur = tx.conn.execute("INSERT INTO item_keys(user_id, ns_path, key, memory_id) "
                              "VALUES (%s,%s,%s,%s) ON CONFLICT DO NOTHING",
                              (*_check_item(item), memory_id))
        bound += cur.rowcount
    return bound


class PgGrantsMixin:
    """Namespace grants (as :class:`~memos_core.vault.grants.SQLiteGrantsMixin`: ``None``
    agent / session stored as ``''``); uses the vault's ``_tx``, ``_query``,
    ``_put_version`` and ``_audit``."""

    _tx: Any
    _query: Any
    _put_version: Any
    _audit: Any

    def grants(self, owner: str | None = None) -> builtins.list[NamespaceGrant]:
        sql = "SELECT owner, grantee, scope, agent_id, session_id FROM grants"
        params: tuple[str, ...] = ()
        if owner is not None:
            sql, params = sql + " WHERE owner=%s", (owner,)
        rows = self._query(sql + " ORDER BY created_at, grantee", params)
        return [NamespaceGrant(o, g, s, a or None, se or None) for o, g, s, a, se in rows]

    def change_grants(self, *, add: Sequence[NamespaceGrant] = (),
                      remove: Sequence[NamespaceGrant] = (),
                      changes: Sequence[tuple[MemCube, int]] = (), actor: Actor, action: str,
                      details: dict[str, Any]) -> None:
        now = utcnow().timestamp()
        with self._tx() as tx:
            for g in remove:
                tx.conn.execute("DELETE FROM grants WHERE owner=%s AND agent_id=%s AND "
                                "session_id=%s AND grantee=%s", _grant_key(g))
            for g in add:
                tx.conn.execute(
                    "INSERT INTO grants(owner, agent_id, session_id, grantee, scope, created_at) "
                    "VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (owner, agent_id, session_id, grantee) "
                    "DO UPDATE SET scope=EXCLUDED.scope, created_at=EXCLUDED.created_at",
                    (*_grant_key(g), g.scope, now))
            for cube, expected in changes:
                self._put_version(tx, cube, expected, actor, action, details)
            self._audit(tx, actor, "share_namespace" if add else "revoke_namespace", None, None,
                        {**details, "memories": len(changes)})
            tx.change(None, "grants", {"owner": actor.user_id})


def check_grants(tx: Any, cubes: Sequence[MemCube], seen: Sequence[NamespaceGrant] | None
                 ) -> None:
    """In a write transaction: refuse (:class:`NamespaceChangedError`) new memories whose
    owners' grants are no longer ``seen`` (None: the caller applied none; not checked)."""
    if seen is None or not cubes:
        return
    owners = sorted({c.user_id for c in cubes})
    require_grants(owners, seen, tx.conn.execute(
        "SELECT owner, grantee, scope, agent_id, session_id FROM grants WHERE owner = ANY(%s)",
        (owners,)))


def _grant_key(grant: NamespaceGrant) -> tuple[str, str, str, str]:
    return (grant.owner, grant.agent_id or "", grant.session_id or "", grant.grantee)


class PgRunner:
    """Runs statement programs on the vault's sync pool: a read (``_run``), a mutation under
    the write lock (``_run_locked``: :meth:`PostgresVault._tx`), a plain transaction
    (``_run_plain``: checkpoints, which are no memory change)."""

    _conn: Any
    _tx: Any

    def _run(self, program: Program[T]) -> T:
        with self._conn() as conn:
            return run(conn, program)

    def _run_locked(self, program: Program[T]) -> T:
        with self._tx() as tx:
            return run(tx.conn, program)

    def _run_plain(self, program: Program[T]) -> T:
        with self._conn() as conn, conn.transaction():
            return run(conn, program)


# -- keyed items ------------------------------------------------------------------------------


class KeyedSQL:
    """Statement programs of the keyed-item reads."""

    @staticmethod
    def get(item: ItemKey) -> Program[MemCube | None]:
        """The memory bound to ``item`` (any state), or None."""
        step = Rows("SELECT m.id, m.doc::text FROM item_keys k JOIN memories m ON "
                    "m.id = k.memory_id WHERE k.user_id=%s AND k.ns_path=%s AND k.key=%s",
                    _check_item(item))

        def program() -> Program[MemCube | None]:
            cubes = yield from with_usage((yield step))
            return cubes[0] if cubes else None

        return program()

    @staticmethod
    def list(user_id: str, prefix: Sequence[str] = (), *, limit: int = 1000,
             offset: int = 0) -> Program[builtins.list[tuple[ItemKey, str]]]:
        """``(item, memory id)`` of ``user_id``'s keys under ``prefix``, in binding order."""
        low = ns_path(tuple(prefix), "prefix")
        sql = "SELECT ns_path, key, memory_id FROM item_keys WHERE user_id=%s"
        params: builtins.list[Any] = [user_id]
        if low:  # label by label: the stored path starts with the prefix's (SEP-terminated)
            sql += " AND left(ns_path, %s) = %s"
            params += [len(low), low]
        return one(Rows(sql + " ORDER BY seq LIMIT %s OFFSET %s", [*params, limit, offset]),
                   lambda rows: [(ItemKey(user_id, tuple(path.split(SEP)[:-1]), key), mid)
                                 for path, key, mid in rows])


class PgKeyedMixin(PgRunner):
    """Keyed items; uses the vault's ``_tx``, ``_query``, ``_insert_cubes`` and
    ``_put_version``."""

    _query: Any
    _insert_cubes: Any
    _put_version: Any

    def put_keyed(self, item: ItemKey, cube: MemCube, expected_version: int | None,
                  actor: Actor, action: str, *,
                  grants: Sequence[NamespaceGrant] | None = None) -> None:
        """See :meth:`memos_core.vault.base.KeyedItems.put_keyed`."""
        require_canonical_ids([cube])
        import psycopg

        key = _check_item(item)
        if cube.namespace.user_id != item.user_id:
            raise InvalidInputError(
                f"The memory belongs to {cube.namespace.user_id!r}, but the key {item.key!r} to "
                f"{item.user_id!r}; a keyed memory belongs to the key's user.")
        with self._tx() as tx:
            row = tx.conn.execute("SELECT memory_id FROM item_keys WHERE user_id=%s AND "
                                  "ns_path=%s AND key=%s", key).fetchone()
            if expected_version is None:
                if row is not None:
                    raise ConflictError(
                        f"Key {item.key!r} in {item.namespace!r} is already bound to memory "
                        f"{row[0]}; read it and write its next version.")
                check_grants(tx, [cube], grants)
                self._insert_cubes(tx, [cube], actor, action)
                try:
                    tx.conn.execute("INSERT INTO item_keys(user_id, ns_path, key, memory_id) "
                                    "VALUES (%s,%s,%s,%s)", (*key, cube.id))
                except psycopg.errors.UniqueViolation as exc:
                    raise ConflictError(f"Key {item.key!r} was bound concurrently ({exc}); "
                                        "read it and retry.") from None
                return
            if row is None or row[0] != cube.id:
                raise ConflictError(
                    f"Key {item.key!r} in {item.namespace!r} is bound to "
                    f"{row[0] if row else 'no memory'}, not {cube.id}; read it and retry.")
            self._put_version(tx, cube, expected_version, actor, action, {})

    def get_keyed(self, item: ItemKey) -> MemCube | None:
        return self._run(KeyedSQL.get(item))

    def list_keyed(self, user_id: str, prefix: Sequence[str] = (), *, limit: int = 1000,
                   offset: int = 0) -> builtins.list[tuple[ItemKey, str]]:
        return self._run(
            KeyedSQL.list(user_id, prefix, limit=limit, offset=offset))

    def bind_key(self, item: ItemKey, memory_id: str) -> bool:
        """See :meth:`memos_core.vault.base.KeyedItems.bind_key`."""
        key = _check_item(item)
        with self._tx() as tx:
            row = tx.conn.execute("SELECT user_id, state FROM memories WHERE id=%s",
                                  (memory_id,)).fetchone()
            if row is None or row[0] != item.user_id or row[1] == "deleted":
                raise MemoryNotFoundError(
                    f"No memory {memory_id!r} of {item.user_id!r} to bind key {item.key!r} to.")
            cur = tx.conn.execute("INSERT INTO item_keys(user_id, ns_path, key, memory_id) "
                                  "VALUES (%s,%s,%s,%s) ON CONFLICT DO NOTHING", (*key, memory_id))
            return bool(cur.rowcount)

    def unbind_key(self, item: ItemKey, memory_id: str) -> bool:
        with self._tx() as tx:
            cur = tx.conn.execute("DELETE FROM item_keys WHERE user_id=%s AND ns_path=%s AND "
                                  "key=%s AND memory_id=%s", (*_check_item(item), memory_id))
            return bool(cur.rowcount)


# -- conversation logs ------------------------------------------------------------------------


def _log_where(status: str | None) -> tuple[str, tuple[str, ...]]:
    if status is None:
        return "user_id = %s AND log_id = %s", ()
    if status not in STATUSES:
        raise InvalidInputError(f"status must be one of {STATUSES} or None, got {status!r}.")
    return "user_id = %s AND log_id = %s AND status = %s", (status,)


def _pairs(rows: Sequence[Sequence[Any]]) -> builtins.list[LogRow]:
    return [(r[0], r[1]) for r in rows]


class LogSQL:
    """Statement programs of the conversation logs. Arguments are checked when a program is
    built (before any connection is taken); the writes run under the vault's write lock."""

    @staticmethod
    def _insert(user_id: str, log_id: str, rows: Sequence[LogRow], status: str) -> Many:
        _log_where(status)
        now = utcnow().timestamp()
        return Many("INSERT INTO conversation_log (user_id, log_id, message_id, status, message, "
                    "created_at) VALUES (%s, %s, %s, %s, %s, %s)",
                    [(user_id, log_id, mid, status, data, now) for mid, data in rows])

    @staticmethod
    def append(user_id: str, log_id: str, rows: Sequence[LogRow], status: str) -> Program[None]:
        step = LogSQL._insert(user_id, log_id, rows, status)

        def program() -> Program[None]:
            yield step

        return program()

    @staticmethod
    def read(user_id: str, log_id: str, status: str | None, limit: int | None = None,
             offset: int = 0) -> Program[builtins.list[LogRow]]:
        where, extra = _log_where(status)
        return one(Rows(f"SELECT message_id, message FROM conversation_log WHERE {where} "
                        "ORDER BY seq LIMIT %s OFFSET %s",
                        (user_id, log_id, *extra, limit, offset or 0)), _pairs)

    @staticmethod
    def count(user_id: str, log_id: str, status: str | None) -> Program[int]:
        where, extra = _log_where(status)
        return one(Rows(f"SELECT count(*) FROM conversation_log WHERE {where}",
                        (user_id, log_id, *extra)), lambda rows: int(rows[0][0]))

    @staticmethod
    def ids(user_id: str) -> Program[builtins.list[str]]:
        return one(Rows("SELECT log_id FROM conversation_log WHERE user_id = %s "
                        "GROUP BY log_id ORDER BY min(seq)", (user_id,)),
                   lambda rows: [r[0] for r in rows])

    @staticmethod
    def replace(user_id: str, log_id: str, rows: Sequence[LogRow], status: str,
                clear: str | None) -> Program[None]:
        where, extra = _log_where(clear)
        insert = LogSQL._insert(user_id, log_id, rows, status)

        def program() -> Program[None]:
            yield Exec(f"DELETE FROM conversation_log WHERE {where}", (user_id, log_id, *extra))
            yield insert

        return program()

    @staticmethod
    def delete(user_id: str, log_id: str, status: str | None) -> Program[builtins.list[LogRow]]:
        where, extra = _log_where(status)
        return one(Rows(f"DELETE FROM conversation_log WHERE {where} "
                        "RETURNING seq, message_id, message", (user_id, log_id, *extra)),
                   lambda rows: [(r[1], r[2]) for r in sorted(rows)])

    @staticmethod
    def delete_at(user_id: str, log_id: str, idx: int,
                  status: str | None) -> Program[LogRow | None]:
        where, extra = _log_where(status)

        def program() -> Program[LogRow | None]:
            seqs = [r[0] for r in (yield Rows(
                f"SELECT seq FROM conversation_log WHERE {where} ORDER BY seq",
                (user_id, log_id, *extra)))]
            if not -len(seqs) <= idx < len(seqs):
                return None
            row = (yield Rows("DELETE FROM conversation_log WHERE seq = %s "
                              "RETURNING message_id, message", (seqs[idx],)))[0]
            return (row[0], row[1])

        return program()

    @staticmethod
    def take_oldest(user_id: str, log_id: str, n: int, *,
                    archive: bool) -> Program[builtins.list[LogRow]]:
        rows = yield Rows(
            "SELECT seq, message_id, message FROM conversation_log WHERE user_id = %s AND "
            "log_id = %s AND status = 'active' ORDER BY seq LIMIT %s", (user_id, log_id, n))
        seqs = [r[0] for r in rows]
        if archive:
            yield Exec("UPDATE conversation_log SET status = 'archived' WHERE seq = ANY(%s)",
                       (seqs,))
        else:
            yield Exec("DELETE FROM conversation_log WHERE seq = ANY(%s)", (seqs,))
        return [(r[1], r[2]) for r in rows]


class PgLogMixin(PgRunner):
    """Conversation logs (:class:`LogSQL` on the sync pool; writes under the write lock)."""

    def log_append(self, user_id: str, log_id: str, rows: Sequence[LogRow], status: str) -> None:
        self._run_locked(LogSQL.append(user_id, log_id, rows, status))

    def log_read(self, user_id: str, log_id: str, status: str | None, limit: int | None = None,
                 offset: int = 0) -> builtins.list[LogRow]:
        return self._run(LogSQL.read(user_id, log_id, status, limit,
                                                              offset))

    def log_count(self, user_id: str, log_id: str, status: str | None) -> int:
        return int(self._run(LogSQL.count(user_id, log_id, status)))

    def log_ids(self, user_id: str) -> builtins.list[str]:
        return self._run(LogSQL.ids(user_id))

    def log_replace(self, user_id: str, log_id: str, rows: Sequence[LogRow], status: str,
                    clear: str | None) -> None:
        self._run_locked(LogSQL.replace(user_id, log_id, rows, status, clear))

    def log_delete(self, user_id: str, log_id: str, status: str | None) -> builtins.list[LogRow]:
        return self._run_locked(LogSQL.delete(user_id, log_id, status))

    def log_delete_at(self, user_id: str, log_id: str, idx: int,
                      status: str | None) -> LogRow | None:
        return self._run_locked(LogSQL.delete_at(user_id, log_id, idx, status))

    def log_take_oldest(self, user_id: str, log_id: str, n: int, *,
                        archive: bool) -> builtins.list[LogRow]:
        return self._run_locked(
            LogSQL.take_oldest(user_id, log_id, n, archive=archive))

    def log_redact(self, user_ids: Sequence[str], contains: Sequence[str],
                   message_ids: Sequence[str],
                   rewrite: Callable[[str, str], str | None]) -> builtins.list[tuple[str, str]]:
        conditions = ["strpos(message, %s) > 0"] * len(contains)
        params: builtins.list[Any] = list(contains)
        if message_ids:
            conditions.append("message_id = ANY(%s)")
            params.append(list(message_ids))
        if not conditions or not user_ids:
            return []
        changed: set[tuple[str, str]] = set()
        with self._tx() as tx:
            rows = tx.conn.execute(
                "SELECT seq, user_id, log_id, message_id, message FROM conversation_log "
                f"WHERE user_id = ANY(%s) AND ({' OR '.join(conditions)}) FOR UPDATE",
                (list(user_ids), *params)).fetchall()
            for seq, user_id, log_id, message_id, data in rows:
                new = rewrite(message_id, data)
                if new is not None and new != data:
                    tx.conn.execute("UPDATE conversation_log SET message = %s WHERE seq = %s",
                                    (new, seq))
                    changed.add((user_id, log_id))
        return sorted(changed)


# -- thread checkpoints -----------------------------------------------------------------------

_CP_COLUMNS = ("thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, run_id, type, "
               "checkpoint, metadata_type, metadata")
_CP_VALUES = (  # (table, type column, value column) of every stored value
    ("cp_checkpoints", "type", "checkpoint"),
    ("cp_checkpoints", "metadata_type", "metadata"),
    ("cp_blobs", "type", "value"),
    ("cp_writes", "type", "value"),
)
_CP_UPSERT = ("ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO UPDATE SET "
              "parent_checkpoint_id=EXCLUDED.parent_checkpoint_id, run_id=EXCLUDED.run_id, "
              "type=EXCLUDED.type, checkpoint=EXCLUDED.checkpoint, "
              "metadata_type=EXCLUDED.metadata_type, metadata=EXCLUDED.metadata")

#: A checkpoint of the (thread, namespace) of the row ``x``, for ``NOT EXISTS (...)``.
_ANY_CHECKPOINT = ("SELECT 1 FROM cp_checkpoints c WHERE c.thread_id=x.thread_id AND "
                   "c.checkpoint_ns=x.checkpoint_ns")

# Orphan sweeps (a blob or write of a (thread, namespace) with no checkpoint) delete with
# ``NOT EXISTS (<a checkpoint>)``. Under READ COMMITTED, a row the sweep finds locked by a
# transaction that then commits is re-checked with the statement's old snapshot: a
# checkpoint that transaction inserted is not seen, and its blob (an upsert of a row that was
# an orphan) would be deleted with the checkpoint committed. So a sweep first takes a table
# lock on cp_checkpoints that conflicts with the ROW EXCLUSIVE lock of every write of it:
# it waits for the transactions writing checkpoints to commit and keeps new ones out, and
# its DELETE, a later statement, gets a snapshot that sees what they committed. Every
# transaction that writes cp_checkpoints takes that lock before any row lock of the three
# tables (put inserts its checkpoint before its blobs; the redaction locks the table
# first), so a sweep holding the table lock never waits on a row lock of one of them.
#: the orphan sweep of ``cp_redact`` (its own transaction; sweeps may run together)
_CP_SWEEP_LOCK = "LOCK TABLE cp_checkpoints IN SHARE MODE"
#: ``delete_runs``, which also deletes checkpoints: self-exclusive, or two of them holding
#: SHARE would each wait on the other's ROW EXCLUSIVE
_CP_DELETE_RUNS_LOCK = "LOCK TABLE cp_checkpoints IN SHARE ROW EXCLUSIVE MODE"


def _raw(v: Any) -> bytes | None:
    return None if v is None else bytes(v)


def _record(row: Sequence[Any]) -> CheckpointRecord:
    return CheckpointRecord(row[0], row[1], row[2], row[3], row[4], (row[5], _raw(row[6])),
                            (row[7], _raw(row[8])))


def _records(rows: Sequence[Sequence[Any]]) -> builtins.list[CheckpointRecord]:
    return [_record(r) for r in rows]


#: blob rows per INSERT of ``CheckpointSQL.put`` (6 parameters each; the limit is 65535)
_BLOB_ROWS = 1000
#: a checkpoint with its channel-value blobs and pending writes (``CheckpointSQL.load``)
Loaded = tuple[CheckpointRecord, dict[str, Typed], builtins.list[tuple[str, str, Typed]]]


class CheckpointSQL:
    """Statement programs of the thread checkpoints (writes in a plain transaction)."""

    @staticmethod
    def put(record: CheckpointRecord, blobs: Sequence[tuple[str, str, Typed]]) -> Program[None]:
        """The checkpoint first, then its blobs: the first statement takes ``cp_checkpoints``'
        table lock, which the orphan sweeps wait on (:data:`_CP_SWEEP_LOCK`), before any blob
        row lock they could wait on (the other order deadlocks with them)."""
        r = record
        yield Exec(f"INSERT INTO cp_checkpoints ({_CP_COLUMNS}) VALUES "
                   f"(%s,%s,%s,%s,%s,%s,%s,%s,%s) {_CP_UPSERT}",
                   (r.thread_id, r.checkpoint_ns, r.checkpoint_id, r.parent_checkpoint_id,
                    r.run_id, r.checkpoint[0], r.checkpoint[1], r.metadata[0], r.metadata[1]))
        rows = [(r.thread_id, r.checkpoint_ns, channel, version, value[0], value[1])
                for channel, version, value in blobs]
        for start in range(0, len(rows), _BLOB_ROWS):  # one statement per chunk of rows
            chunk = rows[start:start + _BLOB_ROWS]
            yield Exec(f"INSERT INTO cp_blobs VALUES {','.join(['(%s,%s,%s,%s,%s,%s)'] * len(chunk))}"
                       " ON CONFLICT (thread_id, checkpoint_ns, channel, version) DO UPDATE SET "
                       "type=EXCLUDED.type, value=EXCLUDED.value",
                       [v for row in chunk for v in row])

    @staticmethod
    def get(thread_id: str, checkpoint_ns: str,
            checkpoint_id: str | None) -> Program[CheckpointRecord | None]:
        if checkpoint_id:
            step = Rows(f"SELECT {_CP_COLUMNS} FROM cp_checkpoints WHERE thread_id=%s AND "
                        "checkpoint_ns=%s AND checkpoint_id=%s",
                        (thread_id, checkpoint_ns, checkpoint_id))
        else:
            step = Rows(f"SELECT {_CP_COLUMNS} FROM cp_checkpoints WHERE thread_id=%s AND "
                        "checkpoint_ns=%s ORDER BY checkpoint_id DESC LIMIT 1",
                        (thread_id, checkpoint_ns))
        return one(step, lambda rows: _record(rows[0]) if rows else None)

    @staticmethod
    def list(thread_id: str | None = None, checkpoint_ns: str | None = None,
             checkpoint_id: str | None = None, before: str | None = None,
             limit: int | None = None) -> Program[builtins.list[CheckpointRecord]]:
        where: builtins.list[str] = []
        params: builtins.list[Any] = []
        for column, value in (("thread_id", thread_id), ("checkpoint_ns", checkpoint_ns),
                              ("checkpoint_id", checkpoint_id)):
            if value is not None:
                where.append(f"{column}=%s")
                params.append(value)
        if before is not None:
            where.append("checkpoint_id<%s")
            params.append(before)
        sql = f"SELECT {_CP_COLUMNS} FROM cp_checkpoints"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return one(Rows(sql + " ORDER BY checkpoint_id DESC LIMIT %s", [*params, limit]),
                   _records)

    @staticmethod
    def blobs(thread_id: str, checkpoint_ns: str,
              versions: Mapping[str, str]) -> Program[dict[str, Typed]]:
        if not versions:
            return {}
        rows = yield Rows(
            "SELECT b.channel, b.type, b.value FROM cp_blobs b JOIN unnest(%s::text[], %s::text[]) "
            "AS w(channel, version) ON b.channel = w.channel AND b.version = w.version "
            "WHERE b.thread_id=%s AND b.checkpoint_ns=%s",
            (list(versions), [str(v) for v in versions.values()], thread_id, checkpoint_ns))
        return {ch: (ty, _raw(v)) for ch, ty, v in rows}

    @staticmethod
    def put_writes(thread_id: str, checkpoint_ns: str, checkpoint_id: str, task_id: str,
                   task_path: str, writes: Sequence[tuple[int, str, Typed]]) -> Program[None]:
        for idx, channel, value in writes:
            conflict = ("DO UPDATE SET channel=EXCLUDED.channel, type=EXCLUDED.type, "
                        "value=EXCLUDED.value, task_path=EXCLUDED.task_path") if idx < 0 \
                else "DO NOTHING"
            yield Exec(
                "INSERT INTO cp_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, "
                "idx, channel, type, value, task_path) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) "
                "ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) " + conflict,
                (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, value[0],
                 value[1], task_path))

    @staticmethod
    def writes(thread_id: str, checkpoint_ns: str,
               checkpoint_id: str) -> Program[builtins.list[tuple[str, str, Typed]]]:
        return one(Rows(
            "SELECT task_id, channel, type, value FROM cp_writes WHERE thread_id=%s AND "
            "checkpoint_ns=%s AND checkpoint_id=%s ORDER BY task_path, task_id, idx",
            (thread_id, checkpoint_ns, checkpoint_id)),
            lambda rows: [(t, ch, (ty, _raw(v))) for t, ch, ty, v in rows])

    @staticmethod
    def parts(thread_id: str, checkpoint_ns: str, checkpoint_id: str, versions: Mapping[str, str]
              ) -> Program[tuple[dict[str, Typed], builtins.list[tuple[str, str, Typed]]]]:
        """:meth:`blobs` and :meth:`writes` of one checkpoint (one connection)."""
        blobs = yield from CheckpointSQL.blobs(thread_id, checkpoint_ns, versions)
        writes = yield from CheckpointSQL.writes(thread_id, checkpoint_ns, checkpoint_id)
        return blobs, writes

    @staticmethod
    def load(thread_id: str, checkpoint_ns: str, checkpoint_id: str | None,
             versions_of: Callable[[CheckpointRecord], Mapping[str, str]]) -> Program[Loaded | None]:
        """:meth:`get`, then :meth:`parts` of the record found (``versions_of(record)``: the
        channel versions its checkpoint names), on one connection; None if there is none."""
        record = yield from CheckpointSQL.get(thread_id, checkpoint_ns, checkpoint_id)
        if record is None:
            return None
        blobs, writes = yield from CheckpointSQL.parts(
            record.thread_id, record.checkpoint_ns, record.checkpoint_id, versions_of(record))
        return record, blobs, writes

    @staticmethod
    def delete_thread(thread_id: str) -> Program[None]:
        for table in ("cp_checkpoints", "cp_blobs", "cp_writes"):
            yield Exec(f"DELETE FROM {table} WHERE thread_id=%s", (thread_id,))

    @staticmethod
    def delete_runs(run_ids: Sequence[str]) -> Program[None]:
        ids = [str(r) for r in run_ids]
        if not ids:
            return
        yield Exec(_CP_DELETE_RUNS_LOCK)  # before any statement: see _CP_SWEEP_LOCK
        scopes = yield Rows("SELECT DISTINCT thread_id, checkpoint_ns FROM cp_checkpoints "
                            "WHERE run_id = ANY(%s)", (ids,))
        yield Exec(
            "DELETE FROM cp_writes w USING cp_checkpoints c WHERE c.run_id = ANY(%s) AND "
            "c.thread_id=w.thread_id AND c.checkpoint_ns=w.checkpoint_ns AND "
            "c.checkpoint_id=w.checkpoint_id", (ids,))
        yield Exec("DELETE FROM cp_checkpoints WHERE run_id = ANY(%s)", (ids,))
        if not scopes:
            return
        # a (thread, namespace) left without a checkpoint: no checkpoint can load its
        # channel values (owner marks included) or writes any more
        threads, namespaces = [s[0] for s in scopes], [s[1] for s in scopes]
        for table in ("cp_blobs", "cp_writes"):
            yield Exec(
                f"DELETE FROM {table} x USING unnest(%s::text[], %s::text[]) AS "
                "s(thread_id, checkpoint_ns) WHERE x.thread_id=s.thread_id AND "
                f"x.checkpoint_ns=s.checkpoint_ns AND NOT EXISTS ({_ANY_CHECKPOINT})",
                (threads, namespaces))

    @staticmethod
    def any_rows() -> Program[bool]:
        return one(Rows("SELECT EXISTS (SELECT 1 FROM cp_checkpoints) OR EXISTS (SELECT 1 "
                        "FROM cp_blobs) OR EXISTS (SELECT 1 FROM cp_writes)", ()),
                   lambda rows: bool(rows[0][0]))

    @staticmethod
    def copy_thread(source: str, target: str) -> Program[None]:
        yield Exec(
            f"INSERT INTO cp_checkpoints ({_CP_COLUMNS}) SELECT %s, checkpoint_ns, "
            "checkpoint_id, parent_checkpoint_id, run_id, type, checkpoint, metadata_type, "
            f"metadata FROM cp_checkpoints WHERE thread_id=%s {_CP_UPSERT}", (target, source))
        yield Exec(
            "INSERT INTO cp_blobs SELECT %s, checkpoint_ns, channel, version, type, value "
            "FROM cp_blobs WHERE thread_id=%s ON CONFLICT (thread_id, checkpoint_ns, "
            "channel, version) DO UPDATE SET type=EXCLUDED.type, value=EXCLUDED.value",
            (target, source))
        yield Exec(
            "INSERT INTO cp_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, "
            "channel, type, value, task_path) SELECT %s, checkpoint_ns, checkpoint_id, "
            "task_id, idx, channel, type, value, task_path FROM cp_writes WHERE thread_id=%s "
            "ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE "
            "SET channel=EXCLUDED.channel, type=EXCLUDED.type, value=EXCLUDED.value, "
            "task_path=EXCLUDED.task_path", (target, source))


class PgCheckpointsMixin(PgRunner):
    """Thread checkpoints (:class:`CheckpointSQL` on the sync pool)."""

    @contextmanager
    def _cp_tx(self) -> Iterator[Any]:
        """A plain transaction (checkpoints are no memory change: no write lock, no feed)."""
        with self._conn() as conn, conn.transaction():
            yield conn

    def cp_put(self, record: CheckpointRecord, blobs: Sequence[tuple[str, str, Typed]]) -> None:
        self._run_plain(CheckpointSQL.put(record, blobs))

    def cp_get(self, thread_id: str, checkpoint_ns: str,
               checkpoint_id: str | None) -> CheckpointRecord | None:
        return self._run(
            CheckpointSQL.get(thread_id, checkpoint_ns, checkpoint_id))

    def cp_list(self, thread_id: str | None = None, checkpoint_ns: str | None = None,
                checkpoint_id: str | None = None, before: str | None = None,
                limit: int | None = None) -> builtins.list[CheckpointRecord]:
        return self._run(
            CheckpointSQL.list(thread_id, checkpoint_ns, checkpoint_id, before, limit))

    def cp_blobs(self, thread_id: str, checkpoint_ns: str,
                 versions: Mapping[str, str]) -> dict[str, Typed]:
        return self._run(CheckpointSQL.blobs(thread_id, checkpoint_ns,
                                                                 versions))

    def cp_put_writes(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str,
                      task_id: str, task_path: str,
                      writes: Sequence[tuple[int, str, Typed]]) -> None:
        self._run_plain(CheckpointSQL.put_writes(thread_id, checkpoint_ns, checkpoint_id,
                                                 task_id, task_path, writes))

    def cp_writes(self, thread_id: str, checkpoint_ns: str,
                  checkpoint_id: str) -> builtins.list[tuple[str, str, Typed]]:
        return self._run(
            CheckpointSQL.writes(thread_id, checkpoint_ns, checkpoint_id))

    def cp_delete_thread(self, thread_id: str) -> None:
        self._run_plain(CheckpointSQL.delete_thread(thread_id))

    def cp_delete_runs(self, run_ids: Sequence[str]) -> None:
        self._run_plain(CheckpointSQL.delete_runs(run_ids))

    def cp_copy_thread(self, source: str, target: str) -> None:
        self._run_plain(CheckpointSQL.copy_thread(source, target))

    def cp_any(self) -> bool:
        return self._run(CheckpointSQL.any_rows())

    def cp_redact(self, contains: Sequence[bytes],
                  rewrite: Callable[[Typed], Typed | None], *,
                  skip_threads: Collection[str] = ()) -> builtins.list[str]:
        if not contains:
            return []
        threads: set[str] = set()
        needles = [bytes(c) for c in contains]
        with self._cp_tx() as conn:
            # unreachable values (left by earlier versions' cp_delete_runs): never searched.
            # A transaction of its own: its table lock holds every put only meanwhile, and
            # only when there are any (looked for first without the lock: puts commit a
            # checkpoint with its blobs, so what this finds is what those versions left)
            orphans = conn.execute(
                f"SELECT EXISTS (SELECT 1 FROM cp_blobs x WHERE NOT EXISTS ({_ANY_CHECKPOINT}))"
            ).fetchone()
            if orphans is not None and orphans[0]:
                conn.execute(_CP_SWEEP_LOCK)
                conn.execute(f"DELETE FROM cp_blobs x WHERE NOT EXISTS ({_ANY_CHECKPOINT})")
        with self._cp_tx() as conn:
            # the table lock before any row lock (see _CP_SWEEP_LOCK): the row locks of the
            # checkpoints selected, then updated, would otherwise deadlock with delete_runs
            conn.execute("LOCK TABLE cp_checkpoints IN ROW EXCLUSIVE MODE")
            for table, type_col, value_col in _CP_VALUES:
                match = " OR ".join(f"position(%s::bytea in {value_col}) > 0" for _ in needles)
                rows = conn.execute(
                    f"SELECT ctid, thread_id, {type_col}, {value_col} FROM {table} "
                    f"WHERE {value_col} IS NOT NULL AND ({match}) FOR UPDATE", needles).fetchall()
                for ctid, thread, vtype, blob in rows:
                    if thread in skip_threads:
                        continue
                    old = (vtype, bytes(blob))
                    new = rewrite(old)
                    if new is None or tuple(new) == old:
                        continue
                    conn.execute(f"UPDATE {table} SET {type_col}=%s, {value_col}=%s "
                                 "WHERE ctid=%s::tid", (new[0], new[1], ctid))
                    threads.add(thread)
        return sorted(threads)
