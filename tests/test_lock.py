"""The inter-process locks (memos_core.lock) where the file system misbehaves: a full disk, a
file system that refuses locks, locks per process (NFS), a lock file removed by another
process. The file system's answers are simulated by replacing the os / fcntl functions the
lock module calls; every file is a real one."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import subprocess
import sys
import threading
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from memos_core import DataDirLockedError, MemOS, MemOSConfig, MemOSError
from memos_core import lock as lock_module
from memos_core.lock import (
    TEMPORARY_LOCK,
    DataDirLock,
    remove_if_abandoned,
    remove_lock_last,
    waiting_lock,
)


def _fcntl_with(flock: Callable[[int, int], Any]) -> types.SimpleNamespace:
    return types.SimpleNamespace(LOCK_EX=fcntl.LOCK_EX, LOCK_NB=fcntl.LOCK_NB,
                                 LOCK_UN=fcntl.LOCK_UN, flock=flock)


def _refuse_locks(fd: int, op: int) -> None:
    raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))


#: Locks per process, as the Linux NFS client gives for flock: POSIX record locks.
_POSIX_LOCKS = _fcntl_with(lambda fd, op: fcntl.lockf(fd, op))


def _failing_once(real: Callable[..., Any], err: int) -> Callable[..., Any]:
    calls: list[int] = []

    def fail(*args: Any) -> Any:
        if not calls:
            calls.append(1)
            raise OSError(err, os.strerror(err))
        return real(*args)
    return fail


# ------------------------------------------------------------------ a full disk


def test_a_full_disk_while_writing_the_pid_leaves_the_directory_unlocked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The descriptor stayed open and locked: the first open raised a raw OSError, every
    later one in this process DataDirLockedError naming no process."""
    monkeypatch.setattr(os, "write", _failing_once(os.write, errno.ENOSPC))
    with pytest.raises(MemOSError, match=r"Cannot write the lock file .*LOCK \(No space left "
                                         r"on device\).*disk may be full") as caught:
        DataDirLock(tmp_path).acquire()
    assert not isinstance(caught.value, DataDirLockedError)
    with MemOS(tmp_path, config=MemOSConfig(show_progress=False)) as mos:  # space is back
        mos.add("the disk has room again", user_id="u")


def test_a_failed_rename_of_a_new_lock_file_leaves_nothing_locked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "replace", _failing_once(os.replace, errno.ENOSPC))
    with pytest.raises(MemOSError, match="No space left on device"):
        DataDirLock(tmp_path, TEMPORARY_LOCK).acquire_new()
    assert sorted(os.listdir(tmp_path)) == []  # the .new file is gone: a retry can make it
    lock = DataDirLock(tmp_path, TEMPORARY_LOCK)
    lock.acquire_new()
    try:
        assert not remove_if_abandoned(tmp_path)
    finally:
        lock.release()
    assert remove_if_abandoned(tmp_path)  # unlocked: nothing of the failed try holds it


# ------------------------------------------------------- a file system refusing locks


