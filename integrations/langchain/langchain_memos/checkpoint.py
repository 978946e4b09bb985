"""``MemOSCheckpointer``: LangGraph thread state (short-term memory) in the MemOS data directory.

Checkpoints are not memories: they are the exact state of a graph at each step, so they
live in their own SQLite file, ``<data_dir>/checkpoints.sqlite3``, beside the vault. One data
directory then holds both the short-term (thread) and the long-term (MemOS) memory of an
agent, and moves, backs up and is locked as one.

Storage layout: a checkpoint row keeps the checkpoint without its channel values; each
channel value is a blob keyed by (thread, namespace, channel, version) and written only
when its version changes, so a long thread does not copy its whole state at every step.
Values are encoded with the saver's ``serde`` (LangGraph's ``JsonPlusSerializer`` by default,
msgpack-based, never pickle) as ``(type, bytes)`` pairs.

Forgetting: ``MemOS.forget`` reaches the file (see :mod:`memos_core.governance.forget_hooks`):
every checkpoint, channel value and pending write holding the forgotten memory is decoded,
its messages redacted (the text becomes ``[forgotten]``; the messages stay, so the thread
still loads and resumes) and re-encoded; the file has ``secure_delete`` on and its WAL is
truncated afterwards. While a checkpointer is open this is its forget hook (its connection,
its ``serde``); otherwise :func:`redact_files`, this package's file redactor (entry point
``memos_core.forget_hooks``), opens the file with the default serializer and does the same.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol, maybe_add_typed_methods
from langgraph.types import Interrupt, Send
from memos_core import resolve_memos
from memos_core import InvalidInputError, MemCube, MemOS
from memos_core.governance.forget_hooks import FORGOTTEN, MessageRedactor, open_log, truncate_wal
from memos_core.results import DerivedForm

FILENAME = "checkpoints.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    thread_id TEXT NOT NULL,
    checkpoint_ns TEXT NOT NULL,
    checkpoint_id TEXT NOT NULL,
    parent_checkpoint_id TEXT,
    run_id TEXT,
    type TEXT NOT NULL,
    checkpoint BLOB NOT NULL,
    metadata_type TEXT NOT NULL,
    metadata BLOB NOT NULL,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
);
CREATE INDEX IF NOT EXISTS checkpoints_run ON checkpoints (run_id);
CREATE TABLE IF NOT EXISTS blobs (
    thread_id TEXT NOT NULL,
    checkpoint_ns TEXT NOT NULL,
    channel TEXT NOT NULL,
    version TEXT NOT NULL,
    type TEXT NOT NULL,
    value BLOB,
    PRIMARY KEY (thread_id, checkpoint_ns, channel, version)
);
CREATE TABLE IF NOT EXISTS writes (
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

#: (table, type column, value column) of every serialised value that may hold messages.
_VALUE_COLUMNS = (
    ("checkpoints", "type", "checkpoint"),
    ("checkpoints", "metadata_type", "metadata"),
    ("blobs", "type", "value"),
    ("writes", "type", "value"),
)
#: Message fields that may carry text (content; tool-call arguments; provider extras).
_MESSAGE_FIELDS = ("content", "tool_calls", "invalid_tool_calls", "additional_kwargs", "artifact")

_CHECKPOINT_COLUMNS = (
    "thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, "
    "metadata_type, metadata"
)


class MemOSCheckpointer(BaseCheckpointSaver[int]):
    """A LangGraph checkpointer that keeps thread state in a MemOS data directory.

    Use it as ``create_agent(..., checkpointer=MemOSCheckpointer(mos))`` and invoke with
    ``config={"configurable": {"thread_id": ...}}``. It implements ``get_tuple``, ``list``,
    ``put``, ``put_writes``, ``delete_thread``, ``delete_for_runs`` and ``copy_thread``, each
    with its async twin (run in a worker thread). ``prune`` is not offered: dropping
    intermediate checkpoints can silently empty LangGraph delta channels.

    Contracts: ``list`` yields newest first (by checkpoint id); ``filter`` keeps checkpoints
    whose metadata has each key equal to the given value; ``before`` keeps ids strictly
    older; deleting a missing thread does nothing. A write is durable once the call returns
    (SQLite WAL, one transaction per call). Thread-safe.
    """

    def __init__(self, mos: MemOS, *, serde: SerializerProtocol | None = None) -> None:
        """Open (or create) ``<mos.data_dir>/checkpoints.sqlite3``.

        The checkpointer does not own ``mos``; call :meth:`close` (or use it as a context
        manager) to close the SQLite file.
        """
        mos = resolve_memos(mos)  # a postgresql:// URL: the process's shared MemOS
        if not isinstance(mos, MemOS):
            raise InvalidInputError(
                f"MemOSCheckpointer needs a memos_core.MemOS, got {type(mos).__name__}."
            )
        super().__init__(serde=serde)
        self.mos = mos
        self.path = mos.data_dir / FILENAME
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA secure_delete=ON")  # redacted text is zeroed on disk
        self._conn.executescript(_SCHEMA)
        self._closed = False
        self._unhook = mos.on_forget(self._forget, path=self.path)

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Close the SQLite file and leave ``MemOS.forget`` (later forgets redact the file
        through :func:`redact_files`). Idempotent; later calls raise ``InvalidInputError``."""
        self._unhook()
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> "MemOSCheckpointer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            self._check_open()
            return self._conn.execute(sql, params).fetchall()

    def _transaction(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        with self._lock:
            self._check_open()
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    self._conn.execute(sql, params)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidInputError("This MemOSCheckpointer is closed; create a new one.")

    # -- reads ----------------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint named by ``config`` (its ``checkpoint_id``, else the thread's latest
        in ``checkpoint_ns``), or None if there is none."""
        thread, ns = _thread_and_ns(config)
        checkpoint_id = get_checkpoint_id(config)
        if checkpoint_id:
            rows = self._execute(
                f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints "
                "WHERE thread_id=? AND checkpoint_ns=? AND checkpoint_id=?",
                (thread, ns, checkpoint_id),
            )
        else:
            rows = self._execute(
                f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints WHERE thread_id=? AND "
                "checkpoint_ns=? ORDER BY checkpoint_id DESC LIMIT 1",
                (thread, ns),
            )
        return self._tuple(rows[0]) if rows else None

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first; ``config`` None lists every thread."""
        where, params = [], []
        if config is not None:
            conf = config.get("configurable") or {}
            thread, _ = _thread_and_ns(config)
            where.append("thread_id=?")
            params.append(thread)
            if conf.get("checkpoint_ns") is not None:
                where.append("checkpoint_ns=?")
                params.append(conf["checkpoint_ns"])
            if conf.get("checkpoint_id"):
                where.append("checkpoint_id=?")
                params.append(conf["checkpoint_id"])
        if before is not None and get_checkpoint_id(before):
            where.append("checkpoint_id<?")
            params.append(get_checkpoint_id(before))
        if limit is not None and limit <= 0:
            return
        sql = f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY checkpoint_id DESC"
        if not filter and limit is not None:
            sql += f" LIMIT {int(limit)}"
        count = 0
        for row in self._execute(sql, params):
            if filter:
                metadata = self.serde.loads_typed((row[6], row[7]))
                if not all(metadata.get(k) == v for k, v in filter.items()):
                    continue
            yield self._tuple(row)
            count += 1
            if limit is not None and count >= limit:
                return

    def _tuple(self, row: tuple[Any, ...]) -> CheckpointTuple:
        thread, ns, checkpoint_id, parent_id, ctype, cblob, mtype, mblob = row
        checkpoint: Checkpoint = self.serde.loads_typed((ctype, cblob))
        checkpoint = {
            **checkpoint,
            "channel_values": self._channel_values(thread, ns, checkpoint["channel_versions"]),
        }
        writes = self._execute(
            "SELECT task_id, channel, type, value FROM writes WHERE thread_id=? AND "
            "checkpoint_ns=? AND checkpoint_id=? ORDER BY task_path, task_id, idx",
            (thread, ns, checkpoint_id),
        )
        return CheckpointTuple(
            config=_config(thread, ns, checkpoint_id),
            checkpoint=checkpoint,
            metadata=self.serde.loads_typed((mtype, mblob)),
            parent_config=_config(thread, ns, parent_id) if parent_id else None,
            pending_writes=[(t, ch, self.serde.loads_typed((ty, v))) for t, ch, ty, v in writes],
        )

    def _channel_values(self, thread: str, ns: str, versions: ChannelVersions) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for channel, version in versions.items():
            rows = self._execute(
                "SELECT type, value FROM blobs WHERE thread_id=? AND checkpoint_ns=? AND "
                "channel=? AND version=?",
                (thread, ns, channel, str(version)),
            )
            if rows and rows[0][0] != "empty":
                values[channel] = self.serde.loads_typed((rows[0][0], rows[0][1]))
        return values

    # -- writes ---------------------------------------------------------------------------

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint (and the channel values whose version is in ``new_versions``);
        returns the config that names it. Its parent is ``config``'s ``checkpoint_id``."""
        thread, ns = _thread_and_ns(config)
        stored = dict(checkpoint)
        values = stored.pop("channel_values", {}) or {}
        statements: list[tuple[str, Sequence[Any]]] = []
        for channel, version in new_versions.items():
            typed = self.serde.dumps_typed(values[channel]) if channel in values else ("empty", None)
            statements.append((
                "INSERT OR REPLACE INTO blobs VALUES (?, ?, ?, ?, ?, ?)",
                (thread, ns, channel, str(version), typed[0], typed[1]),
            ))
        full_metadata = get_serializable_checkpoint_metadata(config, metadata)
        ctype, cblob = self.serde.dumps_typed(stored)
        mtype, mblob = self.serde.dumps_typed(full_metadata)
        run_id = full_metadata.get("run_id")
        statements.append((
            "INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (thread, ns, checkpoint["id"], get_checkpoint_id(config),
             str(run_id) if run_id is not None else None, ctype, cblob, mtype, mblob),
        ))
        self._transaction(statements)
        return _config(thread, ns, checkpoint["id"])

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's pending writes for the checkpoint named by ``config``.

        Idempotent: a regular write already stored for (task, index) is kept; the special
        channels (error, interrupt, resume, scheduled) are replaced.
        """
        thread, ns = _thread_and_ns(config)
        checkpoint_id = get_checkpoint_id(config)
        if not checkpoint_id:
            raise InvalidInputError("put_writes needs config['configurable']['checkpoint_id'].")
        statements: list[tuple[str, Sequence[Any]]] = []
        for position, (channel, value) in enumerate(writes):
            idx = WRITES_IDX_MAP.get(channel, position)
            verb = "INSERT OR REPLACE" if idx < 0 else "INSERT OR IGNORE"
            vtype, vblob = self.serde.dumps_typed(value)
            statements.append((
                f"{verb} INTO writes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (thread, ns, checkpoint_id, task_id, idx, channel, vtype, vblob, task_path),
            ))
        self._transaction(statements)

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, blob and write of a thread (all namespaces)."""
        self._transaction([
            (f"DELETE FROM {table} WHERE thread_id=?", (str(thread_id),))
            for table in ("checkpoints", "blobs", "writes")
        ])

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) whose metadata ``run_id`` is listed."""
        ids = [str(r) for r in run_ids]
        if not ids:
            return
        marks = ",".join("?" * len(ids))
        self._transaction([
            (
                "DELETE FROM writes WHERE EXISTS (SELECT 1 FROM checkpoints c WHERE "
                f"c.run_id IN ({marks}) AND c.thread_id=writes.thread_id AND "
                "c.checkpoint_ns=writes.checkpoint_ns AND c.checkpoint_id=writes.checkpoint_id)",
                ids,
            ),
            (f"DELETE FROM checkpoints WHERE run_id IN ({marks})", ids),
        ])

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, blob and write of one thread to another (replacing rows
        with the same ids in the target)."""
        src, dst = str(source_thread_id), str(target_thread_id)
        self._transaction([
            ("INSERT OR REPLACE INTO checkpoints SELECT ?, checkpoint_ns, checkpoint_id, "
             "parent_checkpoint_id, run_id, type, checkpoint, metadata_type, metadata "
             "FROM checkpoints WHERE thread_id=?", (dst, src)),
            ("INSERT OR REPLACE INTO blobs SELECT ?, checkpoint_ns, channel, version, type, "
             "value FROM blobs WHERE thread_id=?", (dst, src)),
            ("INSERT OR REPLACE INTO writes SELECT ?, checkpoint_ns, checkpoint_id, task_id, "
             "idx, channel, type, value, task_path FROM writes WHERE thread_id=?", (dst, src)),
        ])

    # -- forgetting -----------------------------------------------------------------------

    def _forget(self, memory: MemCube) -> list[DerivedForm]:
        """The forget hook: :func:`_redact_db` through this checkpointer's connection."""
        with self._lock:
            if self._closed:  # the file redactor takes over (it runs after the hooks)
                return []
            return _redact_db(self._conn, self.path, self.serde, memory)

    # -- async twins (a worker thread each; SQLite calls never block the event loop) -------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        tuples = await asyncio.to_thread(
            lambda: list(self.list(config, filter=filter, before=before, limit=limit))
        )
        for tup in tuples:
            yield tup

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)


