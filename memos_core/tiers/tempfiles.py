"""Temporary paths the tiers write before renaming them into place, and which of them a
crashed writer left behind.

A KV block file or an adapter directory is first written under a temporary name,
``.<final name>.tmp-<pid>-<hex>`` (:func:`temp_path`), then renamed, so a reader never sees
half of one. A writer registers the temporary path while it writes (:func:`writing`). A
process killed between the two leaves the temporary path, which holds memories' text and
which nobody will rename or delete; whoever finds it must delete it. :func:`writer_gone`
says whether a temporary path is such a leftover:

* its name carries no pid (not a name these writers use): nobody owns it;
* the pid is this process's and this process is not writing the path now: an earlier
  process with the same pid crashed (containers often run their app as the same pid);
* no process with that pid runs;
* the process with that pid started after the path was last modified (Linux, from
  ``/proc``): it cannot be the writer, the pid was reused.

Elsewhere (no ``/proc``) a running process of that pid keeps the path: it may be the writer.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Seconds a process must have started after a temporary path's last change to be taken
#: for a reused pid: file systems with coarse timestamps (FAT: 2 s) round the change down,
#: and a live writer's file must never look older than its writer.
_CLOCK_SLACK_S = 2.0

_lock = threading.Lock()
_writing: set[str] = set()  # names of the temporary paths this process is writing now


def temp_path(target: Path) -> Path:
    """A fresh temporary path beside ``target``, named for this process (see the module)."""
    return target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def made_for(target: Path, path: Path) -> bool:
    """Whether ``path`` is named exactly as :func:`temp_path` names one beside ``target``
    (a user's own ``.notes.tmp-keep`` is not)."""
    pattern = re.escape(f".{target.name}.tmp-") + r"\d+-[0-9a-f]{8}"
    return re.fullmatch(pattern, path.name) is not None


def is_temp_name(name: str) -> bool:
    """Whether ``name`` looks like a :func:`temp_path` name (a dot name with ``.tmp-``)."""
    return name.startswith(".") and ".tmp-" in name


@contextmanager
def writing(path: Path) -> Iterator[Path]:
    """Mark ``path`` as being written by this process for the duration of the block, so
    :func:`writer_gone` keeps it. Enter before the path is created; leave after it was
    renamed or removed."""
    with _lock:
        _writing.add(path.name)
    try:
        yield path
    finally:
        with _lock:
            _writing.discard(path.name)


@contextmanager
def replacing(target: Path) -> Iterator[Path]:
    """A temporary path beside ``target`` (:func:`temp_path`, marked :func:`writing`) for the
    block to write; renamed over ``target`` when the block ends, removed if it raises."""
    with writing(temp_path(target)) as tmp:
        try:
            yield tmp
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)


def writer_gone(path: Path) -> bool:
    """Whether the writer of the temporary path ``path`` is gone, so that it is a leftover
    to delete (the rules are in the module docstring)."""
    try:
        pid = int(path.name.rsplit(".tmp-", 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return True  # not a name temp_path makes: nobody owns it
    if pid == os.getpid():
        with _lock:
            return path.name not in _writing
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    except (OSError, OverflowError):  # not a valid pid at all
        return True
    try:
        changed = path.lstat().st_mtime
    except FileNotFoundError:
        return True  # renamed or removed meanwhile: nothing left to judge
    started = process_start_time(pid)
    return started is not None and started > changed + _CLOCK_SLACK_S


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch, never later than the true
    start: ``/proc/stat``'s boot time is whole seconds, rounded down), or None where it
    cannot be told (no ``/proc``, no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        # field 22, starttime (clock ticks after boot); the name (field 2) may hold spaces
        # and parentheses, so count from the last ')'
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in
                    Path("/proc/stat").read_text(encoding="ascii").splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


__all__ = ["is_temp_name", "made_for", "process_start_time", "temp_path", "writer_gone",
           "writing"]
