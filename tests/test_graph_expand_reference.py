"""Graph expansion (``MemoryGraph.expand`` / ``expand_scores``, the search path's form) against
a straightforward reference written here: one credit per (memory, relation), the filter
evaluated on the memory's payload every time, no kept verdicts. Randomized graphs, seeds,
filters and writes between expansions (the kept filter verdicts must follow the writes);
the same memories, scores (exactly), reasons and order."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from memos_core.graph import MemoryGraph
from memos_core.index.base import IndexFilter
from memos_core.index.filters import plan_filter, plan_matches

USERS = ("u0", "u1", "u2")
ENTITIES = tuple(f"e{i}" for i in range(12))
EXPLICIT = ("supersedes", "derived_from")


def reference_expand(g: MemoryGraph, seeds: list[tuple[str, float]], flt: IndexFilter, *,
                     query_entities: list[str], neighbour_turns: int,
                     entity_seed_weight: float,
                     max_degree: int | None = None) -> list[tuple[str, float, list[str]]]:
    """Expansion as its contract states it, through the graph's public readers only."""
    plan = plan_filter(flt)
    cap = g.max_entity_degree if max_degree is None else min(max_degree, g.max_entity_degree)
    found: dict[str, tuple[float, list[str]]] = {}

    def credit(mid: str, amount: float, reason: str) -> None:
        if not plan_matches(plan, g.payload(mid) or {}):
            return
        score, reasons = found.get(mid, (0.0, []))
        found[mid] = (max(score, amount), reasons if reason in reasons else [*reasons, reason])

    for seed, weight in seeds:
        if seed not in g:
            continue
        where = g.session_of(seed)
        if neighbour_turns > 0 and where is not None and where[1] is not None:
            turns = g.session_turns(*where)
            i = turns.index(seed)
            for j in range(max(0, i - neighbour_turns), min(len(turns), i + neighbour_turns + 1)):
                if j != i:
                    credit(turns[j], weight, "neighbouring turn")
        for entity in g.entities_of(seed):
            degree = g.entity_degree(entity)
            if 1 < degree <= cap:
                for mid in _members(g, entity):
                    if mid != seed:
                        credit(mid, weight / math.log2(1 + degree), "shared entity " + entity)
        for mid, kind in g.neighbours(seed):
            if kind in EXPLICIT:
                credit(mid, weight, kind)
    for entity in dict.fromkeys(query_entities):
        degree = g.entity_degree(entity)
        if 0 < degree <= cap:
            for mid in _members(g, entity):
                credit(mid, entity_seed_weight / math.log2(1 + degree), "mentions " + entity)
    return sorted((mid, s, r) for mid, (s, r) in found.items())


def _members(g: MemoryGraph, entity: str) -> list[str]:
    """The memories naming ``entity``, in the graph's own member order (a reason list's
    order follows the order memories are credited in)."""
    e = g._entity_num[entity]
    return [g._ids[m] for m in g._members[e]]


def random_row(rng: random.Random, i: int) -> dict[str, Any]:
    return {
        "id": f"m{i}", "seq": None, "user_id": rng.choice(USERS), "agent_id": rng.choice(("a", "b")),
        "session_id": rng.choice(("s0", "s1", "s2", None)), "type": rng.choice(("episode", "fact")),
        "tags": rng.sample(("x", "y", "z"), rng.randrange(3)),
        "state": rng.choice(("activated", "generated", "archived")),
        "occurred_at": rng.choice((None, float(rng.randrange(100)))),
        "superseded": rng.random() < 0.2, "version": 1,
        "readers": rng.sample(USERS, rng.randrange(2)),
        "entities": rng.sample(ENTITIES, rng.randrange(4)),
    }


def random_filter(rng: random.Random) -> IndexFilter:
    return IndexFilter(
        user_ids=rng.choice((None, ("u0",), ("u1", "u2"))),
        agent_id=rng.choice((None, "a")),
        session_id=rng.choice((None, None, "s1")),
        types=rng.choice((None, ("episode",))),
        tags=rng.choice((None, ("x",))),
        states=rng.choice((None, ("activated", "generated"))),
        occurred_after=rng.choice((None, 20.0)),
        include_superseded=rng.random() < 0.5,
    )


def as_list(found: dict[str, tuple[float, list[str]]]) -> list[tuple[str, float, list[str]]]:
    return sorted((mid, s, r) for mid, (s, r) in found.items())


@pytest.mark.parametrize("seed", range(12))
def test_expansion_matches_the_reference_through_random_graphs_and_writes(seed: int) -> None:
    rng = random.Random(seed)
    g = MemoryGraph(max_entity_degree=rng.choice((3, 8, 200)))
    count = rng.randrange(20, 80)
    for i in range(count):
        g.upsert(random_row(rng, i))
    for _ in range(rng.randrange(8)):
        a, b = rng.sample(range(count), 2)
        g.add_relation(f"m{a}", f"m{b}", rng.choice((*EXPLICIT, "other")))
    filters = [random_filter(rng) for _ in range(3)]  # repeated: kept verdicts are reused
    for round_ in range(25):
        if round_ % 3 == 2:  # writes between expansions: verdicts must follow them
            i = rng.randrange(count + 5)
            if rng.random() < 0.3:
                g.remove(f"m{i}")
            else:
                row = random_row(rng, i)
                old = g.payload(row["id"])
                if old is not None:  # a memory's owner never changes
                    row["user_id"] = old["user_id"]
                g.upsert(row)
                count = max(count, i + 1)
        ids = [f"m{i}" for i in range(count)]
        seeds = [(mid, rng.choice((1.0, 0.5, rng.random()))) for mid in rng.sample(ids, rng.randrange(1, 8))]
        seeds.append(("unknown", 1.0))
        flt = rng.choice(filters)
        kw = {"query_entities": rng.sample((*ENTITIES, "nobody"), rng.randrange(4)),
              "neighbour_turns": rng.choice((0, 1, 2)), "entity_seed_weight": rng.random(),
              "max_degree": rng.choice((None, 2, 5, 500))}
        want = reference_expand(g, seeds, flt, **kw)
        assert as_list(g.expand_scores(seeds, flt, **kw)) == want
        hits = g.expand(seeds, flt, **kw)
        assert sorted((mid, h.score, h.reasons) for mid, h in hits.items()) == want
        assert list(hits) == list(g.expand_scores(seeds, flt, **kw))  # the same order


def test_an_impossible_filter_finds_nothing_and_the_verdicts_stay_bounded(monkeypatch) -> None:
    rng = random.Random(3)
    g = MemoryGraph()
    for i in range(30):
        g.upsert(random_row(rng, i))
    seeds = [(f"m{i}", 1.0) for i in range(30)]
    assert g.expand_scores(seeds, IndexFilter(user_ids=())) == {}
    for day in range(40):  # many distinct filters: only a few are kept
        g.expand_scores(seeds, IndexFilter(user_ids=("u0",), occurred_after=float(day)))
    assert 0 < len(g._passes) <= 8
    monkeypatch.setattr("memos_core.graph.memory_graph._VERDICT_MEMORIES", 5)
    flt = IndexFilter(user_ids=("u0", "u1", "u2"))
    want = g.expand_scores(seeds, flt)
    for _ in range(3):  # the verdicts start again past the bound; the answer does not change
        assert g.expand_scores(seeds, flt) == want
        assert all(len(v) <= 30 for v in g._passes.values())
    assert g._passes[(plan_filter(flt), flt.user_ids)]  # filled again after the restart
