"""A retrieved memory with its fused score and evidence: what every retrieval stage passes on
(:mod:`~memos_core.retrieval.hybrid` makes them, ``expansion`` and ``rerank`` adjust them)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Candidate"]


@dataclass
class Candidate:
    """One retrieved memory id with its fused score and the evidence for it."""

    id: str
    score: float = 0.0
    ranks: dict[str, int] = field(default_factory=dict)     # signal -> 1-based rank
    scores: dict[str, float] = field(default_factory=dict)  # signal -> raw score
    reasons: list[str] = field(default_factory=list)
