"""Thread checkpoints in the SQLite vault (a mixin of :class:`~memos_core.vault.sqlite.SQLiteVault`).

Three tables, as LangGraph's own SQL savers lay them out: ``cp_checkpoints`` (a checkpoint
without its channel values, and its metadata), ``cp_blobs`` (each channel value, written only
when its version changes) and ``cp_writes`` (a task's pending writes). Values are stored as
the framework serialised them, ``(type, bytes)``; the vault never decodes them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from memos_core.vault.base import CheckpointRecord, Typed

SCHEMA = """
CREATE TABLE IF NOT EXISTS cp_checkpoints (
    thread_id TEXT NOT NULL,
    checkpoint_ns TEXT NOT NULL,
    checkpoint_id TEXT NOT NULL,
    parent_checkpoint_id TEXT,
    run_id TEXT,
    type TEXT NOT NULL,
    checkpoint BLOB,
    metadata_type TEXT NOT NULL,
    metadata BLOB,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
);
CREATE INDEX IF NOT EXISTS cp_checkpoints_run ON cp_checkpoints (run_id);
CREATE TABLE IF NOT EXISTS cp_blobs (
    thread_id TEXT NOT NULL,
    checkpoint_ns TEXT NOT NULL,
    channel TEXT NOT NULL,
    version TEXT NOT NULL,
    type TEXT NOT NULL,
    value BLOB,
    PRIMARY KEY (thread_id, checkpoint_ns, channel, version)
);
CREATE TABLE IF NOT EXISTS cp_writes (
    thread_id TEXT NOT NULL,
    checkpoint_ns TEXT NOT NULL,
    checkpoint_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    channel TEXT NOT NULL,
    type TEXT NOT NULL,
    value BLOB,
    task_path TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
);
"""

_COLUMNS = ("thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, run_id, type, "
            "checkpoint, metadata_type, metadata")

#: (table, type column, value column) of every stored value.
_VALUES = (
    ("cp_checkpoints", "type", "checkpoint"),
    ("cp_checkpoints", "metadata_type", "metadata"),
    ("cp_blobs", "type", "value"),
    ("cp_writes", "type", "value"),
)

#: A checkpoint of the row's (thread, namespace) of ``table``, for ``NOT EXISTS (...)``.
_ANY_CHECKPOINT = ("SELECT 1 FROM cp_checkpoints c WHERE c.thread_id={table}.thread_id AND "
                   "c.checkpoint_ns={table}.checkpoint_ns")


def _record(row: Sequence[Any]) -> CheckpointRecord:
    return CheckpointRecord(row[0], row[1], row[2], row[3], row[4], (row[5], row[6]),
                            (row[7], row[8]))


class SQLiteCheckpointsMixin:
    """Thread-checkpoint storage; uses the vault's ``_tx`` and ``_query``. A delete (of a
    thread, of runs) truncates the WAL after its commit, as a conversation-log delete does
    (:mod:`memos_core.vault.sqlite_log`), so the deleted state leaves the disk at once. A
    (thread, namespace) never keeps blobs without a checkpoint: ``cp_delete_runs`` deletes
    them with its last checkpoint, ``cp_redact`` those earlier versions left."""

    _tx: Any
    _query: Any
    _truncate_after_delete: Callable[[int, str], None]

    def cp_put(self, record: CheckpointRecord, blobs: Sequence[tuple[str, str, Typed]]) -> None:
        r = record
        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO cp_blobs VALUES (?, ?, ?, ?, ?, ?)",
                [(r.thread_id, r.checkpoint_ns, channel, version, value[0], value[1])
                 for channel, version, value in blobs])
            db.execute(
                f"INSERT OR REPLACE INTO cp_checkpoints ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
                (r.thread_id, r.checkpoint_ns, r.checkpoint_id, r.parent_checkpoint_id,
                 r.run_id, r.checkpoint[0], r.checkpoint[1], r.metadata[0], r.metadata[1]))

    def cp_get(self, thread_id: str, checkpoint_ns: str,
               checkpoint_id: str | None) -> CheckpointRecord | None:
        if checkpoint_id:
            rows = self._query(
                f"SELECT {_COLUMNS} FROM cp_checkpoints WHERE thread_id=? AND checkpoint_ns=? "
                "AND checkpoint_id=?", (thread_id, checkpoint_ns, checkpoint_id))
        else:
            rows = self._query(
                f"SELECT {_COLUMNS} FROM cp_checkpoints WHERE thread_id=? AND checkpoint_ns=? "
                "ORDER BY checkpoint_id DESC LIMIT 1", (thread_id, checkpoint_ns))
        return _record(rows[0]) if rows else None

    def cp_list(self, thread_id: str | None = None, checkpoint_ns: str | None = None,
                checkpoint_id: str | None = None, before: str | None = None,
                limit: int | None = None) -> list[CheckpointRecord]:
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("thread_id", thread_id), ("checkpoint_ns", checkpoint_ns),
                              ("checkpoint_id", checkpoint_id)):
            if value is not None:
                where.append(f"{column}=?")
                params.append(value)
        if before is not None:
            where.append("checkpoint_id<?")
            params.append(before)
        sql = f"SELECT {_COLUMNS} FROM cp_checkpoints"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY checkpoint_id DESC LIMIT ?"
        return [_record(r) for r in self._query(sql, [*params, -1 if limit is None else limit])]

    def cp_blobs(self, thread_id: str, checkpoint_ns: str,
                 versions: Mapping[str, str]) -> dict[str, Typed]:
        out: dict[str, Typed] = {}
        for channel, version in versions.items():
            rows = self._query(
                "SELECT type, value FROM cp_blobs WHERE thread_id=? AND checkpoint_ns=? AND "
                "channel=? AND version=?", (thread_id, checkpoint_ns, channel, str(version)))
            if rows:
                out[channel] = (rows[0][0], rows[0][1])
        return out

    def cp_put_writes(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str,
                      task_id: str, task_path: str,
                      writes: Sequence[tuple[int, str, Typed]]) -> None:
        with self._tx() as db:
            for idx, channel, value in writes:
                verb = "INSERT OR REPLACE" if idx < 0 else "INSERT OR IGNORE"
                db.execute(
                    f"{verb} INTO cp_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, "
                    "idx, channel, type, value, task_path) VALUES (?,?,?,?,?,?,?,?,?)",
                    (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, value[0],
                     value[1], task_path))

    def cp_writes(self, thread_id: str, checkpoint_ns: str,
                  checkpoint_id: str) -> list[tuple[str, str, Typed]]:
        rows = self._query(
            "SELECT task_id, channel, type, value FROM cp_writes WHERE thread_id=? AND "
            "checkpoint_ns=? AND checkpoint_id=? ORDER BY task_path, task_id, idx",
            (thread_id, checkpoint_ns, checkpoint_id))
        return [(t, ch, (ty, v)) for t, ch, ty, v in rows]

    def cp_delete_thread(self, thread_id: str) -> None:
        with self._tx() as db:
            deleted = sum(db.execute(f"DELETE FROM {table} WHERE thread_id=?",
                                     (thread_id,)).rowcount
                          for table in ("cp_checkpoints", "cp_blobs", "cp_writes"))
        self._truncate_after_delete(deleted, "checkpoint rows")

    def cp_delete_runs(self, run_ids: Sequence[str]) -> None:
        ids = [str(r) for r in run_ids]
        if not ids:
            return
        marks = ",".join("?" * len(ids))
        with self._tx() as db:
            scopes = db.execute(
                "SELECT DISTINCT thread_id, checkpoint_ns FROM cp_checkpoints "
                f"WHERE run_id IN ({marks})", ids).fetchall()
            writes = db.execute(
                "DELETE FROM cp_writes WHERE EXISTS (SELECT 1 FROM cp_checkpoints c WHERE "
                f"c.run_id IN ({marks}) AND c.thread_id=cp_writes.thread_id AND "
                "c.checkpoint_ns=cp_writes.checkpoint_ns AND "
                "c.checkpoint_id=cp_writes.checkpoint_id)", ids).rowcount
            checkpoints = db.execute(
                f"DELETE FROM cp_checkpoints WHERE run_id IN ({marks})", ids).rowcount
            # a (thread, namespace) left without a checkpoint: no checkpoint can load its
            # channel values (owner marks included) or writes any more
            left = sum(db.execute(
                f"DELETE FROM {table} WHERE thread_id=? AND checkpoint_ns=? AND NOT EXISTS "
                f"({_ANY_CHECKPOINT.format(table=table)})", scope).rowcount
                for scope in scopes for table in ("cp_blobs", "cp_writes"))
        self._truncate_after_delete(writes + checkpoints + left, "checkpoint rows")

    def cp_any(self) -> bool:
        return bool(self._query(
            "SELECT EXISTS (SELECT 1 FROM cp_checkpoints) OR EXISTS (SELECT 1 FROM cp_blobs) "
            "OR EXISTS (SELECT 1 FROM cp_writes)")[0][0])

    def cp_copy_thread(self, source: str, target: str) -> None:
        with self._tx() as db:
            db.execute(
                f"INSERT OR REPLACE INTO cp_checkpoints ({_COLUMNS}) SELECT ?, checkpoint_ns, "
                "checkpoint_id, parent_checkpoint_id, run_id, type, checkpoint, metadata_type, "
                "metadata FROM cp_checkpoints WHERE thread_id=?", (target, source))
            db.execute(
                "INSERT OR REPLACE INTO cp_blobs SELECT ?, checkpoint_ns, channel, version, "
                "type, value FROM cp_blobs WHERE thread_id=?", (target, source))
            db.execute(
                "INSERT OR REPLACE INTO cp_writes (thread_id, checkpoint_ns, checkpoint_id, "
                "task_id, idx, channel, type, value, task_path) SELECT ?, checkpoint_ns, "
                "checkpoint_id, task_id, idx, channel, type, value, task_path FROM cp_writes "
                "WHERE thread_id=?", (target, source))

    def cp_redact(self, contains: Sequence[bytes],
                  rewrite: Callable[[Typed], Typed | None], *,
                  skip_threads: Collection[str] = ()) -> list[str]:
        if not contains:
            return []
        threads: set[str] = set()
        with self._tx() as db:
            # unreachable values (left by earlier versions' cp_delete_runs): never searched
            db.execute("DELETE FROM cp_blobs WHERE NOT EXISTS "
                       f"({_ANY_CHECKPOINT.format(table='cp_blobs')})")
            for table, type_col, value_col in _VALUES:
                match = " OR ".join(f"instr({value_col}, ?) > 0" for _ in contains)
                rows = db.execute(
                    f"SELECT rowid, thread_id, {type_col}, {value_col} FROM {table} "
                    f"WHERE {value_col} IS NOT NULL AND ({match})",
                    [bytes(c) for c in contains]).fetchall()
                for rowid, thread, vtype, blob in rows:
                    if thread in skip_threads:
                        continue
                    new = rewrite((vtype, blob))
                    if new is None or tuple(new) == (vtype, blob):
                        continue
                    db.execute(f"UPDATE {table} SET {type_col}=?, {value_col}=? WHERE rowid=?",
                               (new[0], new[1], rowid))
                    threads.add(thread)
        return sorted(threads)
