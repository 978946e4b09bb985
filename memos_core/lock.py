"""An exclusive lock on a data directory, held for the life of a MemOS instance, and the
directory's creation (private to its owner); and :func:`waiting_lock`, held around filling a
model cache entry.

The embedded index and the vault's derived state assume one writer process. A second opener
(another process, or a second MemOS on the same directory in this process) gets
:class:`DataDirLockedError` at once instead of corrupting anything.

A server-mode process without ``MemOSConfig.cache_dir`` holds such a lock in its temporary
cache directory (on :data:`TEMPORARY_LOCK`); the kernel frees it when the process dies,
which is how :func:`remove_if_abandoned` tells a killed process's directory from a live one's.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import os
import shutil
import stat
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path

from memos_core.errors import DataDirLockedError, InvalidInputError, MemOSError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt


_log = logging.getLogger("memos_core")

#: The lock file of a server-mode process's temporary cache directory. Not ``LOCK``: a
#: directory a user named as its cache directory (locked on ``LOCK``) is never removed as a
#: dead process's temporary one, whatever its name.
TEMPORARY_LOCK = "TEMPORARY.LOCK"


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) with mode 0700: a data directory, cache directory
    or bundle holds every user's memories, sensitive ones too, and the files inside are
    created with the process umask (often world-readable). A directory that already exists
    is the caller's choice and keeps its mode; a log warning says when other users of this
    machine can enter it."""
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            # a file where a parent directory should be: the OS names only the errno ("File
            # exists"), which reads as a fault of the file system rather than of the path
            blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
            if blocker is None:  # not a file in the way (removed meanwhile): as it is
                raise
            raise InvalidInputError(
                f"{path} cannot be created: {blocker} is a file, not a directory. Give a "
                "directory for memos-core's files (it is created if missing).") from None
        except OSError as exc:  # no permission, a read-only file system: the path's fault
            raise _cannot_create(path, exc) from None
        try:
            path.mkdir(mode=0o700)
            return
        except FileExistsError:  # made meanwhile by someone else: checked below
            pass
        except OSError as exc:
            raise _cannot_create(path, exc) from None
    if not path.is_dir():
        raise InvalidInputError(f"{path} exists and is not a directory; give a directory for "
                                "memos-core's files (it is created if missing).")
    if os.name == "posix" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        _log.warning("%s can be read by other users of this machine (mode %o); memos-core "
                     "keeps every memory there. chmod 700 it to keep them private.",
                     path, stat.S_IMODE(path.stat().st_mode))


def _cannot_create(path: Path, exc: OSError) -> MemOSError:
    """The error for a directory the OS refused to create: Python's bare ``[Errno 13]
    Permission denied: '...'`` named neither what the directory is for nor what to do."""
    return MemOSError(f"{path} cannot be created ({exc.strerror or exc}): give a directory "
                      "memos-core can write, or create it first with the rights it needs.")


#: The lock files this process holds (their real paths): how an open tells "another MemOS of
#: this process" from another process (a pid in the file can be another container's pid 1).
#: A forked child holds none of its parent's locks.
_HELD: set[str] = set()
#: Held from an open's look at :data:`_HELD` to its entry there: of two threads opening one
#: directory at once, the second sees the first's entry (a lock per process, as on NFS, would
#: let both lock the file).
_ACQUIRING = threading.RLock()  # (a finalizer run by acquire's gc.collect() releases under it)
#: One thread lock per :func:`waiting_lock` file (by real path): the file lock excludes other
#: processes, and threads of this one only where it is per open file (flock on a local disk,
#: not the per-process locks of NFS).
_WAITING: dict[str, threading.Lock] = {}
_WAITING_GUARD = threading.Lock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_HELD.clear)
    os.register_at_fork(after_in_child=_WAITING.clear)  # the parent's threads are not here

#: What a refused non-blocking lock raises when another holder has it; any other error is the
#: file system refusing locks altogether (ENOLCK: NFS without its lock manager).
_HELD_ERRNOS = frozenset({errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES})


def _unlock(fd: int) -> None:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError:  # no lock to drop (the file system refused it): closing is what is left
        pass
    finally:
        os.close(fd)


