"""Following the vault's change feed: how a process keeps its derived state in step with the
writes of every other process (server mode).

A vault with a change feed (:class:`memos_core.vault.postgres.PostgresVault`) numbers every
mutation. :class:`ChangeFollower` keeps this process's cursor into that sequence and, before
the facade serves a call, compares it with the feed's head (one indexed ``max`` query). Changes
it has not seen -- made by other processes -- are applied to what this process derives:

* the loaded **graph** views (nodes upserted or removed, relations added; a view not loaded
  reads the current state when it is);
* a **per-process index** (an ``edge`` index in the local cache directory) -- a shared index
  (pgvector, a Qdrant server) was updated by the writer itself. A writer can die between its
  vault commit and its index write (SIGKILL, power loss): a memory another process committed is
  therefore checked in a shared index ``repair_after_s`` later (pgvector or Qdrant: one
  request per batch) and indexed again from the vault if the index does not hold the version
  seen then (a version committed since, whose writer may still be writing its points, waits
  for its own check; a check that fails is kept and runs at the next sync). A memory forgotten or
  expired elsewhere leaves a shared index as soon as the change is applied: a process whose
  index write of an older version landed after the forgetting process's delete removes the
  point it put back when it applies the forget (after its own write, under its write lock),
  or at its close if it applies none before (:meth:`ChangeFollower.finish`); and the check
  of the version the forgetting process saw removes it too, whatever version it holds;
* the **model tiers** through the store's change listeners (KV blocks and adapters built from
  an old version or a forgotten memory are dropped) and, for a forgotten memory, the
  derived-form purgers (KV files, adapters in the local cache directory).

Changes this process wrote itself were derived by its own write path
(:meth:`MemoryStore.write`); the vault reports their seqs after each commit and the follower
skips them. A LISTEN connection wakes the follower in the background when any process
commits, so the check before a call usually finds nothing to do.

A search may skip even the head query (``sync(gated=True)``): while the LISTEN connection is
up and no notification arrived since the last check (each wake-up, and each (re)connection
of the listener, counts as one), and the last check is younger than ``head_check_s``. A
listener that is down, reconnecting or not started, or a check older than that, means the
head query runs as before. Every other call keeps the head query.

The search path never trusts the follower blindly: every hit is checked (state, rights) on
its current version before it is returned. That version is re-read from the vault, unless
the feed head read in the round trip of the search's index query is at or below the cursor
-- then every change committed before the search began was applied, and the memories the
vault keeps decoded are current (:meth:`memos_core.store.kernel.MemoryStore.current_for_search`;
the cursor passes a change only after the vault dropped the memories it names). The follower
keeps the rest -- graph expansion, KV caches, adapters -- from serving what another process
forgot or revoked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

from memos_core.lifecycle import INDEXED_STATES
from memos_core.vault import Edge

logger = logging.getLogger("memos_core")

_MEMORY_KINDS = ("version", "forget")


class ChangeFollower:
    """Applies other processes' changes to one store's derived state.

    Args:
        store: the kernel (:class:`~memos_core.store.kernel.MemoryStore`) whose graph,
            index, listeners and purgers follow the feed.
        cursor: the feed head read *before* the store built its derived state (changes after
            it are applied again; applying one twice is harmless).
        shared_index: the index lives on a server every process writes to (skip it).
        repair_after_s: with a shared index that can report its points' versions, how long
            after seeing another process's change its index point is checked (and repaired).
    """

    #: how long a search may go without the head query while the listener is up and quiet
    head_check_s = 1.0
    #: while the write lock is taken elsewhere, how often a wait for it checks whether the
    #: follower closed (:meth:`_write_locked`)
    lock_poll_s = 0.05

    def __init__(self, store: Any, cursor: int, *, shared_index: bool,
                 repair_after_s: float = 10.0) -> None:
        self.store = store
        #: the vault with a change feed (a PostgresVault)
        self.vault: Any = cast(Any, store.vault)
        self.cursor = cursor
        #: when the change at the cursor was written: after a server restart, the feed must
        #: still hold that change there, or the server has another timeline (:meth:`sync`)
        self.cursor_at: float | None = self.vault.change_at(cursor) if cursor else None
        self.shared_index = shared_index
        self._own: set[int] = set()
        self.repair_after_s = repair_after_s
        #: memories other processes changed, to check in the shared index: id -> the
        #: versions seen, oldest first, each with when it was seen (it was committed before)
        self._unchecked: dict[str, list[tuple[float, int]]] = {}
        #: how many memories were indexed again because their writer had not, or whose point
        #: a late index write had put back after a forget (for tests, stats)
        self.repaired = 0
        self._own_lock = threading.Lock()
        self._closed = False
        #: how many foreign changes this process applied (for stats and tests)
        self.applied = 0
        #: how many times the feed had been pruned past the cursor (full resynchronisation)
        self.resyncs = 0
        #: wake-ups of the listener so far (notifications and (re)connections)
        self._wakes = 0
        #: the LISTEN connection of the latest wake-up (the listener is up while the vault's
        #: current one is this object)
        self._woken_on: Any = None
        #: (wake-ups, monotonic time) as of the start of the last completed head check
        self._checked: tuple[int, float] | None = None
        #: how many gated checks skipped the head query (for stats and tests)
        self.head_skips = 0
        self.vault.on_commit(self._mark_own)

    def _mark_own(self, seqs: Sequence[int]) -> None:
        with self._own_lock:
            self._own.update(seqs)

    def _own_seqs(self) -> set[int]:
        """The seqs of this process's own changes not yet passed (their write dropped what
        they name from the vault's cache itself, before marking them here)."""
        with self._own_lock:
            return set(self._own)

    def start_listening(self) -> None:
        """Catch up in the background whenever a process commits (LISTEN/NOTIFY)."""
        self.vault.listen(self._wake)

    def _wake(self) -> None:
        # counted before catching up: a gated check that starts after this wake-up runs the
        # head query (the catch-up below may still be under way)
        self._woken_on = getattr(self.vault, "_listen_conn", None)
        self._wakes += 1
        if not self._closed:
            self.sync()

    def _listener_quiet(self) -> bool:
        """True if the head query may be skipped: the listener's connection is the one its
        last wake-up came on (so it has been LISTENing since before the last check), no
        wake-up came since the last completed check, and that check is recent."""
        checked = self._checked
        if checked is None or checked[0] != self._wakes \
                or time.monotonic() - checked[1] >= self.head_check_s:
            return False
        conn = getattr(self.vault, "_listen_conn", None)
        return conn is not None and conn is self._woken_on and not conn.closed

    def close(self) -> None:
        """Stop following: no catch-up starts after this, and the listener thread is
        stopped and waited for. Called by the store *before* it takes its write lock to
        close; a wake-up under way that waits for that lock gives up (:meth:`_write_locked`:
        the closing thread may hold it, closing from inside a write), so none runs against
        the closed store."""
        self._closed = True
        stop = getattr(self.vault, "stop_listening", None)
        if stop is not None:
            stop()

    def finish(self) -> None:
        """The follower's last step, run by the store's close under its write lock after
        :meth:`close`: delete from the shared index the points of memories that another
        process forgot or expired after this one committed changes the cursor has not passed.

        This process's index write of such a change may have landed after the other
        process's delete and put the point back; the catch-up that deletes it again
        (:meth:`_apply`, after this process's own write) will not run once it has closed.
        Nothing to do (no query) when every own change was passed: the catch-up ran after
        the write. Best effort: a failure is logged, and the other processes' index checks
        or the next open's reconcile remove such a point."""
        if not self.shared_index or not self._own_seqs():
            return
        cursor = self.cursor
        try:
            while True:
                changes = self.vault.changes_since(cursor, 5000, own=self._own_seqs)
                if not changes or changes[0].seq > cursor + 1:
                    return  # (pruned past the cursor: every open reconciles the index)
                own = self._own_seqs()
                ids = list(dict.fromkeys(c.memory_id for c in changes if c.seq not in own
                                         and c.kind in _MEMORY_KINDS and c.memory_id))
                gone = [cube.id for cube in self.vault.get_many(ids).values()
                        if cube.state.value not in INDEXED_STATES]
                if gone:
                    self.store.index.delete(gone)
                cursor = changes[-1].seq
        except Exception:  # noqa: BLE001 - closing goes on; others remove the point
            logger.warning("could not check, while closing, for index points a late index "
                           "write put back after another process's forget", exc_info=True)

    def sync(self, *, gated: bool = False) -> int:
        """Apply every change newer than the cursor; returns how many foreign changes were
        applied. Cheap when there is nothing new (one query).

        ``gated``: skip the head query when the LISTEN connection is up and quiet (see the
        module docstring) and the index is shared (a per-process index must see other
        processes' adds through the feed). For calls whose results are checked against the
        vault anyway (search); a notification in flight at that moment is applied by the
        next call."""
        if self._closed:  # (a listener's wake-up during close: the store is closing)
            return 0
        if self.store._deferred:  # this process's commits whose index update failed
            with self._write_locked() as locked:
                if not locked:
                    return 0
                self.store.retry_index()
        if self._unchecked:
            self._repair_due()
        if self._closed:
            return 0
        if self.store.purge_pending:  # local files a forget could not purge (rate-limited)
            with self._write_locked() as locked:
                if not locked:
                    return 0
                self.store.retry_purges_due()
        if gated and self.shared_index and self._listener_quiet():
            self.head_skips += 1
            return 0
        started = (self._wakes, time.monotonic())
        head = self.vault.change_head()
        start = self.vault.seen_start
        if head < self.cursor or not self._same_timeline(start):
            # the feed went back, or holds other changes where this process's cursor is (a
            # restore; a failover that lost commits, even if new ones came after them)
            with self._write_locked() as locked:
                if not locked:
                    return 0
                done = self._resync()
        else:
            done = self._catch_up() if head > self.cursor else 0
        self.vault.timeline_checked(start)
        self._checked = started
        return done

    def _same_timeline(self, start: str | None) -> bool:
        """True unless the server restarted since the last check and its feed holds another
        change at the cursor than the one this process applied (or none)."""
        if start is None or start == self.vault.checked_start or self.cursor == 0:
            return True
        return bool(self.vault.change_at(self.cursor) == self.cursor_at)

    @contextmanager
    def _write_locked(self) -> Iterator[bool]:
        """The store's write lock, held for the block if it yields True; False (not held)
        once the follower is closed, also while waiting for the lock: the thread closing
        the store may hold it while it waits for the listener thread (:meth:`close`)."""
        lock = self.store.write_lock
        while not lock.acquire(timeout=self.lock_poll_s):
            if self._closed:
                yield False
                return
        try:
            yield not self._closed
        finally:
            lock.release()

    def _catch_up(self) -> int:
        with self._write_locked() as locked:
            if not locked:
                return 0
            done = 0
            while not self._closed:
                changes = self.vault.changes_since(self.cursor, 5000, own=self._own_seqs)
                if not changes:
                    break
                if changes[0].seq > self.cursor + 1:  # pruned past our cursor: start over
                    done += self._resync()
                    continue
                with self._own_lock:
                    foreign = [c for c in changes if c.seq not in self._own]
                    self._own.difference_update(c.seq for c in changes)
                self._apply(foreign)
                self.cursor, self.cursor_at = changes[-1].seq, changes[-1].at
                done += len(foreign)
            self.applied += done
            return done

    @property
    def unchecked(self) -> int:
        """How many memories other processes changed still wait for their index check
        (:attr:`repair_after_s` after this process saw the change; for tests and stats)."""
        with self._own_lock:
            return len(self._unchecked)

    def _repair_due(self) -> None:
        """Index again the memories whose writer committed them but never indexed them:
        those whose index point lacks a version seen at least :attr:`repair_after_s` ago.

        The due ids leave :attr:`_unchecked` only once their check (and repair) succeeded:
        if the index or the vault cannot be read (the server restarts), the error propagates
        and the same ids are checked again on the next :meth:`sync`."""
        due_before = time.monotonic() - self.repair_after_s
        with self._own_lock:
            # id -> the newest version seen at least repair_after_s ago: its writer had that
            # long to write its index point
            due = {i: max(v for t, v in seen if t <= due_before)
                   for i, seen in self._unchecked.items() if seen[0][0] <= due_before}
        if not due:
            return
        with self._write_locked() as locked:
            if not locked:
                return
            indexed = self.store.index.versions_of(list(due))
            current = self.vault.get_many(list(due))
            # A point of a memory that is not in an indexed state now (forgotten, expired)
            # goes whatever its version: a process whose index write of an older version
            # landed after the forget's delete put it back (its own catch-up drops it, but it
            # may make none: listen=False, a process that exits). No point holds a version in
            # such a state, so no writer of the current version is still writing one; a later
            # version committed since this read is applied after it and has its own check.
            gone = [cube.id for cube in current.values()
                    if cube.state.value not in INDEXED_STATES and cube.id in indexed]
            # A version newer than the due one may have been committed a moment ago, its
            # writer still writing the index (a namespace share updates hundreds of points,
            # one by one): it is judged at its own check, only the due version here (with
            # repair_after_s 0 every committed version is due at once).
            stale = [cube for cube in current.values()
                     if cube.state.value in INDEXED_STATES and indexed.get(cube.id) != cube.version
                     and (cube.version <= due[cube.id] or self.repair_after_s <= 0
                          or indexed.get(cube.id, due[cube.id]) < due[cube.id])]
            if gone:
                logger.info("removing the index points of %d memories forgotten or expired by "
                            "another process: a late index write had put them back", len(gone))
                self.store.index.delete(gone)
            if stale:
                logger.warning("indexing %d memories again: their writer committed them to the "
                               "vault but did not index them (it may have died)", len(stale))
                self.store.index_cubes(stale)
            self.repaired += len(gone) + len(stale)
            # checked: forget them. Under the write lock, so a change of one of them that
            # _apply records meanwhile cannot be lost (it waits for this lock and adds it anew)
            with self._own_lock:
                for memory_id in due:
                    later = [(t, v) for t, v in self._unchecked.get(memory_id, ()) if t > due_before]
                    if later:
                        self._unchecked[memory_id] = later
                    else:
                        self._unchecked.pop(memory_id, None)

    def _resync(self) -> int:
        """The feed no longer reaches back to the cursor (rows were pruned while this
        process was away), or its head is behind the cursor (the database was restored, or
        failed over with commits lost): drop the loaded graph views and the vault's cache of
        decoded memories, reconcile the index, tell the listeners that every memory may have
        changed and purge local files of every forgotten one. Returns how many memories were
        looked at; the cursor moves to the head read first."""
        store = self.store
        head = self.vault.change_head()
        self.vault.drop_cached()  # it may hold memories changed in the skipped changes
        store.graph.clear()  # every loaded view reloads from the vault on its next use
        store.reconcile()
        seen = 0
        for batch in self.vault.iter_current(500):
            for cube in batch:
                if cube.state.value == "deleted":
                    for purger in store.purgers:
                        try:
                            purger(cube.id)()
                        except Exception:  # noqa: BLE001 - as in _apply: recorded, retried
                            logger.warning("purging local derived forms of %s failed; it is "
                                           "retried", cube.id, exc_info=True)
                            store.set_purge_pending(cube.id, True)
            store._notify(batch)
            seen += len(batch)
        with self._own_lock:
            self._own.clear()
        self.cursor, self.cursor_at = head, self.vault.change_at(head) if head else None
        self.resyncs += 1
        return seen

    def _apply(self, changes: Sequence[Any]) -> None:
        if not changes:
            return
        ids = list(dict.fromkeys(c.memory_id for c in changes
                                 if c.kind in _MEMORY_KINDS and c.memory_id))
        edges = [Edge(c.detail["src"], c.detail["dst"], c.detail["kind"])
                 for c in changes if c.kind == "edge"]
        current = self.vault.get_many(ids)
        cubes = [current[i] for i in ids if i in current]
        store = self.store
        for cube in cubes:
            if cube.state.value == "deleted":  # forgotten elsewhere: purge local derived files
                for purger in store.purgers:
                    try:
                        purger(cube.id)()
                    except Exception:  # noqa: BLE001 - reported, the rest still follow
                        logger.warning("purging local derived forms of %s failed; it is "
                                       "retried", cube.id, exc_info=True)
                        store.set_purge_pending(cube.id, True)
        if not self.shared_index:
            store.index_cubes(cubes)
        else:
            # A forgotten (or expired) memory leaves the shared index as soon as this process
            # sees it, not at its check: a process that committed an older version before
            # the forget can write its index point after the forgetting process deleted it.
            # That process applies the forget after its own write (both hold its write
            # lock), so whatever it put back goes here.
            gone = [cube.id for cube in cubes if cube.state.value not in INDEXED_STATES]
            if gone:
                store.index.delete(gone)
            if hasattr(store.index, "versions_of"):
                seen = time.monotonic()
                with self._own_lock:
                    for cube in cubes:
                        versions = self._unchecked.setdefault(cube.id, [])
                        if not versions or versions[-1][1] != cube.version:
                            versions.append((seen, cube.version))
        store._graph_apply(cubes, edges)  # loaded views follow; unloaded ones read it at load
        store._notify(cubes)
