"""Hybrid retrieval: dense (Qdrant) + BM25 (Qdrant sparse) + graph expansion, fused.

Fusion (default ``"score"``): each signal's scores are min-max normalised over its candidates
and combined as a weighted mean, so a fused score lies in [0, 1]; then graph expansion adds,
to each memory related to a top hit, ``graph_weight`` times that hit's fused score (times the
relation's weight). ``"rrf"`` (weighted reciprocal rank fusion) is the alternative. On the
LoCoMo dev conversations score fusion beat RRF by several points of recall@10 (see
docs/benchmarks.md); neighbouring turns are the graph relation that helps most.

Optional stages between fusion and graph expansion (pseudo-relevance feedback for BM25,
session boost, query time ranges; all off by default) are in
:mod:`memos_core.retrieval.expansion`; the entity second hop (on by default: a third signal,
``hop``, the query's BM25 ranking with the first hits' rarer entities added, scored in the
graph view) and two-stage session retrieval (off) are in
:mod:`memos_core.retrieval.multistage`; list questions fuse the named speaker's dense hits once
more (:mod:`memos_core.retrieval.listing`); the second stage over the candidates' texts (question
demotion, speaker lift, optional reranker) is :mod:`memos_core.retrieval.rerank`, run by
``MemOS.search`` once it has read the texts. The dense query leaves out the names most visible
memories carry (:mod:`memos_core.retrieval.focus`, on by default); conjunctive queries can be
split into sub-queries fused round-robin (:mod:`memos_core.retrieval.decompose`, off).

Pure ranking logic lives in :func:`rrf`, :func:`normalise` and :func:`fuse`;
:class:`HybridRetriever` does the I/O (embedding, index queries, graph lookups) and returns
ranked :class:`Candidate` objects that say which signals found each memory, at what rank and
with what raw score.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import numpy as np

from memos_core.config import RetrievalConfig
from memos_core.embedding import Embedder, QueryCache
from memos_core.extraction import EntityExtractor
from memos_core.graph import GraphViews
from memos_core.index.base import IndexFilter, ScoredId, SparseVec, VectorIndex, search_hybrid
from memos_core.retrieval.candidate import Candidate
from memos_core.retrieval.decompose import interleave, lift_speaker, sub_queries
from memos_core.retrieval.expansion import boost_sessions, feedback_query, parse_time_range
from memos_core.retrieval.focus import common_entities, names_calendar_date, without_terms
from memos_core.retrieval.listing import asks_for_several, speaker_hits
from memos_core.retrieval.multistage import entity_hop, hop_entities, index_hop, session_stage

if TYPE_CHECKING:
    from memos_core.index.sparse import Bm25Encoder


def rrf(ranked: Mapping[str, Sequence[str]], weights: Mapping[str, float], k: float) -> dict[str, float]:
    """Weighted reciprocal rank fusion: sum over signals of ``w / (k + rank)``, rank from 1."""
    fused: dict[str, float] = {}
    for signal, ids in ranked.items():
        w = weights.get(signal, 1.0)
        for rank, mid in enumerate(ids, start=1):
            fused[mid] = fused.get(mid, 0.0) + w / (k + rank)
    return fused


def normalise(hits: Sequence[ScoredId]) -> dict[str, float]:
    """Min-max normalised scores in [0, 1] (all 1.0 when every score is equal)."""
    if not hits:
        return {}
    lo = min(h.score for h in hits)
    hi = max(h.score for h in hits)
    if hi <= lo:
        return {h.id: 1.0 for h in hits}
    return {h.id: (h.score - lo) / (hi - lo) for h in hits}


def score_fusion(signals: Mapping[str, Sequence[ScoredId]], weights: Mapping[str, float]) -> dict[str, float]:
    """Weighted mean of min-max normalised scores; a signal that missed a memory gives it 0."""
    total = sum(weights.get(s, 1.0) for s in signals) or 1.0
    fused: dict[str, float] = {}
    for signal, hits in signals.items():
        w = weights.get(signal, 1.0) / total
        for mid, value in normalise(hits).items():
            fused[mid] = fused.get(mid, 0.0) + w * value
    return fused


def fuse(
    signals: Mapping[str, Sequence[ScoredId]], weights: Mapping[str, float], k: float,
    method: str = "score",
) -> dict[str, Candidate]:
    """Candidates from ranked signal lists, scored by :func:`score_fusion` or :func:`rrf`."""
    fused = _fused(signals, weights, k, method)
    out: dict[str, Candidate] = {}
    for signal, hits in signals.items():
        for rank, hit in enumerate(hits, start=1):
            cand = out.get(hit.id)
            if cand is None:
                cand = out[hit.id] = Candidate(hit.id, fused[hit.id])
            cand.ranks[signal] = rank
            cand.scores[signal] = float(hit.score)
    return out


def _fused(signals: Mapping[str, Sequence[ScoredId]], weights: Mapping[str, float], k: float,
           method: str) -> dict[str, float]:
    if method == "rrf":
        return rrf({s: [h.id for h in hits] for s, hits in signals.items()}, weights, k)
    return score_fusion(signals, weights)


def fuse_added(cands: dict[str, Candidate], signals: Mapping[str, Sequence[ScoredId]],
               weights: Mapping[str, float], k: float, method: str, added: str) -> None:
    """``cands`` (what :func:`fuse` made of ``signals`` without ``added``, unchanged since)
    made what ``fuse(signals, ...)`` returns, in place: every score is fused again, the
    hits of the new signal ``added`` (the last of ``signals``) join. The same candidates,
    scores, ranks and order as a fresh :func:`fuse`, without rebuilding the others."""
    fused = _fused(signals, weights, k, method)
    for old in cands.values():
        old.score = fused[old.id]
    for rank, hit in enumerate(signals[added], start=1):
        cand = cands.get(hit.id)
        if cand is None:
            cand = cands[hit.id] = Candidate(hit.id, fused[hit.id])
        cand.ranks[added] = rank
        cand.scores[added] = float(hit.score)


class HybridRetriever:
    """Runs the signals for one query and fuses them. Thread-safe for concurrent queries."""

    def __init__(
        self,
        index: VectorIndex,
        embedder: Embedder,
        bm25: "Bm25Encoder",
        graph: GraphViews,
        graph_lock: threading.RLock,
        extractor: EntityExtractor,
        config: RetrievalConfig,
    ) -> None:
        self.index = index
        self.embedder = embedder
        self.bm25 = bm25
        self.graph = graph
        self.graph_lock = graph_lock
        self.extractor = extractor
        self.config = config
        self.query_vectors = QueryCache(embedder, config.query_cache)
        #: ids -> texts, for pseudo-relevance feedback (set by MemOS to a vault read)
        self.texts: Callable[[Sequence[str]], Mapping[str, str]] | None = None
        #: the reference time of relative query dates ("last week"); None: now
        self.now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)

    def retrieve(self, query: str, flt: IndexFilter, k: int, *,
                 withheld: Withheld | None = None) -> list[Candidate]:
        """The top ``k`` candidates for ``query`` that pass ``flt``, best first. With
        ``decompose``, a conjunctive query is also searched as its sub-queries and the lists
        are fused round-robin (:mod:`memos_core.retrieval.decompose`).

        ``withheld(ids)`` names the memories among ``ids`` the caller will not show as they
        are (a TTL run out, a sensitivity tag the caller redacts, a state or right the index
        has not caught up with): they may still be candidates, but none is evidence for
        another -- no feedback terms, entity hops or graph seeds from them, so their text
        cannot steer the ranking or name an entity in another hit's reasons."""
        evidence = _Evidence(withheld)
        subs = sub_queries(query) if self.config.decompose else []
        if not subs:
            return self._retrieve(query, flt, k, evidence)
        ranked = [self._retrieve(query, flt, k, evidence)]
        for sub in subs:
            cands = self._retrieve(sub, flt, k, evidence)
            if self.texts is not None and self.config.speaker_weight > 0:
                # the second stage sees the whole query (two names: no speaker lift), so a
                # sub-query naming one speaker gets its lift here
                cands = lift_speaker(sub, cands, self.texts([c.id for c in cands]),
                                     self.config.speaker_weight)
            ranked.append(cands)
        return _top(interleave(ranked).values(), k)

    def _retrieve(self, query: str, flt: IndexFilter, k: int,
                  evidence: _Evidence) -> list[Candidate]:
        cfg = self.config
        n = max(cfg.candidates, k)
        signals: dict[str, list[ScoredId]] = {}
        embedded: list[np.ndarray] = []  # the query vector, once computed
        entities: list[str] | None = None  # the query's entities, extracted once per search
        dense_text = query
        if cfg.dense_weight > 0:
            if cfg.dense_common_share > 0:
                entities = self.extractor.extract(query)
            dense_text = self.dense_text(query, flt, entities)

        def query_vector() -> list[float]:
            # cached per principal: a hit must not tell one user what another asked
            embedded.append(self.query_vectors.get(dense_text, flt.user_ids))
            values: list[float] = embedded[0].tolist()
            return values

        sparse_query = self.bm25.encode_query(query) if cfg.sparse_weight > 0 else None
        if cfg.dense_weight > 0 or sparse_query is not None:
            # one call: an index on a server sends the BM25 query first, embeds the query
            # while the server works on it, and gets both results in one round trip
            dense, keyword = search_hybrid(self.index, query_vector if cfg.dense_weight > 0 else None,
                                           sparse_query, flt, n)
            if cfg.dense_weight > 0:
                signals["dense"] = dense
            if sparse_query is not None:
                signals["bm25"] = keyword
        weights = {"dense": cfg.dense_weight, "bm25": cfg.sparse_weight}
        cands = fuse(signals, weights, cfg.rrf_k, cfg.fusion)
        if cfg.prf_weight > 0 and sparse_query is not None and self.texts is not None and cands:
            signals["bm25"] = self._feedback(sparse_query, cands, flt, n, evidence)
            cands = fuse(signals, weights, cfg.rrf_k, cfg.fusion)
        if cfg.hop_weight > 0 and cands:
            if entities is None:
                entities = self.extractor.extract(query)
            self._hop(query, entities, cands, signals, weights, flt, n, evidence)
        if cfg.list_speaker_weight > 0 and self.texts is not None and signals.get("dense") \
                and asks_for_several(query):
            self._list_speaker(query, cands, signals, weights, self.texts)
        if cfg.session_stage_weight > 0 and cands:
            with self.graph_lock:
                graph = self.graph.for_filter(flt)
                sessions = {mid: (graph.payload(mid) or {}).get("session_id") for mid in cands}
            session_stage(cands, sessions.get, index=self.index, flt=flt,
                          vector=embedded[0] if embedded else None,
                          sparse=sparse_query, weights=weights, weight=cfg.session_stage_weight,
                          sessions=cfg.session_count, per_session_hits=cfg.session_stage_hits,
                          new_candidate=Candidate, fuse_scores=score_fusion)
        if cfg.session_weight > 0 or cfg.temporal_weight > 0:
            self._sessions_and_time(query, cands, flt)
        if cfg.graph_weight > 0:
            self._expand(query, cands, flt, entities=entities, keep=k, evidence=evidence)
        return _top(cands.values(), k)

    def _feedback(self, sparse_query: SparseVec, cands: dict[str, Candidate],
                  flt: IndexFilter, n: int, evidence: _Evidence) -> list[ScoredId]:
        """The BM25 signal again, for the query expanded by the terms of the first hits
        (pseudo-relevance feedback)."""
        cfg = self.config
        assert self.texts is not None  # (the caller checked)
        top = evidence.first(sorted(cands.values(), key=_rank_key), cfg.prf_docs)
        texts = self.texts([c.id for c in top])
        docs = [self.bm25.encode_document(texts[c.id]) for c in top if c.id in texts]
        expanded = feedback_query(sparse_query, docs, weight=cfg.prf_weight, terms=cfg.prf_terms)
        return self.index.search_sparse(expanded, flt, n)

    def _hop(self, query: str, entities: list[str], cands: dict[str, Candidate],
             signals: dict[str, list[ScoredId]], weights: dict[str, float], flt: IndexFilter,
             n: int, evidence: _Evidence) -> None:
        """Add the "hop" signal: memories naming the entities the first hits name beside the
        query's own (through the principal's graph view or the index)."""
        cfg = self.config
        top = evidence.first(sorted(cands.values(), key=_rank_key), cfg.hop_docs)
        with self.graph_lock:
            graph = self.graph.for_filter(flt)  # the principal's view (loaded on demand)
            first = [graph.payload(c.id) or {} for c in top]
            extra = hop_entities(first, entities,
                                 graph.entity_degree, max_degree=cfg.hop_max_degree,
                                 limit=cfg.hop_entities)
            hop = entity_hop(graph, signals.get("bm25", []), extra, flt,
                             terms=self._term_count, n=n) if cfg.hop_source == "graph" else []
        if cfg.hop_source == "index":
            hop = index_hop(query, extra, bm25=self.bm25, index=self.index, flt=flt, n=n)
        if hop:
            signals["hop"] = hop
            weights["hop"] = cfg.hop_weight
            fuse_added(cands, signals, weights, cfg.rrf_k, cfg.fusion, "hop")

    def _sessions_and_time(self, query: str, cands: dict[str, Candidate],
                           flt: IndexFilter) -> None:
        """Lift candidates of the sessions most hits come from, and those that happened in
        the time the query names ("last week", "in May")."""
        cfg = self.config
        with self.graph_lock:
            graph = self.graph.for_filter(flt)
            payloads = {mid: graph.payload(mid) or {} for mid in cands}
        boost_sessions(cands, lambda mid: payloads[mid].get("session_id"),
                       cfg.session_weight, sessions=cfg.session_count)
        span = parse_time_range(query, self.now()) if cfg.temporal_weight > 0 else None
        if span is not None:
            for c in cands.values():
                when = payloads[c.id].get("occurred_at")
                if when is not None and span[0] <= when < span[1]:
                    c.score *= 1 + cfg.temporal_weight
                    c.scores["time"] = 1.0

    def _term_count(self, entity: str) -> int:
        """How many BM25 terms an entity's name has (at least 1)."""
        return max(1, len(self.bm25.encode_query(entity).indices))

    def _list_speaker(self, query: str, cands: dict[str, Candidate],
                      signals: dict[str, list[ScoredId]], weights: dict[str, float],
                      read: Callable[[Sequence[str]], Mapping[str, str]]) -> None:
        """The dense hits that are turns of the speaker a list question names join the
        fusion as the signal ``speaker_dense`` (:mod:`memos_core.retrieval.listing`);
        ``read``: ids -> texts."""
        dense = signals["dense"]
        own = speaker_hits(query, dense, read([h.id for h in dense]))
        if own:
            signals["speaker_dense"] = own
            weights["speaker_dense"] = self.config.list_speaker_weight
            fuse_added(cands, signals, weights, self.config.rrf_k, self.config.fusion,
                       "speaker_dense")

    def dense_text(self, query: str, flt: IndexFilter,
                   entities: Sequence[str] | None = None) -> str:
        """The text embedded for the dense signal: ``query`` without the entities that at
        least ``dense_common_share`` of the visible memories name (the speakers of a
        conversation; :mod:`memos_core.retrieval.focus`); ``query`` itself when that is 0, or
        when it names a calendar date and ``dense_dated_names`` is on.
        ``entities``: the query's, if already extracted."""
        share = self.config.dense_common_share
        if share <= 0 or (self.config.dense_dated_names and names_calendar_date(query)):
            return query
        if entities is None:
            entities = self.extractor.extract(query)
        with self.graph_lock:
            graph = self.graph.for_filter(flt)
            # the names the principal's own view carries, counted in that view: other
            # users' memories do not change which names leave this user's query
            common = common_entities(entities, graph.entity_degree, graph.readable_count(), share)
        return without_terms(query, common)

    def _expand(self, query: str, cands: dict[str, Candidate], flt: IndexFilter, *,
                entities: Sequence[str] | None = None, keep: int | None = None,
                evidence: _Evidence | None = None) -> None:
        """Add graph evidence: neighbours of the top fused hits and of the query's entities
        (``entities``: the query's, if already extracted). ``keep``: only the first ``keep``
        candidates will be read, so memories only the graph found and that cannot be among
        them are left out of ``cands`` (None: every memory found is added). ``evidence``:
        which candidates may seed (all, without it)."""
        cfg = self.config
        # the first graph_seeds by score, ties in candidate order (as a stable sort gives)
        ranked = sorted(cands.values(), key=_neg_score)
        top = (evidence or _Evidence(None)).first(ranked, cfg.graph_seeds)
        seeds = [(c.id, cfg.graph_weight * c.score) for c in top]
        best = top[0].score if top else 0.0
        entity_weight = cfg.entity_weight * best
        with self.graph_lock:
            hits = self.graph.for_filter(flt).expand_scores(
                seeds,
                flt,
                query_entities=self.extractor.extract(query) if entities is None else entities,
                neighbour_turns=cfg.neighbour_turns,
                entity_seed_weight=entity_weight,
                max_degree=cfg.graph_max_degree,
            )
        new: list[tuple[float, str]] = []  # memories only the graph found
        for mid, (score, reasons) in hits.items():
            cand = cands.get(mid)
            if cand is None:
                new.append((-score, mid))
                continue
            cand.score += score
            cand.scores["graph"] = score
            cand.reasons.extend(reasons[:3])
        if keep is not None and len(new) > keep:
            # a graph-only memory behind ``keep`` others cannot be among the first ``keep``
            # candidates: no Candidate is built for it
            new = heapq.nsmallest(keep, new)
        for neg, mid in new:
            cand = cands[mid] = Candidate(mid, 0.0 - neg)  # 0.0 + score, as the others gain
            cand.scores["graph"] = -neg
            cand.reasons.extend(hits[mid][1][:3])


