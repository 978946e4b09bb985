"""Integration storage in the PostgreSQL vault: keyed items, conversation logs, thread
checkpoints (mixins of :class:`~memos_core.vault.postgres.PostgresVault`).

The same tables and semantics as the SQLite vault (:mod:`~memos_core.vault.sqlite_keyed`,
:mod:`~memos_core.vault.sqlite_log`, :mod:`~memos_core.vault.sqlite_checkpoints`), created by
schema migration 3 (:mod:`~memos_core.vault.pg_schema`). Keyed writes and log writes run under
the vault's write lock (so ``put_keyed`` checks and binds atomically across processes, and
log rows are numbered in commit order); checkpoint writes take only their rows' locks.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from memos_core.cube import MemCube, utcnow
from memos_core.errors import ConflictError, InvalidInputError, MemoryNotFoundError
from memos_core.vault.base import Actor, CheckpointRecord, ItemKey, LogRow, NamespaceGrant, Typed
from memos_core.vault.sqlite_keyed import SEP, _check_item, ns_path
from memos_core.vault.sqlite_log import STATUSES


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


def _grant_key(grant: NamespaceGrant) -> tuple[str, str, str, str]:
    return (grant.owner, grant.agent_id or "", grant.session_id or "", grant.grantee)


class PgKeyedMixin:
    """Keyed items; uses the vault's ``_tx``, ``_query``, ``_insert_cubes``, ``_put_version``
    and ``_with_usage``."""

    _tx: Any
    _query: Any
    _insert_cubes: Any
    _put_version: Any
    _with_usage: Any

    def put_keyed(self, item: ItemKey, cube: MemCube, expected_version: int | None,
                  actor: Actor, action: str) -> None:
        """See :meth:`memos_core.vault.base.KeyedItems.put_keyed`."""
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
        rows = self._query(
            "SELECT m.id, m.doc::text FROM item_keys k JOIN memories m ON m.id = k.memory_id "
            "WHERE k.user_id=%s AND k.ns_path=%s AND k.key=%s", _check_item(item))
        cubes: list[MemCube] = self._with_usage(rows)
        return cubes[0] if cubes else None

    def list_keyed(self, user_id: str, prefix: Sequence[str] = (), *, limit: int = 1000,
                   offset: int = 0) -> list[tuple[ItemKey, str]]:
        low = ns_path(tuple(prefix), "prefix")
        sql = "SELECT ns_path, key, memory_id FROM item_keys WHERE user_id=%s"
        params: list[Any] = [user_id]
        if low:  # label by label: the stored path starts with the prefix's (SEP-terminated)
            sql += " AND left(ns_path, %s) = %s"
            params += [len(low), low]
        rows = self._query(sql + " ORDER BY seq LIMIT %s OFFSET %s", [*params, limit, offset])
        return [(ItemKey(user_id, tuple(path.split(SEP)[:-1]), key), mid)
                for path, key, mid in rows]

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


def _log_where(status: str | None) -> tuple[str, tuple[str, ...]]:
    if status is None:
        return "user_id = %s AND log_id = %s", ()
    if status not in STATUSES:
        raise InvalidInputError(f"status must be one of {STATUSES} or None, got {status!r}.")
    return "user_id = %s AND log_id = %s AND status = %s", (status,)


class PgLogMixin:
    """Conversation logs; uses the vault's ``_tx`` and ``_query``."""

    _tx: Any
    _query: Any

    @staticmethod
    def _log_insert(conn: Any, user_id: str, log_id: str, rows: Sequence[LogRow],
                    status: str) -> None:
        _log_where(status)
        now = utcnow().timestamp()
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO conversation_log (user_id, log_id, message_id, status, message, "
                "created_at) VALUES (%s, %s, %s, %s, %s, %s)",
                [(user_id, log_id, mid, status, data, now) for mid, data in rows])

    def log_append(self, user_id: str, log_id: str, rows: Sequence[LogRow], status: str) -> None:
        with self._tx() as tx:
            self._log_insert(tx.conn, user_id, log_id, rows, status)

    def log_read(self, user_id: str, log_id: str, status: str | None, limit: int | None = None,
                 offset: int = 0) -> list[LogRow]:
        where, extra = _log_where(status)
        rows = self._query(f"SELECT message_id, message FROM conversation_log WHERE {where} "
                           "ORDER BY seq LIMIT %s OFFSET %s",
                           (user_id, log_id, *extra, limit, offset or 0))
        return [(r[0], r[1]) for r in rows]

    def log_count(self, user_id: str, log_id: str, status: str | None) -> int:
        where, extra = _log_where(status)
        return int(self._query(f"SELECT count(*) FROM conversation_log WHERE {where}",
                               (user_id, log_id, *extra))[0][0])

    def log_ids(self, user_id: str) -> list[str]:
        rows = self._query("SELECT log_id FROM conversation_log WHERE user_id = %s "
                           "GROUP BY log_id ORDER BY min(seq)", (user_id,))
        return [r[0] for r in rows]

    def log_replace(self, user_id: str, log_id: str, rows: Sequence[LogRow], status: str,
                    clear: str | None) -> None:
        where, extra = _log_where(clear)
        with self._tx() as tx:
            tx.conn.execute(f"DELETE FROM conversation_log WHERE {where}", (user_id, log_id, *extra))
            self._log_insert(tx.conn, user_id, log_id, rows, status)

    def log_delete(self, user_id: str, log_id: str, status: str | None) -> list[LogRow]:
        where, extra = _log_where(status)
        with self._tx() as tx:
            rows = tx.conn.execute(f"DELETE FROM conversation_log WHERE {where} "
                                   "RETURNING seq, message_id, message",
                                   (user_id, log_id, *extra)).fetchall()
        return [(r[1], r[2]) for r in sorted(rows)]

    def log_delete_at(self, user_id: str, log_id: str, idx: int,
                      status: str | None) -> LogRow | None:
        where, extra = _log_where(status)
        with self._tx() as tx:
            seqs = [r[0] for r in tx.conn.execute(
                f"SELECT seq FROM conversation_log WHERE {where} ORDER BY seq",
                (user_id, log_id, *extra))]
            if not -len(seqs) <= idx < len(seqs):
                return None
            row = tx.conn.execute("DELETE FROM conversation_log WHERE seq = %s "
                                  "RETURNING message_id, message", (seqs[idx],)).fetchone()
        return (row[0], row[1])

    def log_take_oldest(self, user_id: str, log_id: str, n: int, *,
                        archive: bool) -> list[LogRow]:
        with self._tx() as tx:
            rows = tx.conn.execute(
                "SELECT seq, message_id, message FROM conversation_log WHERE user_id = %s AND "
                "log_id = %s AND status = 'active' ORDER BY seq LIMIT %s",
                (user_id, log_id, n)).fetchall()
            seqs = [r[0] for r in rows]
            if archive:
                tx.conn.execute("UPDATE conversation_log SET status = 'archived' "
                                "WHERE seq = ANY(%s)", (seqs,))
            else:
                tx.conn.execute("DELETE FROM conversation_log WHERE seq = ANY(%s)", (seqs,))
        return [(r[1], r[2]) for r in rows]

    def log_redact(self, user_ids: Sequence[str], contains: Sequence[str],
                   message_ids: Sequence[str],
                   rewrite: Callable[[str, str], str | None]) -> list[tuple[str, str]]:
        conditions = ["strpos(message, %s) > 0"] * len(contains)
        params: list[Any] = list(contains)
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


