"""Per-user graph views (memos_core/graph/views.py) against the whole graph they replace.

The reference is the graph every process used to build at open: a
:class:`~memos_core.graph.MemoryGraph` of every memory in the vault (``graph_rows`` +
``edges``). A view must answer what a search of its principal reads -- expansion (scores and
reasons), payloads, entity degrees -- exactly as that graph does, after any sequence of
writes applied to the loaded views the way the store applies them. Real SQLite vault, no
mocks; the store-level tests (search, write path, bound) are at the end.
"""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest

from memos_core.cube import MemCube, Namespace, State, utcnow
from memos_core.graph import GraphViews, MemoryGraph
from memos_core.index.base import IndexFilter
from memos_core.lifecycle import INDEXED_STATES
from memos_core.retrieval.filters import graph_row
from memos_core.vault import Actor, Edge, SQLiteVault

USERS = ("u0", "u1", "u2", "u3")
NAMES = ("paris", "oslo", "rome", "kim", "lee", "ana", "bo")


class Reference(MemoryGraph):
    """The whole graph, with entity degrees counted over the memories ``users`` may read (what
    a principal's view weighs links by); ``users`` None: over every memory."""

    def __init__(self, users: tuple[str, ...] | None = None) -> None:
        super().__init__()
        self.users = None if users is None else frozenset(users)

    def _degree(self, e: int) -> int:
        if self.users is None:
            return len(self._members[e])
        payloads = [self.payload(self._ids[m]) for m in self._members[e]]
        return sum(1 for p in payloads if p is not None and (
            p["user_id"] in self.users or not self.users.isdisjoint(p["readers"] or ())))


def reference(vault: SQLiteVault, users: tuple[str, ...] | None = None) -> MemoryGraph:
    """The whole graph, built as the store built it at open before views existed (entity
    degrees: see :class:`Reference`)."""
    g = Reference(users)
    for row in vault.graph_rows():
        if row["state"] in INDEXED_STATES:
            g.upsert(row)
    for edge in vault.edges():
        g.add_relation(edge.src, edge.dst, edge.kind)
    return g


def make_views(vault: SQLiteVault, max_memories: int = 10_000) -> GraphViews:
    return GraphViews(vault, lock=threading.RLock(), states=INDEXED_STATES,
                      max_memories=max_memories,
                      owner_of=lambda mid: (c.namespace.user_id if (c := vault.get(mid)) else None))


def readable(g: MemoryGraph, user: str) -> list[str]:
    out = []
    for mid in list(g._num):
        p = g.payload(mid)
        assert p is not None
        if p["user_id"] == user or user in (p["readers"] or []):
            out.append(mid)
    return sorted(out)


def hits(g: MemoryGraph, seeds: list[tuple[str, float]], flt: IndexFilter, turns: int) -> dict:
    found = g.expand(seeds, flt, query_entities=list(NAMES), neighbour_turns=turns,
                     entity_seed_weight=0.7)
    return {mid: (round(h.score, 12), tuple(h.reasons)) for mid, h in found.items()}


def assert_same(views: GraphViews, vault: SQLiteVault, principals: list[tuple[str, ...]]) -> None:
    for users in principals:
        ref = reference(vault, users)
        view = views.view(users)
        mine = sorted({m for u in users for m in readable(ref, u)})
        assert sorted(m for m in mine if m in view) == mine, users  # every readable memory
        for state_set in (None, ("generated", "activated")):
            flt = IndexFilter(user_ids=users, states=state_set)
            for turns in (1, 2):
                seeds = [(m, 1.0 / (1 + i)) for i, m in enumerate(mine)]
                assert hits(view, seeds, flt, turns) == hits(ref, seeds, flt, turns), users
                for m in mine:
                    assert hits(view, [(m, 1.0)], flt, turns) == hits(ref, [(m, 1.0)], flt, turns)
        for m in mine:
            got, want = view.payload(m), ref.payload(m)
            assert got is not None and want is not None
            got.pop("seq"), want.pop("seq")  # numbering, not order: compared through turns
            assert got == want
            session = want["session_id"]
            if session is not None:
                turns_in_view = view.session_turns(want["user_id"], session)
                assert turns_in_view == ref.session_turns(want["user_id"], session)
        for name in NAMES:  # kept up to date by each write since the last call
            assert view.entity_degree(name) == ref.entity_degree(name), name
        assert view.readable_count() == len(mine), users


