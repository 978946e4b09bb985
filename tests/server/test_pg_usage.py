"""Usage counters of the PostgreSQL vault, written in the background (real PostgreSQL).

Two vault objects on one database stand for two processes. What is checked: this process sees
its accesses at once, another one after a flush (background, explicit or at close), with the
same counts and heat as writing each access at once; a forgotten memory's usage row is never
re-created by a late flush; a failed flush keeps its accesses.
"""

from __future__ import annotations

import time
from datetime import timedelta

import psycopg
import pytest

from memos_core.cube import MemCube, Namespace, bump_heat, utcnow
from memos_core.errors import ServerUnavailableError
from memos_core.vault import Actor
from memos_core.vault.postgres import PostgresVault

ALICE = Actor("alice", "agent-1", "usage test")
HALF_LIFE = 600.0


def _cube(text: str) -> MemCube:
    return MemCube(namespace=Namespace(user_id="alice"), text=text)


@pytest.fixture
def vaults(pg_url):
    """(this process's vault, flushing only when told; another process's vault)."""
    opened = [PostgresVault(pg_url, usage_flush_s=3600.0), PostgresVault(pg_url, usage_flush_s=0)]
    yield opened
    for v in opened:
        v.close()


def _stored(url: str, memory_id: str) -> tuple | None:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT access_count, heat FROM usage WHERE id = %s",
                            (memory_id,)).fetchone()


def test_own_reads_see_pending_accesses_and_others_see_them_after_the_flush(vaults, pg_url):
    mine, other = vaults
    hot, cold = _cube("hot"), _cube("cold")
    mine.insert([hot, cold], ALICE)
    start = utcnow()
    times = [start + timedelta(seconds=s) for s in (0, 30, 30, 400)]
    for t in times:
        mine.record_usage([hot.id, "not-a-memory"], t, HALF_LIFE)
    other.record_usage([hot.id], start + timedelta(seconds=10), HALF_LIFE)  # written at once

    # the same arithmetic as writing each access at once, in time order
    heat, last = 0.0, None
    for t in sorted([*times, start + timedelta(seconds=10)]):
        heat, last = bump_heat(heat, last, t, HALF_LIFE), t

    seen = mine.get(hot.id).usage
    assert seen.access_count == 5 and seen.heat == pytest.approx(heat, rel=1e-9)
    assert seen.last_access == times[-1]
    assert mine.get_many([hot.id, cold.id])[cold.id].usage.access_count == 0
    assert other.get(hot.id).usage.access_count == 1  # not written yet
    assert _stored(pg_url, hot.id)[0] == 1

    assert mine.flush_usage() == 2
    assert mine.flush_usage() == 0
    for vault in (mine, other):
        got = vault.get(hot.id).usage
        assert got.access_count == 5 and got.heat == pytest.approx(heat, rel=1e-9)
    assert mine._usage.pending() == 0


def test_background_flush_and_close_write_the_accesses(pg_url):
    quick = PostgresVault(pg_url, usage_flush_s=0.05)
    c = _cube("note")
    quick.insert([c], ALICE)
    quick.record_usage([c.id], utcnow(), HALF_LIFE)
    deadline = time.monotonic() + 10
    while _stored(pg_url, c.id)[0] != 1:
        assert time.monotonic() < deadline, "the background flush never wrote the access"
        time.sleep(0.02)
    assert quick._usage.flushes >= 1
    quick.close()

    slow = PostgresVault(pg_url, usage_flush_s=3600.0)
    slow.record_usage([c.id], utcnow(), HALF_LIFE)
    slow.record_usage([c.id], utcnow(), HALF_LIFE)
    assert _stored(pg_url, c.id)[0] == 1
    slow.close()  # flushes
    assert _stored(pg_url, c.id)[0] == 3


def test_a_late_flush_never_recreates_a_forgotten_memorys_usage_row(vaults, pg_url):
    mine, other = vaults
    c, d = _cube("Alice's PIN is 4711"), _cube("Alice's PIN is 4712")
    mine.insert([c, d], ALICE)
    mine.record_usage([c.id, d.id], utcnow(), HALF_LIFE)
    other.tombstone(c.id, ALICE)  # forgotten by another process while accesses are pending
    mine.tombstone(d.id, ALICE)  # and by this one
    assert mine._usage.pending() == 1  # this process's forget dropped its own pending accesses
    assert mine.get(c.id).usage.access_count == 0  # nothing laid over a tombstone
    mine.flush_usage()
    assert _stored(pg_url, c.id) is None and _stored(pg_url, d.id) is None
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM usage").fetchone()[0] == 0


