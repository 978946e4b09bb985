"""The memory graph: memories and entities as nodes, relations as edges.

Edges:
- ``mentions``: memory -- entity (from the memory's extracted entities);
- ``next``: memory -- memory, consecutive turns of one session (by occurred_at, then order
  of insertion);
- ``supersedes`` and ``derived_from``: explicit relations, persisted in the vault's edge table.

Mentions and turn order are recomputed from the memories' own fields (which the vault holds);
explicit relations are read from the vault. Every node of a memory carries its filter payload,
so graph-expanded candidates are filtered by the same rule as index hits.

Not thread-safe on its own: the facade serialises access.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from memos_core.index.base import IndexFilter
from memos_core.retrieval.filters import matches

_ENTITY = "e:"  # entity node ids are "e:<name>"; memory node ids are bare UUIDs


@dataclass
class GraphHit:
    """A memory reached by graph expansion, with the relations that reached it."""

    id: str
    score: float = 0.0
    reasons: list[str] = field(default_factory=list)


class MemoryGraph:
    """Derived graph over memories; see the module docstring for the edge kinds."""

    def __init__(self, *, max_entity_degree: int = 200) -> None:
        self.g = nx.Graph()
        # (user_id, session_id) -> sorted [(occurred_at or -inf, seq, id)]
        self._sessions: dict[tuple[str, str], list[tuple[float, int, str]]] = {}
        self.max_entity_degree = max_entity_degree
        self._next_seq = 1

    # -- building ------------------------------------------------------------------------

    def upsert(self, row: dict[str, Any]) -> None:
        """Add or refresh one memory from its payload row (see ``SQLiteVault.graph_rows``)."""
        mid = row["id"]
        row = dict(row)
        if mid in self.g:
            old = self.g.nodes[mid]
            row["seq"] = old["seq"]
            moved = (old.get("session_id"), old.get("occurred_at")) != (
                row.get("session_id"), row.get("occurred_at"))
            if moved:
                self.remove(mid)
                self._link_turn(row)
            else:
                self._remove_mentions(mid)
        else:
            if row.get("seq") is None:
                row["seq"] = self._next_seq
            self._next_seq = max(self._next_seq, row["seq"] + 1)
            self._link_turn(row)
        self.g.add_node(mid, **{k: v for k, v in row.items() if k != "id"})
        for entity in row.get("entities", ()):
            self.g.add_edge(mid, _ENTITY + entity, kind="mentions")

    def remove(self, memory_id: str) -> None:
        """Drop a memory and every edge it had; rejoin its session neighbours."""
        if memory_id not in self.g:
            return
        data = self.g.nodes[memory_id]
        self._remove_mentions(memory_id)
        key = (data["user_id"], data.get("session_id"))
        turns = self._sessions.get(key) if key[1] is not None else None
        if turns is not None:
            i = next((j for j, t in enumerate(turns) if t[2] == memory_id), None)
            if i is not None:
                turns.pop(i)
                if 0 < i < len(turns):  # rejoin the turns on either side
                    self.g.add_edge(turns[i - 1][2], turns[i][2], kind="next")
        self.g.remove_node(memory_id)

    def add_relation(self, src: str, dst: str, kind: str) -> None:
        """An explicit relation (``supersedes``, ``derived_from``) between two known memories."""
        if src in self.g and dst in self.g:
            self.g.add_edge(src, dst, kind=kind, src=src)

    def _remove_mentions(self, memory_id: str) -> None:
        for nbr in list(self.g.neighbors(memory_id)):
            if isinstance(nbr, str) and nbr.startswith(_ENTITY):
                self.g.remove_edge(memory_id, nbr)
                if self.g.degree(nbr) == 0:
                    self.g.remove_node(nbr)

    def _link_turn(self, row: dict[str, Any]) -> None:
        if row.get("session_id") is None:
            return
        key = (row["user_id"], row["session_id"])
        turns = self._sessions.setdefault(key, [])
        when = row.get("occurred_at")
        item = (when if when is not None else -math.inf, row.get("seq", 0), row["id"])
        i = bisect.bisect(turns, item)
        prev_id = turns[i - 1][2] if i > 0 else None
        next_id = turns[i][2] if i < len(turns) else None
        if prev_id and next_id and self.g.has_edge(prev_id, next_id):
            self.g.remove_edge(prev_id, next_id)
        turns.insert(i, item)
        if prev_id:
            self.g.add_edge(prev_id, row["id"], kind="next")
        if next_id:
            self.g.add_edge(row["id"], next_id, kind="next")

    # -- reading -------------------------------------------------------------------------

    def payload(self, memory_id: str) -> dict[str, Any] | None:
        return self.g.nodes[memory_id] if memory_id in self.g else None

    def entity_degree(self, entity: str) -> int:
        node = _ENTITY + entity
        return self.g.degree(node) if node in self.g else 0

    def session_turns(self, user_id: str, session_id: str) -> list[str]:
        """Memory ids of one session in turn order."""
        return [t[2] for t in self._sessions.get((user_id, session_id), [])]

    def neighbours(self, memory_id: str) -> list[tuple[str, str]]:
        """(memory id, relation) pairs one hop away, through entities for ``mentions``."""
        if memory_id not in self.g:
            return []
        out: list[tuple[str, str]] = []
        for nbr, data in self.g[memory_id].items():
            if isinstance(nbr, str) and nbr.startswith(_ENTITY):
                if self.g.degree(nbr) <= self.max_entity_degree:
                    out.extend((m, "entity:" + nbr[2:]) for m in self.g.neighbors(nbr) if m != memory_id)
            else:
                out.append((nbr, data["kind"]))
        return out

    def expand(
        self,
        seeds: list[tuple[str, float]],
        flt: IndexFilter,
        *,
        query_entities: Iterable[str] = (),
        neighbour_turns: int = 1,
        entity_seed_weight: float = 0.0,
    ) -> dict[str, GraphHit]:
        """Memories related to the seeds (id, weight) or to the query's entities.

        A neighbour's score is its best path: the seed's weight times the relation's weight,
        1 for a neighbouring turn or a supersession/derivation link, ``1/log2(1+degree)`` for a
        shared entity (rare entities count more; entities above ``max_entity_degree`` are
        skipped). Taking the best path rather than the sum keeps hubs -- a turn next to many
        hits -- from outranking the hits themselves. Only memories that pass ``flt`` are
        returned; seeds themselves are included only when reached from another seed.
        """
        hits: dict[str, GraphHit] = {}

        def credit(mid: str, amount: float, reason: str) -> None:
            payload = self.g.nodes[mid] if mid in self.g else None
            if payload is None or not matches(payload, flt):
                return
            hit = hits.setdefault(mid, GraphHit(mid))
            hit.score = max(hit.score, amount)
            if reason not in hit.reasons:
                hit.reasons.append(reason)

        for seed, weight in seeds:
            if seed not in self.g:
                continue
            for mid, why in self._turn_window(seed, neighbour_turns):
                credit(mid, weight, why)
            for nbr, data in self.g[seed].items():
                if isinstance(nbr, str) and nbr.startswith(_ENTITY):
                    degree = self.g.degree(nbr)
                    if 1 < degree <= self.max_entity_degree:
                        w = weight / math.log2(1 + degree)
                        for mid in self.g.neighbors(nbr):
                            if mid != seed:
                                credit(mid, w, "shared entity " + nbr[2:])
                elif data["kind"] in ("supersedes", "derived_from"):
                    credit(nbr, weight, data["kind"])
        for entity in dict.fromkeys(query_entities):
            node = _ENTITY + entity
            degree = self.g.degree(node) if node in self.g else 0
            if 0 < degree <= self.max_entity_degree:
                w = entity_seed_weight / math.log2(1 + degree)
                for mid in self.g.neighbors(node):
                    credit(mid, w, "mentions " + entity)
        return hits

    def _turn_window(self, seed: str, width: int) -> list[tuple[str, str]]:
        """Up to ``width`` turns before and after ``seed`` in its session."""
        data = self.g.nodes[seed]
        if width <= 0 or data.get("session_id") is None:
            return []
        turns = self._sessions.get((data["user_id"], data["session_id"]), [])
        when = data.get("occurred_at")
        key = (when if when is not None else -math.inf, data.get("seq", 0), seed)
        i = bisect.bisect_left(turns, key)
        if i >= len(turns) or turns[i][2] != seed:
            return []
        lo, hi = max(0, i - width), min(len(turns), i + width + 1)
        return [(turns[j][2], "neighbouring turn") for j in range(lo, hi) if j != i]

    def stats(self) -> dict[str, int]:
        entities = sum(1 for n in self.g if isinstance(n, str) and n.startswith(_ENTITY))
        return {
            "nodes": self.g.number_of_nodes(),
            "edges": self.g.number_of_edges(),
            "entities": entities,
            "memories": self.g.number_of_nodes() - entities,
        }
