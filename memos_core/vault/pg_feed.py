"""The change feed of the PostgreSQL vault: a gapless, monotonic sequence of every mutation.

Every mutation transaction (:meth:`PostgresVault._tx`) appends one ``changes`` row per thing it
changed -- ``version`` (a new current version of ``memory_id``: an add, update, share,
supersession or tombstone), ``forget`` (its usage and relations dropped), ``edge`` (a relation
stored), ``grants`` (namespace grants changed) -- numbered after the newest row, under the
vault's write lock, and sends ``NOTIFY memos_changes`` with the new head. Because the lock
serialises the mutations and is released only once the commit is visible, the feed has no
gaps and no late arrivals: whoever sees change ``n`` sees every change before it. The rows
carry ids, never text, so a forget leaves none there.

Each process follows the feed (:class:`memos_core.store.feed.ChangeFollower`): before serving
it compares its cursor with :meth:`FeedMixin.change_head` (one indexed ``max``), and a LISTEN
connection (:meth:`FeedMixin.listen`) wakes it in the background so that the check usually
finds nothing to do.
"""

from __future__ import annotations

import json
import logging
import selectors
import socket
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from memos_core.cube import utcnow
from memos_core.vault.pg_schema import CHANNEL
from memos_core.vault.pg_sql import HEAD_AND_START_QUERY, HEAD_QUERY

logger = logging.getLogger("memos_core")


@dataclass(frozen=True)
class Change:
    """One row of the change feed."""

    seq: int
    memory_id: str | None
    kind: str
    detail: dict[str, Any]
    #: when it was written (epoch seconds): with ``seq``, it names the change in one timeline
    at: float = 0.0


@dataclass
class Tx:
    """One open mutation transaction and the changes it made (written when it ends)."""

    conn: Any
    changes: list[tuple[str | None, str, dict[str, Any]]] = field(default_factory=list)
    #: new memories inserted whole (row version, document, stored usage): the vault keeps
    #: them decoded once the transaction committed (``CubeCache.drop``'s ``keep``)
    inserted: dict[str, tuple[str, str, Any]] = field(default_factory=dict)

    def change(self, memory_id: str | None, kind: str, detail: dict[str, Any]) -> None:
        self.changes.append((memory_id, kind, detail))


