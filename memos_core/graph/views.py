"""Per-principal views of the memory graph, loaded from the vault on demand and bounded.

The vault holds everything the graph is made of (payload fields, entities, relations); a
process does not build the whole graph. A **view** is one principal's part of it -- a
:class:`GraphView` (a :class:`~memos_core.graph.memory_graph.MemoryGraph`) holding:

* every memory in the graph's states (:data:`~memos_core.lifecycle.INDEXED_STATES`) that
  the principal owns or reads (``readers``: per-memory and namespace shares);
* every memory of another user's session that holds one of those -- the turns around a
  shared memory, which it does not read, still decide which turns are its neighbours;
* every stored relation among them (a relation to a memory outside the view can never be
  followed: expansion keeps only memories the principal may read, and all of those are in);
* the **entity degrees**, which weigh and cut entity links, counted in the view: how many of
  its memories the principal may read name an entity (exact, no vault read). Other users'
  memories never change how a principal's links weigh, so a search's scores and reasons say
  nothing about what they name (with the whole store's degrees, a popular name elsewhere also
  stopped linking a user's memories that name it twice).

That is everything a search with the filter ``user_ids=(principal,)`` can reach. A filter
without ``user_ids`` gets the whole graph as one view (degrees: the whole store's).

:class:`GraphViews` keeps the loaded views in an LRU bounded by ``max_memories`` (the sum of
the views' sizes, each its memories plus :data:`VIEW_COST` for the view's own structures; the
view in use is never evicted, so one view larger than the bound is still served alone). Changes -- this process's writes and, in server mode, the change feed --
are applied to the loaded views they concern and ignored for the others: an unloaded view
reads the current state when it is next loaded. A change a view cannot apply exactly (a
memory becomes readable whose session or relations the view does not hold) drops that view;
it is reloaded on its next use.

Loading reads the vault under the graph lock, so a write's graph update (which takes the lock
after its commit) either is already in what a load read or is applied to the loaded view.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from memos_core.graph.memory_graph import MemoryGraph, _read_by
from memos_core.index.base import IndexFilter

#: a view's key: the sorted principals of the filter (None: the whole graph)
ViewKey = tuple[str, ...] | None


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a view is built, if it was on. A load makes
    a few objects per memory, none of them garbage, and each full collection it would trigger
    walks every object of the process (a model's, the other views'), so at scale it cost more
    than the load itself (``benchmarks/view_load.py``). Reference counting still frees what
    dies meanwhile; the collector is restored (not re-enabled if a caller had turned it off)."""
    was_on = gc.isenabled()
    if was_on:
        gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


class GraphSource(Protocol):
    """What the views read from the vault (:class:`memos_core.vault.base.Vault` has it)."""

    def graph_rows(self) -> list[dict[str, Any]]: ...  # pragma: no cover - protocol

    def edges(self) -> Sequence[Any]: ...  # pragma: no cover - protocol

    def graph_view_rows(self, user_ids: Sequence[str],
                        states: Sequence[str]) -> list[dict[str, Any]]: ...  # pragma: no cover

    def graph_edges(self, memory_ids: Sequence[str]) -> Sequence[Any]: ...  # pragma: no cover


class GraphView(MemoryGraph):
    """One principal's part of the graph (see the module docstring); entity degrees count
    the memories of the view its principals may read. ``principals`` None: the whole graph."""

    def __init__(self, principals: frozenset[str] | None, *, max_entity_degree: int = 200) -> None:
        super().__init__(max_entity_degree=max_entity_degree)
        self.principals = principals
        #: entity number -> memories of the view its principals may read that name it
        self._readable_degrees: dict[int, int] = {}
        self._readable_count: int | None = None  # memories its principals may read
        #: the owners of the memories it holds (a changed memory concerns only the views
        #: that hold one of its owner's memories or whose principal owns or reads it)
        self.owners: set[str] = set()

    def upsert(self, row: dict[str, Any]) -> None:
        self._recount(self._num.get(row["id"]), -1)
        super().upsert(row)
        self._recount(self._num[row["id"]], +1)
        self.owners.add(row["user_id"])

    def remove(self, memory_id: str) -> None:
        self._recount(self._num.get(memory_id), -1)
        super().remove(memory_id)

    def _free_entity(self, e: int) -> None:
        super()._free_entity(e)
        self._readable_degrees.pop(e, None)  # the number may name another entity next

    def _recount(self, n: int | None, sign: int) -> None:
        """Add (``sign`` 1) or take away (-1) memory number ``n`` in the counts computed so
        far, if its principals may read it: a write moves them by one (recounting the view
        after every write made the next search cost a pass over the whole view)."""
        p = self.principals
        if n is None or p is None or not self._rows[n] or not _read_by(self._rows[n], p):
            return
        if self._readable_count is not None:
            self._readable_count += sign
        degrees = self._readable_degrees
        for e in self._ents[n]:
            if e in degrees:
                degrees[e] += sign

    def readable_count(self) -> int:
        """How many of its memories its principals may read (the other users' turns it
        holds for neighbourhood do not count): the ``N`` its entity degrees go with."""
        if self.principals is None:
            return len(self)
        if self._readable_count is None:
            p = self.principals
            self._readable_count = sum(1 for row in self._rows if row and _read_by(row, p))
        return self._readable_count

    def _degree(self, e: int) -> int:
        """How many memories its principals may read name entity number ``e`` (what
        :meth:`entity_degree` returns and links weigh by)."""
        # a view also holds other users' turns around a memory shared with its principals
        # (they decide which turns neighbour it): they do not count
        if self.principals is None:
            return len(self._members[e])
        found = self._readable_degrees.get(e)
        if found is None:
            p, rows = self.principals, self._rows
            found = self._readable_degrees[e] = sum(1 for m in self._members[e]
                                                    if _read_by(rows[m], p))
        return found

    def readable(self, row: dict[str, Any]) -> bool:
        """True if the principal owns or reads the memory of ``row``."""
        p = self.principals
        return p is None or row.get("user_id") in p or not p.isdisjoint(row.get("readers") or ())

    def complete(self, user_id: Any, session_id: Any) -> bool:
        """True if the view holds every turn of this session (or it is no session)."""
        p = self.principals
        return (session_id is None or p is None or user_id in p
                or self.has_session(user_id, session_id))


