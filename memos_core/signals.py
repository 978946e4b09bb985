"""Stopping a ``memos`` command with SIGTERM the way Ctrl-C stops it: the store is closed.

SIGTERM is how systemd, ``docker stop``, ``timeout`` and MCP clients stop a process. Python's
default for it ends the process at once: ``with MemOS(...)`` never exits, so the vault's
write-ahead log is not checkpointed, the index is not marked clean (the next open checks
it), and server mode's temporary cache directory is left behind. Inside
:func:`exit_on_sigterm` a SIGTERM raises ``SystemExit(143)`` (128 + 15, the status a shell
reports for a process SIGTERM ended) instead, so the stack unwinds through every ``with``
and ``finally`` like a ``KeyboardInterrupt``.

A close is never cut short: the store is opened with :func:`uninterrupted_close`, and from
the moment its close begins -- after a first SIGTERM, or because the command is done (the
MCP SDK's client closes the server's stdin, waits 2 s and then sends SIGTERM, which may
come while a large index is still being written) -- every SIGTERM is ignored until the
:func:`exit_on_sigterm` block ends. The process then exits as it would have without it.
SIGKILL still ends it at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from types import FrameType
from typing import Any, TypeVar

SIGTERM_STATUS = 128 + signal.SIGTERM
#: what ``signal.getsignal`` returns
Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None

T = TypeVar("T")


class _Handler:
    """The SIGTERM handler of one :func:`exit_on_sigterm` block: the first SIGTERM raises
    ``SystemExit(143)``; once one has, or once a close has begun (``closing``), it ignores
    them."""

    def __init__(self) -> None:
        self.closing = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.closing:
            return
        self.closing = True
        raise SystemExit(SIGTERM_STATUS)


@contextmanager
def exit_on_sigterm() -> Iterator[None]:
    """Within the block, a SIGTERM raises ``SystemExit(143)`` in the main thread.

    Only the first one does, and none once a close has begun (:func:`uninterrupted_close`):
    one that comes while the stack unwinds or the store closes is ignored, so that closing
    the store is not cut short (SIGKILL still ends the process). The handler found on entry
    is restored on exit. A server that handles SIGTERM itself (uvicorn) and re-raises it
    once it has shut down hands it on to this handler; the stdio MCP server takes it in its
    event loop (a handler raising at an arbitrary point of an event loop can be swallowed by
    library code: :func:`memos_core.mcp_server.server.serve_stdio`) and raises the same
    ``SystemExit(143)`` once the loop has stopped. Inside another ``exit_on_sigterm``
    block (``memos mcp`` runs inside the ``memos`` command's) the block runs unchanged: the
    outer one handles SIGTERM. Outside the main thread, where Python cannot set signal
    handlers, the block runs unchanged too.
    """
    if (threading.current_thread() is not threading.main_thread()
            or isinstance(signal.getsignal(signal.SIGTERM), _Handler)):
        yield
        return
    previous = signal.signal(signal.SIGTERM, _Handler())
    try:
        yield
    finally:
        restore_sigterm(previous)


def restore_sigterm(previous: Handler) -> None:
    """Put back the SIGTERM handler ``previous`` (what ``signal.signal`` or
    ``signal.getsignal`` returned); None, a handler set outside Python, cannot be put back:
    the default is."""
    if signal.getsignal(signal.SIGTERM) is not previous:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


@contextmanager
def uninterrupted_close(resource: AbstractContextManager[T]) -> Iterator[T]:
    """``with resource as value``, whose exit (closing the store) SIGTERM does not cut short.

    When the block ends -- normally, by an exception, or by a first SIGTERM's
    ``SystemExit(143)`` -- SIGTERM is ignored from before ``resource`` exits until the
    enclosing :func:`exit_on_sigterm` block ends. Outside one (or outside the main thread),
    the same as ``with resource``.
    """
    with resource as value:
        try:
            yield value
        finally:
            handler = signal.getsignal(signal.SIGTERM)
            if isinstance(handler, _Handler):
                handler.closing = True
