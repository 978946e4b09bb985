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