class World:
    """Random writes on a real vault, applied to the views as the store applies them."""

    def __init__(self, vault: SQLiteVault, views: GraphViews, seed: int) -> None:
        self.vault, self.views, self.rng = vault, views, random.Random(seed)

    def apply(self, cubes: list[MemCube], edges: list[Edge] = ()) -> None:  # type: ignore[assignment]
        self.views.apply([graph_row(c) for c in cubes], list(edges))

    def live(self) -> list[MemCube]:
        return [c for batch in self.vault.iter_current(500) for c in batch
                if c.state.value in INDEXED_STATES]

    def new_cube(self) -> MemCube:
        r = self.rng
        when = r.choice([None, 1.0, 2.0, 2.0, 3.0, 5.0])
        from datetime import datetime, timezone

        return MemCube(
            namespace=Namespace(user_id=r.choice(USERS), session_id=r.choice(["s0", "s1", None])),
            text="t", entities=tuple(r.sample(NAMES, r.randint(0, 3))),
            occurred_at=None if when is None else datetime.fromtimestamp(when, timezone.utc))

    def step(self) -> None:
        r = self.rng
        live = self.live()
        op = r.choice(["add", "add", "add", "share", "share", "revoke", "entities", "when",
                       "forget", "expire", "relate", "supersede"]) if live else "add"
        actor = Actor("x")
        if op == "add":
            c = self.new_cube()
            self.vault.insert([c], actor)
            self.apply([c])
            return
        if op == "supersede":
            old, c = r.choice(live), self.new_cube()
            edge = Edge(c.id, old.id, "supersedes")
            self.vault.insert([c], actor, edges=[edge])
            self.apply([c], [edge])
            return
        if op == "relate":
            a, b = r.choice(live), r.choice(live)
            if a.id != b.id:
                edge = Edge(a.id, b.id, r.choice(["supersedes", "derived_from"]))
                self.vault.add_edges([edge])
                self.apply([], [edge])
            return
        c = r.choice(live)
        if op == "forget":
            self.apply([self.vault.tombstone(c.id, actor)])
            return
        if op == "share":
            readers = tuple(sorted(set(c.governance.readers) | {r.choice(USERS)}))
            changes: dict[str, Any] = {"governance": c.governance.model_copy(update={"readers": readers})}
        elif op == "revoke":
            if not c.governance.readers:
                return
            readers = tuple(c.governance.readers[1:])
            changes = {"governance": c.governance.model_copy(update={"readers": readers})}
        elif op == "entities":
            changes = {"entities": tuple(r.sample(NAMES, r.randint(0, 3)))}
        elif op == "when":
            from datetime import datetime, timezone

            changes = {"occurred_at": datetime.fromtimestamp(r.choice([1.0, 2.0, 4.0]), timezone.utc)}
        else:  # expire
            changes = {"state": State.EXPIRED}
        nxt = c.model_copy(update={**changes, "version": c.version + 1, "updated_at": utcnow()})
        self.vault.put_version(nxt, c.version, actor, op)
        self.apply([nxt])


PRINCIPALS = [(u,) for u in USERS] + [("u0", "u2")]


@pytest.mark.parametrize("principals", [PRINCIPALS, [("u0",)]], ids=["all-users", "one-user"])
@pytest.mark.parametrize("seed", range(6))
def test_views_answer_as_the_whole_graph_through_random_writes(tmp_path, seed, principals):
    # one-user: most changes concern no loaded view (their memories' old entities are
    # unknown, so cached degrees must be forgotten, not adjusted)
    vault = SQLiteVault(tmp_path / "vault.sqlite3")
    try:
        views = make_views(vault)
        world = World(vault, views, seed)
        for _ in range(25):
            world.step()
        assert_same(views, vault, principals)  # loaded from the vault
        for round_ in range(4):
            for _ in range(15):  # views stay loaded: the changes are applied to them
                world.step()
            assert_same(views, vault, principals)
        assert views.loads >= len(principals)
    finally:
        vault.close()


