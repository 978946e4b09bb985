"""The facade's lifetime under concurrency: close from several threads at once, the async
context manager, settings objects checked (a helper's probe of the async API)."""

from __future__ import annotations

import asyncio
import threading
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
            while not mos._closing:
                pass

    mos.on_change(close_after_the_first_batch)
    with pytest.raises(InvalidInputError, match="the first 8 of 40 items were stored"):
        mos.add_many([f"note number {i}" for i in range(40)], user_id="alice", batch_size=8)
    closer[0].join(30)
    assert mos.closed
    with MemOS(tmp_path / "d", config=MemOSConfig(show_progress=False)) as again:
        assert len(again.list(user_id="alice", limit=100)) == 8
