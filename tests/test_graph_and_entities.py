"""The memory graph and the rule-based entity extractor (pure, no store)."""

from __future__ import annotations

import pytest

from memos_core.extraction import RuleEntityExtractor
from memos_core.graph import MemoryGraph
from memos_core.index.base import IndexFilter


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Caroline went to the LGBTQ support group on 7 May 2023.", ["caroline", "lgbtq", "7 may 2023"]),
        ('I moved to New York in March 2021 with my dog "Biscuit", she is 3.',
         ["new york", "march 2021", "biscuit", "3"]),
        ("Hey Mel! Did you see the Bank of America ad? It costs 3.5%", ["mel", "bank of america", "3.5%"]),
        ("the meeting is on 2024-01-05", ["2024-01-05"]),
        ("nothing to see here", []),
    ],
)
def test_rule_entities(text, expected):
    assert RuleEntityExtractor().extract(text) == expected


def row(mid, user="u", session="s", when=None, entities=(), **kw):
    return {"id": mid, "seq": None, "user_id": user, "agent_id": None, "session_id": session,
            "type": "episode", "tags": [], "state": "generated", "occurred_at": when,
            "superseded": False, "version": 1, "readers": [], "entities": list(entities), **kw}


def test_session_turns_stay_in_time_order_and_rejoin_after_removal():
    g = MemoryGraph()
    g.upsert(row("b", when=2.0))
    g.upsert(row("a", when=1.0))
    g.upsert(row("c", when=3.0))
    assert g.session_turns("u", "s") == ["a", "b", "c"]
    assert g.has_edge("a", "b") and g.has_edge("b", "c") and not g.has_edge("a", "c")
    g.remove("b")
    assert g.session_turns("u", "s") == ["a", "c"]
    assert g.has_edge("a", "c")


def test_expand_follows_turns_entities_and_respects_the_filter():
    g = MemoryGraph()
    g.upsert(row("m1", when=1.0, entities=["paris"]))
    g.upsert(row("m2", when=2.0))
    g.upsert(row("m3", session="other", when=5.0, entities=["paris"]))
    g.upsert(row("x1", user="intruder", session="s9", entities=["paris"]))
    hits = g.expand([("m1", 1.0)], IndexFilter(user_ids=("u",)))
    assert set(hits) == {"m2", "m3"}
    assert "neighbouring turn" in hits["m2"].reasons
    assert any(r.startswith("shared entity paris") for r in hits["m3"].reasons)
    by_query = g.expand([], IndexFilter(user_ids=("u",)), query_entities=["paris"], entity_seed_weight=1.0)
    assert set(by_query) == {"m1", "m3"}


def test_update_refreshes_entities_and_drops_orphans():
    g = MemoryGraph()
    g.upsert(row("m1", entities=["rome"]))
    g.upsert(row("m1", entities=["oslo"]))
    assert g.entity_degree("rome") == 0 and g.entity_degree("oslo") == 1


def test_common_entities_are_not_expanded():
    g = MemoryGraph(max_entity_degree=3)
    for i in range(5):
        g.upsert(row(f"m{i}", session=f"s{i}", entities=["everyone"]))
    assert g.expand([("m0", 1.0)], IndexFilter()) == {}


def test_names_no_memory_mentions_any_more_are_dropped() -> None:
    """A long-lived graph whose memories come and go, each naming new people, kept every
    name it had ever seen (its tables grew per request while its memories stayed few).
    An entity no memory names is dropped and its number reused, in a principal's view too
    (whose cached degree of that number goes with it)."""
    from memos_core.graph.views import GraphView

    for graph in (MemoryGraph(), GraphView(frozenset({"u"}))):
        graph.upsert(row("keep", entities=("Lisbon",)))
        for i in range(200):
            graph.upsert(row(f"m{i}", entities=(f"Person{i}", f"Town{i}", "Lisbon")))
            assert graph.entity_degree(f"Person{i}") == 1
            assert graph.entity_degree("Lisbon") == 2
            graph.remove(f"m{i}")
        assert len(graph._entity_names) <= 4  # Lisbon and the two names of one request
        assert graph.entity_degree("Person0") == 0 and graph.entity_degree("Lisbon") == 1
        graph.upsert(row("keep", entities=("Porto",)))  # a new version names another city
        graph.upsert(row("other", entities=("Lisbon", "Porto")))
        assert [graph.entity_degree(n) for n in ("Lisbon", "Porto")] == [1, 2]
        assert graph.entities_of("other") == ["Lisbon", "Porto"]
