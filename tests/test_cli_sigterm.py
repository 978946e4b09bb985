"""SIGTERM (systemd, ``docker stop``, ``timeout``, an MCP client stopping its server) stops a
``memos`` command as Ctrl-C does: the stack unwinds through ``with MemOS(...)``, so the store
is closed (the vault's write-ahead log checkpointed and removed, the index marked clean, the
data directory released), and the exit status is 143. Python's default ended the process at
once and left all of that undone. ``memos mcp`` is covered in tests/mcp_server/test_mcp_stop.py.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import time
from pathlib import Path
from types import FrameType

import pytest

from memos_core import MemOS, MemOSConfig
from memos_core.cli import main
from memos_core.signals import exit_on_sigterm

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


class _Unhandled(Exception):
    """What this file's own SIGTERM handler raises: the code under test did not take it."""


def _unhandled(signum: int, frame: FrameType | None) -> None:
    raise _Unhandled("SIGTERM reached the handler outside the command")


def assert_closed_cleanly(data: Path) -> None:
    """What ``MemOS.close()`` leaves, and a kill does not: no write-ahead log, the index
    marked clean, the directory free for the next process."""
    assert not (data / "vault.sqlite3-wal").exists()
    db = sqlite3.connect((data / "vault.sqlite3").resolve().as_uri() + "?mode=ro", uri=True)
    try:
        assert db.execute("SELECT value FROM meta WHERE key = 'index_clean'").fetchone() == ("1",)
    finally:
        db.close()


def test_sigterm_raises_system_exit_143_once_and_restores_the_handler() -> None:
    previous = signal.signal(signal.SIGTERM, _unhandled)
    unwound = False
    try:
        with pytest.raises(SystemExit) as stopped:
            with exit_on_sigterm():
                try:
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(30)  # interrupted by the handler
                finally:
                    os.kill(os.getpid(), signal.SIGTERM)  # a second one, while unwinding: ignored
                    time.sleep(0.05)
                    unwound = True
        assert stopped.value.code == 143 and unwound
        assert signal.getsignal(signal.SIGTERM) is _unhandled
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_sigterm_during_a_command_closes_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """``memos add -`` holds the store open while it reads stdin; a SIGTERM then (sent to this
    process, as a service manager would) ends it with 143 and a closed store, nothing added."""
    data = tmp_path / "d"
    with MemOS(data, config=MemOSConfig(show_progress=False)) as mos:
        kept = mos.add("Alice keeps bees.", user_id="alice").id

    class SignalledStdin:
        class buffer:  # noqa: N801 - stands in for sys.stdin.buffer
            @staticmethod
            def read() -> bytes:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(30)  # interrupted by the handler
                return b"never stored"

    monkeypatch.setattr(sys, "stdin", SignalledStdin)
    previous = signal.signal(signal.SIGTERM, _unhandled)
    try:
        code = main(["add", "-", "--data-dir", str(data), "--user", "alice"])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 143, capsys.readouterr().err
    assert_closed_cleanly(data)
    with MemOS(data, config=MemOSConfig(show_progress=False)) as mos:
        assert [c.id for c in mos.list(user_id="alice")] == [kept]
