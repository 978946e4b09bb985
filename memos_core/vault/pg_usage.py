"""Usage counters of the PostgreSQL vault, written off the request path.

A search counts an access for every hit (``access_count``, ``last_access`` and the decayed
``heat``). Written at once, that is a transaction with a commit -- an fsync on the server --
per search. :class:`PendingUsage` keeps this process's accesses in memory instead and writes
them in one transaction every ``interval_s`` (and when the vault closes):

* **Statistics, not changes**: the counters are not versioned, audited or in the change feed
  (as before). Another process sees this process's accesses at most ``interval_s`` (plus one
  flush) later; this process sees its own at once: the vault's reads lay the pending accesses
  over the stored counters (:meth:`PendingUsage.overlay`; such a read waits for a flush in
  progress, or, in async code, reads again after one: :meth:`PendingUsage.epoch`), with the same arithmetic the flush applies (a memory's heat after accesses at ``t1 .. tn`` is the stored heat decayed to
  ``tn`` plus ``sum(0.5 ** ((tn - ti) / half_life))``).
* **Never re-creates a forgotten memory's row**: a flush only updates rows that exist (a
  forget deletes the memory's ``usage`` row, in any process), and a forget in this process
  drops the memory's pending accesses. A read lays nothing over a memory without a row.
* **Lost only with the process**: a flush that fails (server unreachable) keeps its accesses
  for the next one; ``close()`` flushes; a process killed with pending accesses loses at most
  ``interval_s`` worth of counters (never a memory, a version or an audit record).

``interval_s = 0`` writes every call's accesses at once (one transaction, as before).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from memos_core.cube import MemCube, Usage, decayed_heat

logger = logging.getLogger("memos_core")

#: memory id -> [accesses, last access (epoch s), heat gained since the first one, half-life]
Pending = dict[str, list[float]]

#: past this many memories with pending accesses, a call writes them itself
MAX_PENDING = 20_000


def _decay(elapsed_s: float, half_life_s: float) -> float:
    return float(0.5 ** (max(0.0, elapsed_s) / half_life_s))


def merge(into: Pending, later: Pending) -> None:
    """Add ``later``'s accesses (which came after ``into``'s) to ``into``."""
    for mid, (n, last, gained, half_life) in later.items():
        old = into.get(mid)
        if old is None:
            into[mid] = [n, last, gained, half_life]
        else:
            old[2] = old[2] * _decay(last - old[1], half_life) + gained
            old[0] += n
            old[1] = max(old[1], last)
            old[3] = half_life


def applied(count: int, last: float | None, heat: float,
            entry: list[float]) -> tuple[int, float, float]:
    """``(access_count, last_access, heat)`` of a stored row after the pending ``entry``."""
    n, at, gained, half_life = entry
    base = decayed_heat(heat, None if last is None else datetime.fromtimestamp(last, timezone.utc),
                        datetime.fromtimestamp(at, timezone.utc), half_life)
    return count + int(n), max(at, last or at), base + gained


def accessed(usage: Usage, entry: Sequence[float]) -> Usage:
    """``usage`` after the pending ``entry``'s accesses (what a flush makes of its row)."""
    count, last, heat = applied(usage.access_count, None if usage.last_access is None
                                else usage.last_access.timestamp(), usage.heat, list(entry))
    return Usage(access_count=count, last_access=datetime.fromtimestamp(last, timezone.utc),
                 heat=heat, tier=usage.tier)


