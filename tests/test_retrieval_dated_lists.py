"""Issue 16, fifth pass: dated queries keep their names in the dense query
(``dense_dated_names``) and list questions fuse the named speaker's dense hits once more
(``list_speaker_weight``). Pure functions on hand-made inputs; both end to end on a real MemOS
(MiniLM, Qdrant edge, graph)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from memos_core.config import RetrievalConfig
from memos_core.index.base import ScoredId
from memos_core.retrieval.filters import SEARCHABLE_STATES, build_filter
from memos_core.retrieval.focus import names_calendar_date
from memos_core.retrieval.listing import asks_for_several, speaker_hits

DAY = datetime(2023, 5, 8, tzinfo=timezone.utc)

# -- dated queries -----------------------------------------------------------------------------


@pytest.mark.parametrize("query, dated", [
    ("When did Ana go camping in June?", True),
    ("What did Ana eat on October 24, 2023?", True),
    ("How many times has Ana been to the beach in 2023?", True),
    ("What did Ana do in May?", True),
    ("Who did Ana meet on 8 May?", True),
    ("Who did Ana meet on May 3?", True),
    ("What did Ana buy on Oct 5?", True),
    ("What may Ana do next?", False),          # "may" the verb
    ("What did Ana read last week?", False),   # relative: no date a turn carries
    ("What books has Ana read?", False),
    ("Where is room 2023b?", False),           # not a year
])
def test_names_calendar_date(query, dated):
    assert names_calendar_date(query) is dated


def _dated_conversation() -> list[dict]:
    """Ana and Ben: Ana names a date in one question, not in the other."""
    turns = [("Ana", "I finally finished reading Dune, the desert novel."),
             ("Ben", "Ana, that is great, Ana!"),
             ("Ana", "We adopted a puppy called Pico."),
             ("Ben", "Ana, lovely news!")]
    return [{"text": f"[8 May, 2023] {who}: {text}", "session_id": "s1", "occurred_at": DAY}
            for who, text in turns]


def test_a_dated_query_keeps_its_names_in_the_dense_query(make_mos):
    mos = make_mos("dated", retrieval=RetrievalConfig(dense_common_share=0.3))
    mos.add_many(_dated_conversation(), user_id="u")
    flt = build_filter(("u",), states=SEARCHABLE_STATES)
    assert mos.retriever.dense_text("What did Ana read?", flt) == "What did read?"
    dated = "What did Ana read in May 2023?"
    assert mos.retriever.dense_text(dated, flt) == dated
    off = make_mos("off", retrieval=RetrievalConfig(dense_common_share=0.3, dense_dated_names=False))
    off.add_many(_dated_conversation(), user_id="u")
    assert off.retriever.dense_text(dated, flt) == "What did read in May 2023?"
    # the search embeds what dense_text says: the two stores' dense scores differ for it
    on_hit = mos.search(dated, user_id="u", k=1, record_usage=False)[0]
    off_hit = off.search(dated, user_id="u", k=1, record_usage=False)[0]
    assert "Dune" in on_hit.text and "Dune" in off_hit.text
    assert on_hit.signals["dense"] != pytest.approx(off_hit.signals["dense"])


# -- list questions ----------------------------------------------------------------------------


@pytest.mark.parametrize("query, several", [
    ("What books has Melanie read?", True),
    ("Which outdoor activities has Andrew done?", True),
    ("What video games does Nate play?", True),
    ("How many pets does Andrew have?", True),
    ("What do Jon and Gina both like?", True),
    ("What are Ana's hobbies?", True),
    ("What kinds of art does Ana make?", True),
    ("What kind of cars does Ana like?", True),
    ("What kind of car does Ana drive?", False),
    ("What did Ana read?", False),
    ("What does Ana do to relax?", False),
    ("What is Ana's job?", False),
    ("When did Ana move to Lisbon?", False),
])
def test_asks_for_several(query, several):
    assert asks_for_several(query) is several


def test_speaker_hits_keeps_the_named_speakers_turns_in_order():
    hits = [ScoredId("a", 0.9), ScoredId("b", 0.8), ScoredId("c", 0.7), ScoredId("d", 0.6)]
    texts = {"a": "[8 May, 2023] Ben: Ana, great books!", "b": "[8 May, 2023] Ana: I read Dune.",
             "c": "Ben: I read too.", "d": "Ana: My book club meets Fridays."}
    assert [h.id for h in speaker_hits("What books has Ana read?", hits, texts)] == ["b", "d"]
    assert speaker_hits("What books have Ana and Ben read?", hits, texts) == []  # two names
    assert speaker_hits("What books were read?", hits, texts) == []              # none
    assert [h.id for h in speaker_hits("What has Ana read?", hits, {"d": texts["d"]})] == ["d"]


def _book_conversation() -> list[dict]:
    """Ana's reading spread over sessions; Ben talks about books *to* her."""
    turns = [("s1", "Ben", "Ana, do you like books? Ana, books are the best, Ana!"),
             ("s1", "Ana", "I just finished reading Dune, a novel about a desert planet."),
             ("s2", "Ben", "Ana, my book club read three books this month, Ana."),
             ("s2", "Ana", "My kids and I went swimming in the lake."),
             ("s3", "Ben", "Books, books, books! Ana, what a week for books."),
             ("s3", "Ana", "Last night I started a novel by Ursula Le Guin, The Dispossessed."),
             ("s4", "Ana", "We painted the fence blue on Sunday.")]
    return [{"text": f"[8 May, 2023] {who}: {text}", "session_id": sid, "occurred_at": DAY}
            for sid, who, text in turns]


def test_list_question_fuses_the_named_speakers_dense_hits(make_mos):
    base = dict(graph_weight=0, hop_weight=0, speaker_weight=0, own_voice_weight=0,
                when_weight=0, question_weight=1)
    on = make_mos("on", retrieval=RetrievalConfig(list_speaker_weight=1.0, **base))
    off = make_mos("off", retrieval=RetrievalConfig(list_speaker_weight=0, **base))
    for mos in (on, off):
        mos.add_many(_book_conversation(), user_id="u")
    query = "What books has Ana read?"
    hits = on.search(query, user_id="u", k=7, record_usage=False)
    lifted = [h for h in hits if "speaker_dense" in h.signals]
    assert lifted and all(h.text.split("] ")[1].startswith("Ana:") for h in lifted)
    assert {h.text for h in hits if "Ben:" in h.text}.isdisjoint(h.text for h in lifted)

    def rank_of(mos, needle: str) -> int:
        ranked = [h.text for h in mos.search(query, user_id="u", k=7, record_usage=False)]
        return next(i for i, t in enumerate(ranked) if needle in t)

    # Ana's two reading turns rank no lower with the signal, and at least one higher
    before = (rank_of(off, "Dune"), rank_of(off, "Dispossessed"))
    after = (rank_of(on, "Dune"), rank_of(on, "Dispossessed"))
    assert all(a <= b for a, b in zip(after, before)) and sum(after) < sum(before)
    # a question after one fact is not a list question: no extra signal
    single = on.search("What did Ana read last night?", user_id="u", k=7, record_usage=False)
    assert all("speaker_dense" not in h.signals for h in single)
