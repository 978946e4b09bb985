"""The memory graph: memories and entities as nodes, relations as edges.

Edges:
- ``mentions``: memory -- entity (from the memory's extracted entities);
- ``next``: memory -- memory, consecutive turns of one session (by occurred_at, then order
  of insertion);
- ``supersedes`` and ``derived_from``: explicit relations, persisted in the vault's edge table.

Mentions and turn order are recomputed from the memories' own fields (which the vault holds);
explicit relations are read from the vault. Every memory carries its filter payload, so
graph-expanded candidates are filtered by the same rule as index hits.

Compact by design (it is the largest in-memory structure at scale): memories and entities
are numbered with integers; a memory's payload is one tuple with its repeated strings
(user, session, type, state) interned; ``next`` edges are not stored but read from each
session's sorted turn list (one list per (user, session): a per-user view); mentions are an
entity -> member set plus a memory -> entity tuple. Nothing here is a general graph library.

Not thread-safe on its own: the facade serialises access.
"""

from __future__ import annotations

import bisect
import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from memos_core.index.base import IndexFilter
from memos_core.index.filters import FilterPlan, plan_filter, plan_matches

#: Payload fields kept per memory, in tuple order (besides ``entities``).
_FIELDS = ("seq", "user_id", "agent_id", "session_id", "type", "tags", "state",
           "occurred_at", "superseded", "version", "readers")
_SEQ, _USER, _SESSION, _WHEN, _READERS = 0, 1, 3, 7, 10
_EXPLICIT = ("supersedes", "derived_from")
_VERDICT_FILTERS = 8  # filters whose verdicts a graph keeps (see MemoryGraph._verdicts)
_VERDICT_MEMORIES = 200_000  # verdicts kept per filter, at most (then they start again)


@dataclass
class GraphHit:
    """A memory reached by graph expansion, with the relations that reached it."""

    id: str
    score: float = 0.0
    reasons: list[str] = field(default_factory=list)


def _intern(value: Any) -> Any:
    return sys.intern(value) if isinstance(value, str) else value


def _read_by(row: tuple[Any, ...], principals: frozenset[str]) -> bool:
    """True if one of ``principals`` owns or reads (``readers``) the memory of a packed row."""
    return row[_USER] in principals or not principals.isdisjoint(row[_READERS] or ())


def _freeze(value: Any) -> Any:
    if not isinstance(value, (list, tuple)):
        return value
    if not value:
        return ()
    return tuple([sys.intern(v) if type(v) is str else v for v in value])


