"""Per-user graph views in server mode, on a real PostgreSQL (the ``pg_url`` fixture).

Two instances on one database: a user's view loaded in B follows what A adds, forgets,
relates and shares through the change feed; an evicted view reloads with the current state;
the bound holds under many users. And the views answer as the whole graph does on the
PostgreSQL vault too (the random-writes equivalence of tests/test_graph_views.py).
"""

from __future__ import annotations

import pytest

from test_graph_views import PRINCIPALS, World, assert_same, make_views  # tests/ is on sys.path


MOS_DEFAULTS = {"listen": False}


@pytest.mark.parametrize("seed", [0, 1])
def test_views_answer_as_the_whole_graph_on_postgres(pg_url, seed):
    from memos_core.vault.postgres import PostgresVault

    vault = PostgresVault(pg_url)
    try:
        views = make_views(vault)  # type: ignore[arg-type]
        world = World(vault, views, seed)  # type: ignore[arg-type]
        for _ in range(25):
            world.step()
        assert_same(views, vault, PRINCIPALS)  # type: ignore[arg-type]
        for _ in range(3):
            for _ in range(15):
                world.step()
            assert_same(views, vault, PRINCIPALS)  # type: ignore[arg-type]
    finally:
        vault.close()


def test_a_view_loaded_in_b_follows_what_a_writes(open_mos):
    a, b = open_mos(), open_mos()
    first = a.add("Caroline joined the choir in May.", user_id="alice", session_id="s1")
    assert not b.graph.loaded(["alice"])  # nothing is built at open
    assert [h.id for h in b.search("choir", user_id="alice", k=1)] == [first.id]
    view = b.graph.view(["alice"])
    loads = b.graph.loads
    a_view = a.graph.view(["alice"])  # A's own view follows A's writes (the write path)

    second = a.add("Caroline sang a solo at the spring concert.", user_id="alice",
                   session_id="s1")
    assert b.catch_up() >= 1
    assert view.session_turns("alice", "s1") == [first.id, second.id]  # added in place
    assert b.graph.view(["alice"]) is view and b.graph.loads == loads  # not reloaded

    newer = a.add("Caroline left the choir in June.", user_id="alice", session_id="s1",
                  supersedes=first.id)
    b.catch_up()
    assert view.has_edge(newer.id, first.id)  # the relation reached the loaded view
    assert ("supersedes" in {kind for m, kind in view.neighbours(first.id) if m == newer.id})

    a.forget(second.id, user_id="alice")
    b.catch_up()
    assert second.id not in view and view.session_turns("alice", "s1") == [first.id, newer.id]
    assert a_view.session_turns("alice", "s1") == [first.id, newer.id]
    assert a_view.has_edge(newer.id, first.id) and a.graph.view(["alice"]) is a_view

    # bob shares an older memory with alice: her view in B cannot know its session and
    # relations from the change alone, so it is dropped and reloaded on the next use
    bike = a.add("Bob's bike is a green Brompton.", user_id="bob", session_id="b1")
    a.add("Bob rides to work.", user_id="bob", session_id="b1")
    b.catch_up()
    assert bike.id not in view
    a.share(bike.id, with_user_id="alice", user_id="bob")
    b.catch_up()
    assert not b.graph.loaded(["alice"])
    assert bike.id in [h.id for h in b.search("Brompton bike", user_id="alice", k=3)]
    reloaded = b.graph.view(["alice"])
    assert bike.id in reloaded and len(reloaded.session_turns("bob", "b1")) == 2


def test_an_evicted_view_reloads_current_state_and_the_bound_holds(open_mos):
    a, b = open_mos(), open_mos(graph_max_memories=12)
    users = [f"user{i}" for i in range(8)]
    for user in users:
        a.add_many([f"{user} note {i} about the Lisbon trip" for i in range(4)], user_id=user,
                   session_id="s")
    b.catch_up()
    for user in users:  # each search loads its user's view; older ones are evicted
        assert len(b.search("Lisbon trip", user_id=user, k=4)) == 4
        assert b.graph.loaded_memories() <= 12
    assert b.graph.evictions >= len(users) - 3 and not b.graph.loaded([users[0]])

    late = a.add("user0 booked the Lisbon hotel", user_id=users[0], session_id="s")
    assert b.catch_up() == 1 and not b.graph.loaded([users[0]])  # ignored while evicted
    view = b.graph.view([users[0]])
    assert late.id in view and len(view.session_turns(users[0], "s")) == 5
    assert b.graph.loaded_memories() <= 12
