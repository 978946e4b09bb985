"""Cancelling an async call stops the wait, not the call (``memos_core.calls.in_thread``);
a :func:`~memos_core.calls.whole` unit (a write, then its late redaction) is not split by a
cancel of its caller.

``asyncio.to_thread`` takes a call that is still queued behind busy worker threads off the
queue when its waiter is cancelled: a timed-out ``aforget`` then never ran and the text stayed.
These tests fill the loop's executor (one thread, blocked) so the call is queued for certain.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from memos_core import MemoryDeletedError, MemOS
from memos_core.calls import in_thread, whole
from memos_core.testing.executor import cancel_while_queued, drain_executor, hold_executor


def test_a_cancelled_aforget_still_forgets_when_queued(mos: MemOS) -> None:
    secret = mos.add("Dana's PIN is 7781", user_id="dana")

    async def scenario() -> None:
        gate = hold_executor()
        forget = asyncio.ensure_future(mos.aforget(secret.id, user_id="dana"))
        await cancel_while_queued(forget, gate)
        added = asyncio.ensure_future(mos.aadd("Dana moved to Lisbon", user_id="dana"))
        gate = hold_executor()
        await cancel_while_queued(added, gate)

    asyncio.run(scenario())
    with pytest.raises(MemoryDeletedError):
        mos.get(secret.id, user_id="dana")
    assert [c.text for c in mos.list(user_id="dana")] == ["Dana moved to Lisbon"]


def test_a_timed_out_twin_runs_to_its_end(mos: MemOS) -> None:
    async def scenario() -> None:
        gate = hold_executor()
        threading.Timer(0.3, gate.set).start()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(mos.aadd_many([{"text": f"note {i}"} for i in range(5)],
                                                 user_id="eve"), timeout=0.1)
        await drain_executor()

    asyncio.run(scenario())
    assert len(mos.list(user_id="eve")) == 5


def test_an_error_after_the_waiter_left_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    def fails() -> None:
        raise ValueError("the disk is full")

    async def scenario() -> None:
        gate = hold_executor()
        await cancel_while_queued(asyncio.ensure_future(in_thread(fails)), gate)
        await asyncio.sleep(0)  # the done callback runs on the loop

    with caplog.at_level(logging.WARNING, logger="memos_core"):
        asyncio.run(scenario())
    assert any("fails, whose caller stopped waiting, failed" in r.getMessage()
               and "the disk is full" in r.getMessage() for r in caplog.records)


def test_in_thread_returns_raises_and_keeps_the_context() -> None:
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    async def scenario() -> tuple[str, str]:
        var.set("caller's")
        seen = await in_thread(var.get)
        with pytest.raises(KeyError):
            await in_thread({}.__getitem__, "x")
        return seen, await in_thread(lambda a, *, b: a + b, "a", b="b")

    assert asyncio.run(scenario()) == ("caller's", "ab")


def test_a_read_cancelled_while_queued_is_dropped(mos: MemOS) -> None:
    """Reads shed the work of callers that gave up (a server's timed-out requests): only
    calls with an effect run to their end."""
    ran: list[str] = []
    mos.search = lambda *args, **kwargs: ran.append("search")  # type: ignore[method-assign]

    async def scenario() -> None:
        gate = hold_executor()
        await cancel_while_queued(asyncio.ensure_future(mos.asearch("x", user_id="u")), gate)

    asyncio.run(scenario())
    assert ran == []


async def _others() -> None:
    """Wait for every other task of the loop (a :func:`whole` unit whose caller left)."""
    await asyncio.gather(*(asyncio.all_tasks() - {asyncio.current_task()}))


def test_a_whole_unit_runs_to_its_end_after_its_caller_is_cancelled() -> None:
    """The caller's wait stops at once; the step after the cancel point (a write's late
    redaction) still runs."""
    steps: list[str] = []

    @whole
    async def write_then_redact(committed: asyncio.Event, go: asyncio.Event) -> str:
        steps.append("write")
        committed.set()
        await go.wait()  # the cancel lands here
        steps.append("redact")
        return "done"

    async def scenario() -> None:
        committed, go = asyncio.Event(), asyncio.Event()
        caller = asyncio.ensure_future(write_then_redact(committed, go))
        await committed.wait()
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert steps == ["write"]
        go.set()
        await _others()
        assert steps == ["write", "redact"]
        assert await write_then_redact(asyncio.Event(), go) == "done"  # not cancelled

    asyncio.run(scenario())


def test_a_whole_unit_keeps_the_context_raises_and_logs_an_unseen_error(
        caplog: pytest.LogCaptureFixture) -> None:
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    @whole
    async def fails(go: asyncio.Event) -> str:
        await go.wait()
        raise ValueError(f"the disk is full ({var.get()})")

    async def scenario() -> None:
        var.set("caller's")
        go = asyncio.Event()
        go.set()
        with pytest.raises(ValueError, match="caller's"):
            await fails(go)
        go = asyncio.Event()
        caller = asyncio.ensure_future(fails(go))
        await asyncio.sleep(0)  # the unit is made
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        go.set()
        with pytest.raises(ValueError):
            await _others()
        await asyncio.sleep(0)  # the done callback runs on the loop

    with caplog.at_level(logging.WARNING, logger="memos_core"):
        asyncio.run(scenario())
    assert any("fails, whose caller stopped waiting, failed" in r.getMessage()
               and "the disk is full" in r.getMessage() for r in caplog.records)




def test_aclose_needs_no_thread_of_the_busy_executor(tmp_path) -> None:
    """``aclose`` closes in a thread of its own. It used to take a thread of the loop's
    executor and wait there for the write twins queued on that same executor: with every
    thread so held (one worker; as many ``aclose`` calls as workers) the writes could never
    start, and the close gave up after ``timeout_s`` and refused them (or hung without one).
    Here the executor's one thread stays busy until the close is done."""
    mos = MemOS(tmp_path / "d")
    mos.add("Dana moved to Lisbon", user_id="dana")

    async def scenario() -> None:
        gate = hold_executor()  # its one thread busy (a long aadd_many, say)
        try:
            await asyncio.wait_for(mos.aclose(timeout_s=None), timeout=60)  # a guard only
        finally:
            gate.set()

    try:
        asyncio.run(scenario())
        assert mos.closed
    finally:
        mos.close()
    with MemOS(tmp_path / "d") as again:
        assert [c.text for c in again.list(user_id="dana")] == ["Dana moved to Lisbon"]


def test_aclose_waits_for_a_write_queued_before_it(tmp_path) -> None:
    """A write twin queued behind busy threads before ``aclose`` is waited for and stored."""
    mos = MemOS(tmp_path / "d")
    mos.add("Dana moved to Lisbon", user_id="dana")

    async def scenario() -> object:
        gate = hold_executor()
        added = asyncio.ensure_future(mos.aadd("Dana's PIN is 7781", user_id="dana"))
        await asyncio.sleep(0.05)  # queued behind the busy thread: close waits for it
        closing = asyncio.ensure_future(mos.aclose(timeout_s=None))
        await asyncio.sleep(0.05)
        gate.set()
        await closing
        return await added

    try:
        added = asyncio.run(scenario())
    finally:
        mos.close()
    assert getattr(added, "text", None) == "Dana's PIN is 7781"
    with MemOS(tmp_path / "d") as again:
        assert sorted(c.text for c in again.list(user_id="dana")) == [
            "Dana moved to Lisbon", "Dana's PIN is 7781"]
