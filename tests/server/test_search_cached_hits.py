"""Server-mode search serves its hits from the cube cache when the change feed says that is
as current as a read (real PostgreSQL, ``pg_url``).

A search reads the change feed's head in the round trip of its index query. When that head
is at or below this process's follower cursor, every change committed before the search
began has been applied here (a changed memory leaves the cache before the cursor passes its
change), so the memories the vault keeps decoded are current and the vault read is skipped
(``PostgresVault.cached_reads`` counts those reads: a search reads the memories its second
stages weigh as evidence first, then the other candidates, if any). Two ``MemOS`` objects on one
database stand for two processes; a follower that has not caught up yet (its LISTEN wake-up
still on the way) is a follower whose ``sync`` does nothing.
"""

from __future__ import annotations

from memos_core import MemOS
from memos_core.cube import MemCube, Namespace, Usage
from memos_core.governance import access as rules
from memos_core.vault import Actor, pg_sql

MOS_DEFAULTS = {"listen": False}

TURNS = [
    "The kayak is in the boathouse by the lake.",
    "Alice's sister Jo flies to Lisbon on Friday.",
    "The paddles hang next to the kayak in the boathouse.",
]

QUERY = "where is the kayak"


def _search(mos: MemOS, user_id: str = "alice", **kw):
    return mos.search(QUERY, user_id=user_id, k=3, **kw)


def _behind(mos: MemOS) -> None:
    """This process's follower does not catch up by itself (as while the notification of
    another process's commit is still on its way)."""
    mos.store.follower.sync = lambda **_kw: 0  # type: ignore[method-assign]


def test_a_repeated_search_is_served_from_the_cache_and_equals_a_read(open_mos):
    mos = open_mos()
    mos.add_many(TURNS, user_id="alice")
    first = _search(mos, record_usage=False)
    before = mos.vault.cached_reads
    again = _search(mos, record_usage=False)
    assert mos.vault.cached_reads == before + 1
    assert [h.id for h in again] == [h.id for h in first]
    read = mos.vault.get_many([h.id for h in again])
    for hit in again:
        assert hit.memory == read[hit.id]
    # the caller's own copies: changing one does not change what the next search serves
    again[0].memory.metadata["scribbled"] = True
    assert "scribbled" not in _search(mos, record_usage=False)[0].memory.metadata


def test_memories_this_process_added_are_kept_at_once(open_mos):
    mos = open_mos()
    added = mos.add_many(TURNS, user_id="alice")
    reads = mos.vault.cached_reads
    hits = _search(mos, record_usage=False)
    assert mos.vault.cached_reads == reads + 1  # no read: the write kept what it committed
    read = mos.vault.get_many([m.id for m in added])
    assert {h.id for h in hits} == {m.id for m in added}
    for hit in hits:
        assert hit.memory == read[hit.id]


def test_a_write_keeps_its_memories_only_if_no_other_drop_came_meanwhile():
    cache = pg_sql.CubeCache(8)
    cube = MemCube(namespace=Namespace(user_id="alice"), text="new")
    began = cache.generation
    cache.drop(["another"])  # e.g. the follower, for a change committed after this write
    cache.drop([cube.id], keep={cube.id: ("7", cube, Usage())}, began=began)
    assert len(cache) == 0
    began = cache.generation
    cache.drop([cube.id], keep={cube.id: ("8", cube, Usage())}, began=began)
    assert cache.known([cube.id])[cube.id][0] == "8"
    assert cache.fresh([cube.id], 60.0) == [(cube, Usage())]


def test_another_process_forgets_before_this_one_has_seen_the_feed(open_mos):
    mine, theirs = open_mos(), open_mos()
    kayak, *_ = mine.add_many(TURNS, user_id="alice")
    assert kayak.id in [h.id for h in _search(mine, record_usage=False)]
    _search(mine, record_usage=False)  # now served from the cache
    cursor = mine.store.follower.cursor
    _behind(mine)
    theirs.forget(kayak.id, user_id="alice")
    reads = mine.vault.cached_reads
    hits = _search(mine, record_usage=False)
    assert mine.store.follower.cursor == cursor  # this process has not seen the forget
    assert mine.vault.cached_reads == reads  # the feed head said so: the hits were read
    assert kayak.id not in [h.id for h in hits]
    assert all("kayak is in the boathouse" not in h.memory.text for h in hits)


def test_another_process_revokes_before_this_one_has_seen_the_feed(open_mos):
    mine, theirs = open_mos(), open_mos()
    key = mine.add("Alice's spare key is with the neighbour.", user_id="alice")
    mine.add("Bob's bike is in the shed.", user_id="bob")
    shared = mine.share(key.id, with_user_id="bob", user_id="alice")

    def bob_hits() -> list[str]:
        return [h.id for h in mine.search("spare key neighbour", user_id="bob", k=3,
                                          record_usage=False)]

    assert key.id in bob_hits() and key.id in bob_hits()
    _behind(mine)
    # the vault only, as by a writer killed before its index write: the index still lists bob
    revoked = shared.model_copy(update={
        "governance": rules.revoked(shared.governance, "bob"), "version": shared.version + 1})
    theirs.vault.put_version(revoked, shared.version, Actor("alice"), "revoke")
    assert key.id not in bob_hits()
    assert key.id in [h.id for h in mine.search("spare key neighbour", user_id="alice", k=3)]


