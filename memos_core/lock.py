"""An exclusive lock on a data directory, held for the life of a MemOS instance.

The embedded index and the vault's derived state assume one writer process. A second opener
(another process, or a second MemOS on the same directory in this process) gets
:class:`DataDirLockedError` at once instead of corrupting anything.
"""

from __future__ import annotations

import os
from pathlib import Path

from memos_core.errors import DataDirLockedError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "LOCK"
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:  # pragma: no cover
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            holder = ""
            try:
                holder = os.read(fd, 64).decode(errors="replace").strip()
            except OSError:
                pass
            os.close(fd)
            raise DataDirLockedError(
                f"The data directory {self.path.parent} is already open"
                + (f" (by process {holder})" if holder else "")
                + ". A data directory serves one process at a time: close the other MemOS, or "
                "serve every agent from that one process (MemOS is thread-safe; async twins "
                "run in worker threads). To take the vector index off this machine, run a "
                "Qdrant server and open the store with MemOSConfig(index='qdrant', "
                "qdrant_url=...); the vault stays single-writer (see docs/scale_out.md)."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            if fcntl is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None
