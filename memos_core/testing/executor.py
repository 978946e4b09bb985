"""A running loop's worker threads kept busy, so that work handed to a thread waits in the
queue for certain (tests of what cancelling such work does)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["cancel_while_queued", "drain_executor", "hold_executor"]


def hold_executor() -> threading.Event:
    """Give the running loop a one-thread default executor and keep that thread busy until
    the returned event is set: whatever is handed to a thread meanwhile waits in the queue."""
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
    gate = threading.Event()
    loop.run_in_executor(None, gate.wait)
    return gate


async def cancel_while_queued(call: asyncio.Future[object], gate: threading.Event) -> None:
    """Cancel ``call`` (a task or future) once it has handed its work to the held executor
    (:func:`hold_executor`), check that its waiter sees the cancellation, then let the
    executor go and wait until everything queued behind the gate has run."""
    await asyncio.sleep(0.05)  # the call has started and queued its work
    call.cancel()
    try:
        await call
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("the call finished instead of being cancelled")
    gate.set()
    await drain_executor()


async def drain_executor() -> None:
    """Return once the work queued before this call in the (one-thread) executor has run."""
    await asyncio.get_running_loop().run_in_executor(None, lambda: None)
