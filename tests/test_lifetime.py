"""The facade's lifetime under concurrency: close from several threads at once, the async
context manager, settings objects checked (a helper's probe of the async API)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from memos_core import InvalidInputError, MemOS, MemOSConfig


@pytest.mark.parametrize("attempt", range(5))
def test_close_from_several_threads_at_once_runs_once(tmp_path: Path, attempt: int) -> None:
    mos = MemOS(tmp_path / "d", config=MemOSConfig(show_progress=False))
    closed: list[int] = []
    mos.on_close(lambda: closed.append(1))
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def close() -> None:
        start.wait()
        try:
            mos.close()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=close) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and closed == [1] and mos.closed


def test_async_with_closes_the_store(tmp_path: Path) -> None:
    async def main() -> MemOS:
        async with MemOS(tmp_path / "d", config=MemOSConfig(show_progress=False)) as mos:
            await mos.aadd("Alice likes tea.", user_id="alice")
        return mos

    mos = asyncio.run(main())
    assert mos.closed
    with MemOS(tmp_path / "d", config=MemOSConfig(show_progress=False)) as again:  # unlocked
        assert len(again.list(user_id="alice")) == 1


def test_settings_objects_and_flags_are_checked(mos: MemOS) -> None:
    with pytest.raises(InvalidInputError, match="ConsolidationConfig"):
        mos.consolidate_due(5)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="SchedulerConfig"):
        mos.schedule(config={"interval": 1})  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="load"):
        mos.model_info(load="x")  # type: ignore[arg-type]
    mos.close()
    with pytest.raises(InvalidInputError, match="closed"):
        mos.is_admin("alice")


def test_close_during_add_many_stops_between_batches_and_says_so(tmp_path: Path) -> None:
    """close() from another thread while add_many runs: the batch being written completes,
    the next is not started, and the caller learns how many items were stored (it got a raw
    'closed database' error from the next batch)."""
    mos = MemOS(tmp_path / "d", config=MemOSConfig(show_progress=False))
    closer: list[threading.Thread] = []

    def close_after_the_first_batch(cubes: object) -> None:
        if not closer:  # another thread closes now; it waits for this batch's write lock
            closer.append(threading.Thread(target=mos.close))
            closer[0].start()
            while not mos._calls.closing:
                pass

    mos.on_change(close_after_the_first_batch)
    with pytest.raises(InvalidInputError, match="the first 8 of 40 items were stored"):
        mos.add_many([f"note number {i}" for i in range(40)], user_id="alice", batch_size=8)
    closer[0].join(30)
    assert mos.closed
    with MemOS(tmp_path / "d", config=MemOSConfig(show_progress=False)) as again:
        assert len(again.list(user_id="alice", limit=100)) == 8


def test_an_interrupted_add_many_says_how_many_items_were_stored(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Ctrl-C (or `memos add --file`'s SIGTERM) between two batches: the batches written
    stay, and a warning says how many, since adding the same items again stores them twice."""
    mos = MemOS(tmp_path / "d", config=MemOSConfig(show_progress=False))

    batches: list[object] = []

    def interrupt_in_the_second_batch(cubes: object) -> None:
        batches.append(cubes)
        if len(batches) == 2:  # committed; its listeners run when Ctrl-C comes
            raise KeyboardInterrupt

    mos.on_change(interrupt_in_the_second_batch)
    with caplog.at_level("WARNING", logger="memos_core"), pytest.raises(KeyboardInterrupt):
        mos.add_many([f"note number {i}" for i in range(40)], user_id="alice", batch_size=8)
    mos.close()
    warned = [r.getMessage() for r in caplog.records if "add_many was interrupted" in r.getMessage()]
    # the second batch had committed when Ctrl-C came (as it mostly has: the interruption
    # comes while its vectors are made), so it counts
    assert warned == ["add_many was interrupted: the first 16 of 40 items were stored (each "
                      "batch of 8 whole). Adding the same items again stores those again."]
    with MemOS(tmp_path / "d", config=MemOSConfig(show_progress=False)) as again:
        assert len(again.list(user_id="alice", limit=100)) == 16