def redact_files(data_dir: Path, memory: MemCube) -> list[DerivedForm]:
    """The file redactor (entry point ``memos_core.forget_hooks``, ``checkpoints.sqlite3``):
    :func:`_redact_db` on ``<data_dir>/checkpoints.sqlite3`` through a connection of its own,
    with the default serializer; nothing if the file does not exist. ``MemOS.forget`` calls it
    only when no open checkpointer of that ``MemOS`` registered the file."""
    path = Path(data_dir) / FILENAME
    if not path.is_file():
        return []
    db = open_log(path)
    try:
        return _redact_db(db, path, maybe_add_typed_methods(MemOSCheckpointer.serde), memory)
    finally:
        db.close()


def _redact_db(db: sqlite3.Connection, path: Path, serde: SerializerProtocol,
               memory: MemCube) -> list[DerivedForm]:
    """Redact ``memory`` in every stored value of every thread (one transaction), then
    truncate the WAL; one form per thread that held it. ``db`` is in autocommit mode."""
    redactor = MessageRedactor(memory)
    patterns = redactor.patterns()
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    threads: set[str] = set()
    db.execute("BEGIN IMMEDIATE")
    try:
        for table, type_col, value_col in _VALUE_COLUMNS:
            if table in tables:
                threads |= _redact_column(db, serde, table, type_col, value_col, redactor, patterns)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    if threads:
        truncate_wal(db, path)
    return [DerivedForm(kind="conversation_log", id=f"{FILENAME}:{t}", action="redacted")
            for t in sorted(threads)]


