"""The retriever's shortcuts give what the plain computation gives: ``fuse_added`` (a signal
joins fused candidates in place) against a fresh ``fuse``; a search's top k when graph-only
candidates that cannot make it are not built, against the unpruned ranking; one entity
extraction per search. Random signal lists, and a real MemOS (MiniLM, Qdrant edge, graph)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from memos_core.index.base import ScoredId
from memos_core.retrieval.filters import SEARCHABLE_STATES, build_filter
from memos_core.retrieval.hybrid import Candidate, fuse, fuse_added


def shape(cands: dict[str, Candidate]) -> list[tuple[Any, ...]]:
    """Everything a candidate holds, in dict order (key order of its dicts included)."""
    return [(mid, c.id, c.score, list(c.ranks.items()), list(c.scores.items()), c.reasons)
            for mid, c in cands.items()]


def random_hits(rng: random.Random, pool: list[str], n: int) -> list[ScoredId]:
    ids = rng.sample(pool, min(n, len(pool)))
    scores = sorted((rng.choice((rng.random(), 0.5)) for _ in ids), reverse=True)
    return [ScoredId(i, s) for i, s in zip(ids, scores)]


@pytest.mark.parametrize("method", ["score", "rrf"])
@pytest.mark.parametrize("seed", range(10))
def test_fuse_added_equals_a_fresh_fuse(seed: int, method: str) -> None:
    rng = random.Random(seed)
    pool = [f"m{i}" for i in range(60)]
    signals = {"dense": random_hits(rng, pool, rng.randrange(0, 40)),
               "bm25": random_hits(rng, pool, rng.randrange(0, 40))}
    weights = {"dense": 0.4, "bm25": 0.6}
    cands = fuse(signals, weights, 60.0, method)
    signals["hop"] = random_hits(rng, pool, rng.randrange(1, 40))
    weights["hop"] = 0.3
    fuse_added(cands, signals, weights, 60.0, method, "hop")
    assert shape(cands) == shape(fuse(signals, weights, 60.0, method))


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Any:
    from memos_core import MemOS, MemOSConfig

    mos = MemOS(tmp_path_factory.mktemp("fast") / "d", config=MemOSConfig(show_progress=False))
    rng = random.Random(5)
    names = ["Ana", "Bo", "Kim", "Lee", "Oslo", "Rome", "Paris"]
    things = ["bike", "garden", "concert", "painting", "boat", "novel", "marathon"]
    items = [{"text": f"{rng.choice(names)} talked about the {rng.choice(things)} with "
                      f"{rng.choice(names)} in {rng.choice(names)}.",
              "session_id": f"s{i // 6}"} for i in range(120)]
    mos.add_many(items, user_id="u")
    yield mos
    mos.close()


QUERIES = ["When did Ana talk about the bike?", "Kim and Lee in Rome", "the marathon in Oslo",
           "what novel did Bo read?", "Paris garden"]


@pytest.mark.parametrize("k", [1, 3, 10])
def test_the_top_k_is_the_unpruned_rankings_first_k(store: Any, k: int) -> None:
    flt = build_filter(("u",), states=SEARCHABLE_STATES)
    retriever = store.retriever
    pruning = retriever._expand

    def unpruned(*args: Any, **kwargs: Any) -> None:
        pruning(*args, **{**kwargs, "keep": None})  # every graph hit becomes a candidate

    graph_only = 0
    for query in QUERIES:
        got = retriever.retrieve(query, flt, k)
        retriever._expand = unpruned
        try:
            want = retriever.retrieve(query, flt, k)
            everything = retriever.retrieve(query, flt, 50)
        finally:
            del retriever._expand
        assert [(c.id, c.score, c.ranks, c.scores, c.reasons) for c in got] == \
            [(c.id, c.score, c.ranks, c.scores, c.reasons) for c in want]
        graph_only = max(graph_only, sum(1 for c in everything if set(c.scores) == {"graph"}))
    assert graph_only > 10  # the shortcut had graph-only candidates to leave out


def test_the_query_entities_are_extracted_once_per_search(store: Any) -> None:
    extractor = store.retriever.extractor
    calls: list[str] = []
    inner = extractor.extract

    def counting(text: str) -> list[str]:
        calls.append(text)
        return inner(text)

    extractor.extract = counting
    try:
        store.search("When did Ana talk about the bike with Kim?", user_id="u", k=5)
    finally:
        del extractor.extract
    assert calls == ["When did Ana talk about the bike with Kim?"]


def test_is_question_shortcut_agrees_with_the_full_rule() -> None:
    from memos_core.retrieval import rerank as rr

    def full_rule(text: str) -> bool:  # is_question without the shortcut
        body = rr._PREFIX.sub("", text, count=1).strip()
        if not body.endswith("?"):
            return False
        stated = sum(len(s.strip().split()) for s in rr._SENTENCE.findall(body)
                     if s.strip() and not s.strip().endswith("?"))
        return stated <= rr._FILLER_WORDS

    rng = random.Random(11)
    parts = ["[8 May, 2023] ", "[what?] ", "Ana: ", "Hey Mel! ", "Wow, ", "I ride a bike. ",
             "Do you cycle?", "?", " ", "\n", "Really? ", "ok", "[x?]", "Bo:  "]
    texts = ["".join(rng.choice(parts) for _ in range(rng.randrange(0, 6))) for _ in range(3000)]
    assert any(rr.is_question(t) for t in texts) and not all(rr.is_question(t) for t in texts)
    assert [rr.is_question(t) for t in texts] == [full_rule(t) for t in texts]
