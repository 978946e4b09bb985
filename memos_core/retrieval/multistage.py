"""Multi-stage retrieval: more index searches per query, steered by the first results. Both
stages are RetrievalConfig weights; docs/benchmarks.md has their LoCoMo dev numbers (the
entity hop is on by default, ``hop_weight=0.3``; the session stage is off).

- :func:`session_stage` -- two-stage session retrieval. Sessions are ranked by their best
  fused candidates; inside each of the ``sessions`` best ones, dense and BM25 are searched
  again restricted to that session and fused *within* it (min-max over the session's own
  hits), so a turn that is ordinary against the whole store but among the best of a
  relevant session is found. Its fused score gains ``weight`` x (the session's score
  relative to the best session) x (its in-session score) x (the best global score): the
  turn-level and session-level rankings are fused, unlike :func:`~memos_core.retrieval.
  expansion.boost_sessions`, which only lifts candidates already found.
- :func:`entity_hop` -- iterative retrieval for multi-hop questions. The entities of the
  first hits that the query does not mention (and that are rare enough to be specific:
  at most ``max_degree`` memories name them) are added to the query's BM25 ranking: the
  memories of the principal's graph view that name them gain those entities' BM25 weight;
  the result joins as a third fused signal, ``hop``. It needs no index search (on a
  server, no round trip); :func:`index_hop`, the earlier form, searched the index for the
  query plus the entities (``hop_source="index"``; LoCoMo dev within 0.4 point of it,
  docs/benchmarks.md).

Pure orchestration over the index, the BM25 encoder and the graph; the caller
(:class:`~memos_core.retrieval.hybrid.HybridRetriever`) holds the graph lock for the graph.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from memos_core.index.base import IndexFilter, ScoredId, SparseVec, VectorIndex
from memos_core.retrieval.expansion import session_scores

if TYPE_CHECKING:
    from memos_core.graph.memory_graph import MemoryGraph
    from memos_core.index.sparse import Bm25Encoder
    from memos_core.retrieval.candidate import Candidate

__all__ = ["rank_sessions", "session_stage", "hop_entities", "entity_hop", "index_hop"]


def rank_sessions(cands: Mapping[str, "Candidate"], session_of: Callable[[str], str | None],
                  *, per_session: int = 3) -> list[tuple[str, float]]:
    """Sessions of the candidates, best first, scored by the sum of their ``per_session``
    best fused scores."""
    scored = session_scores(cands, session_of, per_session=per_session)
    return sorted(scored.items(), key=lambda kv: (-kv[1], kv[0]))


def session_stage(
    cands: dict[str, "Candidate"], session_of: Callable[[str], str | None], *,
    index: VectorIndex, flt: IndexFilter, vector: Any | None, sparse: SparseVec | None,
    weights: Mapping[str, float], weight: float, sessions: int, per_session_hits: int,
    new_candidate: Callable[[str], "Candidate"],
    fuse_scores: Callable[[Mapping[str, Sequence[ScoredId]], Mapping[str, float]], dict[str, float]],
) -> None:
    """Second stage over the best ``sessions`` sessions (see the module docstring); changes
    ``cands`` in place (new turns are added with ``new_candidate``). A query already
    restricted to one session (``flt.session_id``) is left alone. ``fuse_scores`` fuses one
    session's signals (:func:`memos_core.retrieval.hybrid.score_fusion`)."""
    if weight <= 0 or not cands or flt.session_id is not None:
        return
    ranked = rank_sessions(cands, session_of)[:sessions]
    if not ranked:
        return
    best_session = ranked[0][1] or 1.0
    best = max(c.score for c in cands.values()) or 1.0
    for sid, s_score in ranked:
        inner = dataclasses.replace(flt, session_id=sid)
        signals: dict[str, Sequence[ScoredId]] = {}
        if vector is not None:
            signals["dense"] = index.search_dense(vector, inner, per_session_hits)
        if sparse is not None:
            signals["bm25"] = index.search_sparse(sparse, inner, per_session_hits)
        local = fuse_scores(signals, weights)
        rel = s_score / best_session
        for mid, value in local.items():
            cand = cands.get(mid)
            if cand is None:
                cand = cands[mid] = new_candidate(mid)
            gain = weight * rel * value * best
            cand.score += gain
            cand.scores["session"] = max(cand.scores.get("session", 0.0), gain)


def hop_entities(first_hits: Sequence[Mapping[str, Any]], query_entities: Sequence[str],
                 degree: Callable[[str], int], *, max_degree: int, limit: int) -> list[str]:
    """Entities of the first hits' payloads worth a second search: not named by the query,
    not a number or a date, named by at most ``max_degree`` memories (specific), in order of
    first appearance, at most ``limit``."""
    seen = {e.lower() for e in query_entities}
    out: list[str] = []
    for payload in first_hits:
        for entity in payload.get("entities", ()):
            key = entity.lower()
            if key in seen or any(ch.isdigit() for ch in key):
                continue
            seen.add(key)
            if 0 < degree(entity) <= max_degree:
                out.append(entity)
                if len(out) == limit:
                    return out
    return out


def entity_hop(graph: "MemoryGraph", first: Sequence[ScoredId], entities: Sequence[str],
               flt: IndexFilter, *, terms: Callable[[str], int], n: int) -> list[ScoredId]:
    """The second hop, scored in the principal's graph view (no index search): each memory
    keeps its first BM25 score (``first``, the query's hits) and a memory that names some of
    ``entities`` gains BM25's weight for them, as if each of an entity's ``terms`` (its
    BM25 term count) appeared once in it, with IDF from the entity's degree in the view.
    This is :func:`index_hop`'s ranking without the search of the query plus the entities:
    the first hits stand in for the query's part. Best first, at most ``n``; empty when
    there is no entity to add."""
    if not entities:
        return []
    total = graph.readable_count()
    weight: dict[str, float] = {}  # entity -> its BM25 weight, once per search (not once per memory naming it)
    for entity in entities:
        df = graph.entity_degree(entity)
        weight[entity] = terms(entity) * math.log(1 + (total - df + 0.5) / (df + 0.5))
    scores = {h.id: h.score for h in first}
    for mid, named in graph.naming(entities, flt).items():
        gain = 0.0
        for entity in named:
            gain += weight[entity]
        scores[mid] = scores.get(mid, 0.0) + gain
    ranked = heapq.nsmallest(n, scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return [ScoredId(mid, score) for mid, score in ranked if score > 0]


def index_hop(query: str, entities: Sequence[str], *, bm25: "Bm25Encoder",
              index: VectorIndex, flt: IndexFilter, n: int) -> list[ScoredId]:
    """The second hop as an index search: BM25 hits for the query with ``entities``
    appended; empty when there is no entity to add (``RetrievalConfig.hop_source="index"``)."""
    if not entities:
        return []
    return index.search_sparse(bm25.encode_query(query + " " + " ".join(entities)), flt, n)
