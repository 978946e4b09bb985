"""Closing a server-mode MemOS stops its change-feed listener (real PostgreSQL, ``pg_url``).

- the LISTEN thread is woken and ends within ``close()``, also while it waits for
  notifications (no poll interval to sit out);
- a wake-up under way when close begins -- another process keeps writing, so the listener
  keeps catching up under the store's write lock -- never holds close up nor outlives it:
  close stops the listener before it takes that lock, and the listener applies nothing to a
  closing store;
- the same when close runs inside a write of this MemOS (from a change listener), that is
  while its own thread holds the write lock the listener's catch-up waits for.
"""

from __future__ import annotations

import sys
import threading

from feed_helpers import listening, wait_until

from memos_core import MemOS, MemOSConfig


def _listener_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate()
            if t.name.startswith("memos-pg-listen") and t.is_alive()}


def test_close_stops_the_listener_thread(pg_url):
    before = _listener_threads()
    mos = MemOS(pg_url, config=MemOSConfig(show_progress=False))
    listener = mos.vault._listener
    assert listener is not None and listener.is_alive()
    wait_until(lambda: listening(mos))
    note = mos.add("The kayak is in the boathouse.", user_id="alice")
    mos.search("kayak", user_id="alice")
    mos.update(note.id, "The kayak is in the garage.", user_id="alice")
    mos.forget(note.id, user_id="alice")
    # the listener now waits for the next notification
    mos.close()
    assert not listener.is_alive()
    assert mos.vault._listen_conn is None
    assert _listener_threads() - before == set()


def _close_while_writing(pg_url: str, writer: MemOS, cycle: int,
                         before: set[threading.Thread]) -> None:
    """Open a MemOS that follows the feed, let ``writer`` keep writing, and close it just as
    one of those commits arrives; the listener must be gone when close returns."""
    mos = MemOS(pg_url, config=MemOSConfig(show_progress=False))
    follower, listener = mos.store.follower, mos.vault._listener
    wait_until(lambda: listening(mos))
    stop, written = threading.Event(), []

    def write() -> None:
        while not stop.is_set():
            written.append(writer.add(f"note {cycle}.{len(written)}", user_id="bob").id)

    thread = threading.Thread(target=write, name="test-writer")
    thread.start()
    try:
        applied = follower.applied
        wait_until(lambda: follower.applied > applied)  # the listener is catching up
        count = len(written)
        wait_until(lambda: len(written) > count, timeout=30)  # close as its NOTIFY arrives
        mos.close()
        # (checked before the writer stops: the listener must be gone when close returns)
        alive = listener.is_alive()
        left = _listener_threads() - before
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not alive, f"cycle {cycle}: the listener outlived close()"
    assert left == set()
    assert not thread.is_alive()


def test_close_while_another_process_writes_never_leaves_the_listener(open_mos, pg_url):
    """Each cycle: a fresh MemOS follows the feed while another one (its own vault
    connections, as another process would) keeps writing; its close runs while the listener
    is woken again and again and catches up under the write lock."""
    before = _listener_threads()
    writer = open_mos(listen=False)
    for cycle in range(20):
        _close_while_writing(pg_url, writer, cycle, before)

    # a listener still wakes its follower when another process writes
    reader = open_mos()
    wait_until(lambda: listening(reader))
    applied = reader.store.follower.applied
    writer.add("one more note", user_id="bob")
    wait_until(lambda: reader.store.follower.applied > applied)
    listener = reader.vault._listener
    reader.close()
    assert not listener.is_alive()
    assert _listener_threads() - before == set()


def _in_catch_up(thread: threading.Thread) -> bool:
    """``thread`` is inside the follower's catch-up (where it takes the write lock)."""
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if frame.f_code.co_name == "_catch_up":
            return True
        frame = frame.f_back
    return False


def test_close_inside_a_write_while_the_listener_waits_for_the_write_lock(open_mos, pg_url):
    """A change listener closes the MemOS from inside its own write (the closing thread holds
    the write lock) while the listener thread, woken by another process's commit, waits for
    that lock to catch up: close must not wait there for the listener. close() inside a call
    refuses new calls and returns at once; the close runs as the write returns (after the
    lock is released), and the listener is gone when it has."""
    before = _listener_threads()
    writer = open_mos(listen=False)
    mos = MemOS(pg_url, config=MemOSConfig(show_progress=False))
    listener = mos.vault._listener
    wait_until(lambda: listening(mos))
    seen: dict[str, bool] = {}

    def close_inside(cubes) -> None:
        if threading.current_thread() is not threading.main_thread() or seen:
            return  # (the listener thread's catch-ups call it too)
        seen["armed"] = True
        writer.add("The paddles hang in the shed.", user_id="bob")  # another process commits
        # woken by that commit (or this write's own), the listener waits for the write lock
        wait_until(lambda: _in_catch_up(listener))
        mos.close()  # still inside the write, holding the write lock: returns at once
        seen["closed_inside"] = mos.closed

    mos.on_change(close_inside)
    try:
        mos.add("The kayak is in the boathouse.", user_id="alice")
    except Exception:  # noqa: BLE001 - the write may notice the close under it
        pass
    assert seen["closed_inside"] is False  # the close waits for the write to return
    assert mos.closed
    assert not listener.is_alive(), "the listener outlived close()"
    assert not _listener_threads() - before


async def test_a_sync_close_in_async_code_does_not_wait_for_its_own_loops_tasks(pg_url, caplog):
    """Leaving ``with MemOS(url)`` in a coroutine closes on the event loop's thread: a
    native async read of that loop still in flight cannot go on while close blocks the
    loop, so close does not wait for it (it waited 30 s, or forever with timeout_s=None);
    the read then fails with the closed error. ``await aclose()`` waits for it."""
    import asyncio
    import time

    import pytest

    from memos_core.errors import MemOSError

    mos = MemOS(pg_url, config=MemOSConfig(show_progress=False))
    note = mos.add("I like green tea.", user_id="alice")
    await mos.aget(note.id, user_id="alice")  # the loop's pool is open
    pending = asyncio.create_task(mos.alist(user_id="alice"))
    await asyncio.sleep(0)  # it has started and waits on its socket
    began = time.monotonic()
    with caplog.at_level("WARNING", logger="memos_core"):
        mos.close(timeout_s=None)
    assert time.monotonic() - began < 10  # (no wait for the task; None would hang)
    assert not [r for r in caplog.records if "still running" in r.getMessage()]
    with pytest.raises(MemOSError):
        await pending

    other = MemOS(pg_url, config=MemOSConfig(show_progress=False))
    await other.aget(note.id, user_id="alice")
    reading = asyncio.create_task(other.alist(user_id="alice"))
    await asyncio.sleep(0)
    await other.aclose()  # from a worker thread: the loop runs the read to its end
    assert [c.id for c in await reading] == [note.id]
