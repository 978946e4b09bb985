"""Second-stage cues measured for issue 16's third pass: the answer-type ("when") cue, the
per-session cap, and the local-LM reranker. Pure functions directly; the stages end to end on
a real MemOS (MiniLM, Qdrant edge, graph); the reranker on a real (tiny or packaged) model."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import pytest

from memos_core.config import RetrievalConfig
from memos_core.errors import InvalidInputError
from memos_core.retrieval.candidate import Candidate
from memos_core.retrieval.rerank import (
    Reranker,
    asks_when,
    cap_sessions,
    has_time_expression,
    rerank,
)


@pytest.mark.parametrize("query, expected", [
    ("When did Caroline go to the support group?", True),
    ("what year did Ana move to Lisbon", True),
    ("How long ago was the trip?", True),
    ("Which month did they adopt Pico?", True),
    ("What did Ana paint?", False),
    ("Where does Ana live?", False),
    ("How long is the hike?", False),
])
def test_asks_when(query, expected):
    assert asks_when(query) is expected


@pytest.mark.parametrize("text, expected", [
    ("[1:56 pm on 8 May, 2023] Caroline: I went to a support group yesterday.", True),
    ("Ana: We moved to Lisbon two years ago!", True),
    ("Ana: last weekend we hiked", True),
    ("Ana: It was back in 2019.", True),
    ("Ana: see you on Friday", True),
    ("Ana: We started in June.", True),
    ("[1:56 pm on 8 May, 2023] Caroline: I love painting.", False),  # the prefix date is not hers
    ("Ana: May I ask what you painted?", False),                     # "may" is the verb
    ("Ana: What a day of painting.", False),
])
def test_has_time_expression(text, expected):
    assert has_time_expression(text) is expected


def test_when_weight_lifts_turns_that_say_when_only_for_when_questions():
    texts = {"a": "Ana: I love the support group.", "b": "Ana: I joined the support group last week."}

    def ranked(query: str, weight: float) -> list[str]:
        cands = [Candidate("a", 1.0), Candidate("b", 0.8)]
        return [c.id for c in rerank(query, cands, texts, question_weight=1.0, when_weight=weight)]

    assert ranked("When did Ana join the support group?", 0.5) == ["b", "a"]
    assert ranked("When did Ana join the support group?", 0.0) == ["a", "b"]    # off
    assert ranked("What does Ana think of the support group?", 0.5) == ["a", "b"]  # not "when"


def test_cap_sessions_moves_the_surplus_of_a_session_behind_the_others():
    cands = [Candidate(i, s) for i, s in [("a1", 5), ("a2", 4), ("a3", 3), ("b1", 2), ("x", 1.5),
                                          ("a4", 1)]]
    session = {"a1": "A", "a2": "A", "a3": "A", "a4": "A", "b1": "B", "x": None}
    assert [c.id for c in cap_sessions(cands, session, 2)] == ["a1", "a2", "b1", "x", "a3", "a4"]
    assert [c.id for c in cap_sessions(cands, session, 0)] == [c.id for c in cands]  # off
    assert [c.id for c in cap_sessions(cands, {}, 1)] == [c.id for c in cands]  # no sessions


def test_session_cap_and_when_cue_end_to_end(make_mos):
    day = datetime(2023, 5, 8, tzinfo=timezone.utc)
    items = [{"text": f"Ana: the pottery class, part {i}.", "session_id": "s1", "occurred_at": day}
             for i in range(4)]
    items.append({"text": "Ana: I signed up for a pottery class last week.", "session_id": "s2",
                  "occurred_at": day})
    query = "When did Ana sign up for the pottery class?"
    capped = make_mos("capped", retrieval=RetrievalConfig(graph_weight=0, session_cap=1,
                                                          when_weight=1.0))
    capped.add_many(items, user_id="u")
    hits = capped.search(query, user_id="u", k=5, record_usage=False)
    assert hits[0].text.endswith("last week.") and hits[0].signals["when"] == 1.0
    assert hits[1].memory.session_id == "s1" and all(h.memory.session_id == "s1" for h in hits[2:])
    assert len(hits) == 5  # the cap reorders, it drops nothing
    off = make_mos("off", retrieval=RetrievalConfig(graph_weight=0, when_weight=0))
    off.add_many(items, user_id="u")
    assert all("when" not in h.signals for h in off.search(query, user_id="u", k=5,
                                                            record_usage=False))


@pytest.fixture(scope="module")
def tiny_reranker():
    from memos_core.runtime.reranker import LocalModelReranker
    from memos_core.runtime import LocalModel

    return LocalModelReranker(LocalModel.tiny(), batch_size=2)


@pytest.mark.parametrize("method", ["query_likelihood", "yes_no"])
def test_local_model_reranker_scores_are_batch_independent(tiny_reranker, method):
    """Padding must not change a text's score: alone or batched with longer texts."""
    assert isinstance(tiny_reranker, Reranker)
    tiny_reranker.method = method
    texts = ["short", "a much longer passage about pottery classes and Lisbon " * 3, "mid text"]
    together = tiny_reranker.score("pottery?", texts)
    alone = [tiny_reranker.score("pottery?", [t])[0] for t in texts]
    assert len(together) == 3 and all(math.isfinite(s) for s in together)
    assert together == pytest.approx(alone, abs=1e-3)
    assert len(set(together)) == 3  # the texts are told apart
    assert tiny_reranker.score("q", []) == []
    with pytest.raises(InvalidInputError):
        tiny_reranker.score("q", [3])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError):
        type(tiny_reranker)(tiny_reranker.model, batch_size=0)
    with pytest.raises(InvalidInputError, match="method"):
        type(tiny_reranker)(tiny_reranker.model, method="listwise")  # type: ignore[arg-type]


@pytest.mark.slow
def test_smollm_reranker_prefers_the_passage_that_answers():
    """The packaged SmolLM2-135M: a passage that answers scores above an unrelated one."""
    from memos_core.runtime.reranker import LocalModelReranker

    reranker = LocalModelReranker()
    yes, no = reranker.score("What pet does Ana have?",
                             ["Ana: I have a dog named Pico.", "Tax forms are due in April."])
    assert yes > no
