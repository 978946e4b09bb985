"""``MemOSCheckpointer``: LangGraph thread state (short-term memory) in the MemOS vault.

Checkpoints are not memories: they are the exact state of a graph at each step. They live
in the vault's thread-checkpoint tables (``memos_core.integration.thread_checkpoints``),
beside the memories, so one database holds both the short-term (thread) and the long-term
memory of an agent -- whatever the vault's backend (SQLite file or a server database).

Storage layout: a checkpoint row keeps the checkpoint without its channel values; each
channel value is a blob keyed by (thread, namespace, channel, version) and written only
when its version changes, so a long thread does not copy its whole state at every step.
Values are encoded with the saver's ``serde`` (LangGraph's ``JsonPlusSerializer`` by default,
msgpack-based, never pickle) as ``(type, bytes)`` pairs; the core never decodes them.

Forgetting: ``MemOS.forget`` reaches the checkpoints: every checkpoint, channel value and
pending write holding the forgotten memory is decoded, its messages redacted (the text
becomes ``[forgotten]``; the messages stay, so the thread still loads and resumes) and
re-encoded, in one vault transaction (channel values of a thread namespace with no
checkpoint left, which earlier versions' ``delete_for_runs`` kept, are deleted, unsearched
and unreported: nothing can load them). Only the threads of the memory's owner and threads
of no user are touched: a thread whose checkpoints name users and not the owner is another
user's conversation, and one user's forget neither rewrites it nor reports it. A checkpoint
names its run's user in its metadata under the checkpointer's ``user_id_key``: LangGraph
copies ``configurable["user_id"]`` there, and the checkpointer adds the user of the run's
context (``invoke(..., context=...)``, the way ``create_agent(context_schema=...)`` passes
it), which LangGraph does not copy; it also records that user under :data:`OWNER_KEY`,
whatever its ``user_id_key`` (left out of the metadata read back). While a checkpointer is
open this is its forget hook (its ``serde``); otherwise :func:`redact_vault`, this package's
vault redactor (entry point ``memos_core.vault_redactors``), does the same with the default
serializer, reading the user under :data:`OWNER_KEY` (else ``"user_id"``: checkpoints of
earlier versions).

A custom ``serde``: its checkpoints also store value-less owner marks (:data:`OWNER_MARK`),
so a redactor that cannot decode them still tells whose thread it is. Such a thread that
names the forgotten memory's owner makes the forget raise ``MemOSError`` naming it (the
memory is not forgotten); one of other users, or of no user (logged), is left alone, so no
other user's forget fails on it. A ``serde`` whose bytes do not show the text (compressed,
encrypted) has every value of the threads searched decoded, as the byte filter cannot work.

Data directories from earlier versions kept ``<data_dir>/checkpoints.sqlite3``; the first
checkpointer opened on one moves its rows into the vault and deletes the file. Until then
:func:`redact_files` (entry point ``memos_core.forget_hooks``) redacts the old file.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage
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
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.serde.base import SerializerProtocol, maybe_add_typed_methods
from langgraph.types import Interrupt, Send
from memos_core import resolve_memos
from memos_core import InvalidInputError, MemCube, MemOS, MemOSError
from memos_core.integration import (
    in_thread,
    CHECKPOINT_FILE,
    AsyncThreadCheckpoints,
    FORGOTTEN,
    CheckpointRecord,
    DerivedForm,
    LateWrite,
    MessageRedactor,
    RecentForgets,
    ThreadCheckpoints,
    Typed,
    alate_write,
    async_checkpoints,
    on_forget_checkpoints,
    open_log,
    thread_checkpoints,
    truncate_wal,
    whole,
)

from langchain_memos._shared import configurable, context_value, run_context

#: The file earlier versions kept checkpoints in (moved into the vault on first open).
FILENAME = CHECKPOINT_FILE
#: A receipt's id of a redacted thread: ``"checkpoints:<thread id>"``.
FORM = "checkpoints"
#: How long after a forget the checkpoints and writes created before it are still redacted
#: as they are stored (kept here for code that read it from this module).
LATE_WRITE_S = RecentForgets.window_s

#: (table, type column, value column) of every serialised value that may hold messages.
_VALUE_COLUMNS = (
    ("checkpoints", "type", "checkpoint"),
    ("checkpoints", "metadata_type", "metadata"),
    ("blobs", "type", "value"),
    ("writes", "type", "value"),
)
#: Message fields that may carry text (content; tool-call arguments; provider extras).
_MESSAGE_FIELDS = ("content", "tool_calls", "invalid_tool_calls", "additional_kwargs", "artifact")

#: The metadata key under which a checkpoint records its run's user, whatever the
#: checkpointer's ``user_id_key``: the vault redactor, which does not know that key, reads
#: it. LangGraph never copies a ``configurable`` key starting with ``__`` into metadata, so
#: only the checkpointer writes it; it is left out of the metadata read back.
OWNER_KEY = "__memos_user_id__"
#: The channel of a thread's owner marks: with a custom ``serde``, each checkpoint of a user
#: also stores two value-less blobs ``(OWNER_MARK, <user>)`` and ``(OWNER_MARK, ANY_USER)``,
#: which a process without that ``serde`` (that cannot decode the metadata) reads to tell
#: whose thread it is. LangGraph never loads them (no checkpoint lists the channel).
OWNER_MARK = "__memos_user__"
#: The owner mark's version that says "a checkpoint of the thread names a user".
ANY_USER = ""

logger = logging.getLogger(__name__)



class MemOSCheckpointer(BaseCheckpointSaver[int]):
    """A LangGraph checkpointer that keeps thread state in the MemOS vault.

    Use it as ``create_agent(..., checkpointer=MemOSCheckpointer(mos))`` and invoke with
    ``config={"configurable": {"thread_id": ...}}``. It implements ``get_tuple``, ``list``,
    ``put``, ``put_writes``, ``delete_thread``, ``delete_for_runs`` and ``copy_thread``, each
    with its async twin: native async in server mode (the vault's asyncio connection pool:
    the same statements, results and errors), a worker thread on the embedded vault.
    ``prune`` is not offered: dropping intermediate checkpoints can silently empty
    LangGraph delta channels.

    Contracts: ``list`` yields newest first (by checkpoint id); ``filter`` keeps checkpoints
    whose metadata has each key equal to the given value; ``before`` keeps ids strictly
    older; deleting a missing thread does nothing. A write is durable once the call returns
    (one vault transaction per call). Thread-safe.
    """

    def __init__(self, mos: MemOS, *, serde: SerializerProtocol | None = None,
                 user_id_key: str = "user_id") -> None:
        """Use ``mos``'s vault (moving an old ``<data_dir>/checkpoints.sqlite3`` into it).

        ``user_id_key``: the ``configurable`` key that names a thread's user (as for
        ``MemOSMiddleware``); a forget leaves threads that name other users alone (each
        checkpoint also records the user under :data:`OWNER_KEY`, for forgets run where no
        checkpointer is open). ``serde``: every process that forgets on this vault must open
        its checkpointer with the same one (see the module's "Forgetting"). The checkpointer
        does not own ``mos``; :meth:`close` (or the context manager) ends its forget hook.
        """
        mos = resolve_memos(mos)  # a postgresql:// URL: the process's shared MemOS
        if not isinstance(mos, MemOS):
            raise InvalidInputError(
                f"MemOSCheckpointer needs a memos_core.MemOS, got {type(mos).__name__}."
            )
        if not isinstance(user_id_key, str) or not user_id_key:
            raise InvalidInputError("user_id_key must be a non-empty string.")
        super().__init__(serde=serde)
        self.mos = mos
        self.user_id_key = user_id_key
        #: whether puts store owner marks (OWNER_MARK): values the default serializer may
        #: not decode
        self._marks = serde is not None
        self._store: ThreadCheckpoints = thread_checkpoints(mos)
        #: the native async storage (server mode), else None: async twins use a thread
        self._astore: AsyncThreadCheckpoints | None = async_checkpoints(self._store)
        self._closed = False
        #: recent forgets, each marked with a checkpoint id made at the forget; see _late
        self._forgotten = RecentForgets()
        #: forgets' passes over the stored threads (this checkpointer's hook runs in them):
        #: a sync write holds them off from its late redaction to its commit, so one that
        #: looked for recent forgets before a forget began is stored before that forget's
        #: pass, which redacts it; an async write redacts again after its commit instead
        self._passes = mos.store.forget_passes
        self._unhook = on_forget_checkpoints(mos, self._forget)

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Leave ``MemOS.forget`` (later forgets redact through :func:`redact_vault`).
        Idempotent; later calls raise ``InvalidInputError``."""
        self._unhook()
        self._closed = True

    def __enter__(self) -> "MemOSCheckpointer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _vault(self) -> ThreadCheckpoints:
        """The checkpoint storage. Each of its calls (and of :meth:`_avault`'s) is a call of
        ``self.mos`` (``memos_core.integration.thread_checkpoints``): ``mos.close()`` waits
        for it, and once ``mos`` is closed it raises the MemOS's closed error."""
        if self._closed:
            raise InvalidInputError("This MemOSCheckpointer is closed; create a new one.")
        return self._store

    def _avault(self) -> AsyncThreadCheckpoints | None:
        self._vault()  # the same closed check
        return self._astore

    # -- reads ----------------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint named by ``config`` (its ``checkpoint_id``, else the thread's latest
        in ``checkpoint_ns``), or None if there is none."""
        thread, ns = _thread_and_ns(config)
        record = self._vault().cp_get(thread, ns, get_checkpoint_id(config) or None)
        return self._tuple(record) if record is not None else None

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first; ``config`` None lists every thread."""
        query = _list_query(config, filter, before, limit)
        if query is None:
            return
        count = 0
        for record in self._vault().cp_list(*query):
            if not self._kept(record, filter):
                continue
            yield self._tuple(record)
            count += 1
            if limit is not None and count >= limit:
                return

    def _kept(self, record: CheckpointRecord, filter: dict[str, Any] | None) -> bool:
        """``list``'s metadata filter, on the metadata as read back (no :data:`OWNER_KEY`)."""
        if not filter:
            return True
        metadata = _without_owner(self.serde.loads_typed(record.metadata))
        return all(metadata.get(k) == v for k, v in filter.items())

    def _tuple(self, record: CheckpointRecord) -> CheckpointTuple:
        checkpoint, versions = self._decoded(record)
        thread, ns = record.thread_id, record.checkpoint_ns
        return self._assemble(record, checkpoint, self._vault().cp_blobs(thread, ns, versions),
                              self._vault().cp_writes(thread, ns, record.checkpoint_id))

    async def _atuple(self, store: AsyncThreadCheckpoints,
                      record: CheckpointRecord) -> CheckpointTuple:
        checkpoint, versions = self._decoded(record)
        blobs, writes = await store.cp_parts(record.thread_id, record.checkpoint_ns,
                                             record.checkpoint_id, versions)
        return self._assemble(record, checkpoint, blobs, writes)

    def _decoded(self, record: CheckpointRecord) -> tuple[Checkpoint, dict[str, str]]:
        """The stored checkpoint (without channel values) and its channel versions."""
        checkpoint: Checkpoint = self.serde.loads_typed(record.checkpoint)
        return checkpoint, {ch: str(v) for ch, v in checkpoint["channel_versions"].items()}

    def _assemble(self, record: CheckpointRecord, checkpoint: Checkpoint,
                  blobs: dict[str, Typed], writes: Sequence[tuple[str, str, Typed]]
                  ) -> CheckpointTuple:
        """The tuple of ``record`` with its channel values and pending writes decoded."""
        thread, ns, checkpoint_id = record.thread_id, record.checkpoint_ns, record.checkpoint_id
        values = {ch: self.serde.loads_typed(typed) for ch, typed in blobs.items()
                  if typed[0] != "empty"}
        checkpoint = {**checkpoint, "channel_values": values}
        parent = record.parent_checkpoint_id
        return CheckpointTuple(
            config=_config(thread, ns, checkpoint_id),
            checkpoint=checkpoint,
            metadata=_without_owner(self.serde.loads_typed(record.metadata)),
            parent_config=_config(thread, ns, parent) if parent else None,
            pending_writes=[(t, ch, self.serde.loads_typed(v)) for t, ch, v in writes],
        )

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
        with self._passes.excluding():
            record, blobs, _ = self._encoded(config, checkpoint, metadata, new_versions)
            self._vault().cp_put(record, blobs)
        return _config(record.thread_id, record.checkpoint_ns, record.checkpoint_id)

    def _encoded(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> tuple[CheckpointRecord, list[tuple[str, str, Typed]], object]:
        """``put``'s checkpoint record and channel-value blobs, and the run's user."""
        thread, ns = _thread_and_ns(config)
        stored = dict(checkpoint)
        values: dict[str, Any] = stored.pop("channel_values", {}) or {}  # type: ignore[assignment]
        full_metadata = get_serializable_checkpoint_metadata(config, metadata)
        if self.user_id_key not in full_metadata:  # the user of the run's context, if any
            user = context_value(run_context(config), self.user_id_key)
            if isinstance(user, str) and user:
                full_metadata[self.user_id_key] = user
        user = full_metadata.get(self.user_id_key)
        if isinstance(user, str) and user:  # for the vault redactor, which reads no other key
            full_metadata[OWNER_KEY] = user
        for redactor in self._late(checkpoint["id"], user):
            values = {ch: _redact(v, redactor) for ch, v in values.items()}
        blobs: list[tuple[str, str, Typed]] = []
        for channel, version in new_versions.items():
            typed = self.serde.dumps_typed(values[channel]) if channel in values else ("empty", None)
            blobs.append((channel, str(version), typed))
        if self._marks and isinstance(user, str) and user:
            blobs += [(OWNER_MARK, user, ("empty", None)), (OWNER_MARK, ANY_USER, ("empty", None))]
        run_id = full_metadata.get("run_id")
        record = CheckpointRecord(
            thread, ns, checkpoint["id"], get_checkpoint_id(config),
            str(run_id) if run_id is not None else None,
            self.serde.dumps_typed(stored), self.serde.dumps_typed(full_metadata))
        return record, blobs, user

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
        with self._passes.excluding():
            args = self._encoded_writes(config, writes, task_id, task_path)
            self._vault().cp_put_writes(*args)

    def _encoded_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                        task_id: str, task_path: str) -> tuple[Any, ...]:
        """``cp_put_writes``'s arguments for ``put_writes``."""
        thread, ns, checkpoint_id = _write_target(config)
        late = self._late(checkpoint_id, _run_user(config, self.user_id_key))
        for redactor in late:
            writes = [(channel, _redact(value, redactor)) for channel, value in writes]
        items = [(WRITES_IDX_MAP.get(channel, position), channel, self.serde.dumps_typed(value))
                 for position, (channel, value) in enumerate(writes)]
        return thread, ns, checkpoint_id, task_id, task_path, items

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, blob and write of a thread (all namespaces)."""
        self._vault().cp_delete_thread(str(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) whose metadata ``run_id`` is listed. A
        thread (namespace) left with no checkpoint loses its channel values and writes too:
        nothing can load them, and no checkpoint would say whose they are."""
        self._vault().cp_delete_runs([str(r) for r in run_ids])

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, blob and write of one thread to another (replacing rows
        with the same ids in the target)."""
        self._vault().cp_copy_thread(str(source_thread_id), str(target_thread_id))

    # -- forgetting -----------------------------------------------------------------------

    def _forget(self, memory: MemCube) -> list[DerivedForm]:
        """The forget hook: :func:`_redact_vault` with this checkpointer's ``serde``; then
        the memory is also redacted, for a minute (``memos_core.integration.LATE_WRITE_S``),
        in the checkpoints and writes created before the forget that reach :meth:`put` /
        :meth:`put_writes` after it (:meth:`_late`)."""
        if self._closed:  # the vault redactor takes over (it runs after the hooks)
            return []
        # (in a forget's pass: no sync write runs between its late redaction and its commit)
        forms = _redact_vault(self._store, self.serde, memory, self.user_id_key)
        # a checkpoint id made when the pass ends sorts after every checkpoint created
        # before this forget
        self._forgotten.add(memory, mark=lambda: str(uuid6()))
        return forms

    async def _aredact_missed(self, late: LateWrite, user: object, thread_id: str,
                              checkpoint_id: str) -> None:
        """After an async write's commit: redact the thread it wrote to again for each
        forget whose pass ran meanwhile and may have missed it (:class:`LateWrite`)."""
        for redactor in await late.amissed(user, before=checkpoint_id):
            await in_thread(_redact_threads, self._store, self.serde, redactor,
                            self.user_id_key, thread_id)

    def _late(self, checkpoint_id: str, user: object) -> Sequence[MessageRedactor]:
        """The redactors of the recent forgets that ``checkpoint_id`` (a checkpoint, or the
        checkpoint a write belongs to) predates, for a run of ``user`` (None: of no user).

        LangGraph's default durability ("async") stores a step's checkpoint and writes in
        the background while the next step runs, so a ``forget_memory`` tool (or a forget
        from another thread) can redact the stored thread before an older checkpoint of it
        lands, text and all. Checkpoint ids are time-ordered: one created before the forget
        sorts before the mark the forget took. The redactors are dropped after a
        minute (they hold the forgotten text in memory)."""
        return self._forgotten.redactors(user, before=checkpoint_id)

    # -- async twins: the same encoding and decoding, awaiting the async storage (native
    # in server mode, else a worker thread per storage call: memos_core.integration) ------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Async :meth:`get_tuple`."""
        thread, ns = _thread_and_ns(config)  # the config first, as get_tuple
        store = self._avault()
        if store is None:
            return await asyncio.to_thread(self.get_tuple, config)
        decoded: list[Checkpoint] = []

        def versions_of(record: CheckpointRecord) -> dict[str, str]:
            checkpoint, versions = self._decoded(record)
            decoded.append(checkpoint)
            return versions

        # one connection for the checkpoint, its channel values and its pending writes
        loaded = await store.cp_load(thread, ns, get_checkpoint_id(config) or None, versions_of)
        if loaded is None:
            return None
        record, blobs, writes = loaded
        return self._assemble(record, decoded[0], blobs, writes)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Async :meth:`list`."""
        query = _list_query(config, filter, before, limit)  # the config first, as list
        store = self._avault()
        if store is None:
            tuples = await asyncio.to_thread(
                lambda: list(self.list(config, filter=filter, before=before, limit=limit)))
            for tup in tuples:
                yield tup
            return
        if query is None:
            return
        count = 0
        for record in await store.cp_list(*query):
            if not self._kept(record, filter):
                continue
            yield await self._atuple(store, record)
            count += 1
            if limit is not None and count >= limit:
                return

    @whole  # (server mode) the write and its late redaction: a cancel cannot split them
    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Async :meth:`put`."""
        _thread_and_ns(config)  # the config first, as put
        store = self._avault()
        if store is None:
            return await in_thread(self.put, config, checkpoint, metadata, new_versions)
        async with alate_write(self.mos, self._forgotten) as late:  # before its late redaction
            record, blobs, user = self._encoded(config, checkpoint, metadata, new_versions)
            await store.cp_put(record, blobs)
            await self._aredact_missed(late, user, record.thread_id, record.checkpoint_id)
        return _config(record.thread_id, record.checkpoint_ns, record.checkpoint_id)

    @whole  # (server mode) the write and its late redaction: a cancel cannot split them
    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Async :meth:`put_writes`."""
        _write_target(config)  # the config first, as put_writes
        store = self._avault()
        if store is None:
            return await in_thread(self.put_writes, config, writes, task_id, task_path)
        async with alate_write(self.mos, self._forgotten) as late:  # before its late redaction
            args = self._encoded_writes(config, writes, task_id, task_path)
            await store.cp_put_writes(*args)
            await self._aredact_missed(late, _run_user(config, self.user_id_key), args[0],
                                       args[2])

    async def adelete_thread(self, thread_id: str) -> None:
        """Async :meth:`delete_thread`."""
        store = self._avault()
        if store is None:
            return await in_thread(self.delete_thread, thread_id)
        await store.cp_delete_thread(str(thread_id))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Async :meth:`delete_for_runs`."""
        store = self._avault()
        if store is None:
            return await in_thread(self.delete_for_runs, run_ids)
        await store.cp_delete_runs([str(r) for r in run_ids])

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Async :meth:`copy_thread`."""
        store = self._avault()
        if store is None:
            return await in_thread(self.copy_thread, source_thread_id, target_thread_id)
        await store.cp_copy_thread(str(source_thread_id), str(target_thread_id))


def _run_user(config: RunnableConfig, key: str) -> object:
    """The user a run names: its context's, else ``configurable``'s (None: no user)."""
    user = context_value(run_context(config), key)
    return user if user is not None else configurable(config).get(key)


def redact_vault(vault: ThreadCheckpoints, memory: MemCube) -> list[DerivedForm]:
    """The vault redactor (entry point ``memos_core.vault_redactors``, ``checkpoints``):
    :func:`_redact_vault` with the default serializer. ``MemOS.forget`` calls it only when
    no open checkpointer of that ``MemOS`` registered its own hook. It knows no
    checkpointer's ``user_id_key``: a checkpoint's user is the one recorded under
    :data:`OWNER_KEY` (else under ``"user_id"``, as earlier versions left it)."""
    return _redact_vault(vault, maybe_add_typed_methods(MemOSCheckpointer.serde), memory)


#: ``marks(thread, namespaces, user)``: whether the thread's owner marks (:data:`OWNER_MARK`)
#: in one of ``namespaces`` name ``user`` (:data:`ANY_USER`: some user)
Marks = Callable[[str, Collection[str], str], bool]


def _vault_marks(vault: ThreadCheckpoints) -> Marks:
    """The owner marks stored in ``vault``."""
    def named(thread: str, namespaces: Collection[str], user: str) -> bool:
        return any(vault.cp_blobs(thread, ns, {OWNER_MARK: user}) for ns in sorted(namespaces))
    return named


def _named_user(metadata: object, user_id_key: str) -> str | None:
    """The user a checkpoint's decoded metadata names: under :data:`OWNER_KEY`, else under
    ``user_id_key`` (checkpoints of earlier versions); None: no user."""
    if not isinstance(metadata, dict):
        return None
    for key in (OWNER_KEY, user_id_key):
        named = metadata.get(key)
        if isinstance(named, str) and named:
            return named
    return None


def _without_owner(metadata: Any) -> Any:
    """Decoded metadata as LangGraph gave it: without :data:`OWNER_KEY`."""
    if isinstance(metadata, dict) and OWNER_KEY in metadata:
        return {k: v for k, v in metadata.items() if k != OWNER_KEY}
    return metadata


def _others_threads(metadata: Iterable[tuple[str, str, Typed]], serde: SerializerProtocol,
                    owner: str, user_id_key: str, marks: Marks | None = None) -> set[str]:
    """The threads a forget of ``owner``'s memory leaves alone. ``metadata``: (thread,
    namespace, metadata) of every checkpoint in scope.

    - Another user's conversation: some checkpoint's metadata names a user
      (:func:`_named_user`) and none names ``owner``.
    - A thread with metadata ``serde`` cannot decode (written with another ``serde``) that
      names no user, or others (its decoded checkpoints or its owner marks, ``marks``): its
      values cannot be read, so nothing in it can be redacted, and another user's forget
      must not fail on it. One that names no user may hold anyone's text: logged.

    Raises:
        MemOSError: a thread that names ``owner`` holds metadata ``serde`` cannot decode: the
            memory may be in it and cannot be redacted, so the forget must not succeed.
    """
    users: dict[str, set[str]] = {}
    unreadable: dict[str, tuple[str, set[str]]] = {}  # thread: (a type not decoded, namespaces)
    for thread, ns, typed in metadata:
        named = users.setdefault(thread, set())
        try:
            user = _named_user(serde.loads_typed(typed), user_id_key)
        except Exception:  # another serde's type (NotImplementedError), or its bytes
            unreadable.setdefault(thread, (typed[0], set()))[1].add(ns)
            continue
        if user is not None:
            named.add(user)
    others = {thread for thread, named in users.items() if named and owner not in named}
    nobodys = []
    for thread, (vtype, namespaces) in sorted(unreadable.items()):
        if owner in users[thread] or (marks is not None and marks(thread, namespaces, owner)):
            raise MemOSError(
                f"Cannot redact the forgotten memory in LangGraph thread {thread!r} of user "
                f"{owner!r}: its checkpoints were stored with a serde this process does not "
                f"have (values of type {vtype!r}, which {type(serde).__name__} cannot "
                "decode), so the memory was not forgotten. Forget it through a MemOS whose "
                "MemOSCheckpointer is open with that serde (every process on a server must "
                "use the same serde), or delete the thread (checkpointer.delete_thread("
                f"{thread!r})), then forget again.")
        others.add(thread)
        if not users[thread] and not (marks is not None and marks(thread, namespaces, ANY_USER)):
            nobodys.append(thread)
    if nobodys:
        logger.warning(
            "Forget of a memory of %r: LangGraph threads %s name no user and were stored with "
            "a serde this process does not have (%s cannot decode them); they were not "
            "searched and may still hold the memory. Forget through a MemOSCheckpointer "
            "open with that serde.", owner, ", ".join(map(repr, nobodys[:5]))
            + (f" (and {len(nobodys) - 5} more)" if len(nobodys) > 5 else ""),
            type(serde).__name__)
    return others


def _loads(serde: SerializerProtocol, typed: Typed) -> Any:
    """A stored value a forget searches (its owner's or nobody's thread), decoded; a clear
    error when ``serde`` cannot decode it (another ``serde`` wrote it)."""
    try:
        return serde.loads_typed(typed)
    except Exception as exc:
        raise MemOSError(
            f"A stored LangGraph checkpoint value (type {typed[0]!r}) that may hold the "
            f"forgotten memory cannot be decoded by {type(serde).__name__} ({exc}), so it "
            "could not be redacted and the memory was not forgotten. It was stored with "
            "another serde: "
            "forget through a MemOS whose MemOSCheckpointer is open with that serde (every "
            "process on a server must use the same serde), then forget again.") from exc


def _plain(serde: SerializerProtocol) -> bool:
    """Whether ``serde`` stores a message's text in its bytes, as the default serializer
    does (the vault's byte filter finds it), rather than compressed or encrypted."""
    probe = "MemOS plain text probe 7741"
    try:
        _, data = serde.dumps_typed([HumanMessage(probe)])
    except Exception:
        return False
    return data is not None and probe.encode() in data


def _needles(serde: SerializerProtocol, needles: Sequence[bytes]) -> list[bytes]:
    """``cp_redact``'s filter: ``needles``, or, when ``serde``'s bytes do not show the
    text, the empty needle that every value contains (each is decoded and searched)."""
    return list(needles) if not needles or _plain(serde) else [b""]


def _redact_vault(vault: ThreadCheckpoints, serde: SerializerProtocol,
                  memory: MemCube, user_id_key: str = "user_id") -> list[DerivedForm]:
    """Redact ``memory`` in every stored value of the threads of its owner and of no user
    (one vault transaction); one form per thread that held it. Threads ``serde`` cannot
    read: :func:`_others_threads`."""
    return _redact_threads(vault, serde, MessageRedactor(memory), user_id_key)


def _redact_threads(vault: ThreadCheckpoints, serde: SerializerProtocol,
                    redactor: MessageRedactor, user_id_key: str,
                    only: str | None = None) -> list[DerivedForm]:
    """:func:`_redact_vault` with the memory's redactor (``only``: in that thread only)."""
    records = vault.cp_list()
    others = _others_threads(
        ((r.thread_id, r.checkpoint_ns, r.metadata) for r in records
         if only is None or r.thread_id == only),
        serde, redactor.user_id, user_id_key, _vault_marks(vault))
    if only is not None:
        others |= {r.thread_id for r in records} - {only}
    redactor = redactor.with_texts(_source_texts(vault, serde, redactor, others))

    def rewrite(typed: Typed) -> Typed | None:
        value = _loads(serde, typed)
        redacted = _redact(value, redactor)
        return None if redacted is value else serde.dumps_typed(redacted)

    threads = vault.cp_redact(_needles(serde, redactor.patterns()), rewrite,
                              skip_threads=others)
    return [DerivedForm(kind="conversation_log", id=f"{FORM}:{t}", action="redacted")
            for t in threads]


def redact_files(data_dir: Path, memory: MemCube) -> list[DerivedForm]:
    """The legacy file redactor (entry point ``memos_core.forget_hooks``,
    ``checkpoints.sqlite3``): :func:`_redact_db` on an old ``<data_dir>/checkpoints.sqlite3``
    not yet moved into the vault, through a connection of its own, with the default
    serializer; nothing if the file does not exist."""
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
    """Redact ``memory`` in every stored value of the threads of its owner and of no user
    (one transaction), then truncate the WAL; one form per thread that held it. ``db`` is
    in autocommit mode."""
    redactor = MessageRedactor(memory)
    patterns = redactor.patterns()
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    others: set[str] = set()
    if "checkpoints" in tables:
        rows = db.execute("SELECT thread_id, checkpoint_ns, metadata_type, metadata "
                          "FROM checkpoints WHERE metadata IS NOT NULL").fetchall()
        others = _others_threads(((t, ns, (mt, m)) for t, ns, mt, m in rows), serde,
                                 memory.user_id, "user_id")
    threads: set[str] = set()
    db.execute("BEGIN IMMEDIATE")
    try:
        for table, type_col, value_col in _VALUE_COLUMNS:
            if table in tables:
                threads |= _redact_column(db, serde, table, type_col, value_col, redactor,
                                          patterns, others)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    if threads:
        truncate_wal(db, path)
    return [DerivedForm(kind="conversation_log", id=f"{FILENAME}:{t}", action="redacted")
            for t in sorted(threads)]


def _redact_column(db: sqlite3.Connection, serde: SerializerProtocol, table: str, type_col: str,
                   value_col: str, redactor: MessageRedactor, patterns: Sequence[bytes],
                   skip: Collection[str] = ()) -> set[str]:
    """Rewrite the rows of one column that hold the memory, outside the threads ``skip``
    names; the threads changed."""
    if not patterns:
        return set()
    match = " OR ".join(f"instr({value_col}, ?) > 0" for _ in patterns)
    rows = db.execute(
        f"SELECT rowid, thread_id, {type_col}, {value_col} FROM {table} "
        f"WHERE {value_col} IS NOT NULL AND ({match})", list(patterns),
    ).fetchall()
    threads = set()
    for rowid, thread, vtype, blob in rows:
        if thread in skip:
            continue
        value = _loads(serde, (vtype, blob))
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


def _source_texts(vault: ThreadCheckpoints, serde: SerializerProtocol, redactor: MessageRedactor,
                  others: set[str]) -> list[str]:
    """The contents of the memory's source messages (by id) in the threads it may redact.
    LangGraph keeps the run's input also as it came, before the messages reducer gave it an
    id (the ``__start__`` channel and its write): that copy is found by its text. A memory
    the model stored with a tool is a paraphrase of the message, so its own text is not."""
    found: list[str] = []
    if redactor.source_ids:
        def visit(typed: Typed) -> None:
            _collect_sources(_loads(serde, typed), redactor, found)
            return None  # read only

        vault.cp_redact(_needles(serde, sorted(s.encode() for s in redactor.source_ids)),
                        visit, skip_threads=others)
    return found


def _collect_sources(value: Any, redactor: MessageRedactor, found: list[str]) -> None:
    if isinstance(value, (list, tuple)):
        for item in value:
            _collect_sources(item, redactor, found)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_sources(item, redactor, found)
    elif isinstance(value, Send):
        _collect_sources(value.arg, redactor, found)
    elif isinstance(value, BaseMessage) and redactor.is_source(value.id):
        content = value.content
        found.extend([content] if isinstance(content, str) else [
            b["text"] if isinstance(b, dict) else b for b in content
            if isinstance(b, str) or (isinstance(b, dict) and isinstance(b.get("text"), str))])


def redact_messages(messages: Iterable[BaseMessage], redactor: MessageRedactor
                    ) -> list[BaseMessage]:
    """Redacted copies, with the same ids, of the ``messages`` that hold the memory (the
    checkpoints' rule), in order; messages without an id are left out (they cannot replace
    their original in a graph's state)."""
    redacted = []
    for message in messages:
        new = _redact_object(message, redactor) if message.id else message
        if new is not message:
            redacted.append(new)
    return redacted


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


def _list_query(config: RunnableConfig | None, filter: dict[str, Any] | None,
                before: RunnableConfig | None, limit: int | None) -> tuple[Any, ...] | None:
    """``cp_list``'s arguments for ``list`` (None: nothing to list)."""
    thread = ns = checkpoint_id = None
    if config is not None:
        conf = config.get("configurable") or {}
        thread, _ = _thread_and_ns(config)
        ns = conf.get("checkpoint_ns")
        checkpoint_id = conf.get("checkpoint_id") or None
    if limit is not None and limit <= 0:
        return None
    return (thread, None if ns is None else str(ns), checkpoint_id,
            (get_checkpoint_id(before) or None) if before is not None else None,
            None if filter else limit)


def _thread_and_ns(config: RunnableConfig | None) -> tuple[str, str]:
    conf = (config or {}).get("configurable") or {}
    thread = conf.get("thread_id")
    if thread is None or thread == "":
        raise InvalidInputError(
            "MemOSCheckpointer needs a thread: invoke the graph with "
            "config={'configurable': {'thread_id': '...'}}."
        )
    return str(thread), str(conf.get("checkpoint_ns") or "")


def _write_target(config: RunnableConfig) -> tuple[str, str, str]:
    """Thread, namespace and checkpoint id of ``put_writes``'s config."""
    thread, ns = _thread_and_ns(config)
    checkpoint_id = get_checkpoint_id(config)
    if not checkpoint_id:
        raise InvalidInputError("put_writes needs config['configurable']['checkpoint_id'].")
    return thread, ns, checkpoint_id


def _config(thread: str, ns: str, checkpoint_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}}
