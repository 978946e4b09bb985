"""Two-stage session retrieval and the entity second hop: the pure helpers directly, the
stages end to end on a real MemOS (MiniLM, Qdrant edge, graph)."""

from __future__ import annotations

import math

import pytest

from memos_core.config import RetrievalConfig
from memos_core.retrieval.candidate import Candidate
from memos_core.retrieval.multistage import hop_entities, rank_sessions


def test_rank_sessions_sums_the_best_candidates_of_each_session():
    cands = {i: Candidate(i, s) for i, s in
             [("a1", 0.9), ("a2", 0.1), ("b1", 0.5), ("b2", 0.45), ("x", 0.95)]}
    session = {"a1": "A", "a2": "A", "b1": "B", "b2": "B"}  # x has no session
    assert rank_sessions(cands, session.get) == [("A", pytest.approx(1.0)), ("B", pytest.approx(0.95))]
    assert rank_sessions(cands, session.get, per_session=1)[0] == ("A", pytest.approx(0.9))


def test_hop_entities_keeps_specific_new_entities_only():
    first = [{"entities": ["caroline", "adoption agency", "2023", "lisbon"]},
             {"entities": ["adoption agency", "pride parade"]}]
    degree = {"caroline": 300, "adoption agency": 3, "lisbon": 0, "pride parade": 7}.get
    got = hop_entities(first, ["Pride Parade"], lambda e: degree(e, 0), max_degree=20, limit=4)
    # the speaker is everywhere (not specific), numbers are not names, unknown ones are skipped,
    # and what the query already names is not added again
    assert got == ["adoption agency"]
    assert hop_entities(first, [], lambda e: degree(e, 0), max_degree=20, limit=1) == ["adoption agency"]


SESSIONS = {
    "s1": ["Ana: I moved to Lisbon last spring.", "Bruno: How is the flat?",
           "Ana: Small, but the balcony faces the river.", "Bruno: Do you still paint?",
           "Ana: Yes, watercolours of the tram lines every weekend."],
    "s2": ["Ana: My sister visited from Porto.", "Bruno: Nice, what did you do?",
           "Ana: We ate grilled sardines and walked a lot."],
    "s3": ["Bruno: I bought a telescope.", "Ana: Saturn must look amazing.",
           "Bruno: The rings were tiny but clear."],
}


def _store(make_mos, name: str, **retrieval):
    mos = make_mos(name, retrieval=RetrievalConfig(**retrieval))
    items = [{"text": t, "session_id": sid} for sid, turns in SESSIONS.items() for t in turns]
    mos.add_many(items, user_id="u")
    return mos


def test_session_stage_searches_inside_the_best_sessions(make_mos):
    query = "Where does Ana live and what does she paint?"
    staged = _store(make_mos, "staged", session_stage_weight=0.5, session_count=1)
    hits = staged.search(query, user_id="u", k=5, record_usage=False)
    assert hits and all(h.memory.namespace.session_id == "s1" for h in hits if "session" in h.signals)
    assert any("session" in h.signals for h in hits)
    # a search already restricted to one session has nothing to rank between sessions
    inside = staged.search(query, user_id="u", k=3, session_id="s2", record_usage=False)
    assert all("session" not in h.signals for h in inside)


@pytest.mark.parametrize("source", ["graph", "index"])
def test_entity_hop_adds_a_signal_from_the_first_hits_entities(make_mos, source):
    mos = _store(make_mos, f"hop-{source}", hop_weight=0.5, hop_max_degree=5, hop_source=source)
    hits = mos.search("What did Ana's sister eat?", user_id="u", k=5, record_usage=False)
    # "Porto" (named by the first hit, not by the query) finds the turns that mention it
    assert any("hop" in h.signals for h in hits)
    porto = next(h for h in hits if "Porto" in h.text)
    assert "hop" in porto.signals


def test_the_graph_hop_adds_entity_weights_to_the_first_bm25_scores(make_mos):
    """The graph hop's scores: a first BM25 hit keeps its score, a memory naming an added
    entity gains the entity's BM25 weight (IDF over the view's memories, once per term of
    the name); only memories the filter passes count, and no index search is made."""
    from memos_core.index.base import ScoredId
    from memos_core.retrieval.filters import SEARCHABLE_STATES, build_filter
    from memos_core.retrieval.multistage import entity_hop

    mos = _store(make_mos, "graph-hop")
    mos.add("Porto is where the Douro river meets the sea", user_id="other")
    flt = build_filter(("u",), states=SEARCHABLE_STATES)
    graph = mos.retriever.graph.for_filter(flt)
    porto = next(e for e in graph.entities_of(
        mos.search("sister visited from Porto", user_id="u", k=1)[0].id) if e.lower() == "porto")
    naming = [m for m in graph.naming([porto], flt)]
    assert naming and len(naming) == graph.entity_degree(porto)
    first = [ScoredId("not-naming-porto", 2.0), ScoredId(naming[0], 1.0)]
    calls = []
    mos.index.search_sparse = lambda *a, **k: calls.append(a)  # type: ignore[method-assign]
    hop = entity_hop(graph, first, [porto], flt, terms=lambda e: 1, n=50)
    df, total = graph.entity_degree(porto), graph.readable_count()
    gain = math.log(1 + (total - df + 0.5) / (df + 0.5))
    scores = {h.id: h.score for h in hop}
    assert scores["not-naming-porto"] == 2.0
    assert scores[naming[0]] == pytest.approx(1.0 + gain)
    assert all(scores[m] == pytest.approx(gain) for m in naming[1:])
    assert set(scores) == {"not-naming-porto", *naming}  # the other user's Porto is not one
    assert all(mos.get(m, user_id="u").user_id == "u" for m in naming)
    assert [h.score for h in hop] == sorted(scores.values(), reverse=True)
    assert calls == [] and entity_hop(graph, first, [], flt, terms=lambda e: 1, n=50) == []