class MemoryGraph:
    """Derived graph over memories; see the module docstring for the edge kinds."""

    def __init__(self, *, max_entity_degree: int = 200) -> None:
        self.max_entity_degree = max_entity_degree
        self._num: dict[str, int] = {}          # memory id -> number
        self._ids: list[str] = []               # number -> memory id ("" when free)
        self._rows: list[tuple[Any, ...]] = []  # number -> payload tuple (_FIELDS order; () when free)
        self._ents: list[tuple[int, ...]] = []  # number -> entity numbers
        self._free: list[int] = []              # numbers of removed memories, for reuse
        self._entity_num: dict[str, int] = {}
        self._entity_names: list[str] = []      # number -> entity ("" when free)
        self._members: list[set[int]] = []      # entity number -> memory numbers
        self._free_entities: list[int] = []     # numbers of entities no memory names, for reuse
        self._relations: dict[int, dict[int, str]] = {}  # explicit relations, both directions
        # (user_id, session_id) -> sorted [(occurred_at or -inf, seq, number)]
        self._sessions: dict[tuple[str, str], list[tuple[float, int, int]]] = {}
        self._next_seq = 1
        #: filter verdicts kept between expansions (see :meth:`_verdicts`)
        self._passes: dict[Any, dict[int, bool]] = {}

    # -- building ------------------------------------------------------------------------

    def upsert(self, row: dict[str, Any]) -> None:
        """Add or refresh one memory from its payload row (see ``SQLiteVault.graph_rows``)."""
        mid = row["id"]
        self._passes.clear()
        n = self._num.get(mid)
        if n is not None:
            old = self._rows[n]
            seq = old[_SEQ]
            moved = (old[_SESSION], old[_WHEN]) != (row.get("session_id"), row.get("occurred_at"))
            if moved:
                relations = self._relations.get(n, {})
                kept = [(self._ids[m], kind) for m, kind in relations.items()]
                self._remove(mid)
                n = self._new_number(mid)
                self._rows[n] = self._pack(row, seq)
                self._link_turn(n)
                for other, kind in kept:  # explicit relations survive a move
                    self._relate(n, self._num[other], kind)
            else:
                self._drop_mentions(n)
                self._rows[n] = self._pack(row, seq)
        else:
            seq = row.get("seq")
            if seq is None:
                seq = self._next_seq
            self._next_seq = max(self._next_seq, seq + 1)
            n = self._new_number(mid)
            self._rows[n] = self._pack(row, seq)
            self._link_turn(n)
        ents = []
        for entity in dict.fromkeys(row.get("entities", ())):
            e = self._entity_num.get(entity)
            if e is None:
                e = self._new_entity(entity)
            self._members[e].add(n)
            ents.append(e)
        self._ents[n] = tuple(ents)

    def remove(self, memory_id: str) -> None:
        """Drop a memory and every edge it had; rejoin its session neighbours."""
        self._remove(memory_id)

    def _remove(self, memory_id: str) -> None:
        n = self._num.pop(memory_id, None)
        if n is None:
            return
        self._passes.clear()
        self._drop_mentions(n)
        row = self._rows[n]
        key = (row[_USER], row[_SESSION])
        turns = self._sessions.get(key) if key[1] is not None else None
        if turns is not None:
            i = self._position(turns, n)
            if i is not None:
                turns.pop(i)
            if not turns:
                del self._sessions[key]
        for other in self._relations.pop(n, {}):
            self._relations.get(other, {}).pop(n, None)
        self._ids[n] = ""
        self._rows[n] = ()
        self._ents[n] = ()
        self._free.append(n)

    def add_relation(self, src: str, dst: str, kind: str) -> None:
        """An explicit relation (``supersedes``, ``derived_from``) between two known memories."""
        a, b = self._num.get(src), self._num.get(dst)
        if a is not None and b is not None:
            self._relate(a, b, kind)

    def _relate(self, a: int, b: int, kind: str) -> None:
        self._relations.setdefault(a, {})[b] = kind
        self._relations.setdefault(b, {})[a] = kind

    def _new_number(self, mid: str) -> int:
        if self._free:
            n = self._free.pop()
            self._ids[n] = mid
        else:
            n = len(self._ids)
            self._ids.append(mid)
            self._rows.append(())
            self._ents.append(())
        self._num[mid] = n
        return n

    @staticmethod
    def _pack(row: dict[str, Any], seq: int) -> tuple[Any, ...]:
        """``row`` as a tuple in :data:`_FIELDS` order: strings of few values interned, lists
        frozen into tuples (a view loads one per memory, so this is spelled out)."""
        get = row.get
        return (seq, _intern(get("user_id")), _intern(get("agent_id")),
                _intern(get("session_id")), _intern(get("type")), _freeze(get("tags")),
                _intern(get("state")), _freeze(get("occurred_at")),
                _freeze(get("superseded")), _freeze(get("version")), _freeze(get("readers")))

    def _new_entity(self, entity: str) -> int:
        if self._free_entities:
            e = self._free_entities.pop()
            self._entity_names[e] = sys.intern(entity)
        else:
            e = len(self._entity_names)
            self._entity_names.append(sys.intern(entity))
            self._members.append(set())
        self._entity_num[entity] = e
        return e

    def _drop_mentions(self, n: int) -> None:
        for e in self._ents[n]:
            members = self._members[e]
            members.discard(n)
            if not members:  # no memory names it any more: its number is reused
                self._free_entity(e)
        self._ents[n] = ()

    def _free_entity(self, e: int) -> None:
        """Forget entity number ``e`` (no memory names it): a long-lived graph whose
        memories come and go keeps only the names they mention now."""
        del self._entity_num[self._entity_names[e]]
        self._entity_names[e] = ""
        self._free_entities.append(e)

    def _turn_key(self, n: int) -> tuple[float, int, int]:
        row = self._rows[n]
        when = row[_WHEN]
        return (when if when is not None else -math.inf, row[_SEQ], n)

    def _link_turn(self, n: int) -> None:
        row = self._rows[n]
        if row[_SESSION] is None:
            return
        bisect.insort(self._sessions.setdefault((row[_USER], row[_SESSION]), []), self._turn_key(n))

    def _position(self, turns: list[tuple[float, int, int]], n: int) -> int | None:
        i = bisect.bisect_left(turns, self._turn_key(n))
        return i if i < len(turns) and turns[i][2] == n else None

    # -- reading -------------------------------------------------------------------------

    def __contains__(self, memory_id: object) -> bool:
        return memory_id in self._num

    def payload(self, memory_id: str) -> dict[str, Any] | None:
        """The memory's filter payload (plus ``seq`` and ``entities``), or None if unknown."""
        n = self._num.get(memory_id)
        return None if n is None else self._payload(n)

    def _payload(self, n: int) -> dict[str, Any]:
        out = dict(zip(_FIELDS, self._rows[n]))
        for key in ("tags", "readers"):
            if isinstance(out[key], tuple):
                out[key] = list(out[key])
        out["entities"] = [self._entity_names[e] for e in self._ents[n]]
        return out

    def _filter_view(self, n: int) -> dict[str, Any]:
        """The fields a filter reads (no entity names: cheaper than :meth:`_payload`)."""
        out = dict(zip(_FIELDS, self._rows[n]))
        for key in ("tags", "readers"):
            if isinstance(out[key], tuple):
                out[key] = list(out[key])
        return out

    def __len__(self) -> int:
        """How many memories the graph holds."""
        return len(self._num)

    def readable_count(self) -> int:
        """How many memories the entity degrees are counted over (here: all it holds; a
        view: those its principals may read)."""
        return len(self)

    def entity_degree(self, entity: str) -> int:
        """How many of the memories this graph holds name ``entity`` (a view: those its
        principals may read, see :class:`memos_core.graph.views.GraphView`)."""
        e = self._entity_num.get(entity)
        return 0 if e is None else self._degree(e)

    def _degree(self, e: int) -> int:
        """The degree of entity number ``e`` that expansion weighs by."""
        return len(self._members[e])

    def entities_of(self, memory_id: str) -> list[str]:
        """The entities of a memory the graph holds ([] if unknown)."""
        n = self._num.get(memory_id)
        return [] if n is None else [self._entity_names[e] for e in self._ents[n]]

    def session_of(self, memory_id: str) -> tuple[Any, Any] | None:
        """``(user_id, session_id)`` of a memory the graph holds, or None if unknown."""
        n = self._num.get(memory_id)
        return None if n is None else (self._rows[n][_USER], self._rows[n][_SESSION])

    def has_session(self, user_id: str, session_id: str) -> bool:
        """True if the graph holds a turn of this session."""
        return (user_id, session_id) in self._sessions

    def session_turns(self, user_id: str, session_id: str) -> list[str]:
        """Memory ids of one session in turn order."""
        return [self._ids[t[2]] for t in self._sessions.get((user_id, session_id), [])]

    def has_edge(self, a: str, b: str) -> bool:
        """True if two memories are consecutive turns or explicitly related."""
        return any(m == b for m, _ in self.neighbours(a) if _ == "next" or _ in _EXPLICIT)

    def neighbours(self, memory_id: str) -> list[tuple[str, str]]:
        """(memory id, relation) pairs one hop away, through entities for ``mentions``."""
        n = self._num.get(memory_id)
        if n is None:
            return []
        out = [(self._ids[m], "next") for m, _ in self._window(n, 1)]
        for e in self._ents[n]:
            if self._degree(e) <= self.max_entity_degree:
                name = "entity:" + self._entity_names[e]
                out.extend((self._ids[m], name) for m in self._members[e] if m != n)
        out.extend((self._ids[m], kind) for m, kind in self._relations.get(n, {}).items())
        return out

    def expand(
        self,
        seeds: list[tuple[str, float]],
        flt: IndexFilter,
        *,
        query_entities: Iterable[str] = (),
        neighbour_turns: int = 1,
        entity_seed_weight: float = 0.0,
        max_degree: int | None = None,
    ) -> dict[str, GraphHit]:
        """Memories related to the seeds (id, weight) or to the query's entities.

        A neighbour's score is its best path: the seed's weight times the relation's weight,
        1 for a neighbouring turn or a supersession/derivation link, ``1/log2(1+degree)`` for a
        shared entity (rare entities count more; entities above ``max_entity_degree``, or above
        ``max_degree`` when that is lower, are skipped). Taking the best path rather than the
        sum keeps hubs -- a turn next to many hits -- from outranking the hits themselves.
        Only memories that pass ``flt`` are returned; seeds themselves are included only when
        reached from another seed.
        """
        found = self.expand_scores(seeds, flt, query_entities=query_entities,
                                   neighbour_turns=neighbour_turns,
                                   entity_seed_weight=entity_seed_weight, max_degree=max_degree)
        return {mid: GraphHit(mid, score, reasons) for mid, (score, reasons) in found.items()}

    def expand_scores(
        self,
        seeds: list[tuple[str, float]],
        flt: IndexFilter,
        *,
        query_entities: Iterable[str] = (),
        neighbour_turns: int = 1,
        entity_seed_weight: float = 0.0,
        max_degree: int | None = None,
    ) -> dict[str, tuple[float, list[str]]]:
        """:meth:`expand` as ``id -> (score, reasons)`` (no :class:`GraphHit` objects; the
        search path's form). Same memories, scores, reasons and order as :meth:`expand`.

        Each relation credits a group of memories with one amount and one reason; a memory's
        filter verdict is read from :meth:`_verdicts`, kept between expansions."""
        ids, members_of = self._ids, self._members
        plan = plan_filter(flt)  # compiled once per expansion, not once per memory
        passes = self._verdicts(plan, flt)
        check = self._checker(plan, flt)
        score: dict[int, float] = {}
        why: dict[int, list[str]] = {}  # insertion order: the order memories were first reached
        # the query's entities this graph holds (one that no memory here names credits nothing)
        held = [(name, e) for name in dict.fromkeys(query_entities)
                if (e := self._entity_num.get(name)) is not None and members_of[e]]

        def credit(reached: Iterable[int], skip: int, amount: float, reason: str) -> None:
            # a memory's score is its best path (max); reasons in first-credit order, unique
            first = amount if amount > 0.0 else 0.0  # max(0.0, amount)
            for m in reached:
                if m == skip:
                    continue
                ok = passes.get(m)
                if ok is None:
                    ok = passes[m] = check(m)
                if not ok:
                    continue
                reasons = why.get(m)
                if reasons is None:
                    score[m] = first
                    why[m] = [reason]
                else:
                    if amount > score[m]:
                        score[m] = amount
                    if reason not in reasons:
                        reasons.append(reason)

        max_degree = self.max_entity_degree if max_degree is None \
            else min(max_degree, self.max_entity_degree)
        for seed, weight in seeds:
            n = self._num.get(seed)
            if n is None:
                continue
            if neighbour_turns > 0:
                credit(self._window_numbers(n, neighbour_turns), -1, weight, "neighbouring turn")
            for e in self._ents[n]:
                degree = self._degree(e)
                if 1 < degree <= max_degree:
                    credit(members_of[e], n, weight / math.log2(1 + degree),
                           "shared entity " + self._entity_names[e])
            for m, kind in self._relations.get(n, {}).items():
                if kind in _EXPLICIT:
                    credit((m,), -1, weight, kind)
        for entity, e_num in held:
            degree = self._degree(e_num)
            if 0 < degree <= max_degree:
                credit(members_of[e_num], -1, entity_seed_weight / math.log2(1 + degree),
                       "mentions " + entity)
        return {ids[m]: (score[m], reasons) for m, reasons in why.items()}

    def naming(self, entities: Iterable[str], flt: IndexFilter) -> dict[str, list[str]]:
        """The memories that pass ``flt`` and name one of ``entities`` -> the ones they name
        (in the order given)."""
        plan = plan_filter(flt)
        passes = self._verdicts(plan, flt)
        check = self._checker(plan, flt)
        found: dict[int, list[str]] = {}
        for name in dict.fromkeys(entities):
            e = self._entity_num.get(name)
            if e is None:
                continue
            for m in self._members[e]:
                ok = passes.get(m)
                if ok is None:
                    ok = passes[m] = check(m)
                if ok:
                    found.setdefault(m, []).append(name)
        return {self._ids[m]: names for m, names in found.items()}

    def _verdicts(self, plan: FilterPlan | None, flt: IndexFilter) -> dict[int, bool]:
        """Memory number -> passes ``flt``, filled as expansions read them and kept while
        the graph does not change (a memory's verdict depends only on its payload row and
        the filter; every :meth:`upsert` and :meth:`remove` drops them). A few filters are
        kept (a principal's searches mostly repeat one), each with at most about
        ``_VERDICT_MEMORIES`` verdicts."""
        key = (plan, flt.user_ids)
        found = self._passes.get(key)
        if found is None:
            if len(self._passes) >= _VERDICT_FILTERS:
                self._passes.clear()
            found = self._passes[key] = {}
        elif len(found) > _VERDICT_MEMORIES:  # a large view read by many searches
            found.clear()
        return found

    def _checker(self, plan: FilterPlan | None, flt: IndexFilter) -> Callable[[int], bool]:
        """The filter as a test of a memory number: the principal condition (owner or reader
        among ``user_ids``) read straight from the row first -- most entity neighbours at
        scale are other users' memories -- then the compiled plan."""
        owners = frozenset(flt.user_ids) if flt.user_ids is not None else None
        rows = self._rows

        def check(m: int) -> bool:
            row = rows[m]
            if owners is not None and not _read_by(row, owners):
                return False
            return plan_matches(plan, self._filter_view(m))
        return check

    def _window_numbers(self, n: int, width: int) -> list[int]:
        """Up to ``width`` turns before and after memory ``n`` in its session (numbers)."""
        row = self._rows[n]
        if width <= 0 or row[_SESSION] is None:
            return []
        turns = self._sessions.get((row[_USER], row[_SESSION]), [])
        i = self._position(turns, n)
        if i is None:
            return []
        lo, hi = max(0, i - width), min(len(turns), i + width + 1)
        return [turns[j][2] for j in range(lo, hi) if j != i]

    def _window(self, n: int, width: int) -> list[tuple[int, str]]:
        """Up to ``width`` turns before and after memory ``n`` in its session."""
        row = self._rows[n]
        if width <= 0 or row[_SESSION] is None:
            return []
        turns = self._sessions.get((row[_USER], row[_SESSION]), [])
        i = self._position(turns, n)
        if i is None:
            return []
        lo, hi = max(0, i - width), min(len(turns), i + width + 1)
        return [(turns[j][2], "neighbouring turn") for j in range(lo, hi) if j != i]

    def stats(self) -> dict[str, int]:
        memories = len(self._num)
        entities = sum(1 for members in self._members if members)
        mentions = sum(len(members) for members in self._members)
        turns = sum(len(t) - 1 for t in self._sessions.values())
        relations = sum(len(r) for r in self._relations.values()) // 2
        return {
            "nodes": memories + entities,
            "edges": mentions + turns + relations,
            "entities": entities,
            "memories": memories,
        }