def _dropped(fd: int, path: Path, owner_pid: int) -> None:
    """Run when a held lock is garbage-collected: its MemOS was dropped without ``close()``
    (nothing else holds the lock, and everything that holds the store holds its MemOS, so
    nothing can write there any more). Without this the descriptor stayed open and the
    directory locked against every later open in this process. In a forked child only the
    child's copy of the descriptor is closed: unlocking would unlock the parent's lock (one
    open file, shared)."""
    if os.getpid() != owner_pid:
        os.close(fd)
        return
    _release(fd, path)  # first: a warning turned into an error must not keep it locked
    warnings.warn(f"A MemOS on {path.parent} was garbage-collected without close(); its data "
                  "directory is released now, its index was not flushed (the next open "
                  "checks it). Close it, or open it with `with MemOS(...)`.",
                  ResourceWarning, stacklevel=2)


def _release(fd: int, path: Path) -> None:
    """Unlock and close ``fd`` (the lock of ``path``), then forget that this process holds
    it, both under :data:`_ACQUIRING`: an open in another thread meanwhile sees the entry and
    the lock both, or neither. Forgetting first let it find the file locked and no entry,
    and blame another process (its own pid); where a lock is per process (NFS), it could
    take the lock, which the close then dropped."""
    with _ACQUIRING:
        _unlock(fd)
        _HELD.discard(os.path.realpath(path))