def test_entity_degrees_count_what_the_principals_may_read(tmp_path):
    """A view's entity degrees count its principals' readable memories: another user's
    memories never change a principal's expansion (its scores would otherwise tell how many
    memories of other users name a word), and nothing is read from the vault for them."""
    vault = SQLiteVault(tmp_path / "vault.sqlite3")
    try:
        cubes = [MemCube(namespace=Namespace(user_id="alice", session_id="s"), text=str(i),
                         entities=(NAMES[i], NAMES[i + 1])) for i in range(4)]
        vault.insert(cubes, Actor("alice"))
        flt = IndexFilter(user_ids=("alice",))
        seeds = [(cubes[0].id, 1.0), (cubes[2].id, 0.5)]
        alone = hits(make_views(vault).view(["alice"]), seeds, flt, 1)
        assert f"mentions {NAMES[0]}" in alone[cubes[0].id][1]
        # 250 of bob's memories name NAMES[0] (above max_entity_degree store-wide) and 3
        # name NAMES[2]
        crowd = [MemCube(namespace=Namespace(user_id="bob"), text=f"b{i}", entities=(NAMES[0],))
                 for i in range(250)]
        crowd += [MemCube(namespace=Namespace(user_id="bob"), text=f"c{i}", entities=(NAMES[2],))
                  for i in range(3)]
        vault.insert(crowd, Actor("bob"))
        views = make_views(vault)
        calls: list[str] = []

        def counted(name: str) -> Any:
            real = getattr(vault, name)

            def call(*a: Any, **k: Any) -> Any:
                calls.append(name)
                return real(*a, **k)
            return call

        for name in ("graph_view_rows", "get", "get_many"):
            setattr(vault, name, counted(name))
        view = views.view(["alice"])
        at_load = list(calls)
        assert [view.entity_degree(e) for e in NAMES[:5]] == [1, 2, 2, 2, 1]
        assert hits(view, seeds, flt, 1) == alone  # same memories, scores and reasons
        assert calls == at_load  # degrees and expansion read nothing from the vault
        # bob shares one of his memories with alice: it joins her degrees (she reads it)
        shared = crowd[0].model_copy(update={"version": 2, "governance": crowd[0].governance
                                             .model_copy(update={"readers": ("alice",)})})
        vault.put_version(shared, 1, Actor("bob"), "share:read")
        views.apply([graph_row(shared)])
        assert views.view(["alice"]).entity_degree(NAMES[0]) == 2
        assert views.for_filter(IndexFilter()).entity_degree(NAMES[0]) == 251  # whole graph
    finally:
        vault.close()


def test_a_views_size_counts_only_what_its_principals_may_read(tmp_path):
    """The N that goes with a view's entity degrees (the entity hop's IDF, the dense query's
    common names) leaves out the other user's turns a view holds around a memory shared with
    its principal: their number is not the principal's to know."""
    vault = SQLiteVault(tmp_path / "vault.sqlite3")
    try:
        own = [MemCube(namespace=Namespace(user_id="alice"), text=f"a{i}") for i in range(3)]
        vault.insert(own, Actor("alice"))
        turns = [MemCube(namespace=Namespace(user_id="bob", session_id="s"), text=f"b{i}")
                 for i in range(6)]
        turns[2] = turns[2].model_copy(update={"governance": turns[2].governance.model_copy(
            update={"readers": ("alice",)})})
        vault.insert(turns, Actor("bob"))
        view = make_views(vault).view(["alice"])
        assert len(view) == 3 + 6  # bob's whole session, for the shared turn's neighbours
        assert view.readable_count() == 3 + 1
        assert make_views(vault).for_filter(IndexFilter()).readable_count() == 9
    finally:
        vault.close()


def test_whole_graph_view_for_a_filter_without_principals(tmp_path):
    vault = SQLiteVault(tmp_path / "vault.sqlite3")
    try:
        views = make_views(vault)
        world = World(vault, views, 99)
        for _ in range(40):
            world.step()
        whole, ref = views.for_filter(IndexFilter()), reference(vault)
        assert sorted(whole._num) == sorted(ref._num)
        seeds = [(m, 1.0) for m in sorted(ref._num)]
        assert hits(whole, seeds, IndexFilter(), 1) == hits(ref, seeds, IndexFilter(), 1)
    finally:
        vault.close()


def test_changes_reach_loaded_views_only_and_unloaded_ones_load_current_state(tmp_path):
    vault = SQLiteVault(tmp_path / "vault.sqlite3")
    try:
        views = make_views(vault)
        a = MemCube(namespace=Namespace(user_id="alice", session_id="s"), text="a",
                    entities=("paris",))
        vault.insert([a], Actor("alice"))
        assert not views.loaded(["alice"])  # nothing is built at open
        alice = views.view(["alice"])
        assert a.id in alice and views.loads == 1
        b = MemCube(namespace=Namespace(user_id="bob"), text="b", entities=("paris",))
        vault.insert([b], Actor("bob"))
        views.apply([graph_row(b)])
        assert not views.loaded(["bob"]) and b.id not in alice  # bob's view is not loaded
        assert views.view(["alice"]).entity_degree("paris") == 1  # degrees are the view's
        a2 = MemCube(namespace=Namespace(user_id="alice", session_id="s"), text="a2")
        vault.insert([a2], Actor("alice"))
        views.apply([graph_row(a2)])
        assert alice.session_turns("alice", "s") == [a.id, a2.id]  # applied to the loaded view
        bob = views.view(["bob"])
        assert b.id in bob and views.loads == 2
        # an older memory shared with alice: her view cannot know its session: it is dropped
        shared = b.model_copy(update={"version": 2, "governance": b.governance.model_copy(
            update={"readers": ("alice",)})})
        vault.put_version(shared, 1, Actor("bob"), "share:read")
        views.apply([graph_row(shared)])
        assert not views.loaded(["alice"]) and views.drops == 1 and views.loaded(["bob"])
        assert b.id in views.view(["alice"])  # reloaded with the current state
        assert b.id in views and views.payload(b.id)["readers"] == ["alice"]
    finally:
        vault.close()