#: ids -> those of them a search will not show as they are (see ``HybridRetriever.retrieve``)
Withheld = Callable[[Sequence[str]], "set[str]"]


class _Evidence:
    """Which candidates may serve as evidence for others in one search: all but those
    ``withheld`` names (asked lazily, once per id)."""

    def __init__(self, withheld: Withheld | None) -> None:
        self.withheld = withheld
        self._hidden: dict[str, bool] = {}

    def first(self, ranked: Sequence[Candidate], n: int) -> list[Candidate]:
        """The first ``n`` of ``ranked`` that are not withheld."""
        if self.withheld is None:
            return list(ranked[:n])
        found: list[Candidate] = []
        start = 0
        while len(found) < n and start < len(ranked):
            batch = ranked[start:start + n - len(found)]
            start += len(batch)
            unknown = [c.id for c in batch if c.id not in self._hidden]
            if unknown:
                hidden = self.withheld(unknown)
                self._hidden.update((i, i in hidden) for i in unknown)
            found.extend(c for c in batch if not self._hidden[c.id])
        return found


def _rank_key(c: Candidate) -> tuple[float, str]:
    """Best score first, then by id: the retriever's total order."""
    return (-c.score, c.id)


def _neg_score(c: Candidate) -> float:
    return -c.score


def _top(cands: Iterable[Candidate], k: int) -> list[Candidate]:
    """The first ``k`` of ``cands`` in :func:`_rank_key` order (``sorted(...)[:k]``)."""
    return heapq.nsmallest(k, cands, key=_rank_key)
