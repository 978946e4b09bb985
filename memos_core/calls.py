"""The calls running on a :class:`~memos_core.memos.MemOS`, so that ``close()`` waits for them.

Every public method of the facade runs inside :meth:`RunningCalls.call` (the ``@running``
decorator in ``memos.py``). ``close()`` first refuses new calls (:meth:`RunningCalls.begin_close`),
then waits until the calls other threads are running have returned (:meth:`RunningCalls.wait`)
before it closes the files under them, so a call never meets a closed database halfway and
fails with the driver's raw error. A call that starts once ``close()`` has begun raises the
closed error at once, except one made by the closing thread itself (a close callback or a
change listener calling back into the facade). A method calling another public method
counts once (a per-thread depth); a native async twin (an asyncio task) counts through
:meth:`RunningCalls.task`; a write twin counts from the moment it queues its work for a worker
thread (:meth:`RunningCalls.queued`), so ``close()`` also waits for one still queued behind
busy threads. ``close()`` called from inside a running call (a change listener, which runs
under the store's write lock) cannot wait there: another thread's call may be waiting for
that lock. It refuses new calls at once and hands the rest of the close to
:meth:`RunningCalls.defer`, which runs it when this thread's outermost call returns. A run of
the background scheduler is such a call for this purpose (:meth:`RunningCalls.hosted`),
though ``close()`` does not wait for it (it stops it).

:func:`in_thread` is how async code hands a call to a worker thread (the async twins and the
adapters' async methods): unlike ``asyncio.to_thread``, cancelling the wait never drops the
call, even one still queued behind busy threads. :func:`whole` does the same for async code
made of several steps that must not be split (a write, then the redaction of what it wrote):
cancelling its caller does not stop it halfway.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar, cast

from memos_core.errors import CLOSED, InvalidInputError

__all__ = ["CLOSED", "Queued", "RunningCalls", "in_own_thread", "in_thread", "whole"]

P = ParamSpec("P")
R = TypeVar("R")
logger = logging.getLogger("memos_core")


async def in_thread(func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """``func(*args, **kwargs)`` in the running loop's default executor, awaited: what
    ``asyncio.to_thread`` does (the context is copied), except that cancelling the wait
    (``task.cancel()``, a timeout) stops the wait, not the call. ``asyncio.to_thread`` takes a
    call that is still queued behind busy threads off the queue, so a cancelled ``aforget``
    could silently never run. Once this coroutine has started, the call runs to its end; an
    error it raises after its waiter went away is logged (``memos_core`` logger), since no one
    else will see it. A task cancelled before it first runs never starts the call. A
    :class:`Queued` ``func`` the executor refuses or cancels unrun stops being counted."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    try:
        job = loop.run_in_executor(None, functools.partial(context.run, func, *args, **kwargs))
    except BaseException:
        if isinstance(func, Queued):
            func.drop()
        raise
    if isinstance(func, Queued):
        job.add_done_callback(functools.partial(_drop_if_cancelled, func))
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        job.add_done_callback(functools.partial(_log_unseen_error, func))
        raise