def test_a_file_system_refusing_locks_is_no_holder(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOLCK (NFS without its lock manager) was taken for another holder: "already open"."""
    monkeypatch.setattr(lock_module, "fcntl", _fcntl_with(_refuse_locks))
    with pytest.raises(MemOSError, match=r"Cannot lock .*LOCK \(No locks available\): the "
                                         r"file system refuses file locks") as caught:
        DataDirLock(tmp_path).acquire()
    assert not isinstance(caught.value, DataDirLockedError)
    (tmp_path / "new").mkdir()
    with pytest.raises(MemOSError, match="refuses file locks.*cache_dir"):
        DataDirLock(tmp_path / "new", TEMPORARY_LOCK).acquire_new()
    assert os.listdir(tmp_path / "new") == []
    (tmp_path / "dead").mkdir()
    (tmp_path / "dead" / TEMPORARY_LOCK).touch()
    assert not remove_if_abandoned(tmp_path / "dead")  # no lock tells a dead process there
    assert (tmp_path / "dead").exists()


def test_waiting_lock_goes_on_unlocked_where_locks_are_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """It logged "waiting for another process" and raised the raw OSError [Errno 37] out of
    ensure_converted and export_onnx."""
    monkeypatch.setattr(lock_module, "fcntl", _fcntl_with(_refuse_locks))
    caplog.set_level(logging.INFO, logger="memos_core")
    with waiting_lock(tmp_path / ".m.lock", "waiting for another process's export") as held:
        assert held is False
    assert "waiting for another process" not in caplog.text
    assert "refuses file locks; going on without it" in caplog.text


def test_waiting_lock_goes_on_unlocked_where_the_wait_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A blocking lock that fails after the try found a holder (EDEADLK from POSIX locks,
    ENOLCK) raised the raw OSError."""
    def flock(fd: int, op: int) -> None:
        if op & fcntl.LOCK_NB:
            raise OSError(errno.EWOULDBLOCK, "held")
        if op != fcntl.LOCK_UN:
            raise OSError(errno.EDEADLK, os.strerror(errno.EDEADLK))

    monkeypatch.setattr(lock_module, "fcntl", _fcntl_with(flock))
    with waiting_lock(tmp_path / ".m.lock", "waiting") as held:
        assert held is False


# ------------------------------------------------------------ locks per process (NFS)


def test_a_second_open_in_this_process_is_refused_where_locks_are_per_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With locks per process the second lock was granted: two MemOS on one directory, and
    releasing either released both."""
    monkeypatch.setattr(lock_module, "fcntl", _POSIX_LOCKS)
    first = DataDirLock(tmp_path)
    first.acquire()
    try:
        with pytest.raises(DataDirLockedError, match="already open in this process"):
            DataDirLock(tmp_path).acquire()
        probe = subprocess.run(  # another process: the first lock still holds
            [sys.executable, "-c",
             "import fcntl, os, sys\n"
             f"fd = os.open({str(tmp_path / 'LOCK')!r}, os.O_RDWR)\n"
             "try: fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
             "except OSError: sys.exit(3)\n"],
            timeout=60)
        assert probe.returncode == 3
    finally:
        first.release()
    again = DataDirLock(tmp_path)
    again.acquire()
    again.release()


def test_threads_exclude_each_other_in_waiting_lock_where_locks_are_per_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lock_module, "fcntl", _POSIX_LOCKS)
    inside, release = threading.Event(), threading.Event()
    second_inside = threading.Event()

    def first() -> None:
        with waiting_lock(tmp_path / ".m.lock", "waiting") as held:
            assert held
            inside.set()
            release.wait(30)

    def second() -> None:
        with waiting_lock(tmp_path / ".m.lock", "waiting") as held:
            assert held
            second_inside.set()

    threads = [threading.Thread(target=first, daemon=True),
               threading.Thread(target=second, daemon=True)]
    threads[0].start()
    assert inside.wait(30)
    threads[1].start()
    try:
        assert not second_inside.wait(1.0)  # it waits for the first thread
    finally:
        release.set()
    assert second_inside.wait(30)
    for thread in threads:
        thread.join(30)


# ------------------------------------------------------------ removed lock files


def test_a_lock_file_removed_between_open_and_lock_is_not_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A remover (``memos`` removing the empty store a failed command made) takes the LOCK
    file away after this process opened it: the lock on the removed file excluded no one (a
    third process made a new LOCK and locked it as well)."""
    real_open = os.open
    path = tmp_path / "LOCK"
    removed: list[int] = []

    def open_then_removed(file: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        fd = real_open(file, flags, *args, **kwargs)
        if Path(file) == path and not removed:
            removed.append(1)
            os.unlink(path)
        return fd

    monkeypatch.setattr(os, "open", open_then_removed)
    lock = DataDirLock(tmp_path)
    lock.acquire()
    try:
        assert removed and lock._fd is not None
        assert os.fstat(lock._fd).st_ino == os.stat(path).st_ino
    finally:
        lock.release()


def test_a_temporary_directory_that_cannot_be_removed_keeps_a_lock_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry made after the listing failed the rmdir after the lock file was removed: no
    sweep found the directory again."""
    cache = tmp_path / "memos-cache-x"
    cache.mkdir()
    (cache / "kv").mkdir()
    (cache / TEMPORARY_LOCK).touch()
    real_rmdir = os.rmdir

    def late_entry(path: Any, *args: Any, **kwargs: Any) -> None:
        if Path(path) == cache and not (cache / "late").exists():
            (cache / "late").touch()  # a thread still writing while its process closes
        real_rmdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "rmdir", late_entry)
    with pytest.raises(OSError):
        remove_lock_last(cache)
    assert (cache / TEMPORARY_LOCK).exists()
    monkeypatch.setattr(os, "rmdir", real_rmdir)
    assert remove_if_abandoned(cache) and not cache.exists()


# ------------------------------------------------------------------ closing while another opens


@pytest.mark.parametrize("how", ["release", "dropped"])
def test_a_release_unlocks_before_this_process_forgets_the_lock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """While a lock is released, an open in another thread sees it as this process's until
    it is unlocked. Forgetting it first let that open find the file locked, no entry, and
    report the directory open "by process <its own pid>" (or, where locks are per process,
    take the lock the release then dropped). A ResourceWarning turned into an error does not
    keep a dropped one locked."""
    lock = DataDirLock(tmp_path)
    lock.acquire()
    key = os.path.realpath(tmp_path / "LOCK")
    held_at_unlock: list[bool] = []
    unlock = lock_module._unlock

    def watching(fd: int) -> None:
        held_at_unlock.append(key in lock_module._HELD)
        unlock(fd)

    monkeypatch.setattr(lock_module, "_unlock", watching)
    if how == "release":
        lock.release()
    else:
        lock._finalizer.detach()  # type: ignore[union-attr] - run by hand, as a collection would
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)  # python -W error
            with pytest.raises(ResourceWarning):
                lock_module._dropped(lock._fd, lock.path, os.getpid())  # type: ignore[arg-type]
        lock._fd = None
    assert held_at_unlock == [True] and key not in lock_module._HELD
    again = DataDirLock(tmp_path)
    again.acquire()  # nothing left locked
    again.release()
