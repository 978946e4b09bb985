"""Running the scheduler periodically in a background thread.

:class:`BackgroundScheduler` calls ``run()`` of a :class:`SchedulerExecutor` every
``interval_s`` seconds in one daemon thread until :meth:`BackgroundScheduler.stop`. Stopping
is prompt: the thread sleeps on an event, and a run in progress is asked to stop between
steps (``should_stop``), so ``stop()`` waits at most for the step (or KV block build) under
way. A failing run is logged and the next one is attempted on schedule; the thread never
dies of an exception.

The thread also stops when the scheduler's ``owner`` (the engine) is garbage-collected. The
thread holds the scheduler, its executor and the store, but nothing that holds the engine or
its MemOS (the engine hands over its tier and its ``after_run`` through weak references), so
a MemOS dropped without ``close()`` is collected, its scheduler stops, and its store and data
directory are released once the run under way (if any) has returned.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from memos_core.errors import InvalidInputError

if TYPE_CHECKING:
    from memos_core.scheduler.executor import SchedulerExecutor
    from memos_core.scheduler.policy import SchedulerConfig
    from memos_core.scheduler.report import ScheduleReport

logger = logging.getLogger("memos_core.scheduler")


class BackgroundScheduler:
    """A thread that runs ``executor.run(config=config)`` every ``interval_s`` seconds.

    The first run starts right away (``run_immediately=True``) or after one interval.
    ``after_run(report)``, if given, is called after each run (the engine starts due LoRA
    consolidations from it); an exception there counts as a failed run, and the jobs it
    returns (``Future`` objects of work it started in other threads) are watched: one that
    raises before the scheduler is stopped counts as an error too (whoever started it logs
    it). Each run and its ``after_run`` run inside ``around_run()``, if given (the MemOS's
    :meth:`~memos_core.calls.RunningCalls.hosted`: a ``close()`` from a change listener the
    run triggers is deferred until the run returns). The thread stops when ``owner``, if
    given, is garbage-collected.
    ``last_report`` and ``runs`` tell what it did; ``errors`` counts the failures: runs that
    raised, and watched jobs that raised.
    """

    def __init__(
        self,
        executor: SchedulerExecutor,
        interval_s: float,
        *,
        config: SchedulerConfig | None = None,
        run_immediately: bool = True,
        after_run: Callable[[ScheduleReport], Iterable[Future[Any]] | None] | None = None,
        around_run: Callable[[], AbstractContextManager[object]] | None = None,
        owner: object = None,
    ) -> None:
        # a wait longer than the platform's limit (inf, 1e12) raised OverflowError in the
        # thread after its first run, and background scheduling stopped without a word
        if isinstance(interval_s, bool) or not isinstance(interval_s, (int, float)) or not (
            0 < interval_s <= threading.TIMEOUT_MAX
        ):
            raise InvalidInputError(
                f"interval_s must be a positive number of seconds up to "
                f"{threading.TIMEOUT_MAX:.0f}, got {interval_s!r}"
            )
        self.executor = executor
        self.interval_s = float(interval_s)
        self.config = config
        self._after_run = after_run
        self._around_run = around_run or nullcontext
        self.runs = 0
        self.errors = 0
        self._errors_lock = threading.Lock()  # watched jobs end in their own threads
        self.last_report: ScheduleReport | None = None
        self._run_immediately = run_immediately
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name="memos-scheduler", daemon=True
        )
        if owner is not None:  # the event's method: the finalizer must not hold self either
            weakref.finalize(owner, self._stop.set)

    def start(self) -> BackgroundScheduler:
        """Start the thread (once); returns self."""
        if self._thread.ident is not None:
            raise InvalidInputError("this background scheduler was already started")
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        """True while the thread is alive."""
        return self._thread.is_alive()

    @property
    def current(self) -> bool:
        """True in the scheduler's own thread (a change listener its run triggers, its
        ``after_run``)."""
        return self._thread is threading.current_thread()

    def stop(self, timeout_s: float | None = 60.0) -> bool:
        """Ask the thread to stop and wait for it; returns whether it has stopped.

        Idempotent. Called from the scheduler thread itself (:attr:`current`), it only asks
        and returns False: the thread ends once the run under way has returned.
        """
        self._stop.set()
        if self._thread.ident is None or self.current:
            return not self._thread.is_alive()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        if not self._run_immediately and self._stop.wait(self.interval_s):
            return
        while not self._stop.is_set():
            try:
                with self._around_run():
                    self.last_report = self.executor.run(
                        config=self.config, should_stop=self._stop.is_set
                    )
                    self.runs += 1
                    if self._after_run is not None and not self._stop.is_set():
                        for job in self._after_run(self.last_report) or ():
                            job.add_done_callback(self._job_done)
            except Exception:  # noqa: BLE001 - keep the thread alive; the log has the cause
                with self._errors_lock:
                    self.errors += 1
                if self._stop.is_set():
                    return  # the store is closing under the run: not worth a traceback
                logger.exception("scheduler run failed; retrying in %.0f s", self.interval_s)
            if self._stop.wait(self.interval_s):
                return

    def _job_done(self, job: Future[Any]) -> None:
        """Done-callback of a watched job: count it in :attr:`errors` if it raised, unless
        this scheduler was stopped by then (a closing store stops a training, as it stops a
        run: not a failure)."""
        if not job.cancelled() and job.exception() is not None and not self._stop.is_set():
            with self._errors_lock:
                self.errors += 1
