"""What the Memory API returns besides MemCubes: search hits, forget and share receipts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from memos_core.cube import MemCube


class SearchHit(BaseModel):
    """One search result: the memory, its fused score, and why it matched.

    ``score`` is the fused score after the second stage (higher is better; comparable within
    one query, not across queries; see ``RetrievalConfig.fusion``). ``signals`` maps each
    signal that found the memory ("dense", "bm25", "graph") to its raw score; ``ranks`` maps
    index signals to their 1-based rank.
    """

    model_config = ConfigDict(frozen=True)

    memory: MemCube
    score: float
    signals: dict[str, float] = Field(default_factory=dict)
    ranks: dict[str, int] = Field(default_factory=dict)
    reasons: tuple[str, ...] = ()
    redacted: tuple[str, ...] = Field(
        default=(),
        description="Sensitivity tags for which the memory's text was redacted (see "
        "memos_core.governance.sensitivity); empty when the text is the memory's own.",
    )

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
            parts.append("graph (" + "; ".join(self.reasons) + ")" if self.reasons else "graph")
        return ", ".join(parts) or "no signal"


class DerivedForm(BaseModel):
    """A form derived from a forgotten memory, and what the forget did to it.

    ``kind``: ``"summary"`` (a memory compressed from it), ``"kv_block"`` (a KV cache file
    that held its text), ``"adapter"`` (a LoRA adapter trained on it; ``id`` is its
    version, or the directory name of what a crash left, which may hold it) or ``"conversation_log"`` (a framework integration's stored conversation that
    held it; ``id`` is ``"<file>:<thread or key>"``). ``action``: ``"flagged"`` (a new
    version of the summary whose ``metadata["source_forgotten"]`` lists the forgotten
    sources), ``"forgotten"`` (the summary was forgotten too), ``"deleted"`` (the file was
    removed; for an adapter: it was deactivated, its weights deleted and a retrain without
    the memory queued), ``"redacted"`` (the messages holding it now read ``[forgotten]``;
    see :mod:`memos_core.governance.forget_hooks`; for an adapter retired before, for an
    update or an expiry: its manifest's evaluation lost the memory's texts) or ``"not_permitted"`` (a summary the
    principal may not change -- another user's -- was left as it is).
    """

    model_config = ConfigDict(frozen=True)

    kind: Literal["summary", "kv_block", "adapter", "conversation_log"]
    id: str
    action: Literal["flagged", "forgotten", "deleted", "redacted", "not_permitted"]


class ForgetReceipt(BaseModel):
    """Proof of a forget: the tombstone's version, the hash of the text, where it was removed,
    and every derived form it touched."""

    model_config = ConfigDict(frozen=True)

    memory_id: str
    version: int
    text_sha256: str | None = Field(
        description="SHA-256 (hex) of the forgotten text, handed to the caller once: the store "
        "keeps no digest (one of a short secret gives the text back by hashing guesses). None "
        "when the memory was already forgotten, or when its stored record was damaged.")
    removed_from: tuple[str, ...]
    at: datetime
    derived: tuple[DerivedForm, ...] = ()
    notes: tuple[str, ...] = Field(
        default=(), description="What the forget could not do as usual, e.g. for a memory "
        "whose stored record was damaged: whether its text could be read, and so searched "
        "for in conversation logs.")


class ShareReceipt(BaseModel):
    """What ``share_namespace`` / ``revoke_namespace`` did: the grant, and how many memories
    got a new version (those already shared that way, or not shared, are left alone)."""

    model_config = ConfigDict(frozen=True)

    owner: str
    grantee: str
    scope: Literal["read", "write", "none"] = Field(description="'none' after a revoke.")
    agent_id: str | None = None
    session_id: str | None = None
    memories: int = Field(description="Memories that got a new version.")


@dataclass(frozen=True)
class ModelInfo:
    """What ``MemOS.model_info`` tells about the local model.

    ``loaded``: a model is in memory now. ``model_id``: its identity (``gguf:<file>@sha256:..``
    for the default model), or None when none is loaded. ``context_window``: the model's
    ``max_position_embeddings`` (None when not loaded or not known). ``tokenizer``: its
    tokenizer (a ``transformers`` tokenizer; None when not loaded).
    """

    loaded: bool
    model_id: str | None = None
    context_window: int | None = None
    tokenizer: Any = field(default=None, repr=False)  # (its repr is a page of vocabulary)
