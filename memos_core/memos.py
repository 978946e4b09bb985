"""The Memory API: the ``MemOS`` facade that adapters, the CLI and notebooks call.

Write path: validate -> one vault transaction (new version + audit record) -> index and graph.
The vault commit is the acknowledgement; the index and graph are derived and are reconciled
with the vault when a data directory is opened after a crash.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from memos_core.aio import AsyncMemOSMixin
from memos_core.config import MemOSConfig, default_data_dir
from memos_core.cube import (
    Governance,
    MemCube,
    MemoryType,
    Namespace,
    Origin,
    Provenance,
    Span,
    State,
    utcnow,
)
from memos_core.embedding import Embedder, default_embedder
from memos_core.errors import (
    AccessDeniedError,
    InvalidInputError,
    MemoryDeletedError,
    MemoryNotFoundError,
    VersionNotFoundError,
)
from memos_core.extraction import EntityExtractor, RuleEntityExtractor
from memos_core.governance import access, forgetting, index_privacy, sharing
from memos_core.governance import sensitivity as sensitivity_rules
from memos_core.governance.api import SharingMixin
from memos_core.governance.forget_hooks import ForgetHook, ForgetHooks
from memos_core.graph import MemoryGraph
from memos_core.index.base import IndexPoint, VectorIndex
from memos_core.lock import DataDirLock
from memos_core.messages import merge_message_item, message_item
from memos_core.models_api import LocalModelMixin
from memos_core.progress import progress
from memos_core.results import ForgetReceipt, SearchHit
from memos_core.retrieval.filters import (
    INDEXED_STATES,
    SEARCHABLE_STATES,
    build_filter,
    graph_row,
    payload_of,
)
from memos_core.retrieval.hybrid import HybridRetriever
from memos_core.retrieval.rerank import Reranker, rerank
from memos_core.validation import (
    check_datetime,
    check_enum,
    check_id,
    check_int,
    check_k,
    check_metadata,
    check_metadata_filter,
    check_name,
    check_path,
    check_positive_seconds,
    check_strs,
    check_text,
)
from memos_core.vault import Actor, Edge, ListQuery, SQLiteVault

Message = Mapping[str, Any]
logger = logging.getLogger("memos_core")

#: What an ``add_many`` item (or its keyword defaults) may set, besides ``text``.
ITEM_KEYS = frozenset({
    "text", "agent_id", "session_id", "occurred_at", "metadata", "type", "tags", "origin",
    "ttl_seconds", "priority", "sensitivity", "message_id", "role", "reason",
})


def _check_item_keys(fields: Mapping[str, Any], where: str) -> None:
    """Refuse keys ``add_many`` does not know (a typo would otherwise be a TypeError)."""
    unknown = sorted(str(k) for k in fields if k not in ITEM_KEYS)
    if unknown:
        raise InvalidInputError(
            f"{where} has unknown keys {unknown}; allowed: {sorted(ITEM_KEYS)} "
            "(user_id is the call's principal, not an item field)."
        )


class MemOS(SharingMixin, LocalModelMixin, AsyncMemOSMixin):
    """A memory store for agents: versioned MemCubes, hybrid search, governance.

    ``MemOS(data_dir)`` opens (or creates) a data directory; use it as a context manager or
    call :meth:`close`. Every call names its principal with ``user_id=`` (and optionally
    ``agent_id=``). Each method has an ``a``-prefixed async twin.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        config: MemOSConfig | None = None,
        embedder: Embedder | None = None,
        entity_extractor: EntityExtractor | None = None,
        reranker: Reranker | None = None,
    ) -> None:
        self.config = config or MemOSConfig()
        if reranker is not None and not isinstance(reranker, Reranker):
            raise InvalidInputError(
                f"reranker must have score(query, texts) -> scores, got {type(reranker).__name__}.")
        #: Optional second-stage scorer of (query, text) pairs (e.g. a local cross-encoder).
        self.reranker = reranker
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._embedder = embedder
        self._extractor = entity_extractor
        self._lock = DataDirLock(self.data_dir)
        self._lock.acquire()
        self._closed = False
        try:
            self._open()
        except BaseException:
            # a failed open leaves nothing open: the next open must not find a lock held
            for part in ("index", "vault"):
                if getattr(self, part, None) is not None:
                    try:
                        getattr(self, part).close()
                    except Exception:  # noqa: BLE001 - the original error is the one to raise
                        logger.warning("closing the %s after a failed open failed", part,
                                       exc_info=True)
            self._lock.release()
            raise

    def _open_index(self) -> VectorIndex:
        """Open the index; an embedded one whose files cannot be read is rebuilt from the
        vault (it is derived data): its directory is deleted and reconcile refills it."""
        from memos_core.index import IndexCorruptError, open_index

        path = self.data_dir / "index"

        def attempt() -> VectorIndex:
            return open_index(self.config.index, path=path, url=self.config.qdrant_url,
                              dim=self.embedder.dim or 384, collection=self.config.qdrant_collection)

        try:
            return attempt()
        except IndexCorruptError as exc:
            if self.config.index != "edge" or self.config.qdrant_url is not None:
                raise
            logger.warning("the index at %s is unreadable (%s); rebuilding it from the vault",
                           path, exc)
            shutil.rmtree(path)
            self.vault.set_meta("index_clean", "0")
            return attempt()

    def _open(self) -> None:
        from memos_core.index.sparse import Bm25Encoder

        self.vault = SQLiteVault(self.data_dir / "vault.sqlite3")
        self.embedder: Embedder = self._embedder or default_embedder(
            self.config.embedder, self.config.embedder_backend)
        self.extractor: EntityExtractor = self._extractor or RuleEntityExtractor()
        self.bm25 = Bm25Encoder()
        self._write_lock = threading.RLock()  # one writer: vault + index + graph stay in step
        self._listeners: list[Callable[[Sequence[MemCube]], None]] = []
        self._close_callbacks: list[Callable[[], None]] = []
        self._forget_hooks = ForgetHooks()
        self._graph_lock = threading.RLock()
        self.index = self._open_index()
        self._tag_key = index_privacy.store_key(self.vault)
        self.graph = MemoryGraph()
        self._build_graph()
        self.retriever = HybridRetriever(
            self.index, self.embedder, self.bm25, self.graph, self._graph_lock, self.extractor,
            self.config.retrieval,
        )
        self.retriever.texts = lambda ids: {i: c.text for i, c in self.vault.get_many(ids).items()}
        self._unoptimized = int(self.vault.get_meta("index_unoptimized") or 0)
        if self.vault.get_meta(index_privacy.FORMAT_META) != index_privacy.FORMAT:
            self.reindex()  # an index from before tags were hashed holds them in clear: rebuild
            self.vault.set_meta(index_privacy.FORMAT_META, index_privacy.FORMAT)
        elif self.vault.get_meta("index_clean") != "1" or self.index.count() != self._indexed_count():
            self.reconcile()
        self.vault.set_meta("index_clean", "0")

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Flush the index, mark it clean and release the data directory. Idempotent."""
        if self._closed:
            return
        for callback in reversed(self._close_callbacks):  # derived tiers stop first
            callback()
        self._closed = True
        with self._write_lock:
            try:
                self.index.flush()
                self.vault.set_meta("index_unoptimized", str(self._unoptimized))
                self.vault.set_meta("index_clean", "1")
            finally:
                self.index.close()
                self.vault.close()
                self._lock.release()

    def __enter__(self) -> "MemOS":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True after :meth:`close`; every call then raises."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidInputError("This MemOS is closed; open the data directory again.")

    # -- derived state --------------------------------------------------------------------

    def _build_graph(self) -> None:
        for row in self.vault.graph_rows():
            if row["state"] in INDEXED_STATES:
                self.graph.upsert(index_privacy.hide_payload(row, self._tag_key))
        for edge in self.vault.edges():
            self.graph.add_relation(edge.src, edge.dst, edge.kind)

    def _indexed_count(self) -> int:
        return self.vault.count(ListQuery(states=INDEXED_STATES))

    def reconcile(self) -> dict[str, int]:
        """Make the index agree with the vault: add missing or stale points, drop extra ones."""
        with self._write_lock:
            vault_versions = self.vault.current_versions()
            index_versions = self.index.versions()
            wanted = {
                mid: v for mid, (v, state) in vault_versions.items() if state in INDEXED_STATES
            }
            stale = [mid for mid, v in wanted.items() if index_versions.get(mid) != v]
            extra = [mid for mid in index_versions if mid not in wanted]
            if extra:
                self.index.delete(extra)
            for start in range(0, len(stale), 256):
                cubes = self.vault.get_many(stale[start:start + 256])
                self._index(list(cubes.values()))
            self.index.flush()
            self._maybe_optimize()
            return {"reindexed": len(stale), "removed": len(extra)}

    def reindex(self) -> dict[str, int]:
        """Rebuild the index and the graph from the vault (``memos reindex``)."""
        with self._write_lock:
            self.index.clear()
            total = self._indexed_count()
            bar = progress(total, "reindex", self.config.show_progress)
            done = 0
            for batch in self.vault.iter_current(256):
                live = [c for c in batch if c.state.value in INDEXED_STATES]
                self._index(live)
                done += len(live)
                bar.update(len(live))
            bar.close()
            self.index.flush()
            self.optimize()
            with self._graph_lock:
                self.graph = MemoryGraph()
                self._build_graph()
                self.retriever.graph = self.graph
            return {"indexed": done}

    def _index(self, cubes: Sequence[MemCube]) -> None:
        """Embed and upsert memories into the index (tombstones and expired ones are removed)."""
        keep = [c for c in cubes if c.state.value in INDEXED_STATES]
        drop = [c.id for c in cubes if c.state.value not in INDEXED_STATES]
        if drop:
            self.index.delete(drop)
        if not keep:
            return
        dense = self.embedder.embed([c.text for c in keep])
        sparse = self.bm25.encode_documents([c.text for c in keep])
        self.index.upsert(
            [
                IndexPoint(c.id, vec, sv, index_privacy.hide_payload(payload_of(c), self._tag_key))
                for c, vec, sv in zip(keep, dense, sparse)
            ]
        )
        self._unoptimized += len(keep)

    def optimize(self) -> None:
        """Build the index's search structures (HNSW graphs) over points added since the last
        call. Until then those points are searched by brute force, which is fine for a few
        thousand but slows filtered search at 100k. It blocks other threads while it runs
        (tens of seconds at 100k points on 2 cores); ``add_many`` and ``reindex`` call it once
        ``config.optimize_after`` points have accumulated."""
        with self._write_lock:
            self.index.optimize()
            self._unoptimized = 0

    def _maybe_optimize(self) -> None:
        if self._unoptimized >= self.config.optimize_after:
            self.optimize()

    def _graph_apply(self, cubes: Sequence[MemCube], edges: Sequence[Edge] = ()) -> None:
        """Bring the graph up to date with changed memories, then tell the listeners."""
        with self._graph_lock:
            for cube in cubes:
                if cube.state.value in INDEXED_STATES:
                    self.graph.upsert(index_privacy.hide_payload(graph_row(cube), self._tag_key))
                else:
                    self.graph.remove(cube.id)
            for edge in edges:
                self.graph.add_relation(edge.src, edge.dst, edge.kind)
        for listener in self._listeners:
            listener(cubes)

    def on_change(self, listener: Callable[[Sequence[MemCube]], None]) -> None:
        """Call ``listener(cubes)`` after memories change: new memories, new versions (updates,
        state changes, supersessions, shares) and tombstones. It runs under the write lock,
        after the vault committed; the derived tiers (KV caches, adapters) use it to drop what
        was built from an old version."""
        self._listeners.append(listener)

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` when :meth:`close` starts, before anything is flushed or
        released (newest first); derived tiers stop their background threads with it. A
        callback must not raise."""
        self._close_callbacks.append(callback)

    def on_forget(self, hook: ForgetHook, *, path: str | Path | None = None) -> Callable[[], None]:
        """Call ``hook(memory)`` in every :meth:`forget` (and :meth:`forget_many`), for a store
        outside the core that keeps copies of memories (a framework's conversation log).
        ``path``: the file the hook redacts; while the hook lives, that file's file redactor
        (an entry point, used when no adapter is open) does not run.

        ``memory`` is the cube about to be forgotten, text intact; the hook removes the copies
        it keeps and returns the :class:`~memos_core.results.DerivedForm` it touched (they go
        into the receipt). It runs under the write lock, before the tombstone: if it raises,
        the forget raises and the memory is not forgotten. It must not call this ``MemOS``.
        A bound method is held weakly. Returns a function that unregisters the hook (call it
        when the store closes); see :mod:`memos_core.governance.forget_hooks`.
        """
        return self._forget_hooks.add(hook, None if path is None else Path(path))

    # -- access ---------------------------------------------------------------------------

    def _load(self, memory_id: object, user_id: str, *, write: bool = False,
              allow_deleted: bool = False) -> MemCube:
        mid = check_id(memory_id)
        cube = self.vault.get(mid)
        if cube is None:
            raise MemoryNotFoundError(f"No memory with id {mid!r}.")
        access.require(cube, user_id, access.Operation.WRITE if write else access.Operation.READ)
        if cube.state is State.DELETED and not allow_deleted:
            raise MemoryDeletedError(f"Memory {mid} was forgotten; only its tombstone remains.")
        return cube

    # -- writes ---------------------------------------------------------------------------

    def add(
        self,
        content: str | Sequence[Message],
        *,
        user_id: str,
        agent_id: str | None = None,
        session_id: str | None = None,
        occurred_at: datetime | str | None = None,
        metadata: Mapping[str, Any] | None = None,
        type: str | MemoryType | None = None,
        tags: Sequence[str] = (),
        origin: str | Origin | None = None,
        ttl_seconds: float | None = None,
        priority: int = 0,
        sensitivity: Sequence[str] = (),
        supersedes: str | None = None,
        reason: str | None = None,
    ) -> Any:
        """Store a text (returns its :class:`MemCube`) or chat messages (returns a list).

        Messages are dicts (or objects) with ``role``/``content`` and optionally ``name``,
        ``id`` and ``occurred_at``; each becomes one episodic memory "speaker: content" with
        the message id as provenance. ``supersedes`` names an older memory this one replaces:
        the old one gets ``valid_to`` set and leaves default search, but stays readable.
        """
        self._check_open()
        user_id = check_name(user_id, "user_id")
        if isinstance(content, (str, bytes, bytearray)):
            items = [{"text": content}]
        elif isinstance(content, Sequence) and content:
            items = [message_item(m, i) for i, m in enumerate(content)]
        else:
            raise InvalidInputError(
                "content must be a non-empty str or a non-empty list of chat messages, got "
                f"{content.__class__.__name__ if not isinstance(content, Sequence) else 'an empty list'}."
            )
        base = dict(
            user_id=user_id, agent_id=agent_id, session_id=session_id, occurred_at=occurred_at,
            metadata=metadata, type=type, tags=tags, origin=origin, ttl_seconds=ttl_seconds,
            priority=priority, sensitivity=sensitivity,
        )
        if "role" in items[0]:
            base["origin"] = origin or Origin.CONVERSATION
            base["type"] = type or MemoryType.EPISODE
        cubes = [self._new_cube(**merge_message_item(base, item)) for item in items]
        old = self._load(supersedes, user_id, write=True) if supersedes is not None else None
        cubes = self._store(cubes, Actor(user_id, agent_id, reason), supersedes=old)
        return cubes[0] if isinstance(content, (str, bytes, bytearray)) else cubes

    def add_many(
        self, items: Iterable[Mapping[str, Any] | str], *, user_id: str, batch_size: int = 256,
        **defaults: Any,
    ) -> list[MemCube]:
        """Bulk ingest: each item a text or a dict of :meth:`add` keywords plus ``text``.

        Validates everything first; then stores in batches of ``batch_size`` (one vault
        transaction each), with a progress bar. Returns the stored cubes in input order.
        """
        self._check_open()
        user_id = check_name(user_id, "user_id")
        batch_size = check_k(batch_size, "batch_size", 1_000_000)
        _check_item_keys(defaults, "add_many keyword")
        cubes = []
        for i, item in enumerate(items):
            if isinstance(item, (str, bytes)):
                fields = {"text": item}
            elif isinstance(item, Mapping):
                fields = dict(item)
            else:
                raise InvalidInputError(
                    f"item {i} must be a str or a dict with 'text', got {type(item).__name__}.")
            if "text" not in fields:
                raise InvalidInputError(f"item {i} has no 'text'.")
            _check_item_keys(fields, f"item {i}")
            cubes.append(self._new_cube(**{"user_id": user_id, **defaults, **fields}))
        bar = progress(len(cubes), "add", self.config.show_progress)
        actor = Actor(user_id, defaults.get("agent_id"), defaults.get("reason"))
        stored: list[MemCube] = []
        for start in range(0, len(cubes), batch_size):
            batch = cubes[start:start + batch_size]
            stored.extend(self._store(batch, actor))
            bar.update(len(batch))
        bar.close()
        self._maybe_optimize()
        return stored

    def _new_cube(
        self, *, text: Any, user_id: str, agent_id: str | None = None,
        session_id: str | None = None, occurred_at: Any = None, metadata: Any = None,
        type: Any = None, tags: Any = (), origin: Any = None, ttl_seconds: Any = None,
        priority: int = 0, sensitivity: Any = (), message_id: str | None = None,
        role: str | None = None, reason: str | None = None,
    ) -> MemCube:
        text = check_text(text)
        ttl_seconds = check_positive_seconds(ttl_seconds, "ttl_seconds")
        priority = check_int(priority, "priority")
        meta = check_metadata(metadata)
        if role is not None:
            meta = {**meta, "role": role}
        provenance = Provenance(
            source_message_ids=(message_id,) if message_id else (),
            spans=(Span(message_id=message_id, start=0, end=len(text)),) if message_id else (),
            extractor=self.extractor.name,
        )
        occurred = check_datetime(occurred_at, "occurred_at")
        return MemCube(
            namespace=Namespace(
                user_id=user_id,
                agent_id=check_name(agent_id, "agent_id", optional=True),
                session_id=check_name(session_id, "session_id", optional=True),
            ),
            text=text,
            occurred_at=occurred,
            valid_from=occurred or utcnow(),  # true since the event, or since we were told
            origin=check_enum(Origin, origin or Origin.USER_INPUT, "origin"),
            type=check_enum(MemoryType, type or MemoryType.NOTE, "type"),
            tags=check_strs(tags, "tags"),
            entities=tuple(self.extractor.extract(text)),
            provenance=provenance,
            governance=Governance(
                ttl_seconds=ttl_seconds, priority=priority,
                sensitivity=check_strs(sensitivity, "sensitivity"),
            ),
            metadata=meta,
        )

    def _store(self, cubes: list[MemCube], actor: Actor,
               supersedes: MemCube | None = None) -> list[MemCube]:
        """Insert new memories (they inherit their namespace's grants, and the last one the
        grants of the memory it supersedes); returns them."""
        with self._write_lock:
            cubes = sharing.inherit_grants(self.vault, cubes)
            if supersedes is not None:
                cubes[-1] = access.carry_shares(cubes[-1], supersedes)
            edges: list[Edge] = []
            changed = list(cubes)
            replacements: list[tuple[MemCube, int]] = []
            if supersedes is not None:
                new = cubes[-1]
                now = utcnow()
                edges = [Edge(new.id, supersedes.id, "supersedes")]
                replaced = supersedes.model_copy(update={
                    "version": supersedes.version + 1, "updated_at": now,
                    "valid_to": max(new.valid_from or now, supersedes.valid_from or now),
                    "superseded_by": new.id,
                })
                replacements = [(replaced, supersedes.version)]
                changed.append(replaced)
            self.vault.insert(cubes, actor, replacements=replacements, edges=edges)
            self._index(changed)
            self._graph_apply(changed, edges)
            return cubes

    def update(
        self,
        memory_id: str,
        text: str | None = None,
        *,
        user_id: str,
        agent_id: str | None = None,
        tags: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        type: str | MemoryType | None = None,
        occurred_at: datetime | str | None = None,
        reason: str | None = None,
    ) -> MemCube:
        """Write a new version with the given fields changed; returns it. Old versions stay."""
        self._check_open()
        user_id = check_name(user_id, "user_id")
        with self._write_lock:
            cube = self._load(memory_id, user_id, write=True)
            changes: dict[str, Any] = {}
            if text is not None:
                changes["text"] = check_text(text)
                changes["entities"] = tuple(self.extractor.extract(changes["text"]))
            if tags is not None:
                changes["tags"] = check_strs(tags, "tags")
            if metadata is not None:
                changes["metadata"] = check_metadata(metadata)
            if type is not None:
                changes["type"] = check_enum(MemoryType, type, "type")
            if occurred_at is not None:
                changes["occurred_at"] = check_datetime(occurred_at, "occurred_at")
            if not changes:
                raise InvalidInputError("update needs at least one of text, tags, metadata, type, occurred_at.")
            return self._write_version(cube, changes, Actor(user_id, agent_id, reason), "update")

    def _write_version(self, cube: MemCube, changes: dict[str, Any], actor: Actor,
                       action: str, details: dict[str, Any] | None = None) -> MemCube:
        new = cube.model_copy(update={**changes, "version": cube.version + 1, "updated_at": utcnow()})
        new = MemCube.model_validate(new.model_dump())  # re-validate the changed fields
        self.vault.put_version(new, cube.version, actor, action, details)
        self._index([new])
        self._graph_apply([new])
        return self.vault.get(new.id) or new

    def set_state(self, memory_id: str, state: str | State, *, user_id: str,
                  reason: str | None = None) -> MemCube:
        """Move a memory along its lifecycle (e.g. archive it); a new version, audited."""
        self._check_open()
        target = check_enum(State, state, "state")
        if target is State.DELETED:
            raise InvalidInputError("Use forget() to delete a memory.")
        with self._write_lock:
            cube = self._load(memory_id, check_name(user_id, "user_id"), write=True)
            if cube.state is target:
                return cube
            return self._write_version(cube, {"state": target}, Actor(user_id, None, reason),
                                       f"state:{target.value}")

    def rollback(self, memory_id: str, version: int, *, user_id: str,
                 reason: str | None = None) -> MemCube:
        """Make a new version whose content equals ``version``'s (history is kept)."""
        self._check_open()
        user_id = check_name(user_id, "user_id")
        with self._write_lock:
            cube = self._load(memory_id, user_id, write=True)
            old = self.vault.get_version(cube.id, check_k(version, "version", 10**9))
            if old is None:
                raise VersionNotFoundError(
                    f"Memory {cube.id} has no version {version} (it has 1..{cube.version})."
                )
            fields = ("text", "type", "tags", "entities", "metadata", "occurred_at", "state",
                      "valid_to", "superseded_by", "governance")
            changes = {f: getattr(old, f) for f in fields}
            # access is not content: rolling back neither restores a revoked grant nor drops one
            changes["governance"] = old.governance.model_copy(update={
                "readers": cube.governance.readers, "writers": cube.governance.writers})
            return self._write_version(cube, changes, Actor(user_id, None, reason), "rollback",
                                       {"to_version": version})

    def forget(self, memory_id: str, *, user_id: str, agent_id: str | None = None,
               reason: str | None = None, derived: str = "flag") -> ForgetReceipt:
        """Delete a memory everywhere; leaves a tombstone (id, versions, text hash). Idempotent.

        Owner only. Removes the text from every version, the index point, the graph node,
        every KV cache file holding it and the messages of the conversation logs (open ones
        through :meth:`on_forget`, the others' files through their packages' redactors), and
        truncates the vault's WAL. Summaries made from it are flagged
        (``metadata["source_forgotten"]``) or, with ``derived="forget"``, forgotten too. The
        receipt lists each derived form; see :mod:`memos_core.governance.forgetting`.
        """
        self._check_open()
        user_id = check_name(user_id, "user_id")
        mode = forgetting.check_mode(derived)
        with self._write_lock:
            cube = self._load(memory_id, user_id, write=True, allow_deleted=True)
            access.require(cube, user_id, access.Operation.OWN, "forget")
            try:
                return forgetting.forget_one(self, cube, Actor(user_id, agent_id, reason), mode)
            finally:  # a failing hook of a cascaded summary comes after a tombstone
                self.vault.checkpoint()

    def compress(self, memory_ids: Sequence[str], summary: str, *, user_id: str,
                 agent_id: str | None = None, type: str | MemoryType = MemoryType.SUMMARY,
                 reason: str | None = None) -> MemCube:
        """Replace several memories by one summary: the summary is stored (derived_from the
        sources, linked to them in the graph) and the sources are archived (out of default
        search, still readable and restorable). The summary carries every sensitivity tag
        of its sources. One transaction; returns the summary."""
        self._check_open()
        user_id = check_name(user_id, "user_id")
        ids = check_strs(memory_ids, "memory_ids")
        if not ids or len(set(ids)) != len(ids):
            raise InvalidInputError("memory_ids must be a non-empty list of distinct ids.")
        with self._write_lock:
            sources = [self._load(i, user_id, write=True) for i in ids]
            sessions = {s.session_id for s in sources}
            times = [s.occurred_at for s in sources if s.occurred_at is not None]
            cube = self._new_cube(
                text=summary, user_id=user_id, agent_id=agent_id,
                session_id=sessions.pop() if len(sessions) == 1 else None,
                occurred_at=max(times) if times else None, type=type, origin=Origin.CONSOLIDATION,
                sensitivity=sensitivity_rules.history_sensitivity(sources),  # a summary may repeat them
            )
            cube = cube.model_copy(update={"provenance": cube.provenance.model_copy(
                update={"derived_from": tuple(s.id for s in sources)})})
            cube = sharing.inherit_grants(self.vault, [cube])[0]
            now = utcnow()
            archived = [
                (s.model_copy(update={"state": State.ARCHIVED, "version": s.version + 1,
                                      "updated_at": now}), s.version)
                for s in sources
            ]
            edges = [Edge(cube.id, s.id, "derived_from") for s in sources]
            self.vault.insert([cube], Actor(user_id, agent_id, reason), "compress",
                              replacements=archived, edges=edges, replacement_action="archive")
            changed = [cube, *(a for a, _ in archived)]
            self._index(changed)
            self._graph_apply(changed, edges)
            return cube

    def forget_many(self, memory_ids: Sequence[str], *, user_id: str, agent_id: str | None = None,
                    reason: str | None = None) -> list[ForgetReceipt]:
        """:meth:`forget` each id; all ids are checked (exist, owned) before any is forgotten."""
        self._check_open()
        user_id = check_name(user_id, "user_id")
        ids = check_strs(memory_ids, "memory_ids")
        actor = Actor(user_id, agent_id, reason)
        with self._write_lock:
            cubes = [self._load(mid, user_id, write=True, allow_deleted=True) for mid in ids]
            for cube in cubes:
                access.require(cube, user_id, access.Operation.OWN, "forget")
            # every conversation log first: a failing hook leaves all the memories untouched
            unique = {c.id: c for c in cubes}.values()
            logs = {c.id: forgetting.redact_logs(self, c) for c in unique}
            try:  # a memory may be flagged earlier in the loop (as a summary of another): reload
                return [forgetting.forget_one(self, self.vault.get(c.id) or c, actor, "flag",
                                              logs.pop(c.id, [])) for c in cubes]
            finally:
                self.vault.checkpoint()

    # -- reads ----------------------------------------------------------------------------

    def get(self, memory_id: str, *, user_id: str, version: int | None = None,
            as_of: datetime | str | None = None) -> MemCube:
        """The current version, a given ``version``, or the version current ``as_of`` a time."""
        self._check_open()
        cube = self._load(memory_id, check_name(user_id, "user_id"),
                          allow_deleted=version is not None or as_of is not None)
        if version is not None:
            old = self.vault.get_version(cube.id, check_k(version, "version", 10**9))
            if old is None:
                raise VersionNotFoundError(f"Memory {cube.id} has no version {version}.")
            return old
        if as_of is not None:
            when = check_datetime(as_of, "as_of")
            old = self.vault.get_as_of(cube.id, when)  # type: ignore[arg-type]
            if old is None:
                raise VersionNotFoundError(f"Memory {cube.id} did not exist at {when}.")
            return old
        return cube

    def history(self, memory_id: str, *, user_id: str) -> list[MemCube]:
        """Every version, oldest first (a forgotten memory's versions keep no text)."""
        self._check_open()
        cube = self._load(memory_id, check_name(user_id, "user_id"), allow_deleted=True)
        return self.vault.history(cube.id)

    def list(
        self, *, user_id: str, agent_id: str | None = None, session_id: str | None = None,
        types: Sequence[str] | None = None, tags: Sequence[str] | None = None,
        states: Sequence[str] | None = None, occurred_after: datetime | str | None = None,
        occurred_before: datetime | str | None = None, include_superseded: bool = True,
        metadata: Mapping[str, str | int | float | bool] | None = None,
        limit: int = 100, offset: int = 0, newest_first: bool = False,
    ) -> list[MemCube]:
        """Memories visible to ``user_id`` in insertion order (paged). Tombstones are excluded
        unless ``states`` asks for ``deleted``. ``metadata`` keeps memories whose metadata has
        each given key equal to the given scalar value."""
        self._check_open()
        user_id = check_name(user_id, "user_id")
        offset = check_int(offset, "offset", 0)
        query = ListQuery(
            user_ids=(user_id,), agent_id=agent_id, session_id=session_id,
            types=check_strs(types, "types") or None, tags=check_strs(tags, "tags") or None,
            states=check_strs(states, "states") or tuple(s.value for s in State if s is not State.DELETED),
            occurred_after=check_datetime(occurred_after, "occurred_after"),
            occurred_before=check_datetime(occurred_before, "occurred_before"),
            include_superseded=include_superseded, limit=check_k(limit, "limit", 10_000),
            offset=offset, newest_first=newest_first, metadata_equals=check_metadata_filter(metadata),
        )
        return self.vault.list(query)

    def search(
        self, query: str, *, user_id: str, k: int = 5, agent_id: str | None = None,
        session_id: str | None = None, types: Sequence[str] | None = None,
        tags: Sequence[str] | None = None, occurred_after: datetime | str | None = None,
        occurred_before: datetime | str | None = None, include_superseded: bool = False,
        include_archived: bool = False, record_usage: bool = True,
        allow_sensitive: Sequence[str] | str | None = None,
        valid_at: datetime | str | None = None,
    ) -> list[SearchHit]:
        """Hybrid search over the memories ``user_id`` may read; best first, at most ``k``.

        Superseded and archived memories are left out unless asked for. Ranking: dense +
        BM25 fusion and graph expansion, then a second stage over the top
        ``retrieval.rerank_depth`` texts (a memory that is only a question ranks below
        statements; turns of a speaker the query names are lifted; the optional
        ``reranker``). Each hit records the signals that found it. Every hit counts as an access (usage counters, heat) unless
        ``record_usage=False``. Search results are what goes into prompts, so a memory with
        sensitivity tags comes back redacted (``hit.redacted`` names the tags, the text is
        ``"[redacted: pii]"``) unless ``allow_sensitive`` (default
        ``config.allow_sensitive``; ``"*"`` for all) covers every tag of it. ``valid_at``
        asks what was believed at a time: memories whose validity interval
        ``[valid_from, valid_to)`` contains it, superseded ones included.
        """
        self._check_open()
        query = check_text(query, "query")
        user_id = check_name(user_id, "user_id")
        k = check_k(k)
        allowed = sensitivity_rules.allowance(
            self.config.allow_sensitive if allow_sensitive is None else allow_sensitive)
        states = SEARCHABLE_STATES + (("archived",) if include_archived else ())
        when = check_datetime(valid_at, "valid_at")
        include_superseded = include_superseded or when is not None
        flt = build_filter(
            (user_id,), agent_id=check_name(agent_id, "agent_id", optional=True),
            session_id=check_name(session_id, "session_id", optional=True),
            types=check_strs(types, "types") or None,
            tags=tuple(index_privacy.hide_tags(check_strs(tags, "tags"), self._tag_key)) or None,
            states=states, occurred_after=check_datetime(occurred_after, "occurred_after"),
            occurred_before=check_datetime(occurred_before, "occurred_before"),
            include_superseded=include_superseded,
        )
        rcfg = self.config.retrieval
        second = rcfg.question_weight != 1.0 or rcfg.speaker_weight > 0 or self.reranker is not None
        depth = max(k, rcfg.rerank_depth) if second else k
        cands = self.retriever.retrieve(query, flt, depth)
        cubes = self.vault.get_many([c.id for c in cands])
        if second:
            cands = rerank(query, cands, {i: c.text for i, c in cubes.items()},
                           question_weight=rcfg.question_weight, reranker=self.reranker,
                           reranker_weight=rcfg.reranker_weight,
                           speaker_weight=rcfg.speaker_weight)
        now = utcnow()
        hits = []
        for c in cands:
            if len(hits) == k:
                break
            cube = cubes.get(c.id)
            # the vault decides: an index payload may lag it (e.g. a revoke before a crash)
            if cube is None or cube.state.value not in states or cube.ttl_elapsed(now) \
                    or not access.permits(cube, user_id, access.Operation.READ) \
                    or (when is not None and not cube.is_valid_at(when)):
                continue
            shown, redacted = sensitivity_rules.for_prompt(cube, allowed)
            hits.append(SearchHit(memory=shown, score=c.score, signals=c.scores, ranks=c.ranks,
                                  # graph reasons name entities of the text ("shared entity X")
                                  reasons=() if redacted else tuple(c.reasons),
                                  redacted=redacted))
        if record_usage and hits:
            self.vault.record_usage([h.id for h in hits], utcnow(), self.config.heat_half_life_s)
        return hits

    # -- bundles, stats, audit ------------------------------------------------------------

    def export(self, path: str | os.PathLike[str], *, user_id: str,
               include_sensitive: bool = False) -> Path:
        """Write ``user_id``'s own memories (every version) and relations as a bundle
        directory. Memories that any version marks sensitive are left out (the manifest
        counts them under ``withheld_sensitive``) unless ``include_sensitive=True``."""
        from memos_core.bundle import export_bundle

        self._check_open()
        if not isinstance(include_sensitive, bool):
            raise InvalidInputError(f"include_sensitive must be a bool, got {include_sensitive!r}.")
        return export_bundle(self, check_path(path), check_name(user_id, "user_id"),
                             include_sensitive=include_sensitive)

    def import_(self, path: str | os.PathLike[str], *, user_id: str) -> dict[str, int]:
        """Import a bundle made by :meth:`export`; everything is validated before writing.

        Memories keep their ids, versions and history and are owned by ``user_id``. Existing
        ids are skipped (importing the same bundle twice is a no-op).
        """
        from memos_core.bundle import import_bundle

        self._check_open()
        return import_bundle(self, check_path(path), check_name(user_id, "user_id"))

    def is_admin(self, user_id: str) -> bool:
        """True if ``user_id`` is one of ``config.admin_users`` (store-wide views)."""
        return check_name(user_id, "user_id") in self.config.admin_users

    def stats(self, *, user_id: str) -> dict[str, Any]:
        """Counts, as ``user_id`` may see them (``"scope"`` says which view).

        An admin (``config.admin_users``) gets the store-wide view: every user's memories by
        state, versions, audit records and relations, the index's points and the graph.
        Anyone else gets their own: the memories they own (by state) and their versions,
        the audit records of their operations, relations among their memories, and how many
        memories of others are shared with them -- nothing that counts other users' data.
        """
        self._check_open()
        user_id = check_name(user_id, "user_id")
        if user_id in self.config.admin_users:
            return {
                "scope": "store",
                "data_dir": str(self.data_dir),
                "vault": self.vault.stats(),
                "index": {"backend": self.config.index, "points": self.index.count()},
                "graph": self.graph.stats(),
                "embedder": self.embedder.name,
                "embedder_backend": getattr(self.embedder, "backend", None),
            }
        return {
            "scope": "user",
            "user_id": user_id,
            "vault": self.vault.user_stats(user_id),
            "index": {"backend": self.config.index},
            "embedder": self.embedder.name,
            "embedder_backend": getattr(self.embedder, "backend", None),
        }

    def audit_log(self, *, user_id: str, memory_id: str | None = None,
                  action: str | None = None, limit: int = 100) -> list[Any]:
        """Audit records of ``user_id``'s own operations (or of one memory they may read),
        oldest first, the newest ``limit``; ``action`` keeps one kind (e.g. ``"forget"``)."""
        self._check_open()
        user_id = check_name(user_id, "user_id")
        action = check_name(action, "action", optional=True)
        limit = check_k(limit, "limit", 10**6)
        if memory_id is not None:
            self._load(memory_id, user_id, allow_deleted=True)
            return self.vault.audit_log(memory_id=check_id(memory_id), action=action, limit=limit)
        return self.vault.audit_log(user_id=user_id, action=action, limit=limit)

    def verify_audit(self, *, user_id: str) -> tuple[bool, str]:
        """Check the audit log's hash chain and head record: (ok, message naming the first
        bad record). It reads every user's records, so only an admin principal
        (``config.admin_users``) may call it; anyone else gets :class:`AccessDeniedError`.
        What it detects: see docs/governance.md ("Audit")."""
        self._check_open()
        user_id = check_name(user_id, "user_id")
        if user_id not in self.config.admin_users:
            raise AccessDeniedError(
                f"User {user_id!r} may not verify the audit log: it holds every user's "
                "operations (rule: admin only; admins are listed in MemOSConfig.admin_users). "
                "Use audit_log(user_id=...) for your own records."
            )
        return self.vault.verify_audit()