def test_the_bound_holds_under_many_users_and_evicted_views_reload(tmp_path):
    vault = SQLiteVault(tmp_path / "vault.sqlite3")
    try:
        users = [f"user{i}" for i in range(30)]
        for user in users:
            vault.insert([MemCube(namespace=Namespace(user_id=user, session_id="s"), text=str(i),
                                  entities=("kim",)) for i in range(5)], Actor(user))
        views = make_views(vault, max_memories=22)
        rng = random.Random(3)
        for _ in range(200):
            user = rng.choice(users)
            assert len(views.view([user])) == 5
            assert views.loaded_memories() <= 22 and views.stats()["views"] <= 4
        assert views.evictions > 0 and views.loads > len(users)
        # an evicted view reloads with what changed while it was out
        views.view([users[0]])
        for user in users[1:6]:
            views.view([user])
        assert not views.loaded([users[0]])
        extra = MemCube(namespace=Namespace(user_id=users[0], session_id="s"), text="x")
        vault.insert([extra], Actor(users[0]))
        views.apply([graph_row(extra)])  # ignored: not loaded
        assert extra.id in views.view([users[0]]) and len(views.view([users[0]])) == 6
        # one view larger than the bound is still served, alone
        big = make_views(vault, max_memories=3)
        assert len(big.view([users[1]])) == 5 and big.stats()["views"] == 1
        big.view([users[2]])
        assert big.stats()["views"] == 1 and not big.loaded([users[1]])
    finally:
        vault.close()


def test_views_of_users_with_few_memories_count_their_own_structures(tmp_path):
    """A view costs memory beyond its memories (benchmarks/graph_view_cost.py: a view of no
    memory 1.9 KB, of one 4.7 KB, against 1.2 KB per memory of a large view). Counted as its
    memories alone (at least 1), a service's new users, each searching before they store,
    held four times the memory the bound was meant to allow."""
    from memos_core.graph.views import VIEW_COST

    vault = SQLiteVault(tmp_path / "vault.sqlite3")
    try:
        vault.insert([MemCube(namespace=Namespace(user_id="one"), text="x")], Actor("one"))
        views = make_views(vault, max_memories=10 * (VIEW_COST + 1))
        for i in range(100):  # users with no memory
            assert len(views.view([f"new{i}"])) == 0
        assert views.stats()["views"] == 10 * (VIEW_COST + 1) // VIEW_COST
        assert views.loaded_memories() == 0  # what the views hold; the bound counts more
        views.view(["one"])
        assert views.loaded_memories() == 1 and views.stats()["loaded_memories"] == 1
        assert views.stats()["views"] <= 10 * (VIEW_COST + 1) // VIEW_COST
    finally:
        vault.close()


def test_a_vault_from_before_the_graph_tables_fills_them_on_open(tmp_path):
    path = tmp_path / "vault.sqlite3"
    vault = SQLiteVault(path)
    c = MemCube(namespace=Namespace(user_id="bob"), text="x", entities=("oslo",),
                governance={"readers": ("alice",)})
    vault.insert([c], Actor("bob"))
    with vault._tx() as db:  # what an older memos-core left: no side table, no flag
        db.execute("DROP TABLE memory_readers")
        db.execute("DELETE FROM meta WHERE key IN ('graph_tables', 'readers_table')")
    vault.close()
    vault = SQLiteVault(path)
    try:
        assert [r["id"] for r in vault.graph_view_rows(["alice"], INDEXED_STATES)] == [c.id]
    finally:
        vault.close()