def _try_lock(fd: int) -> bool:
    """Lock ``fd`` without waiting: True if locked now, False if another holder has it.
    Raises ``OSError`` where the file system refuses locks (``ENOLCK``: an NFS mount without
    its lock manager): that is no holder, and taking it for one named a process that does not
    exist."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:  # pragma: no cover
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError as exc:
        if fcntl is None or exc.errno in _HELD_ERRNOS:
            return False
        raise
    return True


def _locks_refused(path: Path, exc: OSError, remedy: str) -> MemOSError:
    return MemOSError(f"Cannot lock {path} ({exc.strerror or exc}): the file system refuses "
                      "file locks (an NFS mount without its lock manager, say), and memos-core "
                      f"locks it so that one process at a time writes there. {remedy}")


@contextlib.contextmanager
def waiting_lock(path: Path, waiting: str, mode: int = 0o666) -> Iterator[bool]:
    """Hold an exclusive lock on the file ``path`` (created if missing, with ``mode`` less the
    umask; never removed: removing
    a lock file lets a waiter lock the old file while a newcomer locks a new one) for the
    ``with`` block, waiting as long as another holder keeps it (logged at INFO: ``waiting``,
    then the path). Threads of this process exclude each other by a thread lock per file
    (the file lock is per process on some file systems, NFS's); a holder that dies releases
    it.

    Yields True when held; False, without the file lock (other threads of this process are
    still excluded), when the file can be neither created nor opened (a read-only cache,
    another user's lock file): a caller that cannot write there cannot fill the cache either,
    and goes on to its read-only handling; and when the file system refuses file locks (a
    log warning says so): the caller fills the cache unlocked, as a process that does not
    take the lock would, and its publishing keeps the first valid result.
    """
    with _thread_lock(path, waiting):
        fd = None
        for flags in (os.O_RDWR | os.O_CREAT, os.O_RDONLY):  # flock needs no write access
            try:
                fd = os.open(path, flags, mode)
                break
            except OSError:
                continue
        if fd is None:
            yield False
            return
        try:
            yield _lock_waiting(fd, path, waiting)
        finally:
            _unlock(fd)


@contextlib.contextmanager
def _thread_lock(path: Path, waiting: str) -> Iterator[None]:
    """Hold this process's thread lock for the lock file ``path`` (see :data:`_WAITING`)."""
    with _WAITING_GUARD:
        lock = _WAITING.setdefault(os.path.realpath(path), threading.Lock())
    if not lock.acquire(blocking=False):
        _log.info("%s (lock file %s, held by another thread)", waiting, path)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _lock_waiting(fd: int, path: Path, waiting: str) -> bool:
    """Lock ``fd``, waiting for another holder: True when locked, False (logged) when the
    file system refuses the lock."""
    try:
        if not _try_lock(fd):
            _log.info("%s (lock file %s)", waiting, path)
            _wait_for_lock(fd)
        return True
    except OSError as exc:
        _log.warning("Cannot lock %s (%s): the file system refuses file locks; going on "
                     "without it (another process may do the same work meanwhile; the first "
                     "valid result is kept). A cache directory on a local disk "
                     "(MEMOS_CACHE_DIR) avoids this.", path, exc.strerror or exc)
        return False


def _wait_for_lock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    while not _try_lock(fd):  # pragma: no cover - Windows: msvcrt has no unbounded wait
        time.sleep(0.5)


def _locked_message(data_dir: Path, holder: str, ours: bool) -> str:
    if ours:
        return (f"The data directory {data_dir} is already open in this process: another "
                "MemOS on it is still open (a notebook cell run twice, say, keeps the first "
                "one). Close that one first (mos.close()), open it with `with MemOS(...) as "
                "mos:`, or keep using it: one MemOS per directory serves every thread and task.")
    return (f"The data directory {data_dir} is already open"
            + (f" (by process {holder})" if holder else "")
            + ". A data directory serves one process at a time: close the other MemOS, or "
            "serve every agent from that one process (MemOS is thread-safe; async twins run "
            "in worker threads). For several processes (web server workers, many agents), "
            "open the server mode instead, MemOS('postgresql://...'): one PostgreSQL shared "
            "by any number of processes (see docs/scale_out.md).")


class DataDirLock:
    def __init__(self, data_dir: Path, name: str = "LOCK") -> None:
        self.path = data_dir / name
        self._fd: int | None = None
        self._release_lock = threading.Lock()
        self._finalizer: weakref.finalize[[int, Path, int], DataDirLock] | None = None

    def acquire(self) -> None:
        """Lock the lock file (created if missing) for this instance until :meth:`release`.

        Raises :class:`DataDirLockedError` if another process holds it, or another instance
        in this process (told by this process's own record, not by the lock: on NFS a lock
        is per process, and this process would get its own lock again); :class:`MemOSError`
        if the file cannot be opened or written (a full disk) or the file system refuses
        locks. A failed acquire leaves nothing locked or open."""
        key = os.path.realpath(self.path)
        with _ACQUIRING:
            if key in _HELD:  # a MemOS dropped without close() but not yet collected (it is
                gc.collect()  # in a reference cycle): collecting it releases the lock
            if key in _HELD:
                raise DataDirLockedError(_locked_message(self.path.parent, "", True))
            for _ in range(5):
                fd = self._open()
                if fcntl is None or _locks_current(fd, self.path):
                    self._hold(fd)
                    return
                _unlock(fd)  # a remover took the file away after this open: lock the new one
        raise MemOSError(f"The lock file {self.path} was removed each time it was locked: "
                         "something is deleting the data directory's files. Stop it, or give "
                         "another directory.")

    def _open(self) -> int:
        """Open and lock the lock file; its descriptor (closed if this raises)."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:  # a read-only disk, no permission, a directory named LOCK
            raise MemOSError(
                f"Cannot open the lock file {self.path} ({exc.strerror}): memos-core needs to "
                "write in the data directory. Check its permissions and that the disk is "
                "writable.") from None
        try:
            locked = _try_lock(fd)
        except OSError as exc:
            os.close(fd)
            raise _locks_refused(self.path, exc, "Use a directory on a local disk (or mount "
                                 "the share with its lock manager running).") from None
        if not locked:
            holder = ""
            try:
                holder = os.read(fd, 64).decode(errors="replace").strip()
            except OSError:
                pass
            os.close(fd)
            raise DataDirLockedError(_locked_message(self.path.parent, holder, False))
        return fd

    def acquire_new(self) -> None:
        """Lock a lock file that does not exist yet, in a directory this process just made
        (a server-mode temporary cache directory): it is created and locked under another
        name and only then renamed into place, so :func:`remove_if_abandoned` never finds it
        unlocked while its maker is alive (it would remove the directory, and take the lock
        from under the maker's first try)."""
        if fcntl is None:  # pragma: no cover - Windows renames no open file: a plain acquire
            self.acquire()
            return
        new = self.path.with_name(f".{self.path.name}.new")
        try:
            fd = os.open(new, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise MemOSError(
                f"Cannot create the lock file {new} ({exc.strerror}): memos-core needs to "
                "write in its temporary directory. Check that the disk is writable, or give "
                "MemOSConfig.cache_dir.") from None
        try:
            if not _try_lock(fd):  # no one else can know the file: the kernel refused a lock
                raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                new.unlink()
            raise _locks_refused(new, exc, "Give MemOSConfig.cache_dir on a local "
                                 "disk.") from None
        self._hold(fd, new)

    def _hold(self, fd: int, new: Path | None = None) -> None:
        """Keep ``fd``, whose lock this process has just taken, until :meth:`release`, with
        this process's pid in it (renamed from ``new`` to the lock file's name first, if
        given). If that fails (a full disk), the lock is released and the file closed, and
        :class:`MemOSError` says so: a descriptor left open kept the directory locked
        against this very process."""
        key = os.path.realpath(self.path)
        _HELD.add(key)  # before the rename: a sweep in this process never takes it for a dead one
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            if new is not None:
                os.replace(new, self.path)
        except BaseException as exc:
            _HELD.discard(key)
            _unlock(fd)
            if new is not None:
                with contextlib.suppress(OSError):
                    new.unlink(missing_ok=True)
            if not isinstance(exc, OSError):
                raise
            raise MemOSError(
                f"Cannot write the lock file {self.path} ({exc.strerror or exc}): the disk "
                "may be full or over its quota. Free some space (or give a directory on "
                "another disk) and open it again; nothing was changed.") from None
        self._fd = fd
        self._finalizer = weakref.finalize(self, _dropped, fd, self.path, os.getpid())
        self._finalizer.atexit = False  # at exit the process's end releases it

    def release(self) -> None:
        """Unlock and close the lock file; idempotent, also from several threads at once
        (the descriptor is taken once: closing it twice could close another file that got
        its number meanwhile)."""
        with self._release_lock:
            fd, self._fd = self._fd, None
            if self._finalizer is not None:
                self._finalizer.detach()
        if fd is None:
            return
        _release(fd, self.path)


def _locks_current(fd: int, path: Path) -> bool:
    """Whether ``fd``, just locked, is still the file at ``path``: a remover (``memos``
    removing the empty store a failed command made, a sweep) may have removed it between
    this process's open and its lock, and a lock on a removed file excludes no one."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except OSError:
        return False


def remove_if_abandoned(directory: Path) -> bool:
    """Remove ``directory`` if a process locked its :data:`TEMPORARY_LOCK` file and no longer
    holds it: the process died without removing it (SIGKILL, the OOM killer). Returns True
    if it was removed (by this call or by another remover at the same time).

    The lock is tried, never waited for: a held one (a live process, in this process too)
    leaves the directory alone, as does a directory without that file (an older version's,
    a cache directory a user named, not memos-core's) and one whose lock file this user
    cannot open (another user's), or that is on a file system refusing locks. The lock file
    is removed last, so a removal that fails half-way (an ``OSError``, raised) is found again
    by the next call."""
    lock_path = directory / TEMPORARY_LOCK
    if os.path.realpath(lock_path) in _HELD:  # ours (a lock per process, as on NFS, would
        return False  # let this process take its own lock again)
    try:
        fd = os.open(lock_path, os.O_RDWR)  # never created here: none, not ours to judge
    except OSError:  # missing (or removed meanwhile), another user's, not a file
        return False
    try:
        try:
            if not _try_lock(fd):
                return False  # its process is alive
        except OSError:  # a file system refusing locks: no lock tells a dead process there
            return False
        try:
            remove_lock_last(directory)
        except FileNotFoundError:  # another remover took the lock first and finished
            if directory.exists():
                raise
        return True
    finally:
        _unlock(fd)


def remove_lock_last(directory: Path) -> None:
    """Remove a temporary cache directory, its :data:`TEMPORARY_LOCK` file last: if this
    stops half-way (an ``OSError``; the process is killed while closing), what is left keeps
    the lock file, by which :func:`remove_if_abandoned` finds it."""
    for child in list(os.scandir(directory)):
        if child.name == TEMPORARY_LOCK:
            continue
        if child.is_dir(follow_symlinks=False):
            shutil.rmtree(child.path)
        else:
            os.unlink(child.path)
    lock_path = directory / TEMPORARY_LOCK
    lock_path.unlink(missing_ok=True)
    try:
        os.rmdir(directory)
    except OSError:
        # an entry made after the listing (a thread still writing while its process closes):
        # a new, unlocked lock file lets the next sweep find the directory and remove it
        if directory.is_dir():
            with contextlib.suppress(OSError):
                os.close(os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600))
        raise
