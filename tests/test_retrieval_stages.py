"""The optional retrieval stages: session boost, query time ranges, pseudo-relevance
feedback and a pluggable reranker. Pure functions are tested directly; the stages end to end
on a real MemOS (MiniLM, Qdrant edge, graph)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timezone

import pytest

from memos_core.config import RetrievalConfig
from memos_core.errors import InvalidInputError
from memos_core.index.base import SparseVec
from memos_core.retrieval.expansion import boost_sessions, feedback_query, parse_time_range
from memos_core.retrieval.hybrid import Candidate
from memos_core.retrieval.rerank import Reranker, named_speaker, rerank, speaker_of

NOW = datetime(2024, 3, 15, 12, tzinfo=timezone.utc)


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize("query, expected", [
    ("What did Ana do in May 2023?", (ts(2023, 5, 1), ts(2023, 6, 1))),
    ("what happened in december?", (ts(2023, 12, 1), ts(2024, 1, 1))),   # latest past December
    ("trips in March", (ts(2024, 3, 1), ts(2024, 4, 1))),
    ("What did we plan in 2022?", (ts(2022, 1, 1), ts(2023, 1, 1))),
    ("what did I eat yesterday", (ts(2024, 3, 14, 12), ts(2024, 3, 15, 12))),
    ("books I read last week", (ts(2024, 3, 8, 12), ts(2024, 3, 15, 12))),
    ("May I ask what bike I have?", None),  # the verb, not the month
    ("what bike do I have?", None),
    ("What did we plan in 9999?", None),  # no date ends that year: no range, no error
    ("What did we plan in December 9999?", None),
    ("What did we plan in 0000?", None),
    ("What did we plan in January 0000?", None),
])
def test_parse_time_range(query, expected):
    assert parse_time_range(query, NOW) == expected


def test_boost_sessions_lifts_the_best_sessions_only():
    cands = {i: Candidate(i, s) for i, s in [("a1", 0.9), ("a2", 0.2), ("b1", 0.5), ("c1", 0.1)]}
    session = {"a1": "A", "a2": "A", "b1": "B", "c1": "C"}
    boost_sessions(cands, session.get, 0.5, sessions=2)
    assert cands["a2"].score == pytest.approx(0.2 + 0.5)            # best session: relative 1
    assert cands["b1"].score == pytest.approx(0.5 + 0.5 * 0.5 / 1.1)
    assert cands["c1"].score == pytest.approx(0.1)                   # not a top-2 session
    boost_sessions(cands, session.get, 0.0)                          # weight 0: unchanged
    assert cands["c1"].score == pytest.approx(0.1)


def test_feedback_query_adds_the_heaviest_new_terms():
    q = SparseVec((1, 2), (1.0, 1.0))
    docs = [SparseVec((1, 3, 4), (0.5, 0.8, 0.1)), SparseVec((3, 5), (0.4, 0.3))]
    out = feedback_query(q, docs, weight=0.5, terms=2)
    assert out.indices == (1, 2, 3, 5)
    assert dict(zip(out.indices, out.values)) == pytest.approx({1: 1.0, 2: 1.0, 3: 0.5, 5: 0.125})


class OverlapReranker:
    """A real (if simple) scorer: the share of query words found in the text."""

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        words = set(re.findall(r"\w+", query.lower()))
        return [len(words & set(re.findall(r"\w+", t.lower()))) / max(1, len(words)) for t in texts]


def test_rerank_mixes_reranker_scores():
    cands = [Candidate("x", 1.0), Candidate("y", 0.9)]
    texts = {"x": "nothing relevant", "y": "the green gravel bike"}
    ranked = rerank("green bike", cands, texts, question_weight=1.0,
                    reranker=OverlapReranker(), reranker_weight=0.5)
    assert [c.id for c in ranked] == ["y", "x"] and ranked[0].scores["rerank"] == 1.0


def test_memos_takes_a_reranker_and_refuses_a_non_reranker(tmp_path):
    from memos_core import MemOS, MemOSConfig

    assert isinstance(OverlapReranker(), Reranker)
    with pytest.raises(InvalidInputError, match="reranker"):
        MemOS(tmp_path / "bad", config=MemOSConfig(show_progress=False), reranker=object())
    with MemOS(tmp_path / "ok", config=MemOSConfig(show_progress=False),
               reranker=OverlapReranker()) as mos:
        mos.add_many([{"text": t} for t in ("I ride a green gravel bike.",
                                            "Bikes are fun to talk about.",
                                            "My sister lives in Oslo.")], user_id="u")
        hits = mos.search("green gravel bike", user_id="u", k=2, record_usage=False)
        assert hits[0].text == "I ride a green gravel bike." and "rerank" in hits[0].signals
        assert len(hits) == 2


def test_a_search_that_looks_deeper_reranks_only_what_it_may_show(tmp_path):
    """Where the checks on the candidates (here valid_at) leave too few hits, the search
    looks deeper; the second stage, a reranker included, still orders only the first
    rerank_depth candidates that pass them, never the thousands it looked through."""
    from memos_core import MemOS, MemOSConfig

    class Counting(OverlapReranker):
        seen: list[int] = []

        def score(self, query: str, texts: Sequence[str]) -> list[float]:
            self.seen.append(len(texts))
            return super().score(query, texts)

    counting = Counting()
    with MemOS(tmp_path / "deep", config=MemOSConfig(show_progress=False),
               reranker=counting) as mos:
        mos.add_many([{"text": f"Note {i} about the green gravel bike.",
                       "occurred_at": "2024-01-01T00:00:00Z"} for i in range(150)], user_id="u")
        old = mos.add("I rode a green gravel bike in 2019.", user_id="u",
                      occurred_at="2019-05-01T00:00:00Z")
        counting.seen.clear()
        hits = mos.search("green gravel bike", user_id="u", k=3, valid_at="2020-01-01",
                          record_usage=False)
        assert [h.id for h in hits] == [old.id]  # found below the 150 newer notes
        assert counting.seen and max(counting.seen) <= mos.config.retrieval.rerank_depth


ITEMS = [
    {"text": "Ana adopted a dog named Pico.", "session_id": "s1",
     "occurred_at": datetime(2023, 5, 3, tzinfo=timezone.utc)},
    {"text": "Pico loves the beach in Porto.", "session_id": "s1",
     "occurred_at": datetime(2023, 5, 3, tzinfo=timezone.utc)},
    {"text": "Ana started a pottery class.", "session_id": "s2",
     "occurred_at": datetime(2023, 9, 9, tzinfo=timezone.utc)},
]
QUERY = "What did Ana do in May 2023?"


def test_temporal_boost_moves_memories_of_the_named_month_up(make_mos):
    # "Ana" is named by 2 of the 3 memories: kept in the dense query, so the words decide
    plain = make_mos("plain", retrieval=RetrievalConfig(dense_common_share=0))
    plain.add_many(ITEMS, user_id="u")
    before = [h.text for h in plain.search(QUERY, user_id="u", k=3, record_usage=False)]
    assert before[0] == "Ana started a pottery class."  # the words match it best
    timed = make_mos("timed", retrieval=RetrievalConfig(temporal_weight=4.0,
                                                        dense_common_share=0))
    timed.add_many(ITEMS, user_id="u")
    hits = timed.search(QUERY, user_id="u", k=3, record_usage=False)
    assert hits[0].text == "Ana adopted a dog named Pico." and hits[0].signals["time"] == 1.0
    assert "time" not in next(h for h in hits if "pottery" in h.text).signals


def test_session_and_feedback_stages_run_end_to_end(make_mos):
    mos = make_mos(retrieval=RetrievalConfig(session_weight=0.3, prf_weight=0.5))
    mos.add_many(ITEMS, user_id="u")
    hits = mos.search(QUERY, user_id="u", k=3, record_usage=False)
    assert len(hits) == 3 and all("session" in h.signals for h in hits)
    # feedback found the beach turn through the terms of the first hits (it has no query word)
    assert "bm25" in next(h for h in hits if "beach" in h.text).signals


def test_speaker_normalisation():
    from memos_core.retrieval.rerank import named_speaker, speaker_of

    assert speaker_of("[1:56 pm on 8 May, 2023] Caroline: I went to a support group.") == "Caroline"
    assert speaker_of("user: what bike do I have?") == "user"
    assert speaker_of("no speaker here") is None
    people = {"Caroline", "Melanie"}
    assert named_speaker("What did Melanie paint?", people) == "Melanie"
    assert named_speaker("What did Mel's kids paint?", people) == "Melanie"  # short form
    assert named_speaker("What did caroline research?", people) == "Caroline"
    assert named_speaker("What do Caroline and Melanie share?", people) is None  # two
    assert named_speaker("What is the weather?", people) is None
    # an ordinary word that begins with a name is not the name ("times" is not Tim)
    assert named_speaker("How many times did Melanie paint?", {"Tim", "Melanie"}) == "Melanie"
    assert named_speaker("How many times has it rained?", {"Tim", "Melanie"}) is None
    assert named_speaker("What did Timmy say?", {"Tim", "Melanie"}) == "Tim"  # a proper noun


@pytest.mark.parametrize(("turn_form", "query_form"), [("NFC", "NFD"), ("NFD", "NFC"),
                                                      ("NFD", "NFD")])
def test_a_name_in_either_unicode_form_is_the_same_speaker(turn_form, query_form):
    """In the decomposed form (NFD) an accent is a mark of its own, which a word pattern does
    not match: "Zoë" was cut to "Zo" and lost the speaker's lift, in a turn or a query."""
    from unicodedata import normalize

    texts = {"z": normalize(turn_form, "[1 May 2023] Zoë: I bought hiking boots."),
             "r": normalize(turn_form, "[2 May 2023] Rafaël: I walked the river trail.")}
    assert speaker_of(texts["z"]) == "Zoë"  # composed, whatever form the turn is in
    query = normalize(query_form, "What did Zoë buy for hiking?")
    assert named_speaker(query, {"Zoë", "Rafaël"}) == "Zoë"
    assert named_speaker(query, {normalize("NFD", "Zoë"), "Rafaël"}) == normalize("NFD", "Zoë")
    ranked = rerank(query, [Candidate("r", 1.0), Candidate("z", 0.8)], texts,
                    question_weight=1.0, speaker_weight=0.5)
    assert [c.id for c in ranked] == ["z", "r"] and ranked[0].scores["speaker"] == 1.0


