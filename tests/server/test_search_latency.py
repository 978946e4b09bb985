"""The server-mode search path's shortcuts keep the safety rules (real PostgreSQL, ``pg_url``).

- the feed check before a search skips its head query only while the LISTEN connection is up
  and quiet, and falls back to the query when the listener dies, is reconnecting, or the last
  check is older than ``head_check_s``;
- a memory forgotten by another process is never returned, even by a search that skipped the
  head query while the notification was still on its way (every hit is checked on its current version);
- the vault's connections are checked on checkout only after idling, and a dropped connection
  still raises ``ServerUnavailableError`` once and is replaced.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from feed_helpers import listening, wait_until

from memos_core import MemOS
from memos_core.errors import MemoryDeletedError


class HeadQueries:
    """Counts the vault's ``change_head`` queries (the real method runs)."""

    def __init__(self, mos: MemOS) -> None:
        self.count = 0
        self._vault = mos.vault
        inner = mos.vault.change_head

        def counted() -> int:
            if threading.current_thread() is threading.main_thread():
                self.count += 1
            return inner()

        mos.vault.change_head = counted

    def close(self) -> None:
        del self._vault.change_head


def test_a_quiet_listener_lets_search_skip_the_head_query(open_mos):
    a, b = open_mos(), open_mos()
    wait_until(lambda: listening(b))
    kayak = a.add("The kayak is in the boathouse.", user_id="alice")
    heads = HeadQueries(b)
    try:
        b.search("where is the kayak", user_id="alice")  # a wake-up came since the last check
        wait_until(lambda: b.store.follower._checked is not None
              and b.store.follower._checked[0] == b.store.follower._wakes)
        before, skips = heads.count, b.store.follower.head_skips
        for _ in range(3):
            assert [h.id for h in b.search("where is the kayak", user_id="alice")][:1] == [kayak.id]
        assert heads.count == before and b.store.follower.head_skips == skips + 3
        b.get(kayak.id, user_id="alice")  # every other call keeps the head query
        assert heads.count == before + 1

        # another process writes: its notification wakes b, and b's next search checks again
        # (b's write lock, held here, keeps the listener thread's own catch-up from finishing)
        wakes = b.store.follower._wakes
        with b.store.write_lock:
            a.update(kayak.id, "The kayak is in the garage.", user_id="alice")
            wait_until(lambda: b.store.follower._wakes > wakes)
            count = heads.count
            assert b.search("where is the kayak", user_id="alice")[0].memory.version == 2
            assert heads.count == count + 1

        # an old check is not trusted: past head_check_s the query runs again
        b.store.follower.head_check_s = 0.0
        count = heads.count
        b.search("kayak", user_id="alice")
        assert heads.count == count + 1
    finally:
        heads.close()


def test_search_falls_back_to_the_head_query_when_the_listener_dies(open_mos, pg_url):
    a, b = open_mos(), open_mos()
    wait_until(lambda: listening(b))
    kayak = a.add("The kayak is in the boathouse.", user_id="alice")
    b.search("kayak", user_id="alice")
    wait_until(lambda: kayak.id in b.graph)

    # the server ends the LISTEN connection: until the listener is back and has caught up,
    # every search runs the head query (notifications sent meanwhile are lost)
    old = b.vault._listen_conn
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (old.info.backend_pid,))
    wait_until(lambda: b.vault._listen_conn is not old)
    heads = HeadQueries(b)
    try:
        if not listening(b):
            skips = b.store.follower.head_skips
            b.search("kayak", user_id="alice")
            assert b.store.follower.head_skips == skips
        wait_until(lambda: listening(b))  # reconnected: its first wake-up catches up

        # the listener thread stops for good: every search queries the head, so another
        # process's forget is applied to b's derived state before b's search runs
        b.vault._stop_listening.set()
        b.vault._listener.join(timeout=10)
        assert b.vault._listen_conn is None
        count, skips = heads.count, b.store.follower.head_skips
        a.forget(kayak.id, user_id="alice")
        assert b.search("where is the kayak", user_id="alice") == []
        assert heads.count == count + 1 and b.store.follower.head_skips == skips
        assert kayak.id not in b.graph
    finally:
        heads.close()


