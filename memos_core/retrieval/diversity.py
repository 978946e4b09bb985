"""Diversity in the final ranking: maximal marginal relevance over the second stage's
candidates (``mmr_lambda`` < 1; off by default, measured in docs/benchmarks.md, issue 16
fourth pass).

Greedy MMR (Carbonell and Goldstein, SIGIR 1998): the next memory is the one maximising
``lambda * relevance - (1 - lambda) * max similarity to those already placed``, relevance
being the candidate's score over the best score. Two similarities, both from what the second
stage already holds (no vector is read back from the index):

- ``"terms"``: cosine of the BM25 term vectors of the memories' bodies (the "[date] speaker:"
  prefix left out, or every turn of a session would look alike) -- near-duplicate turns;
- ``"session"``: 1 for two memories of the same session, else 0 -- a second session's
  evidence gets in before a third turn of the first.

Pure functions; ``MemOS.search`` reads the texts and sessions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from memos_core.index.base import SparseVec
from memos_core.retrieval.candidate import Candidate

__all__ = ["mmr", "session_similarity", "term_similarity"]

Similarity = Callable[[str, str], float]


def term_similarity(vectors: Mapping[str, SparseVec]) -> Similarity:
    """Cosine similarity of the sparse term vectors of two memory ids (0 when either has no
    vector or no term)."""
    unit: dict[str, dict[int, float]] = {}
    for mid, vec in vectors.items():
        norm = math.sqrt(sum(v * v for v in vec.values))
        if norm > 0:
            unit[mid] = {i: v / norm for i, v in zip(vec.indices, vec.values)}

    def similarity(a: str, b: str) -> float:
        x, y = unit.get(a), unit.get(b)
        if not x or not y:
            return 0.0
        if len(x) > len(y):
            x, y = y, x
        return sum(v * y.get(i, 0.0) for i, v in x.items())

    return similarity


def session_similarity(sessions: Mapping[str, str | None]) -> Similarity:
    """1.0 for two memories of the same (known) session, else 0.0."""
    def similarity(a: str, b: str) -> float:
        sa = sessions.get(a)
        return 1.0 if sa is not None and sa == sessions.get(b) else 0.0

    return similarity


def mmr(cands: Sequence[Candidate], similarity: Similarity, lam: float,
        depth: int | None = None) -> list[Candidate]:
    """The first ``depth`` (all when None) of ``cands`` (best first) re-ordered by maximal
    marginal relevance with trade-off ``lam`` in [0, 1]; the rest follow unchanged.
    ``lam`` >= 1 returns the order as given. Scores are not changed.

    >>> a, b, c = Candidate("a", 1.0), Candidate("b", 0.9), Candidate("c", 0.8)
    >>> same = session_similarity({"a": "s1", "b": "s1", "c": "s2"})
    >>> [x.id for x in mmr([a, b, c], same, 0.7)]
    ['a', 'c', 'b']
    """
    ranked = list(cands)
    if lam >= 1 or len(ranked) < 3:
        return ranked
    cut = len(ranked) if depth is None else max(0, depth)
    head, tail = ranked[:cut], ranked[cut:]
    if not head:
        return ranked
    best = max(c.score for c in head)
    scale = best if best > 0 else 1.0
    order = {c.id: i for i, c in enumerate(head)}
    penalty = {c.id: 0.0 for c in head}
    rest = list(head)
    out: list[Candidate] = []
    while rest:
        pick = max(rest, key=lambda c: (lam * c.score / scale - (1 - lam) * penalty[c.id],
                                        -order[c.id]))
        out.append(pick)
        rest.remove(pick)
        for c in rest:
            s = similarity(pick.id, c.id)
            if s > penalty[c.id]:
                penalty[c.id] = s
    return out + tail