def test_speaker_weight_ranks_the_named_speakers_turns_first():
    cands = [Candidate("a", 1.0), Candidate("b", 0.8)]
    texts = {"a": "Melanie: I love painting sunsets.", "b": "Caroline: I painted a sunset too."}
    ranked = rerank("What did Caroline paint?", cands, texts, question_weight=1.0,
                    speaker_weight=0.5)
    assert [c.id for c in ranked] == ["b", "a"] and ranked[0].scores["speaker"] == 1.0


def test_graph_expansion_follows_only_entities_within_graph_max_degree(make_mos):
    """A top hit's entity named by 5 memories links them in the expansion by default
    (``graph_max_degree`` 30); with ``graph_max_degree=4`` it is not followed."""
    def hits_by_entity(mos) -> set[str]:
        seed = mos.add("Alice planted tulips in Ostrava", user_id="u", session_id="s0")
        others = {mos.add(f"Ostrava note number {i}: the tram was late", user_id="u",
                          session_id=f"s{i + 1}").id for i in range(4)}
        hits = mos.search("Where did Alice plant tulips?", user_id="u", k=10, record_usage=False)
        assert hits[0].id == seed.id
        return {h.id for h in hits if h.id in others
                and any(r.startswith("shared entity ostrava") for r in h.reasons)}

    assert len(hits_by_entity(make_mos("default"))) == 4
    assert hits_by_entity(make_mos("capped", retrieval=RetrievalConfig(graph_max_degree=4))) == set()
