"""A write held between its commit and its late redaction: the moment a cancelled caller used
to split (the adapters' tests of ``memos_core.integration.whole``)."""

from __future__ import annotations

import threading
from typing import Any


def hold_after_commit(mos: Any, monkeypatch: Any) -> tuple[threading.Event, threading.Event]:
    """Hold every write's follow-up on ``mos`` -- its wait for the forget's pass
    (``LateWrite.amissed``), which comes after the write committed -- until released
    (``monkeypatch``: pytest's). Returns ``(waiting, go)``: ``waiting`` is set once a
    follow-up is held; set ``go`` to let it on (after 30 s it goes on by itself)."""
    passes = mos.store.forget_passes
    real_wait = passes.wait
    waiting, go = threading.Event(), threading.Event()

    def held_wait() -> None:
        waiting.set()
        go.wait(30)
        real_wait()

    monkeypatch.setattr(passes, "wait", held_wait)
    return waiting, go
