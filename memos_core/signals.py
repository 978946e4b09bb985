"""Stopping a ``memos`` command with SIGTERM the way Ctrl-C stops it: the store is closed.

SIGTERM is how systemd, ``docker stop``, ``timeout`` and MCP clients stop a process. Python's
default for it ends the process at once: ``with MemOS(...)`` never exits, so the vault's
write-ahead log is not checkpointed, the index is not marked clean (the next open checks
it), and server mode's temporary cache directory is left behind. Inside
:func:`exit_on_sigterm` a SIGTERM raises ``SystemExit(143)`` (128 + 15, the status a shell
reports for a process SIGTERM ended) instead, so the stack unwinds through every ``with``
and ``finally`` like a ``KeyboardInterrupt``.

A close is never cut short: the store is opened with :func:`uninterrupted_close`, and from
the moment its close begins -- after a first SIGTERM or Ctrl-C, or because the command is
done (the MCP SDK's client closes the server's stdin, waits 2 s and then sends SIGTERM,
which may come while a large index is still being written) -- every SIGTERM and SIGINT is
ignored until the :func:`exit_on_sigterm` block ends; the first SIGINT then prints one line
on stderr, ``memos: closing the store, please wait``. The process then exits as it would
have without them. SIGKILL still ends it at once.
"""

from __future__ import annotations

import os
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


CLOSING_NOTE = b"memos: closing the store, please wait\n"
"""What a Ctrl-C during the store's close prints (once), instead of cutting it short."""


class _Handler:
    """The SIGTERM handler of one :func:`exit_on_sigterm` block: the first SIGTERM raises
    ``SystemExit(143)``; once one has, or once a close has begun (``closing``), it ignores
    them. From :meth:`begin_close` until :meth:`end_close` it holds SIGINT too."""

    def __init__(self) -> None:
        self.closing = False
        self._sigint: Handler = None  # SIGINT's handler before begin_close
        self._holding_sigint = False
        self._noted = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.closing:
            return
        self.closing = True
        raise SystemExit(SIGTERM_STATUS)

    def begin_close(self) -> None:
        """The store's close begins: ignore SIGTERM, and hold SIGINT (a second Ctrl-C, while
        a first one's ``KeyboardInterrupt`` unwinds, raised another inside the close and
        cut it short: the index left to be checked at the next open)."""
        self.closing = True
        if not self._holding_sigint:
            self._sigint = signal.signal(signal.SIGINT, self._on_sigint)
            self._holding_sigint = True

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if not self._noted:
            self._noted = True
            try:  # os.write: print() could re-enter a write of stderr this signal interrupted
                os.write(2, CLOSING_NOTE)
            except OSError:
                pass

    def end_close(self) -> None:
        """Put SIGINT's handler back (the block ends)."""
        if self._holding_sigint:
            self._holding_sigint = False
            restore_signal(signal.SIGINT, self._sigint)


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
    handler = _Handler()
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        handler.end_close()
        restore_sigterm(previous)


def restore_sigterm(previous: Handler) -> None:
    """Put back the SIGTERM handler ``previous`` (what ``signal.signal`` or
    ``signal.getsignal`` returned); None, a handler set outside Python, cannot be put back:
    the default is."""
    restore_signal(signal.SIGTERM, previous)


def restore_signal(signum: int, previous: Handler) -> None:
    """Put back the handler ``previous`` of ``signum`` (see :func:`restore_sigterm`)."""
    if signal.getsignal(signum) is not previous:
        signal.signal(signum, previous if previous is not None else signal.SIG_DFL)


@contextmanager
def uninterrupted_close(resource: AbstractContextManager[T]) -> Iterator[T]:
    """``with resource as value``, whose exit (closing the store) neither SIGTERM nor
    Ctrl-C cuts short.

    When the block ends -- normally, by an exception, by a first SIGTERM's
    ``SystemExit(143)`` or a first Ctrl-C's ``KeyboardInterrupt`` -- SIGTERM and SIGINT are
    ignored from before ``resource`` exits until the enclosing :func:`exit_on_sigterm` block
    ends (a SIGINT prints :data:`CLOSING_NOTE` once). Outside one (or outside the main
    thread), the same as ``with resource``.
    """
    with resource as value:
        try:
            yield value
        finally:
            handler = signal.getsignal(signal.SIGTERM)
            if isinstance(handler, _Handler):
                if threading.current_thread() is threading.main_thread():
                    handler.begin_close()
                else:  # pragma: no cover - the CLIs close in the main thread
                    handler.closing = True