async def in_own_thread(func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """``func(*args, **kwargs)`` in a new thread of its own, awaited; as with
    :func:`in_thread`, cancelling the wait does not stop the call.

    For a call that waits for work queued on the loop's default executor: ``aclose``, whose
    ``close()`` waits for the write twins queued there. Run on that executor, it held one of
    its threads while it waited, and with every thread so held (one worker, or as many
    ``aclose`` calls as workers) the writes it waited for could never start: it stalled for
    its whole timeout and then refused them, or hung for good without one."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[R] = loop.create_future()
    context = contextvars.copy_context()

    def settle(result: R | None, error: BaseException | None) -> None:
        if done.cancelled():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(cast(R, result))

    def run() -> None:
        result: R | None = None
        error: BaseException | None = None
        try:
            result = context.run(func, *args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            error = exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop was closed meanwhile: no one is left to tell
            if error is not None:
                logger.error("%s failed after its caller's event loop closed",
                             getattr(func, "__qualname__", func), exc_info=error)

    threading.Thread(target=run, name=f"memos-{getattr(func, '__name__', 'call')}").start()
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        done.add_done_callback(functools.partial(_log_unseen_error, func))
        raise


#: The tasks of :func:`whole` still running: the event loop keeps only weak references to
#: tasks, and one whose caller was cancelled has no one else holding it.
_UNITS: set[asyncio.Task[Any]] = set()


def whole(func: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """``func`` (an async function) as one unit that cancelling its caller cannot split.

    An adapter's async write commits in a worker thread (:func:`in_thread`, which runs to
    its end), then, on the event loop, redacts in what it wrote the memories forgotten
    meanwhile (:class:`~memos_core.integration.forgets.LateWrite`). A caller cancelled
    between the two (``task.cancel()``, a timeout) used to leave the write committed and
    the redaction never run: the forgotten text stayed on disk. Each call of the returned
    function runs ``func`` as a task of its own (the context copied) and awaits it
    shielded: as with :func:`in_thread`, cancelling the caller stops the wait, not the
    unit, which runs to its end; an error it raises after its caller went away is logged
    (``memos_core`` logger), since no one else will see it. ``close()`` waits for a unit
    that counts itself as a call of the MemOS (an ``alate_write`` block does). A call
    cancelled before it first runs never starts ``func``; only a cancel of the unit's own
    task (the event loop shutting down with it still running: ``await mos.aclose()``
    first) stops it halfway."""

    @functools.wraps(func)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        unit = asyncio.get_running_loop().create_task(func(*args, **kwargs))
        _UNITS.add(unit)
        unit.add_done_callback(_UNITS.discard)
        try:
            return await asyncio.shield(unit)
        except asyncio.CancelledError:
            unit.add_done_callback(functools.partial(_log_unseen_error, func))
            raise

    return run


def _drop_if_cancelled(func: Queued, job: asyncio.Future[object]) -> None:
    if job.cancelled():  # taken off the queue unrun (an executor shut down)
        func.drop()


def _log_unseen_error(func: Callable[..., object], job: asyncio.Future[object]) -> None:
    if not job.cancelled() and job.exception() is not None:
        name = getattr(func, "__qualname__", repr(func))
        logger.warning("%s, whose caller stopped waiting, failed: %r", name, job.exception())

#: Marks of the counted tasks this context runs in: a worker thread such a task hands work
#: to (``asyncio.to_thread`` copies the context) is inside that call while it runs. A task
#: created meanwhile inherits the marks, which stop counting once that call has returned.
_TASKS: ContextVar[frozenset[object]] = ContextVar("memos_counted_tasks", default=frozenset())


class RunningCalls:
    """A count of the calls in flight, and the closing flag that stops new ones."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._running = 0
        self._closer: int | None = None  # the thread running close()
        self._depth = threading.local()  # per thread: how deep in facade calls
        self._tasks: dict[int, int] = {}  # thread of an event loop -> its counted tasks
        self._marks: set[object] = set()  # marks of the counted tasks running (see _TASKS)
        self._sealed = False  # close() stopped waiting: no mark lets a call in any more
        self._deferred: Callable[[], None] | None = None  # the close a call runs as it returns

    @property
    def closing(self) -> bool:
        """True once ``close()`` has begun."""
        return self._closer is not None

    @contextmanager
    def call(self) -> Iterator[None]:
        """Count one call for its duration; raise the closed error if ``close()`` has begun
        in another thread and this is not a call nested in a running one (in this thread,
        or in the counted task that handed this thread its work)."""
        depth: int = getattr(self._depth, "n", 0)
        if depth == 0:
            with self._changed:
                if self._closer is not None and self._closer != threading.get_ident() \
                        and not self._inside_task():
                    raise InvalidInputError(CLOSED)
                self._running += 1
        self._depth.n = depth + 1
        try:
            yield
        finally:
            self._depth.n = depth
            if depth == 0:
                self._returned()

    @contextmanager
    def hosted(self) -> Iterator[None]:
        """A run of the MemOS's own background thread (the scheduler's): not counted, as
        ``close()`` does not wait for it but stops it (the engine stops the scheduler as the
        store closes), yet this thread is :attr:`in_call` for its duration. A ``close()``
        from a change listener the run's writes trigger (under the store's write lock) is
        deferred until the run returns (:meth:`defer`), as from a call; calls the run makes
        are nested in it."""
        depth: int = getattr(self._depth, "n", 0)
        self._depth.n = depth + 1
        try:
            yield
        finally:
            self._depth.n = depth
            if depth == 0:
                self._run_deferred()

    def _returned(self) -> None:
        """The end of a thread's outermost call: uncount it, then run the close that was
        deferred to this moment (:meth:`defer`), if this thread deferred one."""
        with self._changed:
            self._running -= 1
            self._changed.notify_all()
        self._run_deferred()

    def _run_deferred(self) -> None:
        """Run the close this thread deferred (:meth:`defer`), if it deferred one."""
        with self._changed:
            deferred = None
            if self._deferred is not None and self._closer == threading.get_ident():
                deferred, self._deferred = self._deferred, None
        if deferred is not None:
            deferred()

    def queued(self, func: Callable[P, R]) -> Callable[P, R]:
        """``func`` counted as a running call from now on, for a worker thread to run later
        (:class:`Queued`): a write twin's work, still queued behind busy threads when
        ``close()`` begins, is waited for like a running call. Once ``close()`` has begun,
        ``func`` unchanged: it is refused or let in when it starts, as any call."""
        with self._changed:
            if self._closer is not None:
                return func
            self._running += 1
        return cast(Callable[P, R], Queued(self, func))

    def _start_queued(self) -> bool:
        """A :class:`Queued` call starts in this thread: True if it now runs as this thread's
        outermost call (counted since it was queued); False if its count was let go (its
        ``close()`` stopped waiting, or this thread is already inside a call), and it must
        be let in as a new call."""
        with self._changed:
            if self._sealed or self.in_call:
                self._running -= 1
                self._changed.notify_all()
                return False
        self._depth.n = 1
        return True

    def _drop_queued(self) -> None:
        """A :class:`Queued` call that will never run: let its count go."""
        with self._changed:
            self._running -= 1
            self._changed.notify_all()

    @contextmanager
    def task(self) -> Iterator[None]:
        """:meth:`call` for an asyncio task (a native async twin): counted without the
        per-thread depth, since tasks interleave on the event loop's one thread; one nested
        in a counted task (its context) is not refused."""
        loop_thread = threading.get_ident()
        with self._changed:
            if self._closer is not None and not self._inside_task():
                raise InvalidInputError(CLOSED)
            self._running += 1
            self._tasks[loop_thread] = self._tasks.get(loop_thread, 0) + 1
            mark = object()
            self._marks.add(mark)
        token = _TASKS.set(_TASKS.get() | {mark})
        try:
            yield
        finally:
            _TASKS.reset(token)
            with self._changed:
                self._marks.discard(mark)
                self._running -= 1
                self._tasks[loop_thread] -= 1
                if not self._tasks[loop_thread]:
                    del self._tasks[loop_thread]
                self._changed.notify_all()

    def _inside_task(self) -> bool:  # under _changed
        """True in a context a running counted task of these calls handed work to, until
        ``close()`` stopped waiting (it does not wait for its own loop's tasks: work they
        hand on after that would meet the store being closed)."""
        return not self._sealed and not self._marks.isdisjoint(_TASKS.get())

    @property
    def in_call(self) -> bool:
        """True in a thread that is running a call (a listener or hook inside it)."""
        return bool(getattr(self._depth, "n", 0))

    @property
    def closing_here(self) -> bool:
        """True in the thread running ``close()`` (a close callback)."""
        return self._closer == threading.get_ident()

    def begin_close(self) -> None:
        """Refuse new calls from other threads from now on."""
        with self._changed:
            self._closer = threading.get_ident()

    def defer(self, close: Callable[[], None]) -> None:
        """Run ``close`` when the calling thread's outermost call returns: a ``close()`` from
        inside a call (a change listener, under the store's write lock) must not wait there
        for other threads' calls, which may be waiting for that lock. Call after
        :meth:`begin_close`, in a thread that is :attr:`in_call`."""
        with self._changed:
            self._deferred = close

    def wait(self, timeout_s: float | None) -> int:
        """Wait up to ``timeout_s`` (None: however long) until no other call runs; return
        how many still run. Not waited for: the caller's own call, if it closes from inside
        one, and the tasks of the event loop whose thread calls this (a sync ``close()`` in
        async code: they cannot go on while it blocks their loop; ``await aclose()`` closes
        from a worker thread and waits for them). From then on only the closing thread's
        calls are let in."""
        here = threading.get_ident()

        def others() -> int:
            return self._running - (1 if self.in_call else 0) - self._tasks.get(here, 0)

        with self._changed:
            self._changed.wait_for(lambda: others() <= 0, timeout_s)
            self._sealed = True  # what starts from now on meets a closing store: refused
            return others()


class Queued:
    """A function counted as a running call of its :class:`RunningCalls` from the moment it
    was queued for a worker thread (:meth:`RunningCalls.queued`) until it returns there.
    Call it once in that thread, or :meth:`drop` it if it can no longer run (its executor
    refused it); a drop once it has started does nothing."""

    def __init__(self, calls: RunningCalls, func: Callable[..., object]) -> None:
        functools.update_wrapper(self, func)  # its name, for the log of an unseen error
        self._calls = calls
        self._func = func
        self._state = threading.Lock()
        self._queued = True  # counted, neither started nor dropped yet

    def _take(self) -> bool:
        """True, once: the first of starting and dropping takes the count."""
        with self._state:
            queued, self._queued = self._queued, False
            return queued

    def __call__(self, *args: object, **kwargs: object) -> object:
        if not (self._take() and self._calls._start_queued()):
            return self._func(*args, **kwargs)  # a new call: its own checks decide
        try:
            return self._func(*args, **kwargs)
        finally:
            self._calls._depth.n = 0
            self._calls._returned()

    def drop(self) -> None:
        """It will never run: stop counting it (nothing if it has started)."""
        if self._take():
            self._calls._drop_queued()
