"""The per-store engine behind ``MemOS.chat``, ``MemOS.schedule`` and ``MemOS.consolidate``:
the local model, its KV tier, the parametric (LoRA) tier and the scheduler executor (on
demand and in the background). Chat (:mod:`memos_core.chat`) runs on it.

One :class:`MemoryEngine` per open :class:`~memos_core.MemOS`, owned by it and made on first
use (``mos.engine``; opening a store never makes one, never loads a model). It works on the
kernel (:class:`~memos_core.store.MemoryStore`) and answers through the facade's ``search``
(access-checked, redacted). Making it is cheap:
it registers a change listener and a close callback and tidies the KV directory; the model
is loaded on the first call that really needs it (a chat, or a scheduler run that has a
memory hot enough to promote), :meth:`MemoryEngine.attach_model` supplies another one.

KV files live in ``<data_dir>/kv``. Invalidation:

* every new version or tombstone the store reports (``store.on_change``) drops the blocks that
  hold that memory: the current tier's blocks in memory and on disk, and files other models
  left there (a forgotten memory's text must not survive in any KV cache);
* when the engine starts it deletes every KV file whose memory versions are no longer current
  (changes made while no engine listened, e.g. in an earlier session).
"""

from __future__ import annotations

import functools
import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

from memos_core.cube import MemCube, utcnow
from memos_core.errors import CLOSED, InvalidInputError, MemOSError
from memos_core.governance.sensitivity import allowance
from memos_core.scheduler.background import BackgroundScheduler
from memos_core.scheduler.consolidation import ConsolidationConfig, consolidation_candidates
from memos_core.scheduler.executor import SchedulerExecutor
from memos_core.scheduler.policy import SchedulerConfig, UsageRecord, with_half_life
from memos_core.scheduler.report import ScheduleReport
from memos_core.tiers.activation import storage
from memos_core.tiers.activation.tier import KVBudget
from memos_core.tiers.parametric import (
    ConsolidationResult,
    ParametricConfig,
    ParametricTier,
    RetrainRequest,
)
from memos_core.tiers.parametric.tier import untrainable
from memos_core.vault import Actor

if TYPE_CHECKING:
    from memos_core.results import SearchHit
    from memos_core.runtime import LocalModel
    from memos_core.store import MemoryStore
    from memos_core.tiers.activation import KVCacheTier

logger = logging.getLogger("memos_core.engine")

#: How long close waits for a running background consolidation to reach its next step.
_JOB_STOP_S = 60.0


class SearchAPI(Protocol):
    """What the engine needs of the facade: its access-checked, redacting search."""

    def search(self, query: str, *, user_id: str, k: int = 5) -> list[SearchHit]: ...


class HasEngine(Protocol):
    """An open ``MemOS``: it owns its engine."""

    @property
    def engine(self) -> MemoryEngine: ...


def engine_for(mos: HasEngine) -> MemoryEngine:
    """The engine of ``mos`` (``mos.engine``), made on first call (thread-safe; loads no
    model). Kept for code written against the first version; prefer ``mos.engine``.

    Raises:
        InvalidInputError: ``mos`` is closed.
    """
    return mos.engine


def _call_if_alive(method: weakref.WeakMethod[Callable[..., None]], *args: object) -> None:
    bound = method()
    if bound is not None:
        bound(*args)


def _weak_tier_provider(engine: MemoryEngine) -> Callable[[bool], KVCacheTier | None]:
    """``engine.tier_if``, holding the engine weakly; once it is collected, no tier (a run
    under way then fails at its next block, quietly: its scheduler has been stopped)."""
    method = weakref.WeakMethod(engine.tier_if)

    def provider(create: bool) -> KVCacheTier | None:
        tier_if = method()
        return tier_if(create) if tier_if is not None else None
    return provider


#: Seconds before :meth:`MemoryEngine.consolidate_due` tries again the same memories of an
#: owner whose training failed (doubled after each failure in a row, up to
#: :data:`RETRY_AT_MOST_S`).
RETRY_AFTER_S = 60.0
RETRY_AT_MOST_S = 3600.0