class PendingUsage:
    """This process's accesses not yet written; flushed by a background thread.

    Args:
        write: writes a batch (``Pending``) in one transaction; raises on failure.
        interval_s: seconds between flushes (0: ``add`` writes at once).
        written: called with each batch once it is written (before the flush counts as
            ended in :meth:`epoch`): the vault adds it to the counters it keeps.
    """

    def __init__(self, write: Callable[[Pending], None], interval_s: float,
                 written: Callable[[Pending], None] | None = None) -> None:
        if interval_s < 0:
            raise ValueError(f"interval_s must be >= 0, got {interval_s}")
        self._write = write
        self._written = written
        self.interval_s = float(interval_s)
        self._pending: Pending = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: batches written, and how many of them failed (kept for the next one)
        self.flushes = 0
        self.failures = 0
        # flushes begun and ended (under _lock): what a reader that cannot take the flush
        # lock checks around its read (see epoch)
        self._begun = 0
        self._ended = 0

    def add(self, memory_ids: Iterable[str], now: datetime, half_life_s: float) -> None:
        """Count one access of each of ``memory_ids`` at ``now``."""
        t = now.timestamp()
        with self._lock:
            for mid in set(memory_ids):
                entry = self._pending.get(mid)
                if entry is None:
                    self._pending[mid] = [1, t, 1.0, half_life_s]
                else:
                    entry[2] = entry[2] * _decay(t - entry[1], half_life_s) + 1.0
                    entry[0] += 1
                    entry[1] = max(entry[1], t)
                    entry[3] = half_life_s
            backlog = len(self._pending)
        if self.interval_s == 0 or backlog > MAX_PENDING:
            self.flush(raise_errors=self.interval_s == 0)
        elif self._thread is None and not self._stop.is_set():
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="memos-pg-usage",
                                                    daemon=True)
                    self._thread.start()

    def drop(self, memory_id: str) -> None:
        """Forget ``memory_id``'s pending accesses (it was forgotten)."""
        with self._lock:
            self._pending.pop(memory_id, None)

    def overlay(self, cube: MemCube, stored: bool) -> MemCube:
        """``cube`` with its pending accesses laid over its stored counters (``stored``: it
        has a usage row; without one, or for a tombstone, nothing is laid over)."""
        with self._lock:
            entry = self._pending.get(cube.id)
            entry = list(entry) if entry is not None else None
        if entry is None or not stored or cube.state.value == "deleted":
            return cube
        return cube.model_copy(update={"usage": accessed(cube.usage, entry)})

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Around a read of stored counters and its :meth:`overlay`: it excludes a flush, so
        a batch is seen exactly once (in the rows or laid over them, never both or neither),
        and the counters read are the stored ones as of a moment no flush was under way (the
        vault keeps them: ``CubeCache``)."""
        with self._flush_lock:
            yield

    def pending(self) -> int:
        """How many memories have accesses not yet written."""
        with self._lock:
            return len(self._pending)

    def flush(self, *, raise_errors: bool = True) -> int:
        """Write the pending accesses now (one transaction); returns how many memories. On
        failure they stay pending (and the error is raised if ``raise_errors``)."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, {}
                if not batch:
                    return 0
                self._begun += 1
            try:
                self._write(batch)
            except BaseException:
                self.failures += 1
                with self._lock:
                    merge(batch, self._pending)
                    self._pending = batch
                    self._ended += 1
                if raise_errors:
                    raise
                return 0
            try:
                if self._written is not None:
                    self._written(batch)
            finally:
                with self._lock:
                    self._ended += 1
            self.flushes += 1
            return len(batch)

    def epoch(self) -> tuple[int, bool]:
        """``(flushes begun, one in progress)``: for a read that cannot hold off a flush
        (an async one must not block its loop on :meth:`reading`'s lock). Such a read is
        exact when the epoch before it shows no flush in progress and the epoch after its
        :meth:`overlay` is the same: no batch moved from the pending accesses to the rows
        meanwhile, so it was seen exactly once."""
        with self._lock:
            return self._begun, self._begun != self._ended

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.flush(raise_errors=False)
            except Exception:  # noqa: BLE001 - counters are statistics; retried next time
                logger.warning("writing usage counters failed; retrying", exc_info=True)

    def close(self) -> None:
        """Stop the background thread and write what is pending (a failure is logged: the
        counters are lost, nothing else)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            self.flush()
        except Exception:  # noqa: BLE001 - statistics only
            logger.warning("usage counters of %d memories could not be written at close",
                           self.pending(), exc_info=True)


def write_batch(conn: Any, batch: Pending) -> None:
    """Apply ``batch`` to the ``usage`` rows that exist, in one transaction on ``conn``
    (row locks in id order: concurrent flushes from many processes do not deadlock)."""
    ids = sorted(batch)
    with conn.transaction():
        rows = conn.execute(
            "SELECT id, access_count, last_access, heat FROM usage WHERE id = ANY(%s) "
            "ORDER BY id FOR UPDATE", (ids,)).fetchall()
        if not rows:
            return
        with conn.cursor() as cur:
            cur.executemany(
                "UPDATE usage SET access_count=%s, last_access=%s, heat=%s WHERE id=%s",
                [(*applied(count, last, heat, batch[mid]), mid)
                 for mid, count, last, heat in rows])
