"""Stopping a server process a test started (``memos mcp --http`` and the like)."""

from __future__ import annotations

import signal
import subprocess


def interrupt(proc: subprocess.Popen[str], timeout: float = 60.0) -> int:
    """Stop ``proc`` as Ctrl-C would (SIGINT), killing it if it has not exited after
    ``timeout`` seconds; returns its exit status (0 or 130 after a clean stop)."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=30)