def test_an_add_many_interrupted_before_a_batch_commits_counts_only_the_batches_before(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Ctrl-C before the third batch's transaction: the warning's count is what is stored."""
    mos = MemOS(tmp_path / "d", config=MemOSConfig(show_progress=False))
    ready = mos.store.ready_embedder
    calls: list[None] = []

    def interrupt_before_the_third_batch() -> None:  # writes.add calls it before its write
        calls.append(None)
        if len(calls) == 3:
            raise KeyboardInterrupt
        ready()

    mos.store.ready_embedder = interrupt_before_the_third_batch  # type: ignore[method-assign]
    with caplog.at_level("WARNING", logger="memos_core"), pytest.raises(KeyboardInterrupt):
        mos.add_many([f"note number {i}" for i in range(40)], user_id="alice", batch_size=8)
    mos.close()
    warned = [r.getMessage() for r in caplog.records if "add_many was interrupted" in r.getMessage()]
    assert [w.split(" (")[0] for w in warned] == [
        "add_many was interrupted: the first 16 of 40 items were stored"]
    with MemOS(tmp_path / "d", config=MemOSConfig(show_progress=False)) as again:
        assert len(again.list(user_id="alice", limit=100)) == 16


def _blocked_add(mos: MemOS, entered: threading.Event, release: threading.Event,
                 result: list[object]) -> threading.Thread:
    """A thread whose add() stays inside the call (in a change listener) until ``release``."""

    def hold(cubes: object) -> None:
        entered.set()
        release.wait(30)

    mos.on_change(hold)

    def add() -> None:
        try:
            result.append(mos.add("The boiler was serviced in March.", user_id="alice"))
        except Exception as exc:  # noqa: BLE001 - the test inspects what the call met
            result.append(exc)

    thread = threading.Thread(target=add)
    thread.start()
    assert entered.wait(30)
    return thread


def test_close_waits_for_calls_running_in_other_threads(tmp_path: Path) -> None:
    """close() refuses new calls at once, lets the running one finish (it returned a raw
    closed-file error before), then closes."""
    mos = MemOS(tmp_path / "d", config=MemOSConfig(show_progress=False))
    entered, release, result = threading.Event(), threading.Event(), []
    adder = _blocked_add(mos, entered, release, result)
    closer = threading.Thread(target=mos.close)
    closer.start()
    while not mos._calls.closing:
        pass
    with pytest.raises(InvalidInputError, match="closed"):
        mos.search("boiler", user_id="alice")  # a new call, while close() waits
    assert not mos.closed  # still waiting for the add
    release.set()
    adder.join(30)
    closer.join(30)
    assert mos.closed and len(result) == 1 and not isinstance(result[0], Exception), result
    with MemOS(tmp_path / "d", config=MemOSConfig(show_progress=False)) as again:
        assert [c.text for c in again.list(user_id="alice")] == ["The boiler was serviced in March."]


def test_close_gives_up_waiting_after_its_timeout(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    mos = MemOS(tmp_path / "d", config=MemOSConfig(show_progress=False))
    entered, release, result = threading.Event(), threading.Event(), []
    adder = _blocked_add(mos, entered, release, result)
    threading.Timer(1.0, release.set).start()  # the add holds the write lock: the close's
    with caplog.at_level("WARNING", logger="memos_core"):  # flush waits for it after all
        mos.close(timeout_s=0.2)
    assert mos.closed and "1 call(s) in other threads still running" in caplog.text
    adder.join(30)
    other = MemOS(tmp_path / "e")
    with pytest.raises(InvalidInputError, match="timeout_s"):
        other.close(timeout_s=0)
    other.close()


def test_close_from_inside_a_call_does_not_wait_for_itself(tmp_path: Path) -> None:
    """A change listener that closes the store (its own add is running) closes at once."""
    mos = MemOS(tmp_path / "d", config=MemOSConfig(show_progress=False))
    mos.on_change(lambda cubes: mos.close(timeout_s=None))  # None: it would wait forever
    mos.add("The boiler was serviced in March.", user_id="alice")
    assert mos.closed


def test_close_in_a_listener_while_another_thread_waits_for_the_write_lock(
        tmp_path: Path) -> None:
    """A change listener closes the store (it runs under the write lock) while another
    thread's add, already running, waits for that lock: close() cannot wait for that add
    there (it waited for it while holding the lock it needs: a deadlock with timeout_s=None,
    a 30 s stall and a raw sqlite3 error with the default). It refuses new calls at once and
    finishes as the listener's own add returns, after the lock is released: the other add
    completes, and the store reopens with both."""
    import time

    mos = MemOS(tmp_path / "d", config=MemOSConfig(show_progress=False))
    mos.add("warm up", user_id="ann")
    waiting, result = threading.Event(), []
    seen: dict[str, object] = {}  # what the listener saw (its own errors are only logged)

    def listener(cubes: object) -> None:
        if threading.current_thread().name == "closer":
            waiting.wait(30)
            time.sleep(0.2)  # the other add now waits for the write lock this thread holds
            mos.close(timeout_s=None)
            seen["closed"] = mos.closed  # not yet: it finishes as this add returns
            newcomer = threading.Thread(  # a new call from another thread: refused at once
                target=lambda: seen.update(new=_raised(lambda: mos.stats(user_id="ann"))))
            newcomer.start()
            newcomer.join(30)

    mos.on_change(listener)

    def other() -> None:
        waiting.set()
        result.append(_raised(lambda: mos.add("second note", user_id="bob")))

    closer = threading.Thread(target=lambda: mos.add("first note", user_id="ann"),
                              name="closer", daemon=True)  # daemon: a deadlock fails, not hangs
    closer.start()
    time.sleep(0.3)
    adder = threading.Thread(target=other, daemon=True)
    adder.start()
    closer.join(30)
    adder.join(30)
    assert not closer.is_alive() and not adder.is_alive(), "close() in the listener deadlocked"
    assert seen["closed"] is False and mos.closed
    assert isinstance(seen["new"], InvalidInputError) and "closed" in str(seen["new"])
    assert len(result) == 1 and not isinstance(result[0], BaseException), result
    with MemOS(tmp_path / "d", config=MemOSConfig(show_progress=False)) as again:
        texts = {c.text for u in ("ann", "bob") for c in again.list(user_id=u)}
    assert texts == {"warm up", "first note", "second note"}


def _raised(call: Callable[[], object]) -> object:
    """What ``call()`` returned, or the exception it raised."""
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - the test inspects what the call met
        return exc


def test_a_queued_write_twin_is_waited_for_by_a_sync_close(tmp_path: Path) -> None:
    """An aforget that timed out while still queued behind busy worker threads runs to its
    end (docs/api.md, async twins), also when a plain close() starts meanwhile: close()
    counts it from the moment it was queued and waits for it. It was not counted before: it
    met the closed error when it ran, and the text stayed stored."""
    from memos_core import MemoryDeletedError
    from memos_core.testing.executor import hold_executor

    mos = MemOS(tmp_path / "d", config=MemOSConfig(show_progress=False))
    secret = mos.add("Dana's PIN is 7781", user_id="dana")

    async def scenario() -> None:
        gate = hold_executor()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(mos.aforget(secret.id, user_id="dana"), timeout=0.05)
        closer = threading.Thread(target=mos.close)  # e.g. the app's shutdown
        closer.start()
        try:
            while not mos._calls.closing:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)
            assert not mos.closed  # waiting for the queued aforget
        finally:
            gate.set()  # (a failed assertion must not leave the executor blocked)
        await asyncio.to_thread(closer.join, 30)

    asyncio.run(scenario())
    assert mos.closed
    with MemOS(tmp_path / "d", config=MemOSConfig(show_progress=False)) as again, \
            pytest.raises(MemoryDeletedError):
        again.get(secret.id, user_id="dana")


def test_running_calls_count_a_queued_call_until_it_returns_or_is_dropped() -> None:
    from memos_core.calls import Queued, RunningCalls

    calls = RunningCalls()
    job = calls.queued(lambda: calls._running)
    assert isinstance(job, Queued) and calls._running == 1
    assert job() == 1 and calls._running == 0  # counted once while it runs
    dropped = calls.queued(lambda: None)
    assert calls._running == 1
    dropped.drop()  # type: ignore[attr-defined]
    dropped.drop()  # type: ignore[attr-defined]
    assert calls._running == 0
    calls.begin_close()
    assert not isinstance(calls.queued(len), Queued)  # refused or let in when it starts


def test_running_calls_count_nested_calls_once_and_tasks_each() -> None:
    from memos_core.calls import RunningCalls

    calls = RunningCalls()
    with calls.call(), calls.call():  # a public method calling another
        assert calls._running == 1
    with calls.task(), calls.task():  # two asyncio tasks on one thread
        assert calls._running == 2
    assert calls._running == 0 and calls.wait(0.01) == 0
    calls.begin_close()
    with calls.call():  # the closing thread itself may still call
        assert calls._running == 1
    with pytest.raises(InvalidInputError, match="closed"), calls.task():
        pass


def test_work_a_counted_task_hands_to_a_thread_is_inside_its_call() -> None:
    """A native async twin that hands part of its work to a worker thread (or starts a
    nested task) once another thread began closing: that work is inside the running call,
    which close() waits for, so it is not refused halfway; a new task is."""
    import asyncio

    from memos_core.calls import RunningCalls

    calls = RunningCalls()

    def in_thread() -> int:
        with calls.call():
            return calls._running

    returned = asyncio.Event()

    async def later() -> None:
        await returned.wait()
        with calls.task():  # a task started during the call, running after it returned
            pass

    async def twin() -> tuple[int, asyncio.Task[None]]:
        with calls.task():
            closer = threading.Thread(target=calls.begin_close)
            closer.start()
            closer.join()
            with calls.task():  # nested in this task's call
                pass
            outliving = asyncio.get_running_loop().create_task(later())
            return await asyncio.to_thread(in_thread), outliving

    async def run() -> int:
        running, outliving = await twin()
        returned.set()
        with pytest.raises(InvalidInputError, match="closed"):
            await outliving
        return running

    assert asyncio.run(run()) == 2  # the task and its worker thread's call
    with pytest.raises(InvalidInputError, match="closed"), calls.task():
        pass
    with pytest.raises(InvalidInputError, match="closed"):
        in_thread()  # in no counted task


def test_once_close_stopped_waiting_a_tasks_work_is_refused() -> None:
    """close() on an event loop's thread does not wait for that loop's tasks; once it has
    stopped waiting it closes the store: work such a task hands to a thread from then on
    gets the closed error, not the database driver's."""
    import asyncio

    from memos_core.calls import RunningCalls

    calls = RunningCalls()

    def in_thread() -> None:
        with calls.call():
            pass

    async def twin() -> None:
        with calls.task():
            calls.begin_close()  # a sync close() on this loop's thread ...
            assert calls.wait(None) == 0  # ... does not wait for this task
            with pytest.raises(InvalidInputError, match="closed"):
                await asyncio.to_thread(in_thread)

    asyncio.run(twin())


def test_close_in_a_listener_while_another_thread_closes_does_not_deadlock(tmp_path: Path) -> None:
    """Thread B's add runs a change listener that closes the store while thread A is already
    closing and waiting for B's add: B's close returns at once (A waits for B's call), then
    A closes. Both waited on each other before (A held the close lock while it waited)."""
    import time

    mos = MemOS(tmp_path / "d", config=MemOSConfig(show_progress=False))
    mos.add("warm up", user_id="alice")
    started, result = threading.Event(), []

    def listener(cubes: object) -> None:
        started.set()
        while not mos._calls.closing:  # A has begun closing
            time.sleep(0.01)
        mos.close()

    mos.on_change(listener)

    def add() -> None:
        result.append(mos.add("The boiler was serviced in March.", user_id="alice"))

    adder = threading.Thread(target=add, daemon=True)  # daemon: a deadlock fails, not hangs
    adder.start()
    assert started.wait(30)
    closer = threading.Thread(target=mos.close, kwargs={"timeout_s": None}, daemon=True)
    closer.start()
    adder.join(30)
    closer.join(30)
    assert not adder.is_alive() and not closer.is_alive() and mos.closed and len(result) == 1


def test_a_memos_dropped_without_close_releases_its_directory(tmp_path: Path) -> None:
    """Its lock's descriptor used to stay open: the directory was locked for the rest of the
    process (DataDirLockedError naming this very process) and one descriptor leaked per drop."""
    import gc
    import os
    import warnings

    where = tmp_path / "d"
    config = MemOSConfig(show_progress=False)
    fds = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for i in range(3):
            dropped = MemOS(where, config=config)
            dropped.add(f"Ines visited Porto on day {i}.", user_id="ada")
            del dropped
            gc.collect()
            fds = fds or len(os.listdir("/proc/self/fd"))
    assert len(os.listdir("/proc/self/fd")) == fds
    assert [str(w.message).split(";")[0] for w in caught if w.category is ResourceWarning] \
        == [f"A MemOS on {where} was garbage-collected without close()"] * 3
    with MemOS(where, config=config) as mos:  # nothing written was lost; the index caught up
        assert len(mos.list(user_id="ada")) == 3
        hits = mos.search("When did Ines visit Porto?", user_id="ada", k=5)
        assert sorted(h.memory.text for h in hits) == [
            f"Ines visited Porto on day {i}." for i in range(3)]
        kept = mos  # a MemOS that is closed is no lock holder: nothing is warned
    del kept
    with warnings.catch_warnings(record=True) as after:
        warnings.simplefilter("always", ResourceWarning)
        gc.collect()
    assert not [w for w in after if w.category is ResourceWarning]


@pytest.mark.parametrize("part", ["engine", "store"])
def test_a_part_kept_of_a_dropped_memos_keeps_the_directory_locked(tmp_path: Path,
                                                                   part: str) -> None:
    """The store no longer holds its MemOS (so a dropped server-mode one can be collected);
    a caller that keeps only ``mos.engine`` or ``mos.store`` still keeps the directory
    locked, and the engine's chat still searches through its MemOS."""
    import gc

    from memos_core import DataDirLockedError

    config = MemOSConfig(show_progress=False)
    mos = MemOS(tmp_path / "d", config=config)
    mos.add("Ines visited Porto in May.", user_id="ada")
    kept = getattr(mos, part)
    del mos
    gc.collect()
    try:
        with pytest.raises(DataDirLockedError):
            MemOS(tmp_path / "d", config=config)
        if part == "engine":
            assert [h.memory.text for h in kept.mos.search("Porto", user_id="ada")] == [
                "Ines visited Porto in May."]
    finally:  # closed here, not collected in a later test's forked child
        (kept.mos if part == "engine" else kept).close()
        del kept
        gc.collect()


def test_a_forked_child_dropping_its_copy_leaves_the_parents_lock(tmp_path: Path) -> None:
    """The child shares the lock's open file: unlocking it there (as a dropped MemOS's lock
    does in its own process) would let another process open the parent's directory."""
    import fcntl
    import gc
    import os

    where = tmp_path / "d"
    mos = MemOS(where, config=MemOSConfig(show_progress=False))
    try:
        pid = os.fork()
        if pid == 0:  # the child: drop its copy, collect it, leave without cleanup
            try:
                del mos
                gc.collect()
            finally:
                os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
        with open(where / "LOCK", "rb") as other:  # another open file: conflicts if locked
            with pytest.raises(BlockingIOError):
                fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        mos.close()