def test_opening_a_vault_drops_the_entity_table_of_older_versions(tmp_path):
    """memory_entities (the store-wide entity degrees, one row per entity a memory names)
    and its triggers are gone after an open: nothing reads them, and no write keeps them."""
    import sqlite3

    path = tmp_path / "vault.sqlite3"
    SQLiteVault(path).close()
    with sqlite3.connect(path) as db:  # what memos-core before 2026-12-05 made
        db.executescript("""
            CREATE TABLE memory_entities (entity TEXT NOT NULL, id TEXT NOT NULL,
                state TEXT NOT NULL, PRIMARY KEY (entity, id)) WITHOUT ROWID;
            CREATE TRIGGER memories_graph_insert AFTER INSERT ON memories BEGIN
                INSERT OR IGNORE INTO memory_entities(entity, id, state)
                    SELECT value, NEW.id, NEW.state FROM json_each(NEW.entities);
            END;
            INSERT INTO memory_entities VALUES ('Acme merger', 'm1', 'activated');""")
    vault = SQLiteVault(path)
    try:
        c = MemCube(namespace=Namespace(user_id="bob"), text="x", entities=("oslo",),
                    governance={"readers": ("alice",)})
        vault.insert([c], Actor("bob"))
        names = {r[0] for r in vault._query("SELECT name FROM sqlite_master")}
        assert "memory_entities" not in names and "memories_graph_insert" not in names
        assert {"memory_readers", "memories_readers_insert"} <= names
        assert [r["id"] for r in vault.graph_view_rows(["alice"], INDEXED_STATES)] == [c.id]
    finally:
        vault.close()
    assert b"Acme merger" not in path.read_bytes()  # secure_delete zeroed the dropped pages


# -- through the store -----------------------------------------------------------------------


def test_search_loads_the_users_view_and_writes_follow_it(make_mos):
    mos = make_mos(graph_max_memories=1_000)
    a = mos.add("Caroline went to the support group in May.", user_id="alice", session_id="s1")
    mos.add("Bob repaired the old Vespa.", user_id="bob", session_id="s1")
    graph = mos.graph
    assert not graph.loaded(["alice"]) and not graph.loaded(["bob"])
    assert mos.search("support group", user_id="alice", k=1)[0].id == a.id
    assert graph.loaded(["alice"]) and not graph.loaded(["bob"])  # only what a search needed
    b = mos.add("Caroline painted a sunrise after the group.", user_id="alice", session_id="s1")
    view = graph.view(["alice"])
    assert view.session_turns("alice", "s1") == [a.id, b.id]  # the write path reached it
    hit = next(h for h in mos.search("what did Caroline paint", user_id="alice", k=5)
               if h.id == a.id)
    assert "graph" in hit.signals
    mos.forget(b.id, user_id="alice")
    assert view.session_turns("alice", "s1") == [a.id] and b.id not in graph
    assert mos.reindex()["indexed"] == 2 and not graph.loaded(["alice"])  # rebuilt: reloads
    assert a.id in graph.view(["alice"])


def test_a_packed_row_holds_every_field_in_order_with_lists_frozen() -> None:
    from memos_core.graph.memory_graph import _FIELDS

    row = {"id": "m", "seq": 3, "user_id": "alice", "agent_id": "bot", "session_id": "s1",
           "type": "fact", "tags": ["a", "b"], "state": "generated", "occurred_at": 12.5,
           "superseded": False, "version": 2, "readers": ["bob"], "entities": ["X"]}
    packed = MemoryGraph._pack(row, 9)
    expected = tuple(9 if f == "seq" else tuple(row[f]) if isinstance(row[f], list) else row[f]
                     for f in _FIELDS)
    assert packed == expected
    assert MemoryGraph._pack({"id": "m", "tags": [], "readers": []}, 1) == \
        (1, None, None, None, None, (), None, None, None, None, ())


def test_a_view_loads_with_the_collector_paused_and_restored(tmp_path, monkeypatch) -> None:
    import gc

    vault = SQLiteVault(tmp_path / "v.db")
    vault.insert([MemCube(namespace=Namespace(user_id="alice"), text="hi", entities=("X",))],
                 Actor("alice"))
    seen: list[bool] = []
    read = vault.graph_view_rows

    def watched(*args: Any) -> list[dict[str, Any]]:
        seen.append(gc.isenabled())
        return read(*args)

    monkeypatch.setattr(vault, "graph_view_rows", watched)
    assert gc.isenabled()
    views = GraphViews(vault, lock=threading.RLock(), states=INDEXED_STATES, max_memories=100)
    assert len(views.view(("alice",))) == 1
    assert seen == [False] and gc.isenabled()
    gc.disable()  # a caller that turned it off keeps it off
    try:
        views.view(("bob",))
        assert seen == [False, False] and not gc.isenabled()
    finally:
        gc.enable()
    vault.close()
