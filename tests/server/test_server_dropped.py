"""A server-mode MemOS dropped without ``close()`` is collected and closed (real PostgreSQL).

Its pools, change-feed listener and usage writer run in threads that hold the store; the
store used to hold the facade (its forget purgers and the engine were bound to it), so a web
app that opened one per request and never closed it kept every one's threads, connections
and cache directory until exit, and ran the server out of connections. Now the facade is
garbage, and its finalizer closes the store in a thread of its own, with a ResourceWarning
(as a dropped embedded MemOS releases its data directory).
"""

from __future__ import annotations

import gc
import threading
import warnings
import weakref

import psycopg
from feed_helpers import listening, wait_until

from memos_core import MemOS, MemOSConfig


def _connections(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return int(conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()").fetchone()[0])


def _memos_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("memos-") and t.is_alive()}


def _open_and_drop(pg_url: str) -> tuple[weakref.ref[MemOS], object]:
    """Open a MemOS that uses every part that runs a thread or holds a connection, then
    drop it; returns a weak reference to it and its cache directory."""
    mos = MemOS(pg_url, config=MemOSConfig(show_progress=False))
    wait_until(lambda: listening(mos))
    note = mos.add("The spare key is under the blue pot.", user_id="alice")
    mos.search("spare key", user_id="alice")  # usage counters: the usage writer's thread
    mos.on_forget(lambda memory: [])
    assert mos.engine is not None  # the engine listens to the store; loads no model
    mos.forget(note.id, user_id="alice")
    return weakref.ref(mos), mos.data_dir


def test_a_dropped_server_mode_memos_releases_its_threads_and_connections(pg_url):
    threads_before, connections_before = _memos_threads(), _connections(pg_url)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ref, cache_dir = _open_and_drop(pg_url)
        gc.collect()
        assert ref() is None
        wait_until(lambda: not (_memos_threads() - threads_before), timeout=30)
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)
            and "garbage-collected without close()" in str(w.message)]
    wait_until(lambda: _connections(pg_url) <= connections_before, timeout=30)
    assert not cache_dir.exists()  # a temporary cache directory is removed, as by close()
    # what it wrote is the server's: a new MemOS sees it, and the forget stands
    with MemOS(pg_url, config=MemOSConfig(show_progress=False)) as again:
        assert again.search("spare key", user_id="alice") == []


def test_a_closed_one_is_not_closed_again_when_dropped(pg_url):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mos = MemOS(pg_url, config=MemOSConfig(show_progress=False))
        mos.add("The spare key is under the blue pot.", user_id="alice")
        mos.close()
        ref = weakref.ref(mos)
        del mos
        gc.collect()
        assert ref() is None
    assert not [w for w in caught if "garbage-collected" in str(w.message)]


def test_a_dropped_one_with_a_running_scheduler_is_collected_too(pg_url):
    """The background scheduler's thread held the engine and through it the facade: a
    dropped server-mode MemOS with a running scheduler was never collected, and its threads
    and connections stayed until exit. Now the thread holds neither, and stops when the
    engine is collected."""
    threads_before = _memos_threads()

    def open_and_drop() -> weakref.ref[MemOS]:
        mos = MemOS(pg_url, config=MemOSConfig(show_progress=False))
        mos.add("The spare key is under the blue pot.", user_id="alice")
        background = mos.start_scheduler(0.05)
        wait_until(lambda: background.runs >= 1, timeout=30)
        return weakref.ref(mos)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ref = open_and_drop()
        gc.collect()
        assert ref() is None
        wait_until(lambda: not (_memos_threads() - threads_before), timeout=30)
    assert [w for w in caught if issubclass(w.category, ResourceWarning)
            and "garbage-collected without close()" in str(w.message)]
