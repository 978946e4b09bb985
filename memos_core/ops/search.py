"""Search carried out over the kernel: ``MemOS.search`` after the facade has checked its
arguments and built the index filter (:class:`SearchRequest` holds what it checked).

A search here is the pipeline behind the facade's contract (read it on
:meth:`memos_core.memos.MemOS.search`):

1. **Candidates**: the store's hybrid retriever (dense + BM25 fusion, graph expansion) asks
   for the top ``depth`` points the index filter lets through; the retriever is told which
   of them the caller will not show as they are (:meth:`_Search.withheld`), so none of those
   is evidence for another. A damaged embedded index is rebuilt from the vault and searched
   again (:meth:`~memos_core.store.kernel.MemoryStore.search_index`).
2. **The vault decides**: every candidate is checked on its current version -- state, TTL,
   the principal's right to read, ``valid_at``, the caller's exclusions -- read once per
   search (:meth:`~memos_core.store.kernel.MemoryStore.current_for_search`), because an
   index payload may lag the vault.
3. **Second stage** (when the configuration or a reranker asks for one): the first
   ``retrieval.rerank_depth`` candidates left are re-ordered (own voice, questions,
   speakers, dates, session cap, the optional reranker, maximal marginal relevance).
4. **Hits**: the first ``k``, as the principal may read them and redacted for a prompt
   (a redacted hit carries no scores).
5. **Deeper**: where the checks leave fewer than ``k`` hits and the index filled ``depth``,
   the search looks again four times as deep, up to :data:`_DEEPEST` candidates.
6. **Usage**: the hits' usage counters and heat are recorded, unless the caller asked not to.

It lives under :mod:`memos_core.ops` because it takes the store, not the facade (DESIGN.md,
"Next shape"); its state is one search's (:class:`_Search`), so searches run concurrently.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from memos_core.config import RetrievalConfig
from memos_core.cube import MemCube, MemoryType, utcnow
from memos_core.governance import access
from memos_core.governance import sensitivity as sensitivity_rules
from memos_core.index.base import IndexFilter
from memos_core.lifecycle import ttl_elapsed
from memos_core.results import SearchHit
from memos_core.retrieval.candidate import Candidate
from memos_core.retrieval.diversity import mmr, session_similarity, term_similarity
from memos_core.retrieval.rerank import Reranker, rerank
from memos_core.retrieval.voice import body_of, own_voice
from memos_core.store import MemoryStore

__all__ = ["SearchRequest", "search"]

#: how deep a search looks at most for ``k`` hits its checks leave (see :meth:`MemOS.search`)
_DEEPEST = 2000


@dataclass(frozen=True)
class SearchRequest:
    """A search as the facade checked it: the principal, the index filter it built and
    what the candidates are checked against."""

    query: str
    user_id: str
    k: int
    flt: IndexFilter
    #: the states a hit may be in (the filter's; checked again on the vault's version)
    states: tuple[str, ...]
    #: the sensitivity tags shown unredacted (:func:`~memos_core.governance.sensitivity.allowance`)
    allowed: frozenset[str]
    #: ``valid_at``: only memories valid at this time
    when: datetime | None = None
    #: memories made from one of these message ids are left out
    skip_sources: frozenset[str] = frozenset()
    #: episodes recorded in this session are left out
    skip_session: str | None = None
    record_usage: bool = True


def search(store: MemoryStore, request: SearchRequest, *,
           reranker: Reranker | None = None) -> list[SearchHit]:
    """The hits of ``request``, best first, at most ``request.k`` (the contract is
    :meth:`memos_core.memos.MemOS.search`'s); ``reranker`` joins the second stage. A model
    that cannot load raises ``ModelLoadError``, as it does for a write."""
    store.ready_embedder()
    return _Search(store, request, reranker).run()


def _excluded(cube: MemCube, sources: frozenset[str], session: str | None) -> bool:
    """A memory the caller's prompt already holds: made from one of ``sources``, or an
    episode recorded in ``session``."""
    if sources and sources.intersection(cube.provenance.source_message_ids):
        return True
    return session is not None and cube.namespace.session_id == session \
        and cube.type is MemoryType.EPISODE


def _wants_second_stage(rcfg: RetrievalConfig, reranker: Reranker | None) -> bool:
    """Whether anything would re-order the candidates after fusion."""
    return (rcfg.question_weight != 1.0 or rcfg.speaker_weight > 0 or rcfg.when_weight > 0
            or rcfg.session_cap > 0 or reranker is not None
            or rcfg.own_voice_weight > 0 or rcfg.mmr_lambda < 1)


class _Search:
    """One search: the request, its clock and the memories read for it (each read once:
    the retriever asks first, for its evidence, and the checks reuse what it read)."""

    def __init__(self, store: MemoryStore, request: SearchRequest,
                 reranker: Reranker | None) -> None:
        self.store = store
        self.request = request
        self.reranker = reranker
        self.rcfg = store.config.retrieval
        self.second = _wants_second_stage(self.rcfg, reranker)
        k = request.k
        depth = max(k, self.rcfg.rerank_depth) if self.second else k
        if request.skip_sources or request.skip_session is not None:
            depth = max(depth, min(k + len(request.skip_sources) + 2 * k, 1000))
        self.depth = depth
        self.began = time.monotonic()
        self.now = utcnow()
        self.cubes: dict[str, MemCube] = {}

    def run(self) -> list[SearchHit]:
        """The hits, looking deeper while the checks leave fewer than ``k``; then the
        usage is recorded."""
        # The index filters by owner, state and fields; a TTL run out (not yet expired by a
        # scheduler run), ``valid_at``, an exclusion or a right the index lags are checked on
        # the candidates. Where they leave fewer than ``k`` and the index has more, look
        # deeper: many such memories ranked first must not hide the ones that count.
        k, depth = self.request.k, self.depth
        hits, more = self.ranked(depth)
        while len(hits) < k and more and depth < _DEEPEST:
            depth = min(depth * 4, _DEEPEST)
            hits, more = self.ranked(depth)
        if self.request.record_usage and hits:
            self.store.vault.record_usage([h.id for h in hits], utcnow(),
                                          self.store.config.heat_half_life_s)
        return hits

    def read(self, ids: Sequence[str]) -> None:
        """Read the current versions of ``ids`` not read yet for this search."""
        missing = [i for i in ids if i not in self.cubes]
        if missing:
            self.cubes.update(self.store.current_for_search(missing, self.began))

    def shown_whole(self, cube: MemCube | None) -> bool:
        """Whether ``cube`` may be a hit at all: searchable, live and readable."""
        # the vault decides: an index payload may lag it (e.g. a revoke before a crash)
        return cube is not None and cube.state.value in self.request.states \
            and not ttl_elapsed(cube.created_at, cube.governance.ttl_seconds, self.now) \
            and access.permits(cube, self.request.user_id, access.Operation.READ)

    def withheld(self, ids: Sequence[str]) -> set[str]:
        """The memories among ``ids`` not shown as they are (the retriever's ``withheld``):
        none of them may be evidence for another candidate."""
        self.read(ids)
        return {i for i in ids if not self.shown_whole(self.cubes.get(i))
                or sensitivity_rules.for_prompt(self.cubes[i], self.request.allowed)[1]}

    def eligible(self, cube: MemCube | None) -> bool:
        """Whether ``cube`` may be a hit of this search (``valid_at`` and exclusions too)."""
        req = self.request
        return cube is not None and self.shown_whole(cube) \
            and (req.when is None or cube.is_valid_at(req.when)) \
            and not _excluded(cube, req.skip_sources, req.skip_session)

    def ranked(self, depth: int) -> tuple[list[SearchHit], bool]:
        """The first ``k`` hits among the top ``depth`` candidates; and whether the
        index may hold more candidates (it filled ``depth``). The second stage orders
        the first ``rerank_depth`` candidates the checks leave (however deep the
        search looked)."""
        req = self.request
        # a damaged embedded index is rebuilt from the vault and searched again
        cands = self.store.search_index(
            lambda: self.store.retriever.retrieve(req.query, req.flt, depth,
                                                  withheld=self.withheld))
        more = len(cands) >= depth
        self.read([c.id for c in cands])
        cands = [c for c in cands if self.eligible(self.cubes.get(c.id))]
        if self.second:
            cands = self.second_stage(cands)
        return [self.hit(c) for c in cands[:req.k]], more

    def second_stage(self, cands: list[Candidate]) -> list[Candidate]:
        """``cands`` with the first ``max(k, rerank_depth)`` re-ordered: own voice, the
        rerank rules and the reranker, then maximal marginal relevance."""
        rcfg, query, cubes = self.rcfg, self.request.query, self.cubes
        texts = {i: c.text for i, c in cubes.items()}
        top_n = max(self.request.k, rcfg.rerank_depth)
        top, rest = cands[:top_n], cands[top_n:]
        own_voice(query, top, texts, rcfg.own_voice_weight)
        top = rerank(query, top, texts,
                     question_weight=rcfg.question_weight, reranker=self.reranker,
                     reranker_weight=rcfg.reranker_weight,
                     speaker_weight=rcfg.speaker_weight, when_weight=rcfg.when_weight,
                     session_cap=rcfg.session_cap,
                     sessions={i: c.session_id for i, c in cubes.items()})
        if rcfg.mmr_lambda < 1:
            top = mmr(top, self.mmr_similarity(), rcfg.mmr_lambda, depth=rcfg.rerank_depth)
        return top + rest

    def mmr_similarity(self) -> Callable[[str, str], float]:
        """The similarity ``retrieval.mmr_similarity`` names, over the cubes just read."""
        cubes = self.cubes
        if self.rcfg.mmr_similarity == "terms":
            return term_similarity({i: self.store.bm25.encode_document(body_of(c.text) or c.text)
                                    for i, c in cubes.items()})
        return session_similarity({i: c.session_id for i, c in cubes.items()})

    def hit(self, cand: Candidate) -> SearchHit:
        """``cand`` as a hit: the memory as the principal may read it, redacted for a
        prompt."""
        shown, redacted = sensitivity_rules.for_prompt(
            access.as_read_by(self.cubes[cand.id], self.request.user_id), self.request.allowed)
        if redacted:  # its scores would let a prompt test guesses of the hidden text
            return SearchHit(memory=shown, score=0.0, redacted=redacted)
        return SearchHit(memory=shown, score=cand.score, signals=cand.scores,
                         ranks=cand.ranks, reasons=tuple(cand.reasons))
