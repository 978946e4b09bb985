"""Stopping a ``memos`` command with SIGTERM the way Ctrl-C stops it: the store is closed.

SIGTERM is how systemd, ``docker stop``, ``timeout`` and MCP clients stop a process. Python's
default for it ends the process at once: ``with MemOS(...)`` never exits, so the vault's
write-ahead log is not checkpointed, the index is not marked clean (the next open checks
it), and server mode's temporary cache directory is left behind. Inside
:func:`exit_on_sigterm` a SIGTERM raises ``SystemExit(143)`` (128 + 15, the status a shell
reports for a process SIGTERM ended) instead, so the stack unwinds through every ``with``
and ``finally`` like a ``KeyboardInterrupt``.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGTERM_STATUS = 128 + signal.SIGTERM


@contextmanager
def exit_on_sigterm() -> Iterator[None]:
    """Within the block, a SIGTERM raises ``SystemExit(143)`` in the main thread.

    Only the first one does: one that comes while the stack unwinds is ignored, so that
    closing the store is not cut short (SIGKILL still ends the process). The handler found
    on entry is restored on exit. A server that handles SIGTERM itself (uvicorn) and
    re-raises it once it has shut down hands it on to this handler. Outside the main thread,
    where Python cannot set signal handlers, the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        raise SystemExit(SIGTERM_STATUS)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        # None: a handler set outside Python, which cannot be put back; the default is
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