class FeedMixin:
    """Change-feed methods of :class:`memos_core.vault.postgres.PostgresVault`."""

    url: str
    _conn: Any
    _query: Any
    _cubes: Any

    def _init_feed(self) -> None:
        self._commit_hooks: list[Callable[[Sequence[int]], None]] = []
        self._wake_hooks: list[Callable[[], None]] = []
        self._listener: threading.Thread | None = None
        self._stop_listening = threading.Event()
        #: the listener's wake-up socket pair: :meth:`stop_listening` writes a byte to the
        #: second, the listener waits on the first alongside its LISTEN connection
        self._listen_wakeup: tuple[socket.socket, socket.socket] | None = None
        self._listen_conn: Any = None
        #: (when it was sent (monotonic), head, server start) of the newest head read
        #: alongside a search
        self._head_seen: tuple[float, int, str | None] = (float("-inf"), 0, None)
        #: the server start time :meth:`change_head` last saw, and the one whose timeline the
        #: follower checked its cursor against (:meth:`timeline_checked`)
        self.seen_start: str | None = None
        self._checked_start: str | None = None
        self._head_lock = threading.Lock()

    # -- writing ------------------------------------------------------------------------------

    def _write_changes(self, tx: Tx) -> list[int]:
        """Append the transaction's change rows and its NOTIFY; returns their seqs."""
        if not tx.changes:
            return []
        head = int(tx.conn.execute(HEAD_QUERY).fetchone()[0])
        at = utcnow().timestamp()
        seqs = list(range(head + 1, head + 1 + len(tx.changes)))
        with tx.conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO changes(seq, at, memory_id, kind, detail) VALUES (%s,%s,%s,%s,%s)",
                [(s, at, mid, kind, json.dumps(detail))
                 for s, (mid, kind, detail) in zip(seqs, tx.changes)])
        tx.conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(seqs[-1])))
        return seqs

    def _committed(self, seqs: Sequence[int]) -> None:
        for hook in list(self._commit_hooks):
            hook(seqs)

    def on_commit(self, hook: Callable[[Sequence[int]], None]) -> None:
        """Call ``hook(seqs)`` after each mutation of *this* vault object commits, with the
        change seqs it wrote (a follower marks them as applied by the writer itself), once
        the mutation dropped what it changed from the cache of decoded memories."""
        self._commit_hooks.append(hook)

    # -- reading ------------------------------------------------------------------------------

    def change_head(self) -> int:
        """The newest change seq (0 for none): the cheap check before serving. Also notes
        the server's start time (:attr:`seen_start`); the first one is taken as checked."""
        head, start = self._query(HEAD_AND_START_QUERY)[0]
        self.seen_start = start
        if self._checked_start is None:
            self._checked_start = start
        return int(head)

    def timeline_checked(self, start: str | None) -> None:
        """The follower compared its cursor with the feed of the server that started at
        ``start`` (and resynchronised if the feed went back): searches may trust the cache
        again. On a new start, what the cache holds may come from a timeline the server no
        longer has (a restore, a failover that lost commits), so it is dropped first."""
        if start is None or start == self._checked_start:
            return
        self._cubes.clear()
        self._checked_start = start

    def head_probe(self) -> tuple[str, Callable[[Sequence[Sequence[Any]], float], None]]:
        """``(statement, seen)``: the head query, for an index on the same server to send in
        the same round trip as its search, and what to call with its rows and when it was
        sent (monotonic seconds). :meth:`head_seen_since` then answers without a query."""
        return HEAD_AND_START_QUERY, self._saw_head

    def _saw_head(self, rows: Sequence[Sequence[Any]], sent_at: float) -> None:
        head, start = int(rows[0][0]), rows[0][1]
        with self._head_lock:
            if sent_at >= self._head_seen[0]:
                self._head_seen = (sent_at, head, start)

    def head_seen_since(self, since: float) -> int | None:
        """The feed head as read by a query sent at or after ``since`` (monotonic seconds),
        or None if none was: every change committed before ``since`` is at or below it.
        None too if that server started after the one whose feed the follower checked its
        cursor against (it may hold another timeline: :meth:`timeline_checked`)."""
        sent, head, start = self._head_seen
        return head if sent >= since and start == self._checked_start else None

    def drop_cached(self) -> None:
        """Drop every decoded memory this process keeps (a follower that skipped changes)."""
        self._cubes.clear()

    def changes_since(self, seq: int, limit: int = 10_000, *,
                      own: Callable[[], Collection[int]] | None = None) -> list[Change]:
        """The changes after ``seq``, oldest first, at most ``limit``. The memories they
        name leave the cache of decoded memories, except those of the seqs ``own()`` gives
        (read after the rows): this process's own changes, whose write dropped, or kept,
        what they name itself (:meth:`on_commit` hooks run only after that)."""
        rows = self._query("SELECT seq, memory_id, kind, detail, at FROM changes WHERE seq > %s "
                           "ORDER BY seq LIMIT %s", (seq, limit))
        mine = own() if own is not None else ()
        self._cubes.drop(r[1] for r in rows if r[0] not in mine)  # another process changed them
        return [Change(int(r[0]), r[1], r[2], r[3] if isinstance(r[3], dict) else json.loads(r[3]),
                       float(r[4])) for r in rows]

    def change_at(self, seq: int) -> float | None:
        """When change ``seq`` was written (None: no such row, e.g. pruned or never written):
        a follower compares it with the one it applied to tell whether a restarted server
        still holds its timeline."""
        rows = self._query("SELECT at FROM changes WHERE seq = %s", (seq,))
        return float(rows[0][0]) if rows else None

    @property
    def checked_start(self) -> str | None:
        """The server start time whose feed the follower last checked its cursor against."""
        return self._checked_start

    def prune_changes(self, older_than_s: float) -> int:
        """Delete change rows older than ``older_than_s`` seconds, always keeping the newest
        (the head never moves back); returns how many. A process whose cursor falls before
        the oldest row left resynchronises all its derived state on its next call
        (:meth:`memos_core.store.feed.ChangeFollower.sync`)."""
        cutoff = utcnow().timestamp() - older_than_s
        with self._conn() as conn, conn.transaction():
            cur = conn.execute("DELETE FROM changes WHERE at < %s AND seq < "
                               "(SELECT MAX(seq) FROM changes)", (cutoff,))
            return int(cur.rowcount or 0)

    # -- LISTEN -------------------------------------------------------------------------------

    def listen(self, wake: Callable[[], None]) -> None:
        """Call ``wake()`` (from a background thread) whenever any process commits a change;
        also once after every (re)connection, since notifications sent while disconnected
        are lost. An optimisation only: correctness comes from :meth:`change_head`."""
        self._wake_hooks.append(wake)
        if self._listener is None and not self._stop_listening.is_set():
            self._listen_wakeup = socket.socketpair()
            for sock in self._listen_wakeup:
                sock.setblocking(False)
            self._listener = threading.Thread(target=self._listen_loop, name="memos-pg-listen",
                                              daemon=True)
            self._listener.start()

    def _listen_loop(self) -> None:
        assert self._listen_wakeup is not None
        try:
            self._listen_until_stopped(self._listen_wakeup[0])
        finally:  # also when a wake-up closed the store (stop_listening could not join)
            for sock in self._listen_wakeup or ():
                sock.close()

    def _listen_until_stopped(self, wakeup: socket.socket) -> None:
        import psycopg

        backoff = 0.2
        while not self._stop_listening.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn, \
                        selectors.DefaultSelector() as selector:
                    self._listen_conn = conn
                    conn.execute(f"LISTEN {CHANNEL}")
                    backoff = 0.2
                    selector.register(conn.fileno(), selectors.EVENT_READ)
                    selector.register(wakeup, selectors.EVENT_READ)
                    if not self._stop_listening.is_set():
                        self._wake()
                    while not self._stop_listening.is_set():
                        # the LISTEN connection or the stop signal (stop_listening); the
                        # timeout only bounds a stop that sets the event without the signal
                        ready = selector.select(timeout=1.0)
                        if self._stop_listening.is_set():
                            break
                        if any(key.fileobj is not wakeup for key, _ in ready) \
                                and list(conn.notifies(timeout=0)) \
                                and not self._stop_listening.is_set():
                            self._wake()
            except Exception:  # noqa: BLE001 - the server went away: reconnect later
                if self._stop_listening.wait(backoff):
                    break
                backoff = min(backoff * 2, 5.0)
            finally:
                self._listen_conn = None

    def _wake(self) -> None:
        for wake in list(self._wake_hooks):
            try:
                wake()
            except Exception:  # noqa: BLE001 - a wake-up is advisory
                logger.warning("a change-feed wake-up failed", exc_info=True)

    def stop_listening(self, timeout: float = 5.0) -> None:
        """Stop the listener thread and wait (up to ``timeout`` seconds) for it to end: it
        is woken at once, even while it waits for a notification, and wakes no one after
        this (a wake-up already under way is waited for). Idempotent; the follower calls it
        before its store takes the write lock to close (a wake-up may be waiting for that
        lock)."""
        self._stop_listening.set()
        if self._listen_wakeup is not None:
            try:
                self._listen_wakeup[1].send(b"x")
            except OSError:  # already signalled (the buffer is full) or closed
                pass
        listener = self._listener
        if listener is None or listener is threading.current_thread():
            return  # (closed from a wake-up: the thread ends when that returns)
        listener.join(timeout=timeout)
        if listener.is_alive():
            logger.warning("the change-feed listener thread did not stop within %s s", timeout)
            return
        wakeup, self._listen_wakeup = self._listen_wakeup, None
        for sock in wakeup or ():
            sock.close()

    def _close_feed(self) -> None:
        self.stop_listening()