def test_once_caught_up_the_cache_serves_again(open_mos):
    mine, theirs = open_mos(), open_mos()
    kayak, *_ = mine.add_many(TURNS, user_id="alice")
    _search(mine, record_usage=False)
    theirs.add("A canoe is tied to the jetty.", user_id="alice")
    mine.store.sync()
    _search(mine, record_usage=False)  # reads what the cache lacks
    reads = mine.vault.cached_reads
    assert kayak.id in [h.id for h in _search(mine, record_usage=False)]
    # served from the cache (once or twice: the memories the second stages weigh as
    # evidence are read first, the other candidates after)
    assert mine.vault.cached_reads > reads


def test_usage_counters_served_from_the_cache_count_this_process_accesses(open_mos):
    mos = open_mos()
    mos.add_many(TURNS, user_id="alice")
    for _ in range(3):
        _search(mos)  # each counts an access of each hit
    mos.vault.flush_usage()  # the flushed accesses are added to the kept counters
    _search(mos)  # pending again, laid over them
    reads = mos.vault.cached_reads
    hits = _search(mos, record_usage=False)
    assert mos.vault.cached_reads == reads + 1
    read = mos.vault.get_many([h.id for h in hits])
    assert [h.memory.usage.access_count for h in hits] == [read[h.id].usage.access_count for h in hits]
    assert hits[0].memory.usage.access_count == 4


def test_counters_older_than_the_limit_or_retiered_are_read_again(open_mos):
    mos = open_mos()
    mos.add_many(TURNS, user_id="alice")
    hits = _search(mos, record_usage=False)
    mos.vault.set_tier(hits[0].id, "activation")  # not in the feed: its counters are read again
    reads = mos.vault.cached_reads
    again = _search(mos, record_usage=False)
    assert mos.vault.cached_reads == reads
    assert {h.id: h.memory.usage.tier.value for h in again}[hits[0].id] == "activation"
    mos.vault.CACHED_USAGE_S = 0.0  # type: ignore[misc]
    _search(mos, record_usage=False)
    assert mos.vault.cached_reads == reads


def test_a_follower_that_skipped_pruned_changes_drops_the_cache(open_mos):
    mos = open_mos()
    mos.add_many(TURNS, user_id="alice")
    _search(mos, record_usage=False)
    assert len(mos.vault._cubes) >= 3
    mos.store.follower._resync()
    assert len(mos.vault._cubes) == 0



def test_a_restarted_server_is_not_trusted_until_the_follower_checked_its_feed(open_mos):
    mos = open_mos()
    mos.add_many(TURNS, user_id="alice")
    _search(mos, record_usage=False)
    # as if the server had restarted since the follower last compared its cursor with the
    # feed (a restore or a failover may have brought another timeline)
    mos.vault._checked_start = "an earlier start of the server"
    assert mos.vault.head_seen_since(float("-inf")) is None  # not this server's feed
    reads, generation = mos.vault.cached_reads, mos.vault._cubes.generation
    _search(mos, record_usage=False)  # its sync checks this server's feed first
    assert mos.vault._checked_start == mos.vault.seen_start
    assert mos.vault._cubes.generation > generation  # what the cache held was dropped
    assert mos.vault.cached_reads == reads  # and the hits were read
    _search(mos, record_usage=False)
    assert mos.vault.cached_reads == reads + 1


def test_a_feed_that_went_back_makes_the_follower_resync(open_mos, pg_url):
    import psycopg

    mos = open_mos()
    mos.add_many(TURNS[1:], user_id="alice")
    before = mos.vault.change_head()
    kayak = mos.add(TURNS[0], user_id="alice")
    assert kayak.id in [h.id for h in _search(mos, record_usage=False)]
    cursor = mos.store.follower.cursor
    assert cursor > before
    # a restore from a backup taken before the kayak was added
    with psycopg.connect(pg_url, autocommit=True) as conn, conn.transaction():
        for table, column in (("changes", "memory_id"), ("versions", "id"), ("usage", "id"),
                              ("memories", "id")):
            conn.execute(f"DELETE FROM {table} WHERE {column} = %s", (kayak.id,))
    mos.index.delete([kayak.id])
    resyncs = mos.store.follower.resyncs
    mos.store.sync()
    assert mos.store.follower.resyncs == resyncs + 1
    assert mos.store.follower.cursor == before
    assert len(mos.vault._cubes) == 0 or kayak.id not in mos.vault._cubes.known([kayak.id])
    hits = _search(mos, record_usage=False)
    assert kayak.id not in [h.id for h in hits]


def test_a_restarted_server_with_other_changes_at_the_cursor_makes_the_follower_resync(
        open_mos, pg_url):
    """A failover that lost this process's last changes and took new ones past them: the
    head alone looks like progress; the change at the cursor tells the timelines apart."""
    import psycopg

    mine, theirs = open_mos(), open_mos()
    mine.add_many(TURNS, user_id="alice")
    mine.store.sync()
    cursor, resyncs = mine.store.follower.cursor, mine.store.follower.resyncs
    theirs.add("A canoe is tied to the jetty.", user_id="alice")  # the head moves on
    with psycopg.connect(pg_url, autocommit=True) as conn:  # another change at the cursor
        conn.execute("UPDATE changes SET at = at - 1 WHERE seq = %s", (cursor,))
    mine.store.sync()  # the same server: nothing to compare, the new change is applied
    assert mine.store.follower.resyncs == resyncs
    assert mine.store.follower.cursor > cursor
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE changes SET at = at - 1 WHERE seq = %s", (mine.store.follower.cursor,))
    mine.vault._checked_start = "an earlier start of the server"
    mine.store.sync()
    assert mine.store.follower.resyncs == resyncs + 1
    assert mine.vault.checked_start == mine.vault.seen_start
    mine.store.sync()  # the cursor's change is known again: no second resync
    assert mine.store.follower.resyncs == resyncs + 1
