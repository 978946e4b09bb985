"""Consolidation candidates: which memories the parametric tier should train into an adapter.

A pure function like the rest of the policy: usage records, a config and a time in, ids out.
A memory is a candidate when it is

* **servable** (generated or activated) and of a consolidatable type (fact, preference);
* **hot**: its heat, decayed to ``now``, is at least ``min_heat``;
* **stable**: its current version is at least ``stable_after_s`` old (an often-edited
  memory would retire its adapter at every edit);
* **not parametric already**, unless ``include_parametric`` (a retrain of the whole set);
* **trainable** at all: ``records`` hold only memories the parametric tier's rule accepts
  (a record carries no text: the caller applies the cloze rule, see the function).

The result is sorted by id, so equal inputs give equal candidates (and equal adapters).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from memos_core.cube import MemoryType, State, Tier
from memos_core.errors import InvalidInputError
from memos_core.governance.sensitivity import NEVER_IN_WEIGHTS
from memos_core.lifecycle import ttl_elapsed
from memos_core.cube import decayed_heat
from memos_core.scheduler.policy import UsageRecord


class ConsolidationConfig(BaseModel):
    """Knobs of :func:`consolidation_candidates`."""

    # a misspelt field is an error; so is an infinite or NaN number (None says "never")
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    min_heat: float = Field(
        default=3.0, ge=0, description="Decayed heat needed (about three recent hits)."
    )
    stable_after_s: float = Field(
        default=7 * 24 * 3600.0, ge=0,
        description="Seconds since the current version was written before a memory counts "
        "as stable.",
    )
    heat_half_life_s: float = Field(
        default=7 * 24 * 3600.0, gt=0, description="Heat half-life (as the scheduler's)."
    )
    types: tuple[MemoryType, ...] = Field(
        default=(MemoryType.FACT, MemoryType.PREFERENCE),
        description="Memory types that may be trained into an adapter.",
    )
    max_memories: int = Field(
        default=64, ge=1, description="Most memories in one adapter (hottest kept)."
    )
    min_candidates: int = Field(
        default=8, ge=1,
        description="Fewest candidates that make the background scheduler start a training "
        "(training is costly: wait until enough stable, hot memories gathered).",
    )
    retire_below_current: float = Field(
        default=0.5, ge=0, le=1,
        description="consolidate_due retires an active adapter when fewer than this share of "
        "its memories are still live at the version it learned (outdated).",
    )
    retire_idle_s: float | None = Field(
        default=30 * 24 * 3600.0, gt=0,
        description="consolidate_due retires an active adapter none of whose memories was "
        "used for this long (rarely used); None: never for that reason.",
    )
    never_sensitivity: tuple[str, ...] = Field(
        default=NEVER_IN_WEIGHTS,
        description="Memories with any of these sensitivity tags are never trained into "
        "weights (weights cannot be redacted).",
    )


def consolidation_candidates(
    records: Iterable[UsageRecord], config: ConsolidationConfig, now: datetime,
    *, include_parametric: bool = False,
) -> list[str]:
    """Ids of the memories to consolidate now, sorted; at most ``config.max_memories`` (the
    hottest, ties by id). Pure and deterministic. Only what the parametric tier would train
    on may count, or it makes up ``min_candidates`` and starts a job that has nothing to
    learn: a memory whose TTL has run out or that a newer one superseded is left out here;
    the rules that need the text (a cloze form: three words or more) or the store's prompt
    allowance are the caller's, who passes ``records`` only of memories the tier's rule
    accepts (:func:`memos_core.tiers.parametric.tier.untrainable`; the engine does).

    Raises:
        InvalidInputError: a naive ``now``.
    """
    if now.utcoffset() is None:
        raise InvalidInputError(f"now must be a timezone-aware datetime (use UTC), got {now!r}")
    chosen: list[tuple[float, str]] = []
    for r in records:
        if r.state not in (State.GENERATED, State.ACTIVATED) or r.type not in config.types:
            continue
        if r.tier is Tier.PARAMETRIC and not include_parametric:
            continue
        if r.superseded or ttl_elapsed(r.created_at, r.ttl_seconds, now):
            continue
        if set(r.sensitivity) & set(config.never_sensitivity):
            continue
        if (now - r.updated_at).total_seconds() < config.stable_after_s:
            continue
        heat = decayed_heat(r.heat, r.last_access, now, config.heat_half_life_s)
        if heat >= config.min_heat:
            chosen.append((heat, r.id))
    chosen.sort(key=lambda hi: (-hi[0], hi[1]))
    return sorted(mid for _, mid in chosen[: config.max_memories])


__all__ = ["ConsolidationConfig", "consolidation_candidates"]