_CP_COLUMNS = ("thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, run_id, type, "
               "checkpoint, metadata_type, metadata")
_CP_VALUES = (  # (table, type column, value column) of every stored value
    ("cp_checkpoints", "type", "checkpoint"),
    ("cp_checkpoints", "metadata_type", "metadata"),
    ("cp_blobs", "type", "value"),
    ("cp_writes", "type", "value"),
)


def _record(row: Sequence[Any]) -> CheckpointRecord:
    def raw(v: Any) -> bytes | None:
        return None if v is None else bytes(v)

    return CheckpointRecord(row[0], row[1], row[2], row[3], row[4], (row[5], raw(row[6])),
                            (row[7], raw(row[8])))


class PgCheckpointsMixin:
    """Thread checkpoints; uses the vault's ``_conn`` and ``_query``."""

    _conn: Any
    _query: Any

    @contextmanager
    def _cp_tx(self) -> Iterator[Any]:
        """A plain transaction (checkpoints are no memory change: no write lock, no feed)."""
        with self._conn() as conn, conn.transaction():
            yield conn

    def cp_put(self, record: CheckpointRecord, blobs: Sequence[tuple[str, str, Typed]]) -> None:
        r = record
        with self._cp_tx() as conn:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO cp_blobs VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (thread_id, "
                    "checkpoint_ns, channel, version) DO UPDATE SET type=EXCLUDED.type, "
                    "value=EXCLUDED.value",
                    [(r.thread_id, r.checkpoint_ns, channel, version, value[0], value[1])
                     for channel, version, value in blobs])
            conn.execute(
                f"INSERT INTO cp_checkpoints ({_CP_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) "
                "ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO UPDATE SET "
                "parent_checkpoint_id=EXCLUDED.parent_checkpoint_id, run_id=EXCLUDED.run_id, "
                "type=EXCLUDED.type, checkpoint=EXCLUDED.checkpoint, "
                "metadata_type=EXCLUDED.metadata_type, metadata=EXCLUDED.metadata",
                (r.thread_id, r.checkpoint_ns, r.checkpoint_id, r.parent_checkpoint_id,
                 r.run_id, r.checkpoint[0], r.checkpoint[1], r.metadata[0], r.metadata[1]))

    def cp_get(self, thread_id: str, checkpoint_ns: str,
               checkpoint_id: str | None) -> CheckpointRecord | None:
        if checkpoint_id:
            rows = self._query(
                f"SELECT {_CP_COLUMNS} FROM cp_checkpoints WHERE thread_id=%s AND "
                "checkpoint_ns=%s AND checkpoint_id=%s", (thread_id, checkpoint_ns, checkpoint_id))
        else:
            rows = self._query(
                f"SELECT {_CP_COLUMNS} FROM cp_checkpoints WHERE thread_id=%s AND "
                "checkpoint_ns=%s ORDER BY checkpoint_id DESC LIMIT 1", (thread_id, checkpoint_ns))
        return _record(rows[0]) if rows else None

    def cp_list(self, thread_id: str | None = None, checkpoint_ns: str | None = None,
                checkpoint_id: str | None = None, before: str | None = None,
                limit: int | None = None) -> list[CheckpointRecord]:
        where: list[str] = []
        params: list[Any] = []
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
        sql += " ORDER BY checkpoint_id DESC LIMIT %s"
        return [_record(r) for r in self._query(sql, [*params, limit])]

    def cp_blobs(self, thread_id: str, checkpoint_ns: str,
                 versions: Mapping[str, str]) -> dict[str, Typed]:
        if not versions:
            return {}
        rows = self._query(
            "SELECT b.channel, b.type, b.value FROM cp_blobs b JOIN unnest(%s::text[], %s::text[]) "
            "AS w(channel, version) ON b.channel = w.channel AND b.version = w.version "
            "WHERE b.thread_id=%s AND b.checkpoint_ns=%s",
            (list(versions), [str(v) for v in versions.values()], thread_id, checkpoint_ns))
        return {ch: (ty, None if v is None else bytes(v)) for ch, ty, v in rows}

    def cp_put_writes(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str,
                      task_id: str, task_path: str,
                      writes: Sequence[tuple[int, str, Typed]]) -> None:
        with self._cp_tx() as conn:
            for idx, channel, value in writes:
                conflict = ("DO UPDATE SET channel=EXCLUDED.channel, type=EXCLUDED.type, "
                            "value=EXCLUDED.value, task_path=EXCLUDED.task_path") if idx < 0 \
                    else "DO NOTHING"
                conn.execute(
                    "INSERT INTO cp_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, "
                    "idx, channel, type, value, task_path) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) "
                    "ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) "
                    + conflict,
                    (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, value[0],
                     value[1], task_path))

    def cp_writes(self, thread_id: str, checkpoint_ns: str,
                  checkpoint_id: str) -> list[tuple[str, str, Typed]]:
        rows = self._query(
            "SELECT task_id, channel, type, value FROM cp_writes WHERE thread_id=%s AND "
            "checkpoint_ns=%s AND checkpoint_id=%s ORDER BY task_path, task_id, idx",
            (thread_id, checkpoint_ns, checkpoint_id))
        return [(t, ch, (ty, None if v is None else bytes(v))) for t, ch, ty, v in rows]

    def cp_delete_thread(self, thread_id: str) -> None:
        with self._cp_tx() as conn:
            for table in ("cp_checkpoints", "cp_blobs", "cp_writes"):
                conn.execute(f"DELETE FROM {table} WHERE thread_id=%s", (thread_id,))

    def cp_delete_runs(self, run_ids: Sequence[str]) -> None:
        ids = [str(r) for r in run_ids]
        if not ids:
            return
        with self._cp_tx() as conn:
            conn.execute(
                "DELETE FROM cp_writes w USING cp_checkpoints c WHERE c.run_id = ANY(%s) AND "
                "c.thread_id=w.thread_id AND c.checkpoint_ns=w.checkpoint_ns AND "
                "c.checkpoint_id=w.checkpoint_id", (ids,))
            conn.execute("DELETE FROM cp_checkpoints WHERE run_id = ANY(%s)", (ids,))

    def cp_copy_thread(self, source: str, target: str) -> None:
        with self._cp_tx() as conn:
            conn.execute(
                f"INSERT INTO cp_checkpoints ({_CP_COLUMNS}) SELECT %s, checkpoint_ns, "
                "checkpoint_id, parent_checkpoint_id, run_id, type, checkpoint, metadata_type, "
                "metadata FROM cp_checkpoints WHERE thread_id=%s ON CONFLICT (thread_id, "
                "checkpoint_ns, checkpoint_id) DO UPDATE SET "
                "parent_checkpoint_id=EXCLUDED.parent_checkpoint_id, run_id=EXCLUDED.run_id, "
                "type=EXCLUDED.type, checkpoint=EXCLUDED.checkpoint, "
                "metadata_type=EXCLUDED.metadata_type, metadata=EXCLUDED.metadata",
                (target, source))
            conn.execute(
                "INSERT INTO cp_blobs SELECT %s, checkpoint_ns, channel, version, type, value "
                "FROM cp_blobs WHERE thread_id=%s ON CONFLICT (thread_id, checkpoint_ns, "
                "channel, version) DO UPDATE SET type=EXCLUDED.type, value=EXCLUDED.value",
                (target, source))
            conn.execute(
                "INSERT INTO cp_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, "
                "channel, type, value, task_path) SELECT %s, checkpoint_ns, checkpoint_id, "
                "task_id, idx, channel, type, value, task_path FROM cp_writes WHERE thread_id=%s "
                "ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE "
                "SET channel=EXCLUDED.channel, type=EXCLUDED.type, value=EXCLUDED.value, "
                "task_path=EXCLUDED.task_path", (target, source))

    def cp_redact(self, contains: Sequence[bytes],
                  rewrite: Callable[[Typed], Typed | None]) -> list[str]:
        if not contains:
            return []
        threads: set[str] = set()
        needles = [bytes(c) for c in contains]
        with self._cp_tx() as conn:
            for table, type_col, value_col in _CP_VALUES:
                match = " OR ".join(f"position(%s::bytea in {value_col}) > 0" for _ in needles)
                rows = conn.execute(
                    f"SELECT ctid, thread_id, {type_col}, {value_col} FROM {table} "
                    f"WHERE {value_col} IS NOT NULL AND ({match}) FOR UPDATE", needles).fetchall()
                for ctid, thread, vtype, blob in rows:
                    old = (vtype, bytes(blob))
                    new = rewrite(old)
                    if new is None or tuple(new) == old:
                        continue
                    conn.execute(f"UPDATE {table} SET {type_col}=%s, {value_col}=%s "
                                 "WHERE ctid=%s::tid", (new[0], new[1], ctid))
                    threads.add(thread)
        return sorted(threads)
