"""What the Memory API returns besides MemCubes: search hits and forget receipts."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from memos_core.cube import MemCube


class SearchHit(BaseModel):
    """One search result: the memory, its fused score, and why it matched.

    ``score`` is the fused reciprocal-rank score (higher is better; comparable within one
    query, not across queries). ``signals`` maps each signal that found the memory ("dense",
    "bm25", "graph") to its raw score; ``ranks`` maps index signals to their 1-based rank.
    """

    model_config = ConfigDict(frozen=True)

    memory: MemCube
    score: float
    signals: dict[str, float] = Field(default_factory=dict)
    ranks: dict[str, int] = Field(default_factory=dict)
    reasons: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return self.memory.id

    @property
    def text(self) -> str:
        return self.memory.text

    def explain(self) -> str:
        """A one-line account of the signals, e.g. ``dense #2 (0.61), bm25 #1 (7.3)``."""
        parts = [
            f"{name} #{self.ranks[name]} ({self.signals[name]:.3g})"
            for name in ("dense", "bm25")
            if name in self.ranks
        ]
        if "graph" in self.signals:
            parts.append("graph (" + "; ".join(self.reasons) + ")")
        return ", ".join(parts) or "no signal"


class ForgetReceipt(BaseModel):
    """Proof of a forget: the tombstone's version, the hash of the text, where it was removed."""

    model_config = ConfigDict(frozen=True)

    memory_id: str
    version: int
    text_sha256: str
    removed_from: tuple[str, ...]
    at: datetime