def test_a_search_that_skipped_the_head_query_never_returns_a_forgotten_memory(open_mos):
    """The notification of another process's forget is held up in b's listener thread: b's
    search skips the head query (its graph still holds the memory) and still does not return
    it, because every hit is checked on its current version."""
    a, b = open_mos(), open_mos()
    wait_until(lambda: listening(b))
    kayak = a.add("The kayak is in the boathouse.", user_id="alice")
    a.add("The paddles hang next to the kayak.", user_id="alice")
    assert kayak.id in [h.id for h in b.search("where is the kayak", user_id="alice")]
    wait_until(lambda: b.store.follower._checked is not None
          and b.store.follower._checked[0] == b.store.follower._wakes)

    release, held = threading.Event(), threading.Event()

    def hold() -> None:
        held.set()
        release.wait(30)

    b.vault._wake_hooks.insert(0, hold)  # runs before the follower's wake-up
    try:
        a.forget(kayak.id, user_id="alice")
        assert held.wait(10)  # b's listener got the notification and is held up
        skips = b.store.follower.head_skips
        hits = b.search("where is the kayak", user_id="alice")
        assert b.store.follower.head_skips == skips + 1  # the head query was skipped ...
        assert kayak.id in b.graph  # ... so b's derived state is behind ...
        assert kayak.id not in [h.id for h in hits]  # ... and the vault still decided
        assert hits and all(h.memory.state.value != "deleted" for h in hits)
    finally:
        b.vault._wake_hooks.remove(hold)
        release.set()
    wait_until(lambda: kayak.id not in b.graph)
    with pytest.raises(MemoryDeletedError):
        b.get(kayak.id, user_id="alice")


def test_search_with_a_per_process_index_keeps_the_head_query(open_mos):
    """A per-process (edge) index learns of other processes' adds only through the feed, so
    its searches never skip the head query."""
    a = open_mos(index="edge")
    b = open_mos(index="edge")
    wait_until(lambda: listening(b))
    b.search("anything", user_id="alice")
    wait_until(lambda: b.store.follower._checked is not None
          and b.store.follower._checked[0] == b.store.follower._wakes)
    kayak = a.add("The kayak is in the boathouse.", user_id="alice")
    skips = b.store.follower.head_skips
    assert [h.id for h in b.search("kayak", user_id="alice")][:1] == [kayak.id]
    assert b.store.follower.head_skips == skips


def test_vault_connections_are_checked_only_after_idling_and_replaced_when_dropped(pg_url):
    from memos_core.errors import ServerUnavailableError
    from memos_core.vault.postgres import PostgresVault

    vault = PostgresVault(pg_url, pool_size=1)
    try:
        checks = []
        inner = vault._check
        vault._pool._check = lambda conn: (checks.append(1), inner(conn))[1]
        vault.change_head()
        vault.change_head()
        assert len(checks) == 2
        sent = [vault._used.get(c) for c in list(vault._used)]
        assert sent and all(t is not None for t in sent)

        # the server drops the (fresh) connection: the next call fails once, then the pool
        # has a new one and every connection is checked again
        with vault._conn() as conn:
            pid = conn.info.backend_pid
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(ServerUnavailableError):
            vault.change_head()
        assert len(vault._used) == 0
        assert vault.change_head() >= 0
        with vault._conn() as conn:
            assert conn.info.backend_pid != pid

        # an idle connection is checked (and replaced if the server dropped it) on checkout
        vault.CHECK_IDLE_S = 0.0
        with vault._conn() as conn:
            pid = conn.info.backend_pid
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        time.sleep(0.2)
        assert vault.change_head() >= 0  # the check found it dropped: no error
    finally:
        vault.close()


def test_searches_from_more_threads_than_the_index_pool_holds(pg_url):
    """The index's pool follows ``pool_size``; a search holds one of its connections while it
    embeds its query, so threads beyond the pool wait for one and every search still answers
    what a lone search answers."""
    from concurrent.futures import ThreadPoolExecutor

    from memos_core import MemOSConfig

    config = MemOSConfig(show_progress=False, pool_size=2, listen=False)
    with MemOS(pg_url, config=config) as mos:
        assert mos.index._pool.max_size == 2
        mos.add_many([f"Note {i}: the {w} is in the {p}." for i, (w, p) in enumerate(
            [("kayak", "boathouse"), ("ladder", "garage"), ("violin", "attic"),
             ("tent", "cellar"), ("bicycle", "shed"), ("piano", "hall")])], user_id="pool-user")
        queries = [f"where is the {w}?" for w in ("kayak", "ladder", "violin", "tent", "bicycle",
                                                  "piano")] * 4
        alone = {q: [h.id for h in mos.search(q, user_id="pool-user", k=3, record_usage=False)]
                 for q in set(queries)}
        mos.retriever.query_vectors.clear()  # every threaded search embeds its query again
        with ThreadPoolExecutor(8) as pool:
            found = list(pool.map(lambda q: [h.id for h in mos.search(
                q, user_id="pool-user", k=3, record_usage=False)], queries))
        assert found == [alone[q] for q in queries]
