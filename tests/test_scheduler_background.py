"""The background scheduler's lifetime and what it reports: the consolidations it starts
(candidates the parametric tier really trains, failures logged and counted), a MemOS dropped
without close() while it runs, and a close() from a change listener its run triggers."""

from __future__ import annotations

import gc
import logging
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from memos_core import MemOS, MemOSConfig
from memos_core.cube import MemCube, utcnow
from memos_core.scheduler import ConsolidationConfig

# every hot-enough, stable fact is a candidate at once, and one is enough to start a training
NOW = ConsolidationConfig(min_heat=0.0, stable_after_s=0, min_candidates=1)


def open_store(where: Path) -> MemOS:
    return MemOS(where, config=MemOSConfig(show_progress=False))


def hit(mos: MemOS, *ids: str, times: int = 3) -> None:
    """Count retrieval hits the way search does."""
    for _ in range(times):
        mos.vault.record_usage(list(ids), utcnow(), mos.config.heat_half_life_s)


def consolidations(mos: MemOS, user: str) -> int:
    return [r.action for r in mos.audit_log(user_id=user, limit=1000)].count(
        "parametric:consolidate")


def wait_for(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Poll ``condition`` until it holds or ``timeout_s`` passed (the test's asserts judge)."""
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_facts_too_short_to_train_are_no_consolidation_candidates(make_mos) -> None:
    """A fact of fewer than three words has no cloze form and is never trained. It used to
    count as a candidate all the same: an owner whose hot facts were all short passed
    min_candidates, and every scheduler run wrote a parametric:consolidate audit record and
    started a training that failed (InvalidInputError), unseen."""
    mos = make_mos()
    short = [mos.add(t, user_id="alice", type="fact").id
             for t in ("Alice swims.", "Bob runs.", "Carol sings.")]
    hit(mos, *short)

    assert mos.engine.consolidation_candidates("alice", NOW) == []
    assert mos.consolidate_due(NOW) == {}
    assert consolidations(mos, "alice") == 0

    long = mos.add("Alice swims every morning.", user_id="alice", type="fact").id
    hit(mos, long)
    assert mos.engine.consolidation_candidates("alice", NOW) == [long]


def test_a_failed_background_consolidation_is_logged_and_counted(
        make_mos, monkeypatch, caplog) -> None:
    """Nobody reads the Future of a consolidation the background scheduler starts: its
    failure is logged (with the owner) and counted in the scheduler's errors."""
    mos = make_mos()
    hit(mos, mos.add("Alice's cat is called Pastel.", user_id="alice", type="fact").id)

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(mos.engine.parametric, "consolidate", fail)
    with caplog.at_level(logging.WARNING, logger="memos_core.engine"):
        background = mos.start_scheduler(60, consolidation=NOW)  # one run, then a long wait
        wait_for(lambda: background.errors >= 1, timeout_s=10)
        mos.close()

    assert background.runs == 1 and background.errors == 1
    failed = [r for r in caplog.records if "consolidation" in r.getMessage()]
    assert len(failed) == 1 and "'alice'" in failed[0].getMessage()
    assert "the disk is full" in failed[0].getMessage() and failed[0].exc_info is not None


def test_a_dropped_memos_with_a_running_scheduler_is_collected(tmp_path: Path) -> None:
    """The scheduler thread held the executor, its store and (through the engine) the MemOS
    itself: a MemOS dropped without close() was never collected, its thread ran for good and
    the directory stayed locked against every later open in the process."""
    where = tmp_path / "d"

    def session() -> threading.Thread:
        mos = open_store(where)
        mos.add("Alice's cat is called Pastel.", user_id="alice")
        background = mos.start_scheduler(0.05)
        wait_for(lambda: background.runs >= 1)
        return background._thread

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        thread = session()
        gc.collect()
        thread.join(10)
        assert not thread.is_alive(), "the scheduler of a dropped MemOS still runs"
        with open_store(where) as again:  # the directory was released
            assert [c.text for c in again.list(user_id="alice")] == [
                "Alice's cat is called Pastel."]
    assert any("garbage-collected without close()" in str(w.message) for w in caught
               if w.category is ResourceWarning)


def test_close_from_a_listener_of_a_scheduler_run_waits_for_the_run(
        tmp_path: Path, caplog) -> None:
    """The scheduler's expire step triggers change listeners in its thread. A close() there
    ran at once, under the run's write lock: it stopped the scheduler from its own thread
    (a false 'did not stop within 60 s' warning), and the rest of the run failed on the
    closed store (errors == 1, nothing logged). Now it is deferred as from a call: the run
    ends, then the store closes."""
    mos = open_store(tmp_path / "d")
    for text in ("Temporary note about the meeting room.", "Another note that goes too."):
        mos.add(text, user_id="u", ttl_seconds=0.01)
    time.sleep(0.05)  # both past their TTL
    seen: dict[str, object] = {}

    def listener(cubes: Sequence[MemCube]) -> None:
        if "closed" not in seen and any(c.state.value == "expired" for c in cubes):
            mos.close()
            seen["closed"] = mos.closed  # not yet: it finishes as the run returns

    mos.on_change(listener)
    with caplog.at_level(logging.WARNING):
        background = mos.start_scheduler(60)
        thread = background._thread
        thread.join(30)

    assert not thread.is_alive() and seen == {"closed": False} and mos.closed
    assert background.runs == 1 and background.errors == 0
    assert background.last_report is not None and "expire 2" in background.last_report.summary()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.records
    with open_store(tmp_path / "d") as again:
        assert len(again.list(user_id="u", states=["expired"])) == 2


def test_a_failed_consolidation_is_not_retried_on_the_same_memories_at_once(
        make_mos, monkeypatch, caplog) -> None:
    """A failure that lasts (a missing package, a full disk) started a training, and wrote a
    parametric:consolidate audit record, at every scheduler run. The same memories now wait
    (doubling from engine.RETRY_AFTER_S); a change of the candidates is tried at once."""
    from memos_core import engine as engine_module

    mos = make_mos()
    cat = mos.add("Alice's cat is called Pastel.", user_id="alice", type="fact").id
    hit(mos, cat)

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(mos.engine.parametric, "consolidate", fail)

    def due_and_wait() -> dict[str, object]:
        started = mos.consolidate_due(NOW)
        for job in started.values():
            wait_for(job.done)
        return started

    with caplog.at_level(logging.WARNING, logger="memos_core.engine"):
        assert list(due_and_wait()) == ["alice"]
        assert due_and_wait() == {} and due_and_wait() == {}  # held back
        assert consolidations(mos, "alice") == 1
        dog = mos.add("Alice's dog is called Rex.", user_id="alice", type="fact").id
        hit(mos, dog)
        assert list(due_and_wait()) == ["alice"]  # other candidates: tried at once
        assert consolidations(mos, "alice") == 2
        monkeypatch.setattr(engine_module, "RETRY_AFTER_S", 0.0)
        assert due_and_wait() == {}  # waits the 60 s set at its failure
        mos.engine._failed["alice"] = (*mos.engine._failed["alice"][:2], utcnow())
        assert list(due_and_wait()) == ["alice"]  # its time has come
    failures = [r.getMessage() for r in caplog.records if "consolidation" in r.getMessage()]
    assert len(failures) == 3
    assert "(1 time(s) in a row)" in failures[1] and "(2 time(s) in a row)" in failures[2]
    assert "tried again in 60 s" in failures[1] and "tried again in 0 s" in failures[2]
