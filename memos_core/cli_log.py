"""What the ``memos`` command line prints of the library's log: one line per warning.

Without a handler of its own, Python prints a warning of any library on stderr as it was
logged, with its whole traceback (``exc_info``), and the PostgreSQL driver's pool logs each
connection it drops or could not open (``error connecting``, ``discarding closed
connection``, ``error ignored in rollback`` when a SIGTERM ends a query): noise around the
one ``memos: error:`` line that says what went wrong. While a command runs,
:func:`warnings_on_stderr` prints each warning and error of the log as ``memos: warning:
<message>`` (``memos: error:`` from level ERROR on), with the exception's first line and no
traceback, and hides the driver's warnings (its errors stay). ``MEMOS_DEBUG=1`` keeps the
tracebacks and the driver's warnings, for a bug report.

``memos mcp`` serving is left to the MCP SDK's own log set-up (a server's log, with
tracebacks); the driver's warnings are hidden there too.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from memos_core.errors import first_line

__all__ = ["DEBUG_ENV", "debugging", "warnings_on_stderr"]

#: set to anything but "" or "0": warnings keep their tracebacks, the driver's are shown
DEBUG_ENV = "MEMOS_DEBUG"
#: the PostgreSQL driver's loggers (``psycopg_pool`` logs as ``psycopg.pool``)
DRIVER_LOGGERS = ("psycopg", "psycopg.pool")


def debugging() -> bool:
    """Whether ``$MEMOS_DEBUG`` asks for the whole log (tracebacks and the driver's)."""
    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


class WarningLines(logging.Handler):
    """Each record from WARNING on as one ``memos: warning: ...`` line on the current
    ``sys.stderr`` (looked up at every record, so a test's captured stderr is used); with
    ``tracebacks``, the traceback follows it."""

    def __init__(self, *, tracebacks: bool = False) -> None:
        super().__init__(logging.WARNING)
        self.tracebacks = tracebacks

    def emit(self, record: logging.LogRecord) -> None:
        try:
            kind = "error" if record.levelno >= logging.ERROR else "warning"
            text = f"memos: {kind}: {record.getMessage()}"
            exc = record.exc_info[1] if record.exc_info else None
            if exc is not None and self.tracebacks:
                text += "\n" + logging.Formatter().formatException(record.exc_info)  # type: ignore[arg-type]
            elif exc is not None:
                text += f" ({type(exc).__name__}: {first_line(exc)})"
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging must never end the command
            self.handleError(record)


@contextmanager
def warnings_on_stderr(*, handler: bool = True) -> Iterator[None]:
    """While the block runs: the log's warnings as :class:`WarningLines` on stderr (with
    ``handler``) and the driver's warnings hidden (unless :func:`debugging`); both undone
    after it, so that :func:`memos_core.cli.main` called in-process leaves the logging
    set-up as it found it."""
    debug = debugging()
    installed = WarningLines(tracebacks=debug) if handler else None
    root = logging.getLogger()
    if installed is not None:
        root.addHandler(installed)
    drivers = [logging.getLogger(name) for name in DRIVER_LOGGERS]
    levels = [log.level for log in drivers]
    if not debug:
        for log in drivers:
            log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(drivers, levels):
            log.setLevel(level)
        if installed is not None:
            root.removeHandler(installed)