def _redact_column(db: sqlite3.Connection, serde: SerializerProtocol, table: str, type_col: str,
                   value_col: str, redactor: MessageRedactor,
                   patterns: Sequence[bytes]) -> set[str]:
    """Rewrite the rows of one column that hold the memory; the threads changed."""
    if not patterns:
        return set()
    match = " OR ".join(f"instr({value_col}, ?) > 0" for _ in patterns)
    rows = db.execute(
        f"SELECT rowid, thread_id, {type_col}, {value_col} FROM {table} "
        f"WHERE {value_col} IS NOT NULL AND ({match})", list(patterns),
    ).fetchall()
    threads = set()
    for rowid, thread, vtype, blob in rows:
        value = serde.loads_typed((vtype, blob))
        redacted = _redact(value, redactor)
        if redacted is value:
            continue
        new_type, new_blob = serde.dumps_typed(redacted)
        db.execute(
            f"UPDATE {table} SET {type_col}=?, {value_col}=? WHERE rowid=?",
            (new_type, new_blob, rowid),
        )
        threads.add(thread)
    return threads


def _redact(value: Any, redactor: MessageRedactor) -> Any:
    """A stored value (nested lists / dicts, messages, ``Send`` packets, interrupts) with the
    memory redacted; the same object when it held none of it. Other objects are kept."""
    return redactor.value(value, lambda v: _redact_object(v, redactor))


