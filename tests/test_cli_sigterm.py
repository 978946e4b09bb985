"""SIGTERM (systemd, ``docker stop``, ``timeout``, an MCP client stopping its server) stops a
``memos`` command as Ctrl-C does: the stack unwinds through ``with MemOS(...)``, so the store
is closed (the vault's write-ahead log checkpointed and removed, the index marked clean, the
data directory released), and the exit status is 143. Python's default ended the process at
once and left all of that undone. ``memos mcp`` is covered in tests/mcp_server/test_mcp_stop.py.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import pytest

from memos_core import MemOS, MemOSConfig
from memos_core.cli import main
from memos_core.signals import exit_on_sigterm, uninterrupted_close

#: the ``assert_closed_cleanly`` fixture (tests/conftest.py)
Checker = Callable[[Path], None]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


class _Unhandled(Exception):
    """What this file's own SIGTERM handler raises: the code under test did not take it."""


def _unhandled(signum: int, frame: FrameType | None) -> None:
    raise _Unhandled("SIGTERM reached the handler outside the command")


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
                                                   capsys: pytest.CaptureFixture[str],
                                                   assert_closed_cleanly: Checker) -> None:
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


def test_a_sigterm_while_a_resource_closes_is_ignored() -> None:
    """``uninterrupted_close``: from the start of the close to the end of the
    ``exit_on_sigterm`` block SIGTERM is ignored, whether the block ended normally or by a
    first SIGTERM; outside the block the handler found on entry is back."""
    class Resource:
        closed = False

        def __enter__(self) -> Resource:
            return self

        def __exit__(self, *exc: object) -> None:
            os.kill(os.getpid(), signal.SIGTERM)  # interrupted the close before
            time.sleep(0.05)
            self.closed = True

    previous = signal.signal(signal.SIGTERM, _unhandled)
    try:
        with exit_on_sigterm(), uninterrupted_close(Resource()) as done:
            pass
        assert done.closed
        with pytest.raises(SystemExit) as stopped:
            with exit_on_sigterm(), uninterrupted_close(Resource()) as stopping:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(30)  # interrupted by the handler
        assert stopped.value.code == 143 and stopping.closed
        assert signal.getsignal(signal.SIGTERM) is _unhandled
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_ctrl_c_while_a_resource_closes_is_held(capfd: pytest.CaptureFixture[str]) -> None:
    """A second Ctrl-C while the store closed (the first one's KeyboardInterrupt unwinding)
    raised another KeyboardInterrupt inside the close and cut it short. From the start of
    the close to the end of the ``exit_on_sigterm`` block SIGINT is now held: one line says
    to wait, the close finishes, the first KeyboardInterrupt goes on; then SIGINT's handler
    is back."""
    class Resource:
        closed = False

        def __enter__(self) -> Resource:
            return self

        def __exit__(self, *exc: object) -> None:
            for _ in range(2):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # the handler runs here
            self.closed = True

    before = signal.getsignal(signal.SIGINT)
    with exit_on_sigterm(), uninterrupted_close(Resource()) as done:
        pass
    assert done.closed and capfd.readouterr().err == "memos: closing the store, please wait\n"
    with pytest.raises(KeyboardInterrupt):
        with exit_on_sigterm(), uninterrupted_close(Resource()) as stopping:
            os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C
            time.sleep(30)  # interrupted by it
    assert stopping.closed and capfd.readouterr().err.count("please wait") == 1
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
@pytest.mark.parametrize("command", ["list", "mcp"])
def test_a_signal_while_the_store_closes_does_not_cut_the_close_short(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, signum: int,
        assert_closed_cleanly: Checker) -> None:
    """The command is done and the store closing when a SIGTERM comes (the MCP SDK's client
    closes the server's stdin, waits 2 s, then sends SIGTERM; a large index takes longer to
    write; ``MemOS.close`` is wrapped here to send it at the start): it used to raise SystemExit(143) inside ``MemOS.close()``, leaving the index
    not marked clean. Now the close finishes and the command exits as it would have. The
    same for a Ctrl-C (SIGINT), which raised KeyboardInterrupt there."""
    data = tmp_path / "d"
    MemOS(data, config=MemOSConfig(show_progress=False)).close()
    closes = []
    close = MemOS.close

    def close_signalled(self: MemOS) -> None:
        os.kill(os.getpid(), signum)
        time.sleep(0.05)  # the handler runs here
        closes.append(self)
        close(self)

    monkeypatch.setattr(MemOS, "close", close_signalled)
    stdin_r, stdin_w = os.pipe()
    os.close(stdin_w)  # `memos mcp` over stdio: the client has gone
    monkeypatch.setattr(sys, "stdin", open(stdin_r, "r", encoding="utf-8"))  # noqa: SIM115
    monkeypatch.setattr(sys, "stdout", open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115
    previous = signal.signal(signal.SIGTERM, _unhandled)
    try:
        code = main([command, "--data-dir", str(data), "--user", "alice"])
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.stdin.close()
        sys.stdout.close()
    assert code == 0 and len(closes) == 1
    assert_closed_cleanly(data)
