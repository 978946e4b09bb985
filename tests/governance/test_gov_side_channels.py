"""What other users hold never shows in a user's search: not in its scores, not in its
ranking, not in its timing.

Every statistic a search weighs by is counted over the memories the searching principal may
read -- BM25's IDF (the index's corpus filter), entity degrees and the names left out of the
dense query (the principal's graph view) -- and the query-vector cache is kept per principal.
The store-wide forms told a user how many memories of others hold a word, and a cache hit
told a user what someone else had asked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from memos_core import MemOS, MemOSConfig


@pytest.fixture(params=["edge", "qdrant", "server"])
def mos(request, tmp_path: Path) -> Iterator[MemOS]:
    """A store on each index: Qdrant edge, qdrant-client's local mode, PostgreSQL."""
    if request.param == "server":
        store = MemOS(request.getfixturevalue("pg_url"), config=MemOSConfig(show_progress=False))
    else:
        store = MemOS(tmp_path / "data", config=MemOSConfig(show_progress=False, index=request.param))
    yield store
    store.close()


OWN = ["I planted tomatoes in the garden with Priya", "The Acme merger closes in May",
       "My sister Priya moved to Lisbon", "We talked about the garden fence on Sunday"]
QUERIES = ["Acme merger", "garden with Priya", "where did Priya move"]


def _ranking(mos: MemOS, user: str) -> list[list[tuple[str, float, dict[str, float]]]]:
    return [[(h.id, round(h.score, 9), {k: round(v, 9) for k, v in h.signals.items()})
             for h in mos.search(q, user_id=user, k=4, record_usage=False)] for q in QUERIES]


def test_other_users_memories_change_neither_scores_nor_ranking(mos: MemOS) -> None:
    for text in OWN:
        mos.add(text, user_id="ann")
    before = _ranking(mos, "ann")
    assert all(hits for hits in before)
    # another user writes the same words many times over: store-wide statistics would make
    # "Acme", "merger", "garden" and "Priya" common words and change Ann's scores
    mos.add_many([f"Acme merger note {i}: the garden plan with Priya" for i in range(40)],
                 user_id="bo")
    assert _ranking(mos, "ann") == before
    assert any(h.signals.get("bm25") for hits in
               [mos.search(q, user_id="bo", k=4, record_usage=False) for q in QUERIES] for h in hits)


def test_one_users_query_is_not_a_cache_hit_for_another(mos: MemOS) -> None:
    mos.add("The Acme merger closes in May", user_id="ann")
    mos.add("Bo likes sailing", user_id="bo")
    cache = mos.retriever.query_vectors
    mos.search("when does the merger close", user_id="ann", record_usage=False)
    misses = cache.misses
    mos.search("when does the merger close", user_id="bo", record_usage=False)
    assert (cache.misses, cache.hits) == (misses + 1, 0)  # Bo's search embedded it again
    mos.search("when does the merger close", user_id="ann", record_usage=False)
    assert cache.hits == 1  # Ann's own repeat is still served from the cache


def test_memories_a_search_withholds_are_no_evidence_for_other_hits(mos: MemOS) -> None:
    """A memory past its TTL (not yet expired by the scheduler) or redacted for the caller
    neither seeds the graph expansion nor feeds the entity hop: before, a visible hit was
    credited 'shared entity zoltan kovacs', a name only the hidden text held, and ranked up."""
    import time

    mos.add("Alice secretly met Zoltan Kovacs at the harbour at midnight", user_id="ann",
            ttl_seconds=0.5)
    mos.add("Alice's test result came back from Dr Ingrid Halvorsen", user_id="ann",
            sensitivity=["pii"])
    mos.add("Zoltan Kovacs sells second-hand boats", user_id="ann")
    mos.add("Ingrid Halvorsen runs a clinic downtown", user_id="ann")
    mos.add_many([f"Filler note number {i} about groceries and weather" for i in range(4)],
                 user_id="ann")
    time.sleep(0.6)
    for query in ("secret midnight meeting at the harbour", "medical test result"):
        hits = mos.search(query, user_id="ann", k=5, record_usage=False)
        assert hits and not any("midnight" in h.text for h in hits)
        reasons = [r for h in hits for r in h.reasons]
        assert not any("zoltan" in r or "halvorsen" in r for r in reasons), reasons


