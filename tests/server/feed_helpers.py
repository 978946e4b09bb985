"""Helpers of the server-mode tests that watch the change-feed listener."""

from __future__ import annotations

import time
from collections.abc import Callable

from memos_core import MemOS


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def listening(mos: MemOS) -> bool:
    """The listener is connected and its first wake-up (after LISTEN) has happened."""
    conn = mos.vault._listen_conn
    return conn is not None and mos.store.follower._woken_on is conn