def _redact_object(value: Any, redactor: MessageRedactor) -> Any:
    if isinstance(value, Send):  # a pending task's input, e.g. the tool calls to run
        arg = _redact(value.arg, redactor)
        return value if arg is value.arg else Send(value.node, arg)
    if isinstance(value, Interrupt):
        payload = _redact(value.value, redactor)
        if payload is value.value:
            return value
        return Interrupt(payload, value.id, response_schema=getattr(value, "response_schema", None))
    if not isinstance(value, BaseMessage):
        return value
    changes = {}
    for field in _MESSAGE_FIELDS:  # a source message loses all its text (below)
        if field in type(value).model_fields:
            old = getattr(value, field)
            new = _redact(old, redactor)
            if new is not old:
                changes[field] = new
    if redactor.is_source(value.id):
        content = changes.get("content", value.content)
        changes["content"] = FORGOTTEN if isinstance(content, str) else [
            {**b, "text": FORGOTTEN} if isinstance(b, dict) and "text" in b
            else FORGOTTEN if isinstance(b, str) else b
            for b in content
        ]
    return value.model_copy(update=changes) if changes else value


def _thread_and_ns(config: RunnableConfig | None) -> tuple[str, str]:
    conf = (config or {}).get("configurable") or {}
    thread = conf.get("thread_id")
    if thread is None or thread == "":
        raise InvalidInputError(
            "MemOSCheckpointer needs a thread: invoke the graph with "
            "config={'configurable': {'thread_id': '...'}}."
        )
    return str(thread), str(conf.get("checkpoint_ns") or "")


def _config(thread: str, ns: str, checkpoint_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}}