def test_a_failed_flush_keeps_its_accesses_for_the_next_one(vaults, pg_url):
    mine, _ = vaults
    c = _cube("note")
    mine.insert([c], ALICE)
    mine.record_usage([c.id], utcnow(), HALF_LIFE)
    mine.CHECK_IDLE_S = 3600.0  # the dropped connection is found by the flush itself
    with mine._conn() as conn:
        dbname = conn.info.dbname
    with psycopg.connect(pg_url, autocommit=True) as admin:  # every pooled connection dies
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                      "datname = %s AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
                      (dbname,))
    with pytest.raises(ServerUnavailableError):
        mine.flush_usage()
    mine.record_usage([c.id], utcnow(), HALF_LIFE)
    assert mine._usage.pending() == 1 and mine._usage.failures == 1
    assert mine.get(c.id).usage.access_count == 2
    assert mine.flush_usage() == 1
    assert _stored(pg_url, c.id)[0] == 2


def test_usage_flush_interval_is_checked(pg_url):
    from memos_core.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="usage_flush_s"):
        PostgresVault(pg_url, usage_flush_s=-1)


@pytest.mark.parametrize("read", ["get", "get_many", "list"])
def test_an_async_read_that_meets_a_flush_counts_the_batch_once(vaults, read):
    """A flush that writes the pending accesses after an async read fetched its rows and
    before it laid the pending ones over them (the batch then in neither) is caught: the read
    is made again and sees the batch exactly once."""
    import asyncio

    from memos_core.vault.base import ListQuery

    mine, _ = vaults
    hot = _cube("hot")
    mine.insert([hot], ALICE)
    for _ in range(3):
        mine.record_usage([hot.id], utcnow(), HALF_LIFE)
    usage, overlay = mine._usage, mine._usage.overlay
    flushed: list[int] = []

    def flush_first(cube, stored):  # the first overlay call finds a flush done meanwhile
        if not flushed:
            flushed.append(usage.flush())
        return overlay(cube, stored)

    usage.overlay = flush_first  # type: ignore[method-assign]
    view = mine.native_async()

    async def main():
        if read == "get":
            return await view.get(hot.id)
        if read == "get_many":
            return (await view.get_many([hot.id]))[hot.id]
        return (await view.list(ListQuery(user_ids=("alice",))))[0]

    try:
        got = asyncio.run(main())
    finally:
        usage.overlay = overlay  # type: ignore[method-assign]
    assert flushed == [1] and usage.pending() == 0
    assert got.usage.access_count == 3


def test_an_async_read_that_keeps_meeting_flushes_is_made_in_a_thread(vaults):
    """Every async attempt meets a new flush: after a few, the read is made by the sync path
    (which holds flushes off), still exact."""
    import asyncio
    import threading

    mine, _ = vaults
    hot = _cube("hot")
    mine.insert([hot], ALICE)
    mine.record_usage([hot.id], utcnow(), HALF_LIFE)
    usage, overlay = mine._usage, mine._usage.overlay
    loop_thread = threading.current_thread()
    flushes: list[int] = []

    def busy(cube, stored):  # on the loop: one more access, and a flush, per attempt
        if threading.current_thread() is loop_thread:
            mine.record_usage([hot.id], utcnow(), HALF_LIFE)
            flushes.append(usage.flush())
        return overlay(cube, stored)

    usage.overlay = busy  # type: ignore[method-assign]
    try:
        got = asyncio.run(mine.native_async().get(hot.id))
    finally:
        usage.overlay = overlay  # type: ignore[method-assign]
    from memos_core.vault.pg_async import _OVERLAY_TRIES

    assert len(flushes) == _OVERLAY_TRIES and usage.pending() == 0  # then the thread's read
    assert got.usage.access_count == 1 + _OVERLAY_TRIES
