"""Issue 16, fourth pass: the dense query without common names (``dense_common_share``), the
own-voice cue, maximal marginal relevance and rule-based query decomposition. Pure functions
on small hand-made inputs; each stage end to end on a real MemOS (MiniLM, Qdrant edge, graph)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from memos_core.config import RetrievalConfig
from memos_core.index.base import SparseVec
from memos_core.retrieval.candidate import Candidate
from memos_core.retrieval.decompose import interleave, lift_speaker, sub_queries
from memos_core.retrieval.diversity import mmr, session_similarity, term_similarity
from memos_core.retrieval.filters import SEARCHABLE_STATES, build_filter
from memos_core.retrieval.focus import common_entities, without_terms
from memos_core.retrieval.voice import body_of, first_person, own_voice

DAY = datetime(2023, 5, 8, tzinfo=timezone.utc)

# -- dense query without common names -------------------------------------------------------


def test_common_entities_keeps_names_most_memories_carry_and_never_numbers():
    degree = {"ana": 60, "ben": 45, "lisbon": 3, "4": 90, "8 may 2023": 80}.get
    entities = ["ana", "lisbon", "4", "8 may 2023", "ben", "ana"]
    assert common_entities(entities, lambda e: degree(e) or 0, 100, 0.5) == ["ana"]
    assert common_entities(entities, lambda e: degree(e) or 0, 100, 0.1) == ["ana", "ben"]
    assert common_entities(entities, lambda e: degree(e) or 0, 100, 0.0) == []  # off
    assert common_entities(entities, lambda e: degree(e) or 0, 0, 0.1) == []    # nothing visible


@pytest.mark.parametrize("query, terms, expected", [
    ("What books has Ana read?", ["ana"], "What books has read?"),
    ("What is Ana's job? ANA’s boss?", ["ana"], "What is job? boss?"),
    ("Did Ana and Ben meet Anabel?", ["ana", "ben"], "Did and meet Anabel?"),  # whole words only
    ("Where did Harry  Potter go?", ["harry potter", "harry"], "Where did Potter go?"),
    ("Ana?", ["ana"], "Ana?"),                                  # nothing left: the query itself
    ("What books has Ana read?", [], "What books has Ana read?"),
])
def test_without_terms(query, terms, expected):
    assert without_terms(query, terms) == expected


def _conversation() -> list[dict]:
    """Ben talks *to* Ana; Ana states what she read."""
    turns = [("Ana", "I finally finished reading Dune, the desert novel, last month."),
             ("Ben", "Ana! Ana, has Ana seen this? Ana, Ana!"),
             ("Ana", "Thanks Ben! My garden is blooming this spring."),
             ("Ben", "Ana, I hope your week is going well, Ana."),
             ("Ana", "We adopted a puppy called Pico."),
             ("Ben", "Ana, that is lovely news, Ana!")]
    return [{"text": f"[8 May, 2023] {who}: {text}", "session_id": "s1", "occurred_at": DAY}
            for who, text in turns]


def test_dense_query_leaves_out_the_speaker_every_memory_names(make_mos):
    query = "What books has Ana read?"
    dense_only = dict(sparse_weight=0, graph_weight=0, hop_weight=0, speaker_weight=0,
                      question_weight=1, when_weight=0)
    on = make_mos("on", retrieval=RetrievalConfig(dense_common_share=0.3, **dense_only))
    on.add_many(_conversation(), user_id="u")
    flt = build_filter(("u",), states=SEARCHABLE_STATES)
    assert on.retriever.dense_text(query, flt) == "What books has read?"
    assert on.retriever.dense_text("Where is Pico?", flt) == "Where is Pico?"  # specific: kept
    def margin(mos) -> float:
        """Dense cosine of Ana's statement minus that of Ben's turn that only names her."""
        dense = {h.text.split("] ")[1][:9]: h.signals["dense"]
                 for h in mos.search(query, user_id="u", k=6, record_usage=False)}
        return dense["Ana: I fi"] - dense["Ben: Ana!"]

    hits = on.search(query, user_id="u", k=2, record_usage=False)
    assert "Dune" in hits[0].text and "dense" in hits[0].signals
    off = make_mos("off", retrieval=RetrievalConfig(dense_common_share=0, **dense_only))
    off.add_many(_conversation(), user_id="u")
    assert off.retriever.dense_text(query, flt) == query
    # the name in the query pulls it towards the turn that names her and nothing else
    assert margin(on) > margin(off) + 0.05


def test_common_names_are_counted_in_the_principals_own_view(make_mos):
    """Other users' memories do not decide which names leave a user's dense query, and a
    user with many memories gets the focus too (no degree cap on the count)."""
    mos = make_mos("views", retrieval=RetrievalConfig(dense_common_share=0.3))
    mos.add_many([{"text": f"Pico went to Paris, day {i}."} for i in range(40)], user_id="other")
    mos.add_many(_conversation(), user_id="u")
    flt = build_filter(("u",), states=SEARCHABLE_STATES)
    # 40 of the store's memories name Pico, one of u's 7: kept; Ana: 7 of 7, dropped
    assert mos.retriever.dense_text("Did Ana take Pico to Paris?", flt) == "Did take Pico to Paris?"
    # every one of 1,005 memories names Zed: more than the old store-wide degree's cap (1,000)
    every = make_mos("every", retrieval=RetrievalConfig(dense_common_share=1.0))
    every.add_many([{"text": f"Zed: note {i} about the harbour.", "session_id": f"s{i // 50}"}
                    for i in range(1005)], user_id="big")
    big = build_filter(("big",), states=SEARCHABLE_STATES)
    assert every.retriever.dense_text("What did Zed say about the harbour?", big) == \
        "What did say about the harbour?"


# -- own voice --------------------------------------------------------------------------------


def test_first_person_reads_the_body_only():
    assert body_of("[8 May, 2023] Ana: I ran.") == "I ran."
    assert first_person("Ana: we’re off to Lisbon") is True
    assert first_person("[8 May, 2023] Ana: You did great, Ben!") is False
    assert first_person("Imogen: Islands are nice.") is False  # "I" only as a whole word


def test_own_voice_lifts_the_named_speakers_first_person_turns():
    texts = {"a": "Ana: You must be proud of the kids!", "b": "Ana: I took my kids camping.",
             "c": "Ben: I went camping too.", "d": "Ben: Ana, you rock."}

    def lifted(query: str, weight: float) -> dict[str, float]:
        cands = [Candidate(i, 1.0) for i in texts]
        own_voice(query, cands, texts, weight)
        return {c.id: c.score for c in cands}

    assert lifted("What does Ana do with her kids?", 0.5) == {"a": 1.0, "b": 1.5, "c": 1.0, "d": 1.0}
    assert set(lifted("Did Ana and Ben go camping?", 0.5).values()) == {1.0}  # two speakers
    assert set(lifted("What does Ana do with her kids?", 0.0).values()) == {1.0}  # off


# -- maximal marginal relevance --------------------------------------------------------------


def test_term_similarity_is_the_cosine_of_term_vectors():
    sim = term_similarity({"a": SparseVec([1, 2], [1.0, 1.0]), "b": SparseVec([1, 2], [2.0, 2.0]),
                           "c": SparseVec([3], [1.0]), "e": SparseVec([], [])})
    assert sim("a", "b") == pytest.approx(1.0)
    assert sim("a", "c") == 0.0 and sim("a", "e") == 0.0 and sim("a", "unknown") == 0.0


def test_mmr_lets_a_second_session_in_before_a_third_turn_of_the_first():
    cands = [Candidate(i, s) for i, s in [("a1", 1.0), ("a2", 0.95), ("a3", 0.9), ("b1", 0.7),
                                          ("c1", 0.2)]]
    same = session_similarity({"a1": "A", "a2": "A", "a3": "A", "b1": "B", "c1": None})
    assert [c.id for c in mmr(cands, same, 0.5)] == ["a1", "b1", "c1", "a2", "a3"]
    assert [c.id for c in mmr(cands, same, 0.7)] == ["a1", "b1", "a2", "a3", "c1"]
    assert [c.id for c in mmr(cands, same, 0.9)] == ["a1", "a2", "a3", "b1", "c1"]  # mild
    assert [c.id for c in mmr(cands, same, 1.0)] == ["a1", "a2", "a3", "b1", "c1"]  # off
    # only the first `depth` are re-ordered
    assert [c.id for c in mmr(cands, same, 0.5, depth=3)] == ["a1", "a2", "a3", "b1", "c1"]
    assert [c.score for c in cands] == [1.0, 0.95, 0.9, 0.7, 0.2]  # scores untouched


# -- query decomposition ---------------------------------------------------------------------


@pytest.mark.parametrize("query, expected", [
    ("What do Jon and Gina both like?", ["What do Jon like?", "What do Gina like?"]),
    ("Which city have both Jean and John visited?",
     ["Which city have Jean visited?", "Which city have John visited?"]),
    ("What items has Audrey bought or made for her dogs?",
     ["What items has Audrey bought?", "What items has Audrey made for her dogs?"]),
    ("When did Ana hike and have a negative experience?",
     ["When did Ana hike?", "When did Ana have a negative experience?"]),
    ("What books has Melanie read?", []),
    ("What did Mel and her kids make?", []),   # a coordinated subject is not two questions
    ("Ana and Ben went where?", []),           # a capital at the start is not a name pair
])
def test_sub_queries(query, expected):
    assert sub_queries(query) == expected


def test_interleave_gives_every_list_slots_near_the_top():
    first = [Candidate("a", 2.0, ranks={"dense": 1}), Candidate("b", 1.5), Candidate("c", 1.0)]
    second = [Candidate("x", 9.0, scores={"bm25": 3.0}), Candidate("a", 8.0, ranks={"bm25": 2}),
              Candidate("y", 7.0)]
    merged = interleave([first, second])
    order = sorted(merged.values(), key=lambda c: -c.score)
    assert [c.id for c in order] == ["a", "x", "b", "c", "y"]
    assert order[0].score == pytest.approx(2.0 * (1 - 0 / 6))  # on the first list's scale
    assert merged["a"].ranks == {"dense": 1, "bm25": 2} and merged["x"].scores == {"bm25": 3.0}
    assert interleave([]) == {}


def test_lift_speaker_ranks_the_sub_querys_speaker_first():
    texts = {"j": "Jon: I love salsa.", "g": "Gina: tango!", "x": "Jon: Gina, hi."}
    cands = [Candidate("j", 1.0), Candidate("x", 0.8), Candidate("g", 0.6)]
    assert [c.id for c in lift_speaker("What does Gina love?", cands, texts, 1.0)] == ["g", "j", "x"]
    assert cands[2].score == pytest.approx(1.2)
    again = [Candidate("j", 1.0), Candidate("g", 0.6)]
    assert [c.id for c in lift_speaker("What do they love?", again, texts, 1.0)] == ["j", "g"]


# -- the stages end to end ---------------------------------------------------------------------


def test_own_voice_mmr_and_decomposition_end_to_end(make_mos):
    items = [{"text": f"Jon: I love dancing salsa, part {i} of the story.", "session_id": "s1",
              "occurred_at": DAY} for i in range(3)]
    items += [{"text": "Gina: I love dancing tango in the evening.", "session_id": "s2",
               "occurred_at": DAY},
              {"text": "Gina: Jon, you must love dancing so much!", "session_id": "s3",
               "occurred_at": DAY},
              {"text": "Jon: I cooked pasta for dinner.", "session_id": "s4", "occurred_at": DAY}]
    base = dict(graph_weight=0, hop_weight=0, when_weight=0)
    query = "What dancing do Jon and Gina both love?"

    mixed = make_mos("mixed", retrieval=RetrievalConfig(mmr_lambda=0.5, **base))
    mixed.add_many(items, user_id="u")
    hits = mixed.search("What dancing does Jon love?", user_id="u", k=3, record_usage=False)
    assert len({h.memory.session_id for h in hits}) == 3  # one per session before repeats

    voiced = make_mos("voiced", retrieval=RetrievalConfig(own_voice_weight=1.0, **base))
    voiced.add_many(items, user_id="u")
    hits = voiced.search("What does Gina love?", user_id="u", k=6, record_usage=False)
    assert hits[0].text.startswith("Gina: I love") and hits[0].signals["own_voice"] == 1.0
    assert all("own_voice" not in h.signals for h in hits if not h.text.startswith("Gina: I"))

    # decomposition: the first slots of each sub-query's list come before the original's
    # third; without it, Jon's three salsa turns fill the top 3
    pair = [{"text": f"Jon: What dancing do I love? I love dancing salsa, part {i}.",
             "session_id": f"j{i}", "occurred_at": DAY} for i in range(4)]
    pair.append({"text": "Gina: I love dancing tango.", "session_id": "g", "occurred_at": DAY})
    pair += [{"text": f"Gina: I baked bread today, loaf {i}.", "session_id": f"b{i}",
              "occurred_at": DAY} for i in range(4)]
    plain = make_mos("plain", retrieval=RetrievalConfig(**base))
    plain.add_many(pair, user_id="u")
    split = make_mos("split", retrieval=RetrievalConfig(decompose=True, **base))
    split.add_many(pair, user_id="u")
    speakers = [{h.text.split(":")[0] for h in m.search(query, user_id="u", k=3,
                                                         record_usage=False)}
                for m in (plain, split)]
    assert speakers == [{"Jon"}, {"Jon", "Gina"}]