class MemoryEngine:
    """Model, KV tier, scheduler and chat for one store; ``MemOS.engine`` makes it.

    Args:
        store: the open memory store (kernel).
        mos: the facade whose ``search`` chat answers from (access-checked, redacted).
        model: the local model; default ``LocalModel.default()`` (SmolLM2), loaded lazily.
        budget: bounds on the KV blocks kept (all users together); default ``KVBudget()``.
        hosted: the context each background scheduler run runs in (the MemOS passes its
            :meth:`~memos_core.calls.RunningCalls.hosted`, so that a ``close()`` from a change
            listener the run triggers is deferred until the run returns, as from a call).
    """

    def __init__(
        self, store: MemoryStore, mos: SearchAPI, *, model: LocalModel | None = None,
        budget: KVBudget | None = None,
        hosted: Callable[[], AbstractContextManager[object]] | None = None,
    ) -> None:
        self.store = store
        self.mos = mos
        self._hosted = hosted
        self.kv_dir: Path = Path(store.data_dir) / "kv"
        self.budget = budget or KVBudget()
        self._model = model
        self._tier: KVCacheTier | None = None
        self._lock = threading.RLock()  # engine state; held only briefly
        self._load_lock = threading.Lock()  # held while the model loads
        self._foreign: dict[Path, frozenset[str]] = {}  # KV files no live tier manages
        self._background: BackgroundScheduler | None = None
        self._closed = False
        # weakly, as for the listeners below: the background scheduler's thread holds the
        # executor, and a MemOS dropped unclosed must still be collected (it stops then)
        self.executor = SchedulerExecutor(store, _weak_tier_provider(self))
        self.parametric = ParametricTier(store, lambda: self.model)
        self._jobs: ThreadPoolExecutor | None = None  # consolidation jobs, one at a time
        self._job_futures: list[Future[ConsolidationResult]] = []  # submitted, maybe running
        self._pending: dict[str, Future[ConsolidationResult]] = {}  # by owner
        # an owner whose last due consolidation failed: its memory ids, failures in a
        # row, and when the same memories are tried again (:meth:`consolidate_due`)
        self._failed: dict[str, tuple[tuple[str, ...], int, datetime]] = {}
        self._reconcile_kv_dir()
        # weakly: the store must not keep the engine (and through it its MemOS) alive, so
        # that a server-mode MemOS dropped unclosed is collected and closed (its threads
        # hold the store); the MemOS holds its engine
        on_change, close = weakref.WeakMethod(self._on_change), weakref.WeakMethod(self.close)
        store.on_change(lambda cubes: _call_if_alive(on_change, cubes))
        store.on_close(lambda: _call_if_alive(close))

    # ------------------------------------------------------------------ model and tier

    @property
    def model(self) -> LocalModel:
        """The local model, loaded on first use (``LocalModel.default()`` unless attached).

        Raises:
            ModelLoadError: the default model cannot be loaded (see ``memos_core.runtime``).
        """
        with self._load_lock:  # not self._lock: change listeners must not wait for a load
            if self._model is None:
                from memos_core.runtime import LocalModel

                self._model = LocalModel.default()
            return self._model

    @property
    def model_loaded(self) -> bool:
        return self._model is not None

    def attach_model(self, model: LocalModel) -> None:
        """Use ``model`` from now on. Blocks of the previous model stay on disk (ignored by
        the new tier; still purged when a memory in them changes)."""
        from memos_core.runtime import LocalModel

        if not isinstance(model, LocalModel):
            raise InvalidInputError(
                f"attach_model needs a memos_core.runtime.LocalModel, got {type(model).__name__}"
            )
        with self._load_lock, self._lock:
            if self._model is model:
                return
            self._model = model
            self._tier = None
            self._scan_foreign()
            self.executor.forget_hot_sets()

    @property
    def tier(self) -> KVCacheTier:
        """The KV tier of the current model (loads the model on first use)."""
        tier = self.tier_if(True)
        if tier is None:  # pragma: no cover - tier_if(True) always makes one
            raise MemOSError("the KV tier could not be created")
        return tier

    def tier_if(self, create: bool) -> KVCacheTier | None:
        """The tier, or None when it does not exist yet and ``create`` is False."""
        from memos_core.tiers.activation import KVCacheTier

        while True:
            with self._lock:
                if self._tier is not None or not create:
                    return self._tier
            model = self.model  # may load for seconds: outside self._lock
            with self._lock:
                if self._tier is None and self._model is model:
                    self._tier = KVCacheTier(model, directory=self.kv_dir, budget=self.budget)
                    self._scan_foreign()

    # ------------------------------------------------------------------ invalidation

    def invalidate(self, memory_ids: Iterable[str]) -> list[str]:
        """Drop every KV block (any model, memory and disk) holding one of ``memory_ids``;
        returns the dropped block ids / file names. Idempotent."""
        ids = set(memory_ids)
        dropped: list[str] = []
        with self._lock:
            tier = self._tier
            if tier is not None:
                for memory_id in ids:
                    dropped.extend(tier.invalidate(memory_id))
            for path, members in list(self._foreign.items()):
                if members & ids:
                    path.unlink(missing_ok=True)
                    del self._foreign[path]
                    dropped.append(path.name)
        return dropped

    def _on_change(self, cubes: Sequence[MemCube]) -> None:
        self.invalidate(c.id for c in cubes)
        self.parametric.on_change(cubes)  # a tombstone retires the adapters holding it

    def _headers(self) -> Iterable[tuple[Path, dict[str, str], tuple[tuple[str, int], ...]]]:
        if not self.kv_dir.is_dir():
            return
        for path in sorted(self.kv_dir.glob(f"*{storage.SUFFIX}")):
            try:
                header = storage.read_header(path)
                yield path, header, storage.header_memories(header)
            except (storage.KVCacheFormatError, OSError):
                continue  # not ours to judge; the tier ignores it too

    def _scan_foreign(self) -> None:
        """Index the KV files the current tier does not manage (other models' files)."""
        digest = self._tier.model.fingerprint.digest if self._tier is not None else None
        self._foreign = {
            path: frozenset(mid for mid, _ in members)
            for path, header, members in self._headers()
            if header.get("fingerprint") != digest
        }

    def _reconcile_kv_dir(self) -> None:
        """Delete KV files built from memory versions that are no longer current."""
        for path in storage.stale_kv_files(self.kv_dir, self.store.vault):
            path.unlink(missing_ok=True)
            logger.info("dropped stale KV block %s (a memory in it changed)", path.name)
        self._scan_foreign()

    # ------------------------------------------------------------------ scheduling

    def schedule(
        self, *, user_id: str | None = None, config: SchedulerConfig | None = None
    ) -> ScheduleReport:
        """One scheduler run now (all owners, or ``user_id``'s memories); see
        :meth:`SchedulerExecutor.run`."""
        self._check_open()
        return self.executor.run(user_id, config=config)

    def start_scheduler(
        self, interval_s: float = 300.0, *, config: SchedulerConfig | None = None,
        consolidation: ConsolidationConfig | None = None,
        parametric: ParametricConfig | None = None,
    ) -> BackgroundScheduler:
        """Run the scheduler every ``interval_s`` seconds in a background thread, the first
        run right away; it stops on :meth:`stop_scheduler` or when the store closes. With
        ``consolidation``, each run is followed by :meth:`consolidate_due` (LoRA training of
        owners with enough hot, stable facts, as background jobs, with ``parametric``); a job
        that fails is logged and counted in the scheduler's ``errors``. The thread holds no
        reference to this engine or its MemOS: one dropped without ``close()`` is collected,
        and its scheduler stops then.

        Raises:
            InvalidInputError: one is already running, or a bad interval.
        """
        self._check_open()
        with self._lock:
            if self._background is not None and self._background.running:
                raise InvalidInputError(
                    "a background scheduler is already running; stop_scheduler() first"
                )
            after = None
            if consolidation is not None:
                engine = weakref.ref(self)  # the thread must not keep the engine alive

                def after(_report: object) -> Iterable[Future[ConsolidationResult]]:
                    alive = engine()
                    if alive is None:
                        return ()
                    return alive.consolidate_due(consolidation, config=parametric).values()
            self._background = BackgroundScheduler(
                self.executor, interval_s, config=config, after_run=after,
                around_run=self._hosted, owner=self)
            return self._background.start()

    def stop_scheduler(self, timeout_s: float | None = 60.0) -> bool:
        """Stop the background scheduler if one runs; returns whether none runs now."""
        with self._lock:
            background, self._background = self._background, None
        return background.stop(timeout_s) if background is not None else True

    @property
    def background(self) -> BackgroundScheduler | None:
        """The background scheduler, if one was started (it may have stopped)."""
        return self._background

    # ------------------------------------------------------------------ consolidation

    def consolidation_candidates(self, user_id: str, config: ConsolidationConfig | None = None,
                                 now: datetime | None = None) -> list[str]:
        """``user_id``'s memories the policy would consolidate at ``now`` (default: now): hot,
        stable, fact or preference, not parametric yet; see :func:`consolidation_candidates`."""
        config = with_half_life(config or ConsolidationConfig(), self.store.config.heat_half_life_s)
        records = self._usage_records(user_id).get(user_id, [])
        return consolidation_candidates(records, config, now or utcnow())

    def _usage_records(self, user_id: str | None = None) -> dict[str, list[UsageRecord]]:
        """Usage records of the memories the parametric tier may train, by owner (all
        owners, or ``user_id``'s): those its own rule (:func:`untrainable`) leaves out never
        are records, so a record is a candidate only if the tier would train it. A record
        carries no text, so the policy could not apply the cloze rule (three words or more)
        itself: a short fact counted towards ``min_candidates`` and started a training that
        failed, at every scheduler run. ``never_sensitivity`` is left to the policy."""
        records: dict[str, list[UsageRecord]] = {}
        allowed = allowance(self.store.config.allow_sensitive)
        for batch in self.executor.owned_cubes(user_id):
            for cube in batch:
                if untrainable(cube, allowed, ()) is not None:
                    continue
                records.setdefault(cube.user_id, []).append(
                    UsageRecord.from_cube(cube, token_count=1))
        return records

    def consolidate(
        self, user_id: str, memory_ids: Sequence[str] | None = None, *,
        config: ParametricConfig | None = None, candidates: ConsolidationConfig | None = None,
        activate: bool = True, background: bool = False, progress: bool = True,
        reason: str = "consolidation requested", retrain: RetrainRequest | None = None,
    ) -> ConsolidationResult | Future[ConsolidationResult]:
        """Train, evaluate and gate an adapter on ``user_id``'s memories: ``memory_ids``, or
        the policy's candidates together with the user's queued retrain.
        Memories with a tag in ``candidates.never_sensitivity`` (default ``"secret"``) are
        never trained, whichever way they were chosen. With ``background=True`` it runs in a
        worker thread (one job at a time, in order) and a ``Future`` comes back. ``reason``
        goes into the audit record. A queued retrain this run answers (``retrain``, or the
        one taken in when ``memory_ids`` is None) leaves the queue only once the run has
        finished: one interrupted by a kill or a close runs again later.

        Raises:
            InvalidInputError: no candidate (or no consolidatable memory among ``memory_ids``).
        """
        self._check_open()
        if memory_ids is not None:
            ids = list(memory_ids)
        else:  # the policy's candidates, plus a retrain a forget queued for this user
            retrain = self.parametric.store.pending(user_id)
            ids = sorted(set(self.consolidation_candidates(user_id, candidates))
                         | set(retrain.memory_ids if retrain is not None else ()))
        if not ids:
            raise InvalidInputError(
                f"nothing to consolidate for {user_id!r}: no memory is hot, stable and a fact "
                "or preference of three words or more yet (pass memory_ids to choose them)")
        self.store.vault.audit(Actor(user_id, "parametric", reason),
                             "parametric:consolidate", details={"memories": len(ids)})
        never = (candidates or ConsolidationConfig()).never_sensitivity

        def job() -> ConsolidationResult:
            result = self.parametric.consolidate(user_id, ids, config=config,
                                                 activate=activate, progress=progress,
                                                 never=never)
            if retrain is not None:
                self.parametric.store.done(retrain)
            return result

        if not background:
            return job()
        with self._lock:
            if self._jobs is None:
                self._jobs = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memos-lora")
            future = self._jobs.submit(job)
            self._job_futures = [f for f in self._job_futures if not f.done()] + [future]
            return future

    def consolidate_due(
        self, candidates: ConsolidationConfig | None = None, *,
        config: ParametricConfig | None = None, progress: bool = True,
    ) -> dict[str, Future[ConsolidationResult]]:
        """Start a background consolidation for every owner with at least
        ``candidates.min_candidates`` candidates (or a queued retrain) and no consolidation
        of theirs pending; returns the started jobs by owner. Owners are taken in order and
        trained one at a time (one worker). First, an owner's active adapter that is stale
        (``retire_below_current``, ``retire_idle_s``) is retired: its memories go back to
        plaintext and may be candidates again. A job that fails is logged (``memos_core.engine``
        logger, a warning with its traceback), as no one may read its ``Future``; one stopped
        by :meth:`close` is not; the same memories of that owner are not tried again for a
        while (:data:`RETRY_AFTER_S` after the first failure, twice as long after each next
        one, at most :data:`RETRY_AT_MOST_S`), so a failure that lasts (a missing package, a
        full disk) does not start a training and write an audit record at every scheduler
        run; a change of the owner's candidates is tried at once."""
        self._check_open()
        candidates = with_half_life(candidates or ConsolidationConfig(),
                                    self.store.config.heat_half_life_s)
        queued = {r.owner for r in self.parametric.store.queue()}
        records = self._usage_records()
        now = utcnow()
        started: dict[str, Future[ConsolidationResult]] = {}
        for owner in sorted(set(records) | queued):
            pending = self._pending.get(owner)
            if pending is not None and not pending.done():
                continue
            if self.parametric.retire_stale(owner, now=now,
                                            min_current=candidates.retire_below_current,
                                            idle_s=candidates.retire_idle_s):
                records[owner] = self._usage_records(owner).get(owner, [])
            due = consolidation_candidates(records.get(owner, []), candidates, now)
            if owner not in queued and len(due) < candidates.min_candidates:
                continue
            request = self.parametric.store.pending(owner) if owner in queued else None
            if request is not None and not self.parametric.candidates(owner, request.memory_ids):
                self.parametric.store.done(request)  # nothing of it is left to train
                request = None
                if len(due) < candidates.min_candidates:
                    continue
            ids = sorted(set(due) | set(request.memory_ids if request is not None else ()))
            failed = self._failed.get(owner)
            if failed is not None and failed[0] == tuple(ids) and now < failed[2]:
                continue  # failed on these very memories a moment ago
            job = cast(Future[ConsolidationResult], self.consolidate(
                owner, ids, config=config, candidates=candidates, background=True,
                progress=progress, retrain=request, reason="consolidation due (consolidate_due)"))
            job.add_done_callback(functools.partial(self._job_done, owner, tuple(ids)))
            self._pending[owner] = started[owner] = job
        return started

    def _job_done(self, owner: str, ids: tuple[str, ...],
                  job: Future[ConsolidationResult]) -> None:
        """Done-callback of the jobs :meth:`consolidate_due` starts: log a failure and hold
        these memories back for a while (a job the closing store stopped is no failure)."""
        if job.cancelled() or self._closed:
            return
        error = job.exception()
        if error is None:
            self._failed.pop(owner, None)
            return
        last = self._failed.get(owner)
        times = last[1] + 1 if last is not None and last[0] == ids else 1
        wait_s = min(RETRY_AFTER_S * 2 ** (times - 1), RETRY_AT_MOST_S)
        self._failed[owner] = (ids, times, utcnow() + timedelta(seconds=wait_s))
        logger.warning("the background consolidation of %r's memories failed (%d time(s) in "
                       "a row): %s; the same memories are tried again in %.0f s at the "
                       "earliest, or at once when they change", owner, times, error, wait_s,
                       exc_info=error)

    # ------------------------------------------------------------------ lifecycle

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidInputError(CLOSED)

    def close(self) -> None:
        """Stop the background scheduler and forget the model (idempotent). KV files stay."""
        if self._closed:
            return
        self._closed = True
        background = self._background
        # closed from the scheduler's own run (a change listener): it ends as the run returns
        own = background is not None and background.current
        if not self.stop_scheduler() and not own:
            logger.warning("the background scheduler did not stop within 60 s; it is a daemon "
                           "thread and its next store call fails on the closed store")
        self.parametric.stop()  # a running training ends at its next step, saving nothing
        if self._jobs is not None:  # queued ones are dropped
            self._jobs.shutdown(wait=False, cancel_futures=True)
            running = [job for job in self._job_futures if not job.done()]
            if futures.wait(running, timeout=_JOB_STOP_S).not_done:
                logger.warning("a background consolidation did not stop within %s s; it saves "
                               "nothing and its next store call fails", _JOB_STOP_S)
        with self._lock:
            self._tier = None
            self._model = None