def test_a_reader_does_not_see_when_the_owner_used_a_memory(mos: MemOS) -> None:
    """Usage counters (access count, last access, heat) are the owner's: a reader who
    polled them learned when the owner last searched for the memory."""
    import asyncio

    cube = mos.add("The Acme merger closes in May", user_id="ann")
    mos.share(cube.id, with_user_id="bo", user_id="ann")
    for _ in range(3):
        mos.search("Acme merger", user_id="ann")
    assert mos.get(cube.id, user_id="ann").usage.access_count == 3
    seen = [mos.get(cube.id, user_id="bo"), mos.get(cube.id, user_id="bo", version=2),
            *mos.history(cube.id, user_id="bo"), *mos.list(user_id="bo"),
            *(h.memory for h in mos.search("Acme merger", user_id="bo", record_usage=False)),
            asyncio.run(mos.aget(cube.id, user_id="bo")),
            *asyncio.run(mos.alist(user_id="bo"))]
    assert len(seen) == 8 and all(c.usage.access_count == 0 and c.usage.last_access is None
                                  and c.usage.heat == 0 for c in seen)


def test_a_writer_does_not_see_the_owners_usage_in_what_a_write_returns(mos: MemOS) -> None:
    """update, set_state (also to the state it has: no version, no audit record) and
    rollback return the memory: to a writer, without the owner's counters."""
    cube = mos.add("The Acme merger closes in May", user_id="ann")
    mos.share(cube.id, with_user_id="bo", user_id="ann", scope="write")
    mos.search("Acme merger", user_id="ann")
    returned = [mos.update(cube.id, "The Acme merger closes in June", user_id="bo"),
                mos.set_state(cube.id, "generated", user_id="bo"),
                mos.rollback(cube.id, 1, user_id="bo")]
    assert all(c.usage.access_count == 0 and c.usage.last_access is None for c in returned)
    assert mos.get(cube.id, user_id="ann").usage.access_count == 1


def test_a_reader_gets_none_of_the_owners_usage_from_the_audit_log(tmp_path: Path,
                                                                    tiny_model) -> None:
    """The scheduler's records of a memory carry its owner's usage: a tier move says it
    became hot (the owner searched for it), an archive's reason names its heat and how
    long it lay idle. A reader or writer gets no tier move and the state change without its
    reason; the owner gets them all."""
    import time

    from memos_core.scheduler import SchedulerConfig

    mos = MemOS(tmp_path / "data", config=MemOSConfig(show_progress=False))
    try:
        mos.attach_model(tiny_model)
        hot = mos.add("The Acme merger closes in May", user_id="ann")
        cold = mos.add("Ann once visited Oslo", user_id="ann")
        mos.share(hot.id, with_user_id="bo", user_id="ann")
        mos.share(cold.id, with_user_id="bo", user_id="ann", scope="write")
        for _ in range(2):
            mos.search("Acme merger", user_id="ann", k=1)
        time.sleep(0.6)
        mos.schedule(config=SchedulerConfig(archive_after_idle_s=0.5))

        own = {m.id: mos.audit_log(user_id="ann", memory_id=m.id) for m in (hot, cold)}
        assert [r.action for r in own[hot.id]][-1] == "schedule:promote"
        archived = own[cold.id][-1]
        assert archived.action == "state:archived" and "heat" in (archived.reason or "")

        seen = {m.id: mos.audit_log(user_id="bo", memory_id=m.id) for m in (hot, cold)}
        assert [r.action for r in seen[hot.id]] == ["add", "share:read"]
        assert [r.action for r in seen[cold.id]] == ["add", "share:write", "state:archived"]
        shown = seen[cold.id][-1]
        assert (shown.seq, shown.version, shown.reason, shown.details) == (
            archived.seq, archived.version, None, {})
        assert mos.audit_log(user_id="bo", memory_id=cold.id, action="schedule:promote") == []
        # ``limit`` counts the records the reader gets, not the ones left out
        assert [r.action for r in mos.audit_log(user_id="bo", memory_id=hot.id, limit=1)] == [
            "share:read"]
        assert not any("heat" in f"{r.reason} {r.details}" for rs in seen.values() for r in rs)
    finally:
        mos.close()
