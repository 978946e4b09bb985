"""The Memory API: the ``MemOS`` facade that adapters, the CLI and notebooks call.

The facade validates arguments, checks the principal's rights and delegates: writes to the
operations (:mod:`memos_core.ops`) over the kernel (:class:`memos_core.store.MemoryStore`,
``mos.store``), whose one write path commits to the vault, then updates the index and the
graph, then tells the listeners; chat, scheduling and adapters to the instance's model
engine (``mos.engine``, :mod:`memos_core.engine`). Every public method has an async twin
(``a``-prefixed, :mod:`memos_core.aio`).
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import logging
import os
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, cast

from memos_core.aio import native_get, native_history, native_list, twin
from memos_core.calls import CLOSED, RunningCalls
from memos_core.config import MemOSConfig, default_data_dir, user_path
from memos_core.cube import MemCube, MemoryType, Origin, State
from memos_core.embedding import Embedder
from memos_core.errors import (
    AccessDeniedError,
    ConflictError,
    CorruptDataError,
    InvalidInputError,
    MemoryDeletedError,
    MemoryNotFoundError,
    PurgePendingError,
    VersionNotFoundError,
)
from memos_core.extraction import EntityExtractor
from memos_core.governance import access
from memos_core.governance import sensitivity as sensitivity_rules
from memos_core.governance.derived import check_mode, check_passed_back, flagged
from memos_core.governance.forget_hooks import ForgetHook
from memos_core.graph import GraphViews
from memos_core.index.base import VectorIndex
from memos_core.lifecycle import CHANGEABLE_STATES, SEARCHABLE_STATES
from memos_core.lock import DataDirLock, make_private_dir
from memos_core.messages import merge_message_item, message_item
from memos_core.ops import bundle, share, writes
from memos_core.ops import forget as forget_ops
from memos_core.ops import search as search_ops
from memos_core.progress import progress
from memos_core.results import DerivedForm, ForgetReceipt, ModelInfo, SearchHit, ShareReceipt
from memos_core.retrieval.filters import build_filter
from memos_core.retrieval.hybrid import HybridRetriever
from memos_core.retrieval.rerank import Reranker
from memos_core.store import MemoryStore
from memos_core.validation import (
    check_bool,
    check_config,
    check_datetime,
    check_enum,
    check_enums,
    check_id,
    check_int,
    check_k,
    check_metadata,
    check_metadata_filter,
    check_name,
    check_path,
    check_positive_seconds,
    check_protocol,
    check_strs,
    check_tags,
    check_text,
    distinct_ids,
)
from memos_core.vault import Actor, AuditRecord, ListQuery, NamespaceGrant, Vault
from memos_core.vault.audit_chain import AUDIT_HEAD, parse_head
from memos_core.vault.postgres import is_postgres_url

logger = logging.getLogger("memos_core")

if TYPE_CHECKING:
    from concurrent.futures import Future

    from memos_core.server_mode import ServerParts

    from memos_core.chat import AsyncChatStream, ChatAnswer, ChatStream, MemoryChat
    from memos_core.engine import MemoryEngine
    from memos_core.runtime import LocalModel
    from memos_core.scheduler import (
        BackgroundScheduler,
        ConsolidationConfig,
        SchedulerConfig,
        ScheduleReport,
    )
    from memos_core.tiers.parametric import (
        AdapterManifest,
        ConsolidationResult,
        ParametricConfig,
        ParametricTier,
    )

Message = Mapping[str, Any]
P = ParamSpec("P")
R = TypeVar("R")


def running(method: Callable[Concatenate[MemOS, P], R]) -> Callable[Concatenate[MemOS, P], R]:
    """A public call of the facade: counted while it runs, so that ``close()`` waits for it
    and refuses to start under it (:mod:`memos_core.calls`)."""

    @functools.wraps(method)
    def call(self: MemOS, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self._calls.call():
            return method(self, *args, **kwargs)

    return call


class MemOS:
    """A memory store for agents: versioned MemCubes, hybrid search, governance.

    ``MemOS(data_dir)`` opens (or creates) a data directory; use it as a context manager or
    call :meth:`close`. ``MemOS("postgresql://user:password@host:port/db")`` opens the
    server mode instead: the vault and index in PostgreSQL, shared by any number of processes
    (see :mod:`memos_core.server_mode` and docs/scale_out.md). Every call names its principal with ``user_id=`` (and optionally
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
        if isinstance(config, (str, Mapping)):  # before anything is created on disk
            raise InvalidInputError(
                f"config must be a MemOSConfig, got {type(config).__name__}: pass "
                "MemOSConfig(...) or MemOSConfig.preset(name), e.g. MemOSConfig.preset('test').")
        self.config = check_config(config, MemOSConfig, "config") or MemOSConfig()
        # the objects are checked before anything is created on disk (a failed open leaves
        # no new file), as the config is
        check_protocol(embedder, Embedder, "embedder",
                       "dim (int), name (str) and embed(texts) -> an array of shape "
                       "(len(texts), dim)",
                       " To choose an embedding model by name, use MemOSConfig(embedder=...)."
                       if isinstance(embedder, str) else "")
        check_protocol(entity_extractor, EntityExtractor, "entity_extractor",
                       "name (str) and extract(text) -> list[str]",
                       " Leave it None for the built-in rule-based extractor."
                       if isinstance(entity_extractor, str) else "")
        check_protocol(reranker, Reranker, "reranker", "score(query, texts) -> scores")
        #: Optional second-stage scorer of (query, text) pairs (e.g. a local cross-encoder).
        self.reranker = reranker
        #: server mode: the database URL (password hidden); None for a data directory
        self.database: str | None = None
        self._server: ServerParts | None = None
        #: server mode: closes the store if this facade is dropped unclosed
        self._dropped: weakref.finalize[[MemoryStore, ServerParts], MemOS] | None = None
        self._closed = False
        self._calls = RunningCalls()  # close() waits for them
        self._close_lock = threading.Lock()  # decides which close() is the first
        self._closed_event = threading.Event()  # set when the first close() is done
        self._engine: MemoryEngine | None = None
        self._chat_service: MemoryChat | None = None
        self._engine_lock = threading.Lock()
        if is_postgres_url(data_dir):
            self._open_server(str(data_dir), embedder, entity_extractor)
        else:
            self.data_dir = user_path(check_path(data_dir, "data_dir") if data_dir is not None
                                      else check_path(default_data_dir(), "MEMOS_DATA_DIR"))
            if self.config.index_url is not None and self.config.index != "pgvector":
                # only server mode turns the default index into 'pgvector' (and reads it)
                raise InvalidInputError(
                    f"index_url is set but index is {self.config.index!r}: only "
                    "index='pgvector' uses index_url. Set index='pgvector' to keep this data "
                    "directory's index in PostgreSQL, or drop index_url.")
            if self.config.index_url is not None:  # as server mode checks its URLs
                from memos_core.server_mode import check_url

                check_url(self.config.index_url)
            make_private_dir(self.data_dir)
            self._lock: DataDirLock | None = DataDirLock(self.data_dir)
            self._lock.acquire()
            try:
                self.store = MemoryStore(self.data_dir, self.config, embedder=embedder,
                                         extractor=entity_extractor)
            except BaseException:
                self._lock.release()
                raise
            self.store.keep_alive = self._lock
        # every forget reaches the model tiers' files, whether or not an engine runs (plain
        # functions, not bound methods: the store must not keep this facade alive)
        self.store.add_purger(_kv_purger(self.data_dir / "kv"))
        self.store.add_purger(_adapter_purger(self.store))
        self._settle_derived_files()

    def _settle_derived_files(self) -> None:
        """Bring this directory's KV files and adapters in line with the vault before
        anything is served: forgets, updates and expiries this process did not hear of (it
        was closed or killed mid-purge; in server mode another process made them) leave no
        block or adapter holding the old text. Purges that failed earlier are retried, and
        forgets that stopped before their cascade (a process killed after the tombstone)
        flag the summaries made from the forgotten memory."""
        self._finish_forgets()
        try:
            if self.store.purge_pending:
                self.store.retry_purges()
            from memos_core.tiers.activation.storage import stale_kv_files

            for path in stale_kv_files(self.data_dir / "kv", self.vault):
                path.unlink(missing_ok=True)
            if (self.data_dir / "adapters").is_dir():
                from memos_core.tiers.parametric.tier import ParametricTier

                ParametricTier.without_model(self.store).settle(marks=self._server is None)
        except Exception:  # noqa: BLE001 - the store opens; the next forget retries
            logger.warning("bringing the KV files and adapters in line with the vault failed",
                           exc_info=True)

    def _open_server(self, url: str, embedder: Embedder | None,
                     extractor: EntityExtractor | None) -> None:
        """Server mode: the vault (and index) in PostgreSQL, shared by every process; local
        per-process files in ``config.cache_dir``; no data-directory lock."""
        from memos_core.server_mode import dead_cache_purger, open_server
        from memos_core.vault.postgres import redact_url

        parts = open_server(url, self.config)
        self.config, self._server, self._lock = parts.config, parts, None
        self.data_dir = parts.cache_dir
        self.database = redact_url(url)
        try:
            self.store = MemoryStore(parts.cache_dir, self.config, vault=parts.vault,
                                     embedder=embedder, extractor=extractor)
        except BaseException:
            parts.vault.close()
            parts.release()
            raise
        # a killed process's temporary cache directory may hold a forgotten memory's text:
        # every forget, this process's or one the change feed brings, removes those
        self.store.add_purger(dead_cache_purger)
        if self.config.listen and self.store.follower is not None:
            self.store.follower.start_listening()
        self._dropped = weakref.finalize(self, _close_dropped, self.store, parts)
        self._dropped.atexit = False  # at exit the process's end closes the connections

    # -- the parts, for tools and tests (the kernel owns them) --------------------------------

    @property
    def vault(self) -> Vault:
        """The source of truth (``store.vault``)."""
        return self.store.vault

    @property
    def index(self) -> VectorIndex:
        return self.store.index

    @property
    def graph(self) -> GraphViews:
        """The memory graph: per-user views loaded from the vault on demand
        (:mod:`memos_core.graph.views`)."""
        return self.store.graph

    @property
    def embedder(self) -> Embedder:
        return self.store.embedder

    @property
    def extractor(self) -> EntityExtractor:
        return self.store.extractor

    @property
    def retriever(self) -> HybridRetriever:
        return self.store.retriever

    # -- lifetime -----------------------------------------------------------------------------

    def close(self, *, timeout_s: float | None = 30.0) -> None:
        """Stop the engine, flush the index, mark it clean and release the data directory.
        New calls from other threads raise the closed error from the start; calls already
        running there (an async write twin's from the moment it is queued for a worker
        thread) are waited for, up to ``timeout_s`` seconds (None: however long; an
        ``add_many`` stops at its next batch), then closed under (they may fail with a closed
        file's error; a warning says how many). Called from inside a running call (a change
        listener: it runs under the write lock, which another thread's running call may be
        waiting for; a run of the background scheduler counts as a call here), it refuses new
        calls at once and returns; the waiting and closing run as that call returns, after the
        lock is released (:attr:`closed` is True from then on; a failure there is logged, not
        raised). Called on an event loop's thread (leaving
        ``with MemOS(...)`` in a coroutine), it does not wait for that loop's native async
        calls, which cannot go on while it blocks the loop: one not started yet gets the
        closed error, one waiting on the server a ``ServerUnavailableError`` ("the vault is
        closed"), and a write that already holds its connection may still commit (``await
        aclose()`` closes from a worker thread and waits for them all). A
        ``chat(stream=True)`` call returns its
        stream before it is read; close does not wait for the reading. Idempotent, also from
        several threads at once: the others wait for the first, except a call that closes
        from inside a running call, which returns at once, since the first waits for that
        call."""
        wait_s = check_positive_seconds(timeout_s, "timeout_s")
        with self._close_lock:
            if self._closed:
                return
            first = not self._calls.closing
            if first:
                self._calls.begin_close()
        if not first:
            if not (self._calls.in_call or self._calls.closing_here):
                self._closed_event.wait()
            return
        if self._calls.in_call:  # a listener, under the write lock another call may wait for
            self._calls.defer(functools.partial(self._finish_deferred_close, wait_s))
            return
        self._finish_close(wait_s)

    def _finish_deferred_close(self, wait_s: float | None) -> None:
        """:meth:`_finish_close` for a ``close()`` made inside a call, run as that call
        returns (:meth:`RunningCalls.defer`). A failure is logged, not raised: the call has
        done its work (an add committed: raising would invite a retry that stores it twice)
        and its ``close()`` has already returned."""
        try:
            self._finish_close(wait_s)
        except Exception:  # noqa: BLE001 - see the docstring; the store is marked closed
            logger.error("close(), called inside a call and finished as it returned, failed",
                         exc_info=True)

    def _finish_close(self, wait_s: float | None) -> None:
        """The part of :meth:`close` after it refused new calls: wait for the running calls,
        close the store, release the data directory."""
        try:
            left = self._calls.wait(wait_s)
            if left:
                logger.warning("close(): %d call(s) in other threads still running after "
                               "%s s; closing under them", left, wait_s)
            self.store.close()  # its close callbacks stop the engine first
        finally:
            self._closed = True
            self._engine = self._chat_service = None
            if self._dropped is not None:
                self._dropped.detach()
            if self._lock is not None:
                self._lock.release()
            if self._server is not None:
                self._server.release()
            self._closed_event.set()

    def __enter__(self) -> MemOS:
        return self

    async def __aenter__(self) -> MemOS:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True after :meth:`close`; every call then raises."""
        return self._closed

    def __repr__(self) -> str:
        database = getattr(self, "database", None)
        where = f"server mode {database}" if database else str(getattr(self, "data_dir", "?"))
        return f"<MemOS {where}{' (closed)' if getattr(self, '_closed', False) else ''}>"

    def _check_open(self) -> None:
        """Raise if closed; in server mode, first catch up with other processes' changes
        (one query when there are none), so nothing forgotten or revoked elsewhere is
        served from this process's derived state."""
        if self._closed:
            raise InvalidInputError(CLOSED)
        if self._server is not None or self.store.lagging:
            self.store.sync()
        self._finish_forgets_due()

    def _forgets_check_due(self) -> bool:
        """Server mode: whether :meth:`_finish_forgets_due` would look now (a minute passed)."""
        return self._server is not None \
            and time.monotonic() - self._forgets_checked >= FORGET_RUNNING_S

    def _finish_forgets_due(self) -> None:
        """Server mode, at most once a minute: :meth:`_finish_forgets` (at open only, a
        process restarted within the minute after the kill never finished them)."""
        if self._forgets_check_due():
            self._finish_forgets()

    def _finish_forgets(self) -> None:
        """Finish the forgets that stopped before their cascade (a process killed after the
        tombstone: a summary made from the memory may still hold its text, served to all
        its readers): at open, and in server mode once a minute, where a forget younger than
        :data:`FORGET_RUNNING_S` may still be running in its own process and is left to it."""
        self._forgets_checked = time.monotonic()
        try:
            if not self.vault.unfinished_forgets():  # (one query; no lock when none)
                return
            with self.store.write_lock:
                finished = forget_ops.finish_unfinished(
                    self.store, min_age_s=FORGET_RUNNING_S if self._server is not None else 0.0)
                if finished:
                    self.vault.checkpoint()  # a forgotten summary's old pages leave the WAL
                    logger.warning("finished %d forgets that had stopped before dealing with "
                                   "the summaries made from their memory", finished)
        except Exception:  # noqa: BLE001 - the store opens; a later look or forget retries
            logger.warning("finishing interrupted forgets failed", exc_info=True)

    @running
    def catch_up(self) -> int:
        """Server mode: apply other processes' changes to this process's graph, caches and
        per-process index now; returns how many (every call does this first anyway). 0 in
        the embedded mode."""
        if self._closed:
            self._check_open()  # raises
        return self.store.sync()

    # -- derived state (the kernel's) ---------------------------------------------------------

    @running
    def reconcile(self) -> dict[str, int]:
        """Make the index agree with the vault: add missing or stale points, drop extra ones."""
        self._check_open()
        return self.store.reconcile()

    @running
    def reindex(self) -> dict[str, int]:
        """Rebuild the index and the graph from the vault (``memos reindex``)."""
        self._check_open()
        return self.store.reindex()

    @running
    def optimize(self) -> None:
        """Build the index's search structures (HNSW graphs) over points added since the last
        call. Until then those points are searched by brute force, which is fine for a few
        thousand but slows filtered search at 100k. It blocks other threads while it runs
        (tens of seconds at 100k points on 2 cores); ``add_many`` and ``reindex`` call it once
        ``config.optimize_after`` points have accumulated."""
        self._check_open()
        self.store.optimize()

    @running
    def on_change(self, listener: Callable[[Sequence[MemCube]], None]) -> None:
        """Call ``listener(cubes)`` after memories change: new memories, new versions (updates,
        state changes, supersessions, shares) and tombstones. It runs under the write lock,
        after the vault committed; the derived tiers (KV caches, adapters) use it to drop what
        was built from an old version. An exception it raises is logged, not raised (the
        write is committed)."""
        self.store.on_change(listener)

    @running
    def on_close(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` when :meth:`close` starts, before anything is flushed or
        released (newest first); derived tiers stop their background threads with it. A
        callback must not raise."""
        self.store.on_close(callback)

    @running
    def on_forget(self, hook: ForgetHook, *, path: str | Path | None = None) -> Callable[[], None]:
        """Call ``hook(memory)`` in every :meth:`forget` (and :meth:`forget_many`), for a store
        outside the core that keeps copies of memories (a framework's conversation log).
        ``path``: the file the hook redacts; while the hook lives, that file's file redactor
        (an entry point, used when no adapter is open) does not run.

        ``memory`` is the cube about to be forgotten, text intact (a
        ``MessageRedactor(memory)`` built in the hook also knows the texts of its earlier
        versions); the hook removes the copies it keeps and returns the :class:`~memos_core.results.DerivedForm` it touched (they go
        into the receipt). It runs under the write lock, before the tombstone: if it raises,
        the forget raises and the memory is not forgotten. It must not call this ``MemOS``.
        A bound method is held weakly. Returns a function that unregisters the hook (call it
        when the store closes); see :mod:`memos_core.governance.forget_hooks`.
        """
        return self.store.on_forget(hook, path=None if path is None else Path(path))

    # -- access -------------------------------------------------------------------------------

    def _load(self, memory_id: object, user_id: str, *, write: bool = False,
              allow_deleted: bool = False) -> MemCube:
        mid = check_id(memory_id)
        return self._loaded(self.vault.get(mid), mid, user_id, write=write,
                            allow_deleted=allow_deleted)

    def _loaded(self, cube: MemCube | None, mid: str, user_id: str, *, write: bool = False,
                allow_deleted: bool = False) -> MemCube:
        """The checks of :meth:`_load` on ``cube``, what the vault holds for ``mid``."""
        if cube is None:
            raise MemoryNotFoundError(f"No memory with id {mid!r}.")
        access.require(cube, user_id, access.Operation.WRITE if write else access.Operation.READ)
        # A tombstone's versions keep no text; its owner may list them, anyone else (a
        # former reader) learns only that the memory was forgotten.
        if cube.state is State.DELETED and (not allow_deleted or cube.user_id != user_id):
            raise MemoryDeletedError(f"Memory {mid} was forgotten; only its tombstone remains.")
        return cube

    def _rewrite(self, write: Callable[[], R]) -> R:
        """``write()`` -- which reads what it changes, checks rights and writes new versions
        -- under the store's write lock; again, reading afresh, while another process wrote one
        of those memories between its read and its write (server mode; at most
        :data:`~memos_core.ops.share.ATTEMPTS` times). So concurrent processes get what
        threads of one get: each change applied to the version the other wrote."""
        with self.store.write_lock:
            return share.retrying(write, on=ConflictError)

    # -- writes -------------------------------------------------------------------------------

    @running
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
    ) -> MemCube | builtins.list[MemCube]:
        """Store a text (returns its :class:`MemCube`) or chat messages (returns a list).

        Messages are dicts (or objects) with ``role``/``content`` and optionally ``name``,
        ``id`` and ``occurred_at``; each becomes one episodic memory "speaker: content" with
        the message id as provenance. ``supersedes`` names an older memory this one replaces:
        the old one gets ``valid_to`` set and leaves default search, but stays readable. A
        memory is superseded once: one superseded already is refused (``InvalidInputError``
        naming its successor, the one to supersede instead; nothing is stored), unless that
        successor was forgotten.
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
        cubes = [writes.new_cube(self.extractor, **merge_message_item(base, item)) for item in items]
        actor = Actor(user_id, agent_id, reason)
        if supersedes is None:
            cubes = writes.add(self.store, cubes, actor)
        else:  # read under the lock, as update does: another thread's change is no conflict
            self.store.ready_embedder()  # (a first model load does not hold the lock)
            cubes = self._rewrite(lambda: writes.add(
                self.store, cubes, actor, supersedes=self._load(supersedes, user_id, write=True)))
        return cubes[0] if isinstance(content, (str, bytes, bytearray)) else cubes

    @running
    def add_many(
        self, /, items: Iterable[Mapping[str, Any] | str], *, user_id: str, batch_size: int = 256,
        **defaults: Any,
    ) -> list[MemCube]:
        """Bulk ingest: each item a text or a dict of :meth:`add` keywords plus ``text``.

        Validates everything first; then stores in batches of ``batch_size`` (one vault
        transaction each), with a progress bar. Returns the stored cubes in input order. If
        another thread closes the store meanwhile, it stops between two batches and raises
        ``InvalidInputError`` saying how many items were stored.
        """
        self._check_open()
        user_id = check_name(user_id, "user_id")
        batch_size = check_k(batch_size, "batch_size", 1_000_000)
        writes.check_item_keys(defaults, "add_many keyword", call=True)
        reason = defaults.pop("reason", None)
        actor = Actor(user_id, defaults.get("agent_id"), reason)  # checked before any item
        writes.new_cube(self.extractor, text="-", user_id=user_id, **defaults)  # so is the rest
        if isinstance(items, (str, bytes, bytearray, Mapping)) or not isinstance(items, Iterable):
            raise InvalidInputError(
                f"items must be a list of texts or dicts with 'text', got {type(items).__name__} "
                "(for one memory, use add).")
        cubes: builtins.list[MemCube] = []
        for i, item in enumerate(items):
            with _naming("item", i):  # every refusal of an item names it (exc.item)
                if isinstance(item, (str, bytes)):
                    fields = {"text": item}
                elif isinstance(item, Mapping):
                    fields = dict(item)
                else:
                    raise InvalidInputError(
                        f"it must be a str or a dict with 'text', got {type(item).__name__}.")
                if "text" not in fields:
                    raise InvalidInputError("it has no 'text'.")
                writes.check_item_keys(fields, "it")
                cubes.append(writes.new_cube(self.extractor,
                                             **{"user_id": user_id, **defaults, **fields}))
        bar = progress(len(cubes), "add", self.config.show_progress)
        stored: list[MemCube] = []
        writing: list[MemCube] = []  # the batch in writes.add
        try:
            for start in range(0, len(cubes), batch_size):
                if self._calls.closing:  # close() in another thread: stop between two batches
                    raise InvalidInputError(
                        f"This MemOS was closed during add_many: the first {len(stored)} of "
                        f"{len(cubes)} items were stored (each batch whole), the rest were not.")
                writing = cubes[start:start + batch_size]
                stored.extend(writes.add(self.store, writing, actor))
                bar.update(len(writing))
        except (KeyboardInterrupt, SystemExit):  # Ctrl-C, a SIGTERM of `memos add --file`
            # the batches written stay: the caller cannot tell how many without this, and
            # adding the same items again would store those twice. The interruption mostly
            # comes after the batch's transaction committed (while its vectors are made):
            # one batch is one transaction, so its first memory tells whether it is stored
            unseen = bool(writing) and (not stored or stored[-1].id != writing[-1].id)
            done = len(stored) + (len(writing) if unseen and self.store.vault.get(
                writing[0].id) is not None else 0)
            logger.warning(
                "add_many was interrupted: the first %d of %d items were stored (each batch "
                "of %d whole). Adding the same items again stores those again.", done,
                len(cubes), batch_size)
            raise
        finally:
            bar.close()
        self.store.maybe_optimize()
        return stored

    @running
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
        changes = self._update_changes(text, tags, metadata, type, occurred_at)
        return self._updated(memory_id, user_id, changes, Actor(user_id, agent_id, reason))

    def _update_changes(self, text: str | None, tags: Sequence[str] | None,
                        metadata: Mapping[str, Any] | None, type: str | MemoryType | None,
                        occurred_at: datetime | str | None) -> dict[str, Any]:
        """The fields :meth:`update` changes, checked (entities read from a new text)."""
        changes: dict[str, Any] = {}
        if text is not None:
            changes["text"] = check_text(text)
            changes["entities"] = tuple(self.extractor.extract(changes["text"]))
        if tags is not None:
            changes["tags"] = check_tags(tags)
        if metadata is not None:
            # the forget flag may be passed back as stored (checked on the version read)
            changes["metadata"] = check_metadata(metadata, reserved_ok=True)
        if type is not None:
            changes["type"] = check_enum(MemoryType, type, "type")
        if occurred_at is not None:
            changes["occurred_at"] = check_datetime(occurred_at, "occurred_at")
        if not changes:
            raise InvalidInputError("update needs at least one of text, tags, metadata, type, occurred_at.")
        return changes

    def _updated(self, memory_id: str, user_id: str, changes: dict[str, Any], actor: Actor,
                 rewrite_earlier: Callable[[MemCube], MemCube | None] | None = None) -> MemCube:
        """The write of :meth:`update` (``changes`` checked by :meth:`_update_changes`):
        access checked, the new version written and its listeners notified; returned as
        ``user_id`` reads it. ``rewrite_earlier``: the earlier versions rewritten in the same
        vault transaction (:func:`memos_core.integration.update_redacting`); a re-derived
        summary scrubs them all instead, which leaves nothing to rewrite."""

        def write() -> MemCube:
            cube = self._load(memory_id, user_id, write=True)
            if "occurred_at" in changes:
                changes["valid_from"] = writes.moved_valid_from(cube, changes["occurred_at"])
            if "metadata" in changes:
                check_passed_back(cube.metadata, changes["metadata"])
            if "text" in changes and flagged(cube.metadata):  # re-derived: see forget
                return writes.rederive(self.store, cube, changes, actor)
            return writes.write_version(self.store, cube, changes, actor, "update",
                                        rewrite_earlier=rewrite_earlier)

        return access.as_read_by(self._rewrite(write), user_id)

    @running
    def set_state(self, memory_id: str, state: str | State, *, user_id: str,
                  reason: str | None = None) -> MemCube:
        """Move a memory along its lifecycle (e.g. archive it); a new version, audited."""
        self._check_open()
        target = check_enum(State, state, "state")
        if target is State.DELETED:
            raise InvalidInputError("Use forget() to delete a memory.")
        user_id = check_name(user_id, "user_id")
        actor = Actor(user_id, None, reason)
        return access.as_read_by(self._rewrite(lambda: writes.set_state(
            self.store, self._load(memory_id, user_id, write=True), target, actor)), user_id)

    @running
    def rollback(self, memory_id: str, version: int, *, user_id: str,
                 reason: str | None = None) -> MemCube:
        """Make a new version whose content equals ``version``'s (history is kept).

        Content: text, type, tags, entities, metadata, occurred_at (``valid_from`` follows
        it as in :meth:`update`) and governance other than grants (a rollback neither
        restores a revoked grant nor drops one). The memory's lifecycle is kept as it is now
        -- its state, ``valid_to`` and ``superseded_by`` -- so a superseded, archived or
        expired memory stays so, and a summary flagged because a source was forgotten keeps
        its flag (``metadata["source_forgotten"]``: the restored text may repeat that
        source; re-derive it with :meth:`update`).

        Raises:
            VersionNotFoundError: no such version. InvalidInputError: that version was
                scrubbed (nothing to roll back to).
        """
        self._check_open()
        user_id = check_name(user_id, "user_id")
        version = check_k(version, "version", 10**9)

        def write() -> MemCube:
            cube = self._load(memory_id, user_id, write=True)
            old = self.vault.get_version(cube.id, version)
            if old is None:
                raise VersionNotFoundError(
                    f"Memory {cube.id} has no version {version} (it has 1..{cube.version})."
                )
            if old.scrubbed:
                raise InvalidInputError(
                    f"Version {version} of memory {cube.id} was scrubbed (its text may have "
                    "repeated a forgotten memory): it has nothing to roll back to; choose a "
                    "later version.")
            return writes.write_version(self.store, cube, writes.restored(cube, old),
                                        Actor(user_id, None, reason), "rollback",
                                        {"to_version": version})

        return access.as_read_by(self._rewrite(write), user_id)

    @running
    def forget(self, memory_id: str, *, user_id: str, agent_id: str | None = None,
               reason: str | None = None, derived: str = "flag") -> ForgetReceipt:
        """Delete a memory everywhere; leaves a tombstone (id, textless versions). Idempotent.

        Owner only. Removes the text from every version, the index point, the graph node,
        every KV cache file holding it and the messages of the conversation logs (open ones
        through :meth:`on_forget`, the others' files through their packages' redactors), and
        truncates the vault's WAL. Summaries made from it are flagged
        (``metadata["source_forgotten"]``) or, with ``derived="forget"``, forgotten too. The
        receipt lists each derived form; see :mod:`memos_core.ops.forget`.
        """
        self._check_open()
        user_id = check_name(user_id, "user_id")
        mode = check_mode(derived)
        # one pass (forget_passes): adapters' writes under way wait for its end
        with self.store.write_lock, self.store.forget_passes.running():
            cube, damaged = self._forgettable(memory_id, user_id)
            try:
                return forget_ops.forget_one(self.store, cube, Actor(user_id, agent_id, reason),
                                             mode, damaged=damaged)
            finally:  # a failing hook of a cascaded summary comes after a tombstone
                self.vault.checkpoint()

    def _forgettable(self, memory_id: object, user_id: str) -> tuple[MemCube, str | None]:
        """The memory ``user_id`` asks to forget, checked (exists, owned); and None, or for
        a memory whose stored record is damaged, what became of its text: the cube is then
        its stand-in (:meth:`~memos_core.vault.base.Vault.damaged_stand_in`), whose owner
        comes from what the vault keeps beside the record, so that the owner can still
        forget it."""
        mid = check_id(memory_id)
        damaged = None
        try:
            cube = self.vault.get(mid)
        except CorruptDataError as exc:
            found = self.vault.damaged_stand_in(mid) if exc.memory_id == mid else None
            if found is None:
                raise
            cube, damaged = found
        cube = self._loaded(cube, mid, user_id, allow_deleted=True)
        access.require(cube, user_id, access.Operation.OWN, "forget")
        return cube, damaged

    @running
    def compress(self, memory_ids: Sequence[str], summary: str, *, user_id: str,
                 agent_id: str | None = None, type: str | MemoryType = MemoryType.SUMMARY,
                 reason: str | None = None) -> MemCube:
        """Replace several memories by one summary: the summary is stored (derived_from the
        sources, linked to them in the graph) and the sources are archived (out of default
        search, still readable and restorable). The summary carries every sensitivity tag
        of its sources, their highest priority and lives no longer than the first of them
        to expire. One transaction; returns the summary.

        Raises:
            InvalidInputError: ``memory_ids`` is empty or names a memory twice (in any
                spelling of its id ``get`` takes: upper case, braces, ``urn:uuid:``).
        """
        self._check_open()
        user_id = check_name(user_id, "user_id")
        ids = check_strs(memory_ids, "memory_ids")
        if not ids:
            raise InvalidInputError("memory_ids must be a non-empty list of distinct ids.")
        ids = distinct_ids(ids, "memory_ids")

        def write() -> MemCube:
            sources = [self._load(i, user_id, write=True) for i in ids]
            sessions = {s.session_id for s in sources}
            times = [s.occurred_at for s in sources if s.occurred_at is not None]
            cube = writes.new_cube(
                self.extractor, text=summary, user_id=user_id, agent_id=agent_id,
                session_id=sessions.pop() if len(sessions) == 1 else None,
                occurred_at=max(times) if times else None, type=type, origin=Origin.CONSOLIDATION,
            )
            return writes.compress(self.store, sources, cube, Actor(user_id, agent_id, reason))

        return self._rewrite(write)

    @running
    def forget_many(self, memory_ids: Sequence[str], *, user_id: str, agent_id: str | None = None,
                    reason: str | None = None) -> builtins.list[ForgetReceipt]:
        """:meth:`forget` each id; all ids are checked (exist, owned) before any is forgotten."""
        self._check_open()
        user_id = check_name(user_id, "user_id")
        if memory_ids is None:
            raise InvalidInputError("memory_ids must be a list of memory ids, got None.")
        ids = check_strs(memory_ids, "memory_ids")
        actor = Actor(user_id, agent_id, reason)
        with self.store.write_lock, self.store.forget_passes.running():  # one pass
            found = [self._forgettable(mid, user_id) for mid in ids]
            cubes = [cube for cube, _ in found]
            damaged = {cube.id: why for cube, why in found if why is not None}
            # every conversation log first: a failing hook leaves all the memories untouched
            unique = {c.id: c for c in cubes}.values()
            logs = {c.id: forget_ops.redact_logs(self.store, c) for c in unique}
            receipts: dict[int, ForgetReceipt] = {}
            pending: builtins.list[PurgePendingError] = []
            # the damaged ones first: the cascade of another (flagging its summaries) cannot
            # read a damaged summary, and one listed here is a tombstone by then
            order = sorted(range(len(cubes)), key=lambda i: cubes[i].id not in damaged)
            try:
                for i in order:  # one may be flagged earlier in the loop (a summary of another)
                    c = cubes[i]
                    try:
                        # a damaged one's stand-in, the first time (an id may repeat)
                        why = damaged.pop(c.id, None)
                        current = c if why is not None else self.vault.get(c.id) or c
                        receipts[i] = forget_ops.forget_one(
                            self.store, current, actor, "flag", logs.pop(c.id, []),
                            damaged=why)
                    except PurgePendingError as exc:  # tombstoned: the others still go
                        pending.append(exc)
            finally:
                self.vault.checkpoint()
            if pending:
                raise PurgePendingError(
                    f"{len(pending)} of {len(cubes)} memories are forgotten in the vault, index "
                    f"and graph, but a derived file of each could not be removed (first: "
                    f"{pending[0]}); the rest were forgotten fully. Forget them again to retry."
                ) from pending[0]
            return [receipts[i] for i in sorted(receipts)]  # in the order asked

    # -- sharing ------------------------------------------------------------------------------

    @running
    def share(self, memory_id: str, *, with_user_id: str, user_id: str, scope: str = "read",
              reason: str | None = None) -> MemCube:
        """Let another user read (``scope='read'``) or also change (``'write'``) a memory."""
        return self._set_access(memory_id, with_user_id, user_id, scope, True, reason)

    @running
    def revoke(self, memory_id: str, *, with_user_id: str, user_id: str,
               reason: str | None = None) -> MemCube:
        """Withdraw every grant ``share`` gave ``with_user_id`` on this memory, and on the
        summaries made from it that its owner holds (``compress`` shared them as its
        sources)."""
        return self._set_access(memory_id, with_user_id, user_id, "write", False, reason)

    def _set_access(self, memory_id: str, other: str, user_id: str, scope: str, grant: bool,
                    reason: str | None) -> MemCube:
        self._check_open()
        user_id = check_name(user_id, "user_id")
        other = check_name(other, "with_user_id")
        scope = access.check_scope(scope)
        def write() -> MemCube:
            cube = self._load(memory_id, user_id)
            access.require(cube, user_id, access.Operation.OWN, "share")
            if grant and other == cube.user_id:  # (a revoke may clean up such a grant)
                raise InvalidInputError(
                    f"{other!r} owns memory {cube.id}; share it with another user.")
            return share.set_access(self.store, cube, other, scope, grant,
                                    Actor(user_id, None, reason))

        return self._rewrite(write)

    @running
    def share_namespace(self, *, with_user_id: str, user_id: str, agent_id: str | None = None,
                        session_id: str | None = None, scope: str = "read",
                        reason: str | None = None) -> ShareReceipt:
        """Share every memory of ``user_id``'s namespace -- narrowed to ``agent_id`` and/or
        ``session_id`` when given -- with ``with_user_id``, now and for memories written there
        later. One transaction: a new version per memory that changes (audited ``share:*``)
        and one ``share_namespace`` audit record. Repeating it is harmless; a new scope
        replaces the old one. See :mod:`memos_core.ops.share`."""
        grant = self._grant(with_user_id, user_id, agent_id, session_id, scope)
        return share.share_namespace(self.store, grant, Actor(grant.owner, None, reason))

    @running
    def revoke_namespace(self, *, with_user_id: str, user_id: str, agent_id: str | None = None,
                         session_id: str | None = None, reason: str | None = None) -> ShareReceipt:
        """Withdraw the namespace grants ``with_user_id`` holds inside this namespace and
        every per-memory grant on its memories. Raises ``InvalidInputError`` if another grant
        of ``with_user_id`` overlaps this namespace and would outlive the revoke (a larger
        one, or an agent's when a session is revoked): revoke that one first."""
        grant = self._grant(with_user_id, user_id, agent_id, session_id, "read")
        return share.revoke_namespace(self.store, grant, Actor(grant.owner, None, reason))

    def _grant(self, other: str, user_id: str, agent_id: str | None, session_id: str | None,
               scope: str) -> NamespaceGrant:
        self._check_open()
        owner = check_name(user_id, "user_id")
        grantee = check_name(other, "with_user_id")
        if grantee == owner:
            raise InvalidInputError(f"{owner!r} owns this namespace; share it with another user.")
        return NamespaceGrant(
            owner=owner, grantee=grantee, scope=access.check_scope(scope),
            agent_id=check_name(agent_id, "agent_id", optional=True),
            session_id=check_name(session_id, "session_id", optional=True),
        )

    # -- reads --------------------------------------------------------------------------------

    @running
    def get(self, memory_id: str, *, user_id: str, version: int | None = None,
            as_of: datetime | str | None = None) -> MemCube:
        """The current version, a given ``version``, or the version current ``as_of`` a time."""
        self._check_open()
        user_id = check_name(user_id, "user_id")
        cube = self._load(memory_id, user_id,
                          allow_deleted=version is not None or as_of is not None)
        if version is None and as_of is None:
            return access.as_read_by(cube, user_id)
        number, when = self._version_args(version, as_of)
        old = (self.vault.get_version(cube.id, number) if number is not None
               else self.vault.get_as_of(cube.id, when))  # type: ignore[arg-type]
        return access.as_read_by(self._old_version(cube.id, old, number, when), user_id)

    @staticmethod
    def _version_args(version: int | None,
                      as_of: datetime | str | None) -> tuple[int | None, datetime | None]:
        """``get``'s ``version`` (checked) or ``as_of`` (parsed); not both."""
        if version is not None and as_of is not None:
            raise InvalidInputError(
                f"give version or as_of, not both (got version={version!r}, as_of={as_of!r}).")
        if version is not None:
            return check_k(version, "version", 10**9), None
        return None, check_datetime(as_of, "as_of")

    @staticmethod
    def _old_version(mid: str, old: MemCube | None, version: int | None,
                     when: datetime | None) -> MemCube:
        """An older version ``get`` read, or the error saying there is none."""
        if old is None:
            raise VersionNotFoundError(f"Memory {mid} has no version {version}." if version is not None
                                       else f"Memory {mid} did not exist at {when}.")
        return old

    @running
    def history(self, memory_id: str, *, user_id: str) -> builtins.list[MemCube]:
        """Every version, oldest first (a forgotten memory's versions keep no text)."""
        self._check_open()
        user_id = check_name(user_id, "user_id")
        cube = self._load(memory_id, user_id, allow_deleted=True)
        return access.read_by(self.vault.history(cube.id), user_id)

    @running
    def list(
        self, *, user_id: str, agent_id: str | None = None, session_id: str | None = None,
        types: Sequence[str] | None = None, tags: Sequence[str] | None = None,
        states: Sequence[str] | None = None, occurred_after: datetime | str | None = None,
        occurred_before: datetime | str | None = None, include_superseded: bool = True,
        metadata: Mapping[str, str | int | float | bool] | None = None,
        limit: int = 100, offset: int = 0, newest_first: bool = False,
    ) -> builtins.list[MemCube]:
        """Memories visible to ``user_id`` in insertion order (paged). Tombstones are excluded
        unless ``states`` asks for ``deleted``. ``metadata`` keeps memories whose metadata has
        each given key equal to the given scalar value. A memory whose stored record is
        damaged is left out (its place in the page stays empty) and logged once: its owner
        can forget it."""
        self._check_open()
        return access.listed_by(self.vault.list(self._list_query(
            user_id=user_id, agent_id=agent_id, session_id=session_id, types=types, tags=tags,
            states=states, occurred_after=occurred_after, occurred_before=occurred_before,
            include_superseded=include_superseded, metadata=metadata, limit=limit,
            offset=offset, newest_first=newest_first), on_damaged=self.store.report_damaged),
            user_id)

    def _list_query(
        self, *, user_id: str, agent_id: str | None = None, session_id: str | None = None,
        types: Sequence[str] | None = None, tags: Sequence[str] | None = None,
        states: Sequence[str] | None = None, occurred_after: datetime | str | None = None,
        occurred_before: datetime | str | None = None, include_superseded: bool = True,
        metadata: Mapping[str, str | int | float | bool] | None = None,
        limit: int = 100, offset: int = 0, newest_first: bool = False,
    ) -> ListQuery:
        """The checked vault query of :meth:`list` (also used by its native async twin)."""
        user_id = check_name(user_id, "user_id")
        offset = check_int(offset, "offset", 0)
        return ListQuery(
            user_ids=(user_id,), agent_id=check_name(agent_id, "agent_id", optional=True),
            session_id=check_name(session_id, "session_id", optional=True),
            types=check_enums(MemoryType, types, "types") or None,
            tags=check_tags(tags) or None,
            states=check_enums(State, states, "states") or CHANGEABLE_STATES,
            occurred_after=check_datetime(occurred_after, "occurred_after"),
            occurred_before=check_datetime(occurred_before, "occurred_before"),
            include_superseded=check_bool(include_superseded, "include_superseded"),
            limit=check_k(limit, "limit", 10_000), offset=offset,
            newest_first=check_bool(newest_first, "newest_first"),
            metadata_equals=check_metadata_filter(metadata),
        )

    @running
    def search(
        self, query: str, *, user_id: str, k: int = 5, agent_id: str | None = None,
        session_id: str | None = None, types: Sequence[str] | None = None,
        tags: Sequence[str] | None = None, occurred_after: datetime | str | None = None,
        occurred_before: datetime | str | None = None, include_superseded: bool = False,
        include_archived: bool = False, record_usage: bool = True,
        allow_sensitive: Sequence[str] | str | None = None,
        valid_at: datetime | str | None = None,
        exclude_sources: Sequence[str] = (),
        exclude_session: str | None = None,
    ) -> builtins.list[SearchHit]:
        """Hybrid search over the memories ``user_id`` may read; best first, at most ``k``.

        Superseded and archived memories are left out unless asked for. Ranking: dense +
        BM25 fusion and graph expansion, then a second stage over the top
        ``retrieval.rerank_depth`` texts it may show (a memory that is only a question ranks below
        statements; turns of a speaker the query names are lifted, their first-person ones a
        little more; optional maximal marginal relevance; the optional ``reranker``). Each hit records the signals that found it. Every hit counts as an access (usage counters, heat) unless
        ``record_usage=False``. Search results are what goes into prompts, so a memory with
        sensitivity tags comes back redacted (``hit.redacted`` names the tags, the text is
        ``"[redacted: pii]"``) unless ``allow_sensitive`` (default
        ``config.allow_sensitive``; ``"*"`` for all) covers every tag of it. ``valid_at``
        asks what was believed at a time: memories whose validity interval
        ``[valid_from, valid_to)`` contains it, superseded ones included.

        What the caller's prompt already holds can be left out (the ``k`` hits are then
        filled from further down the ranking): ``exclude_sources`` -- memories made from
        one of these message ids (``provenance.source_message_ids``); ``exclude_session`` --
        episodic memories recorded in this session (the conversation itself). So can what
        the index does not know: a TTL run out (until a scheduler run expires the memory),
        ``valid_at``. Where such memories ranked first leave fewer than ``k`` hits, the
        search looks deeper (up to 2,000 candidates).

        Server mode: every hit is checked (state, rights) on its current version before it
        is returned -- read from the vault, or taken from the memories this process keeps
        decoded when the change feed's head, read in the round trip of the index query,
        shows that every change committed before the search began was applied here
        (:meth:`~memos_core.store.kernel.MemoryStore.current_for_search`). So the catch-up
        with other processes' changes before the search may skip its head query while the
        LISTEN connection is up and quiet (:meth:`~memos_core.store.feed.ChangeFollower.sync`
        with ``gated=True``).
        """
        if self._closed or self.store.follower is None:
            self._check_open()
        else:
            self.store.follower.sync(gated=True)
            self._finish_forgets_due()
        query = check_text(query, "query")
        user_id = check_name(user_id, "user_id")
        k = check_k(k)
        allowed = sensitivity_rules.allowance(
            self.config.allow_sensitive if allow_sensitive is None else allow_sensitive)
        states = SEARCHABLE_STATES + (
            ("archived",) if check_bool(include_archived, "include_archived") else ())
        record_usage = check_bool(record_usage, "record_usage")
        when = check_datetime(valid_at, "valid_at")
        include_superseded = check_bool(include_superseded, "include_superseded") or when is not None
        flt = build_filter(
            (user_id,), agent_id=check_name(agent_id, "agent_id", optional=True),
            session_id=check_name(session_id, "session_id", optional=True),
            types=check_enums(MemoryType, types, "types") or None,
            tags=tuple(self.store.hide_tags(check_tags(tags))) or None,
            states=states, occurred_after=check_datetime(occurred_after, "occurred_after"),
            occurred_before=check_datetime(occurred_before, "occurred_before"),
            include_superseded=include_superseded,
        )
        return search_ops.search(self.store, search_ops.SearchRequest(
            query=query, user_id=user_id, k=k, flt=flt, states=states, allowed=allowed,
            when=when, skip_sources=frozenset(check_strs(exclude_sources, "exclude_sources")),
            skip_session=check_name(exclude_session, "exclude_session", optional=True),
            record_usage=record_usage), reranker=self.reranker)

    # -- bundles, stats, audit ----------------------------------------------------------------

    @running
    def export(self, path: str | os.PathLike[str], *, user_id: str,
               include_sensitive: bool = False) -> Path:
        """Write ``user_id``'s own memories (every version) and relations as a bundle
        directory. Memories that any version marks sensitive are left out (the manifest
        counts them under ``withheld_sensitive``) unless ``include_sensitive=True``."""
        self._check_open()
        if not isinstance(include_sensitive, bool):
            raise InvalidInputError(f"include_sensitive must be a bool, got {include_sensitive!r}.")
        target = check_path(path)
        home = self.data_dir.resolve()
        if target.resolve() == home or home in target.resolve().parents:
            # a bundle is the user's copy, out of the store's reach: one inside the data
            # directory would keep every forgotten memory's text in a file the store owns
            raise InvalidInputError(
                f"{target} is inside the data directory {self.data_dir}: export elsewhere.")
        return bundle.export_bundle(self.store, target, check_name(user_id, "user_id"),
                                    include_sensitive=include_sensitive)

    @running
    def import_(self, path: str | os.PathLike[str], *, user_id: str) -> dict[str, int]:
        """Import a bundle made by :meth:`export`; everything is validated before writing.

        Memories keep their ids, versions and history and are owned by ``user_id``. Existing
        ids are skipped (importing the same bundle twice is a no-op).
        """
        self._check_open()
        return bundle.import_bundle(self.store, check_path(path), check_name(user_id, "user_id"))

    @running
    def is_admin(self, user_id: str) -> bool:
        """True if ``user_id`` is one of ``config.admin_users`` (store-wide views)."""
        self._check_open()
        return check_name(user_id, "user_id") in self.config.admin_users

    @running
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
                **({"database": self.database} if self.database else {}),
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

    @running
    def audit_log(self, *, user_id: str, memory_id: str | None = None,
                  action: str | None = None, limit: int = 100) -> builtins.list[AuditRecord]:
        """Audit records of ``user_id``'s own operations (or of one memory they may read),
        oldest first, the newest ``limit``; ``action`` keeps one kind (e.g. ``"forget"``).
        A memory's records as a reader gets them hold none of its owner's usage
        (:func:`~memos_core.governance.access.audit_read_by`)."""
        self._check_open()
        user_id = check_name(user_id, "user_id")
        action = check_name(action, "action", optional=True)
        limit = check_k(limit, "limit", 10**6)
        if memory_id is None:
            return self.vault.audit_log(user_id=user_id, action=action, limit=limit)
        owner = self._load(memory_id, user_id, allow_deleted=True).user_id
        mid = check_id(memory_id)
        fetch = limit
        while True:  # a reader's view leaves records out: read more until ``limit`` remain
            records = self.vault.audit_log(memory_id=mid, action=action, limit=fetch)
            shown = access.audit_read_by(records, owner, user_id)
            if len(shown) >= limit or len(records) < fetch:
                return shown[-limit:]
            fetch *= 4

    @running
    def verify_audit(self, *, user_id: str) -> tuple[bool, str]:
        """Check the audit log's hash chain and head record: (ok, message naming the first
        bad record). It reads every user's records, so only an admin principal
        (``config.admin_users``) may call it; anyone else gets :class:`AccessDeniedError`.
        What it detects: see docs/governance.md ("Audit")."""
        self._check_open()
        self._require_admin(user_id, "verify the audit log: it holds every user's operations")
        return self.vault.verify_audit()

    @running
    def audit_head(self, *, user_id: str) -> dict[str, Any]:
        """The audit log's head record, ``{"count", "seq", "hash"}`` (its number of records,
        the newest one's sequence number and hash). Copied somewhere the data directory's
        writer cannot change, it anchors the chain: a rewrite that recomputes every hash
        changes the hash of record ``seq`` (docs/governance.md, "Audit"). Admin only, as
        :meth:`verify_audit` (it names the store's newest operation)."""
        self._check_open()
        self._require_admin(user_id, "read the audit head: it names every user's newest operation")
        head = parse_head(self.vault.get_meta(AUDIT_HEAD) or "")
        if head is None:
            raise CorruptDataError("The audit head record is missing or unreadable: run "
                                   "verify_audit and restore the vault from a backup.")
        return {"count": head["count"], "seq": head.get("seq"), "hash": head["hash"]}

    def _require_admin(self, user_id: str, what: str) -> None:
        if check_name(user_id, "user_id") not in self.config.admin_users:
            raise AccessDeniedError(
                f"User {user_id!r} may not {what} (rule: admin only; admins are listed in "
                "MemOSConfig.admin_users). Use audit_log(user_id=...) for your own records.")

    # -- the local model: chat, scheduling, adapters (the instance's engine) ------------------

    @property
    def engine(self) -> MemoryEngine:
        """This store's model engine (local model, KV tier, LoRA tier, scheduler, chat),
        made on first use; making it loads no model. See :mod:`memos_core.engine`."""
        self._check_open()
        with self._engine_lock:
            if self._engine is None:
                from memos_core.engine import MemoryEngine

                self._engine = MemoryEngine(self.store, self, hosted=self._calls.hosted)
            return self._engine

    @running
    def loaded_model(self) -> LocalModel | None:
        """The local model if one is loaded now, else None; never loads one (adapters use it
        to count tokens or read the context window)."""
        engine = self._engine
        return engine._model if engine is not None and not self._closed else None

    @running
    def model_info(self, *, load: bool = False) -> ModelInfo:
        """Describe the local model: its id, context window and tokenizer. With
        ``load=False`` (the default) nothing is loaded: without a loaded model the answer is
        ``ModelInfo(loaded=False)``. ``load=True`` loads the default model if none is.

        Raises:
            ModelLoadError: ``load=True`` and the default model cannot be loaded.
        """
        self._check_open()
        model = self.engine.model if check_bool(load, "load") else self.loaded_model()
        if model is None:
            return ModelInfo(loaded=False)
        return ModelInfo(loaded=True, model_id=model.model_id,
                         context_window=model.context_window, tokenizer=model.tokenizer)

    @running
    def attach_model(self, model: LocalModel) -> None:
        """Answer and build KV caches with ``model`` (a ``memos_core.runtime.LocalModel``)
        instead of the default SmolLM2-135M-Instruct, which otherwise loads on first use."""
        self.engine.attach_model(model)

    @running
    def chat(self, query: str | None = None, *, user_id: str,
             history: Sequence[Message] | None = None, messages: Sequence[Any] | None = None,
             system: str | None = None, k: int = 5, max_new_tokens: int = 128,
             stream: bool = False, kv_prefix: bool = True) -> ChatAnswer | ChatStream:
        """Answer ``query`` on the local model with ``user_id``'s memories: their hot block
        as a cached KV prefix (as prompt text with ``kv_prefix=False``), other retrieved
        memories as text. Instead of ``query``/``history``/``system``, ``messages`` takes a
        whole chat (system, user and assistant messages; the last one is the question);
        system text opens the memory-aware system turn. Returns a
        ``memos_core.chat.ChatAnswer`` (``.text``, ``.trace``), or with ``stream=True`` a
        ``ChatStream`` of text pieces. See memos_core.chat."""
        return self._chat().ask(query, user_id=user_id, history=history, messages=messages,
                                system=system, k=k, max_new_tokens=max_new_tokens, stream=stream,
                                kv_prefix=kv_prefix)

    def _chat(self) -> MemoryChat:
        engine = self.engine
        with self._engine_lock:
            if self._chat_service is None:
                from memos_core.chat import MemoryChat

                self._chat_service = MemoryChat(engine)
            return self._chat_service

    @running
    def schedule(self, *, user_id: str | None = None,
                 config: SchedulerConfig | None = None) -> ScheduleReport:
        """Run the scheduler once now over every owner's memories (or ``user_id``'s):
        expire, archive, promote, demote, rebuild hot blocks; each step audited. ``config``:
        a ``SchedulerConfig``. Returns a ``memos_core.scheduler.ScheduleReport``. Without
        ``user_id`` it is a maintenance call for the operator, not for a user's request
        (docs/governance.md)."""
        from memos_core.scheduler import SchedulerConfig

        self._check_open()
        return self.engine.schedule(user_id=check_name(user_id, "user_id", optional=True),
                                    config=check_config(config, SchedulerConfig, "config"))

    @running
    def consolidate(self, *, user_id: str, memory_ids: Sequence[str] | None = None,
                    config: ParametricConfig | None = None, activate: bool = True,
                    background: bool = False, progress: bool = True,
                    ) -> ConsolidationResult | Future[ConsolidationResult]:
        """Train ``user_id``'s stable, hot facts and preferences and any retrain a forget
        queued (or ``memory_ids``: those of them that may be trained) into a LoRA adapter on
        the local model, evaluate it (recall, drift) and activate it if it passes the gate.
        ``config``: a ``ParametricConfig``. Returns a ``ConsolidationResult`` (a ``Future``
        of one with ``background=True``). See memos_core.tiers.parametric."""
        from memos_core.tiers.parametric import ParametricConfig

        self._check_open()
        user_id = check_name(user_id, "user_id")
        if memory_ids is not None:
            memory_ids = self._trainable(memory_ids, user_id)
        return self.engine.consolidate(user_id, memory_ids,
                                       config=check_config(config, ParametricConfig, "config"),
                                       activate=activate, background=background,
                                       progress=progress)

    def _trainable(self, memory_ids: object, user_id: str) -> tuple[str, ...]:
        """``memory_ids`` checked for :meth:`consolidate`: each exists and is ``user_id``'s
        own (a typo or another user's id is an error, not a memory left out), and at least
        one may be trained into an adapter (else an error saying why each may not). Those
        that may not (a sensitivity tag, not a live fact or preference) are left out by the
        tier, and the manifest lists what was trained."""
        from memos_core.governance.sensitivity import allowance
        from memos_core.scheduler import ConsolidationConfig
        from memos_core.tiers.parametric.tier import untrainable

        ids = check_strs(memory_ids, "memory_ids")
        if not ids:
            raise InvalidInputError("memory_ids is empty: name the memories to train, or "
                                    "leave it out for the user's hot, stable ones.")
        allowed = allowance(self.config.allow_sensitive)
        never = ConsolidationConfig().never_sensitivity
        cubes = []
        for mid in ids:
            cube = self._load(mid, user_id)
            access.require(cube, user_id, access.Operation.OWN, "consolidate")
            cubes.append(cube)
        reasons = [f"memory {c.id}: {why}" for c in cubes
                   if (why := untrainable(c, allowed, never)) is not None]
        if len(reasons) == len(cubes):
            raise InvalidInputError("none of memory_ids can be trained into an adapter: "
                                    + "; ".join(reasons) + ".")
        return tuple(dict.fromkeys(c.id for c in cubes))  # the ids as stored (checked above)

    @running
    def consolidate_due(self, candidates: ConsolidationConfig | None = None, *,
                        config: ParametricConfig | None = None, progress: bool = True,
                        ) -> dict[str, Future[ConsolidationResult]]:
        """Start a background LoRA consolidation for every owner with at least
        ``candidates.min_candidates`` hot, stable facts/preferences (a ``ConsolidationConfig``)
        or a retrain queued by a forget; returns ``{owner: Future[ConsolidationResult]}``.
        ``start_scheduler(consolidation=...)`` calls it after every run. A maintenance call
        for the operator, not for a user's request: it trains every owner's memories and its
        results hold their adapters' manifests (docs/governance.md)."""
        from memos_core.scheduler import ConsolidationConfig
        from memos_core.tiers.parametric import ParametricConfig

        self._check_open()
        return self.engine.consolidate_due(
            check_config(candidates, ConsolidationConfig, "candidates"),
            config=check_config(config, ParametricConfig, "config"), progress=progress)

    @running
    def adapters(self, *, user_id: str) -> builtins.list[AdapterManifest]:
        """``user_id``'s LoRA adapters, oldest first: each an ``AdapterManifest`` (memories
        and versions trained in, base model fingerprint, settings, evaluation, gate decision,
        status ``active`` / ``ready`` / ``rejected`` / ``retired``). An adapter whose manifest
        cannot be read is left out (a log warning names it; the next forget deletes it)."""
        self._check_open()
        user_id = check_name(user_id, "user_id")
        readable, unreadable = self.engine.parametric.store.readable_manifests()
        for version in unreadable:
            logger.warning("adapter %s: its manifest cannot be read; left out", version)
        return [m for m in readable if m.owner == user_id]

    @running
    def activate_adapter(self, version: str, *, user_id: str,
                         reason: str = "requested") -> AdapterManifest:
        """Serve adapter ``version`` in ``user_id``'s chats (replacing their active one);
        audited. Returns its manifest.

        Raises:
            AccessDeniedError: the adapter is another user's.
            InvalidInputError: unknown, rejected (failed the gate), retired, or trained on
                another base model.
        """
        tier = self._own_adapter(version, check_name(user_id, "user_id"))
        return tier.activate(version, reason=reason)

    @running
    def deactivate_adapter(self, *, user_id: str, reason: str = "requested") -> str | None:
        """Stop serving ``user_id``'s adapter (its memories are answered from plaintext
        again); audited. Returns the version that was active, or None."""
        self._check_open()
        return self.engine.parametric.deactivate(check_name(user_id, "user_id"), reason=reason)

    @running
    def rollback_adapter(self, *, user_id: str, reason: str = "requested") -> str | None:
        """Go back to ``user_id``'s previous usable adapter (or none); audited. Returns the
        version active now."""
        self._check_open()
        return self.engine.parametric.rollback(check_name(user_id, "user_id"), reason=reason)

    @running
    def retire_adapter(self, version: str, *, user_id: str,
                       reason: str = "requested") -> AdapterManifest:
        """Parametric -> plaintext: deactivate ``version`` if active and delete its weights;
        its memories are served from plaintext again (they never left the vault). Audited.

        Raises:
            AccessDeniedError: the adapter is another user's.
            InvalidInputError: unknown version.
        """
        tier = self._own_adapter(version, check_name(user_id, "user_id"))
        return tier.retire(version, reason=reason)

    def _own_adapter(self, version: object, user_id: str) -> ParametricTier:
        """The parametric tier, after checking that ``version`` names one of ``user_id``'s
        adapters (raises otherwise)."""
        tier = self.engine.parametric
        if not isinstance(version, str) or not version:
            raise InvalidInputError(f"version must be an adapter version like 'v1', got "
                                    f"{version!r}")
        if tier.store.manifest(version).owner != user_id:
            raise AccessDeniedError(
                f"adapter {version} belongs to another user; only its owner may change it "
                "(rule: adapters are per owner)")
        return tier

    @running
    def start_scheduler(self, interval_s: float = 300.0, *, config: SchedulerConfig | None = None,
                        consolidation: ConsolidationConfig | None = None,
                        parametric: ParametricConfig | None = None) -> BackgroundScheduler:
        """Run the scheduler every ``interval_s`` seconds in a background thread until
        :meth:`close`. With ``consolidation`` (a ``ConsolidationConfig``), each run also
        starts due LoRA trainings (:meth:`consolidate_due`, with the ``ParametricConfig``
        ``parametric``). Returns its ``memos_core.scheduler.BackgroundScheduler``."""
        from memos_core.scheduler import ConsolidationConfig, SchedulerConfig
        from memos_core.tiers.parametric import ParametricConfig

        self._check_open()
        return self.engine.start_scheduler(
            interval_s, config=check_config(config, SchedulerConfig, "config"),
            consolidation=check_config(consolidation, ConsolidationConfig, "consolidation"),
            parametric=check_config(parametric, ParametricConfig, "parametric"))

    # -- async twins (memos_core.aio): same arguments and results, run in a worker thread ----

    aadd = twin(add)
    aadd_many = twin(add_many)
    aupdate = twin(update)
    aset_state = twin(set_state)
    arollback = twin(rollback)
    aforget = twin(forget)
    aforget_many = twin(forget_many)
    acompress = twin(compress)
    ashare = twin(share)
    arevoke = twin(revoke)
    ashare_namespace = twin(share_namespace)
    arevoke_namespace = twin(revoke_namespace)
    # server mode: native async reads (memos_core.aio)
    aget = twin(get, native=native_get, read=True)
    ahistory = twin(history, native=native_history, read=True)
    alist = twin(list, native=native_list, read=True)
    asearch = twin(search, read=True)
    aexport = twin(export)
    aimport_ = twin(import_)
    ais_admin = twin(is_admin, read=True)
    astats = twin(stats, read=True)
    aaudit_log = twin(audit_log, read=True)
    averify_audit = twin(verify_audit, read=True)
    aaudit_head = twin(audit_head, read=True)
    areconcile = twin(reconcile)
    areindex = twin(reindex)
    aoptimize = twin(optimize)
    aattach_model = twin(attach_model)
    amodel_info = twin(model_info, read=True)
    aschedule = twin(schedule)
    aconsolidate = twin(consolidate)
    aconsolidate_due = twin(consolidate_due)
    aadapters = twin(adapters, read=True)
    aactivate_adapter = twin(activate_adapter)
    adeactivate_adapter = twin(deactivate_adapter)
    arollback_adapter = twin(rollback_adapter)
    aretire_adapter = twin(retire_adapter)
    astart_scheduler = twin(start_scheduler)
    aclose = twin(close, counted=False)
    acatch_up = twin(catch_up)

    async def achat(self, query: str | None = None, *, user_id: str,
                    history: Sequence[Message] | None = None,
                    messages: Sequence[Any] | None = None, system: str | None = None,
                    k: int = 5, max_new_tokens: int = 128, stream: bool = False,
                    kv_prefix: bool = True) -> ChatAnswer | AsyncChatStream:
        """Async twin of :meth:`chat`; with ``stream=True`` an ``AsyncChatStream``
        (``async for``) instead of a ``ChatStream``."""
        result = await asyncio.to_thread(self.chat, query, user_id=user_id, history=history,
                                         messages=messages, system=system, k=k,
                                         max_new_tokens=max_new_tokens, stream=stream,
                                         kv_prefix=kv_prefix)
        if stream:
            from memos_core.chat import AsyncChatStream, ChatStream

            return AsyncChatStream(cast(ChatStream, result))  # stream=True answers with one
        return cast("ChatAnswer", result)


@contextmanager
def _naming(what: str, index: int) -> Iterator[None]:
    """An ``InvalidInputError`` raised inside names the item it is about ("item 3121: ..."),
    keeps its index as ``exc.item`` and the plain message as its cause (the CLI names the
    file's line instead)."""
    try:
        yield
    except InvalidInputError as exc:
        error = type(exc)(f"{what} {index}: {exc}")
        error.item = index  # type: ignore[attr-defined]
        raise error from exc


def _kv_purger(kv_dir: Path) -> Callable[[str], Callable[[], builtins.list[DerivedForm]]]:
    """The store's purger of the KV files under ``kv_dir`` (the tier is imported on the
    first forget, not at open)."""
    def purger(memory_id: str) -> Callable[[], builtins.list[DerivedForm]]:
        from memos_core.tiers.activation.storage import kv_file_purger

        return kv_file_purger(kv_dir)(memory_id)
    return purger


def _adapter_purger(store: MemoryStore) -> Callable[[str], Callable[[], builtins.list[DerivedForm]]]:
    """The store's purger of the adapters trained on a memory (imported on first use)."""
    def purger(memory_id: str) -> Callable[[], builtins.list[DerivedForm]]:
        from memos_core.tiers.parametric.tier import adapter_purger

        return adapter_purger(store)(memory_id)
    return purger


def _close_dropped(store: MemoryStore, parts: ServerParts) -> None:
    """Run when a server-mode :class:`MemOS` is garbage-collected without ``close()``: its
    pools, listener and usage threads hold the store, not the facade, and would keep
    connections and threads open until exit. They are closed in a thread of their own (the
    collection runs in whatever thread it happens to, which must not wait for the store)."""
    warnings.warn(f"A MemOS on {parts.vault.where} was garbage-collected without close(); "
                  "its connections, threads and cache directory are released now. Close it, "
                  "or open it with `with MemOS(...)`.", ResourceWarning, stacklevel=2)

    def close() -> None:
        try:
            store.close()
        except Exception:  # noqa: BLE001 - nothing is lost: the vault is the server's
            logger.warning("closing a dropped MemOS failed", exc_info=True)
        finally:
            parts.release()
    threading.Thread(target=close, name="memos-close-dropped", daemon=True).start()


#: server mode: how long a forget's cascade may still be running in another process (a
#: younger unfinished forget is left to it), and how often a process looks for older ones
FORGET_RUNNING_S = 60.0


_shared: dict[str, MemOS] = {}
_shared_lock = threading.Lock()


def _close_shared() -> None:
    """At interpreter exit: close the shared server-mode stores still open (one exit hook
    for all of them: one per opening kept every closed store alive until exit)."""
    with _shared_lock:
        stores = list(_shared.values())
    for mos in stores:
        mos.close()


def resolve_memos(mos: object) -> Any:
    """What an adapter's ``mos=`` argument stands for: a :class:`MemOS` as given, or for a
    ``postgresql://`` URL (server mode) the process's shared ``MemOS`` on that database
    (opened on first use with the default config, closed at interpreter exit), so that every
    adapter of a worker process shares one pool, embedder and change follower. Anything else
    is returned unchanged for the adapter to reject."""
    if not is_postgres_url(mos):
        return mos
    url = str(mos)
    with _shared_lock:
        current = _shared.get(url)
        if current is None or current.closed:
            import atexit

            if not _shared:
                atexit.unregister(_close_shared)  # registered once, however often reopened
                atexit.register(_close_shared)
            current = _shared[url] = MemOS(url)
        return current