#: What a loaded view costs beyond its memories, in memories: its own lists, dicts and index
#: entries. ``benchmarks/graph_view_cost.py`` measured 1,195 B per memory of a large view,
#: 1,902 B per view of no memory and 4,730 B per view of one; with this cost every kind comes
#: to 0.6-1.2 KB per unit of the bound. Counted as 1 before 2026-12-07, views of users with
#: one memory held 946 MB at the default bound instead of 239 MB
#: (``benchmarks/results/graph_view_cost_2026-12-07.txt``).
VIEW_COST = 3

class GraphViews:
    """The loaded graph views of one process (see the module docstring).

    Args:
        source: the vault.
        lock: the store's graph lock (re-entrant); every method takes it.
        states: the states a memory has a graph node in.
        max_memories: the LRU bound: most memories held by all loaded views together, each
            view counted :data:`VIEW_COST` memories more for its own structures.
        max_entity_degree: entities named by more memories are not expanded.
        prepare: applied to every row read from the vault before it joins a view (the store
            hides tags with it).
        owner_of: the owner of a memory (for the principal-free readers), None if unknown.
    """

    def __init__(self, source: GraphSource, *, lock: threading.RLock, states: Sequence[str],
                 max_memories: int, max_entity_degree: int = 200,
                 prepare: Callable[[dict[str, Any]], dict[str, Any]] = lambda row: row,
                 owner_of: Callable[[str], str | None] | None = None) -> None:
        self.source = source
        self.lock = lock
        self.states = tuple(states)
        self.max_memories = max_memories
        self.max_entity_degree = max_entity_degree
        self.prepare = prepare
        self.owner_of = owner_of
        self._views: OrderedDict[ViewKey, GraphView] = OrderedDict()
        self._sizes: dict[ViewKey, int] = {}
        self._by_owner: dict[str, set[ViewKey]] = {}  # owner -> views holding its memories
        self._by_principal: dict[str, set[ViewKey]] = {}  # user -> views it is a principal of
        self._total = 0
        #: how many views were loaded from the vault / evicted / dropped by a change
        self.loads = 0
        self.evictions = 0
        self.drops = 0

    # -- views ---------------------------------------------------------------------------

    @staticmethod
    def key(user_ids: Sequence[str] | None) -> ViewKey:
        return None if user_ids is None else tuple(sorted(set(user_ids)))

    def view(self, user_ids: Sequence[str] | None) -> GraphView:
        """The view of the principals ``user_ids`` (None: the whole graph), loaded from the
        vault if it is not loaded; it becomes the most recently used."""
        key = self.key(user_ids)
        with self.lock:
            found = self._views.get(key)
            if found is not None:
                self._views.move_to_end(key)
                return found
            with _collector_paused():
                loaded = self._load(key)
            self._views[key] = loaded
            self._sizes[key] = len(loaded) + VIEW_COST
            self._total += self._sizes[key]
            for user in key or ():
                self._by_principal.setdefault(user, set()).add(key)
            self._index_owners(key)
            self.loads += 1
            self._evict(keep=key)
            return loaded

    def for_filter(self, flt: IndexFilter) -> GraphView:
        """The view a search with ``flt`` reads: that of its ``user_ids``."""
        return self.view(flt.user_ids)

    def loaded(self, user_ids: Sequence[str] | None) -> bool:
        """True if the view of ``user_ids`` is loaded (does not load it)."""
        with self.lock:
            return self.key(user_ids) in self._views

    def loaded_memories(self) -> int:
        """How many memories the loaded views hold together (the bound limits these plus
        :data:`VIEW_COST` per view)."""
        with self.lock:
            return self._total - VIEW_COST * len(self._views)

    def clear(self) -> None:
        """Drop every loaded view (after a rebuild: they reload)."""
        with self.lock:
            self._views.clear()
            self._sizes.clear()
            self._by_owner.clear()
            self._by_principal.clear()
            self._total = 0

    def _load(self, key: ViewKey) -> GraphView:
        view = GraphView(None if key is None else frozenset(key),
                         max_entity_degree=self.max_entity_degree)
        if key is None:
            rows = [r for r in self.source.graph_rows() if r["state"] in self.states]
            edges: Sequence[Any] = self.source.edges()
        else:
            rows = self.source.graph_view_rows(key, self.states)
            edges = self.source.graph_edges([r["id"] for r in rows]) if rows else []
        for row in rows:
            view.upsert(self.prepare(row))
        for edge in edges:
            view.add_relation(edge.src, edge.dst, edge.kind)
        return view

    def _index_owners(self, key: ViewKey) -> None:
        view = self._views[key]
        for owner in view.owners:
            self._by_owner.setdefault(owner, set()).add(key)

    def _drop(self, key: ViewKey) -> None:
        view = self._views.pop(key, None)
        self._total -= self._sizes.pop(key, 0)
        if view is None:
            return
        for index, users in ((self._by_owner, view.owners), (self._by_principal, key or ())):
            for user in users:
                keys = index.get(user)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[user]

    def _concerned(self, row: dict[str, Any]) -> list[ViewKey]:
        """The loaded views a changed memory may concern (a superset)."""
        keys: set[ViewKey] = set(self._by_owner.get(row["user_id"], ()))
        for user in (row["user_id"], *(row.get("readers") or ())):
            keys.update(self._by_principal.get(user, ()))
        if None in self._views:
            keys.add(None)
        return [k for k in self._views if k in keys]  # LRU order: deterministic

    def _resize(self, key: ViewKey) -> None:
        view = self._views.get(key)
        if view is not None:
            size = len(view) + VIEW_COST
            self._total += size - self._sizes.get(key, 0)
            self._sizes[key] = size

    def _evict(self, keep: ViewKey) -> None:
        while self._total > self.max_memories and len(self._views) > 1:
            oldest = next(iter(self._views))
            if oldest == keep:
                self._views.move_to_end(keep)
                oldest = next(iter(self._views))
            self._drop(oldest)
            self.evictions += 1

    # -- changes -------------------------------------------------------------------------

    def apply(self, rows: Sequence[dict[str, Any]], edges: Sequence[Any] = ()) -> None:
        """Apply changed memories (their graph rows, tags already hidden, in any state) and
        new relations to the loaded views they concern."""
        with self.lock:
            touched: set[ViewKey] = set()
            for row in rows:
                for key in self._concerned(row):
                    if self._apply_row(self._views[key], row):
                        touched.add(key)
                    else:
                        self._drop(key)
                        self.drops += 1
            for edge in edges:  # both ends must be held: a view holding one end will do
                for view in self._views.values():
                    view.add_relation(edge.src, edge.dst, edge.kind)
            for key in touched:
                if key in self._views:
                    self._resize(key)
                    self._index_owners(key)
            if self._views:
                self._evict(keep=next(reversed(self._views)))

    def _apply_row(self, view: GraphView, row: dict[str, Any]) -> bool:
        """Apply one changed memory to one view; False if the view must be dropped."""
        mid = row["id"]
        indexed = row["state"] in self.states
        user: str = row["user_id"]
        session: str | None = row.get("session_id")
        if mid in view:
            if not indexed:
                view.remove(mid)
            elif view.session_of(mid) == (user, session) or view.complete(user, session):
                view.upsert(row)  # a turn it no longer reads stays: it still separates turns
            else:
                return False  # moved into a session the view does not hold
            return True
        if not indexed or not (view.readable(row) or
                               (session is not None and view.has_session(user, session))):
            return True  # not part of this view
        if row.get("version") == 1 and view.complete(user, session):
            view.upsert(row)  # a new memory: no relation of it is stored but with it
            return True
        return False  # an older memory becomes readable: its turns and relations are in the vault

    # -- principal-free readers (introspection, tests) -----------------------------------

    def _owner_view(self, memory_id: str) -> GraphView | None:
        owner = self.owner_of(memory_id) if self.owner_of is not None else None
        return None if owner is None else self.view((owner,))

    def __contains__(self, memory_id: object) -> bool:
        """True if the memory is a node of the graph (its owner's view is loaded for it)."""
        if not isinstance(memory_id, str):
            return False
        with self.lock:
            found = self._owner_view(memory_id)
            return found is not None and memory_id in found

    def payload(self, memory_id: str) -> dict[str, Any] | None:
        """The memory's graph payload, read from its owner's view; None if not a node."""
        with self.lock:
            found = self._owner_view(memory_id)
            return None if found is None else found.payload(memory_id)

    def stats(self) -> dict[str, int]:
        """The loaded views: how many, the memories they hold, the bound, loads, evictions
        and drops so far."""
        with self.lock:
            return {
                "views": len(self._views),
                "loaded_memories": self.loaded_memories(),  # (the lock is re-entrant)
                "max_memories": self.max_memories,
                "loads": self.loads,
                "evictions": self.evictions,
                "drops": self.drops,
            }
