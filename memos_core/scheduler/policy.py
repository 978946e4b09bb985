"""The scheduler's policy: pure functions from usage records, a config and a time to a plan.

No model, no store, no clock: everything the policy needs comes in as arguments, so the same
inputs always give the same :class:`Plan`. An executor (elsewhere) carries the plan out and
audits each step.

The decisions, in the order they are taken (a memory gets at most one of the first two):

1. **expire** -- a live memory whose TTL has run out (``created_at + ttl_seconds <= now``).
2. **archive** -- a generated/activated memory idle for ``archive_after_idle_s`` whose heat
   has decayed to ``archive_max_heat`` or less, unless its priority protects it.
3. **activation set** -- among the remaining generated/activated memories, the hottest
   (priority first, then heat) that pass the heat threshold and fit the token budget form
   the hot block. A memory already in the activation tier stays while its heat is at least
   ``demote_below_heat`` (hysteresis, so the block is not rebuilt on every small change).
   ``promote`` steps bring new members in; ``demote`` steps take old ones out (including any
   memory that left the live states or was just expired or archived).

The activation set is returned ordered by ``(created_at, id)``, not by heat, so the composed
block -- and so its KV cache -- stays the same for as long as its membership does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import Enum
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from memos_core.cube import (
    MemCube,
    MemoryType,
    State,
    Tier,
    _require_aware,
    decayed_heat,
)
from memos_core.errors import InvalidInputError
from memos_core.lifecycle import INDEXED, SEARCHABLE, ttl_elapsed



class UsageRecord(BaseModel):
    """What the policy knows about one memory: a light snapshot, no text."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1, description="Memory id.")
    version: int = Field(default=1, ge=1, description="Current version.")
    type: MemoryType = Field(default=MemoryType.NOTE, description="Semantic type.")
    state: State = Field(default=State.GENERATED, description="Lifecycle state.")
    access_count: int = Field(default=0, ge=0, description="Retrieval hits so far.")
    last_access: datetime | None = Field(default=None, description="Time of the last hit.")
    heat: float = Field(default=0.0, ge=0, description="Heat as of last_access (not decayed).")
    created_at: datetime = Field(description="When the memory was first stored.")
    updated_at: datetime = Field(description="When its current version was written.")
    ttl_seconds: float | None = Field(default=None, gt=0, description="Lifespan; None: forever.")
    priority: int = Field(default=0, description="Governance priority; higher wins.")
    token_count: int = Field(default=0, ge=0, description="Tokens the memory takes in a block.")
    tier: Tier = Field(default=Tier.PLAINTEXT, description="Tier it is served from now.")
    sensitivity: tuple[str, ...] = Field(default=(), description="Sensitivity tags.")
    superseded: bool = Field(default=False, description="A newer memory replaced it (its "
                             "valid_to is set): it is history, not current knowledge.")

    @field_validator("last_access", "created_at", "updated_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        _require_aware(value, "usage record timestamps")
        return value

    @classmethod
    def from_cube(cls, cube: MemCube, *, token_count: int) -> UsageRecord:
        """The record of a stored memory; ``token_count`` is its size in a KV block
        (``KVCacheTier.memory_tokens(cube.text)``)."""
        return cls(
            id=cube.id,
            version=cube.version,
            type=cube.type,
            state=cube.state,
            access_count=cube.usage.access_count,
            last_access=cube.usage.last_access,
            heat=cube.usage.heat,
            created_at=cube.created_at,
            updated_at=cube.updated_at,
            ttl_seconds=cube.governance.ttl_seconds,
            priority=cube.governance.priority,
            token_count=token_count,
            tier=cube.usage.tier,
            sensitivity=cube.governance.sensitivity,
            superseded=cube.valid_to is not None,
        )


HalfLifeConfig = TypeVar("HalfLifeConfig", bound=BaseModel)


def with_half_life(config: HalfLifeConfig, half_life_s: float) -> HalfLifeConfig:
    """``config`` (a scheduler or consolidation config) with the store's heat half-life
    (``MemOSConfig.heat_half_life_s``, which search counts heat with) unless it sets its own:
    a config made for other knobs must not judge heat on another clock."""
    if "heat_half_life_s" in config.model_fields_set:
        return config
    return config.model_copy(update={"heat_half_life_s": half_life_s})


class SchedulerConfig(BaseModel):
    """Knobs of the policy. Use :meth:`preset` for named settings."""

    # a misspelt field is an error; so is an infinite or NaN number (None says "never")
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    heat_half_life_s: float = Field(
        default=7 * 24 * 3600.0, gt=0, description="Seconds for an unused memory's heat to halve."
    )
    promote_token_budget: int = Field(
        default=2048, ge=0, description="Most tokens the activation (KV) block may hold."
    )
    max_hot_memories: int = Field(
        default=64, ge=0, description="Most memories in the activation block."
    )
    min_heat_to_promote: float = Field(
        default=1.5,
        ge=0,
        description="Decayed heat a memory needs to enter the activation block. A hit adds 1 "
        "and heat decays from then on, so N recent hits give a little under N: 1.5 means "
        "'two recent hits'.",
    )
    demote_below_heat: float = Field(
        default=0.75,
        ge=0,
        description="A memory already in the block stays until its heat falls below this "
        "(at most min_heat_to_promote; the gap is the hysteresis).",
    )
    archive_after_idle_s: float | None = Field(
        default=30 * 24 * 3600.0,
        gt=0,
        description="Idle seconds (since last access, or creation) before a cold memory is "
        "archived; None never archives.",
    )
    archive_max_heat: float = Field(
        default=0.25, ge=0, description="Only memories this cold or colder are archived."
    )
    protect_priority: int = Field(
        default=1, description="Memories with at least this priority are never archived."
    )
    never_activate_sensitivity: tuple[str, ...] = Field(
        default=("secret",),
        description="Memories with any of these sensitivity tags are never put in a KV cache.",
    )
    activate_types: tuple[MemoryType, ...] | None = Field(
        default=None, description="Types eligible for the activation block; None: all types."
    )

    @model_validator(mode="after")
    def _hysteresis(self) -> SchedulerConfig:
        if self.demote_below_heat > self.min_heat_to_promote:
            raise ValueError("demote_below_heat must not exceed min_heat_to_promote")
        return self

    @classmethod
    def preset(
        cls, name: Literal["default", "eager", "conservative"], **overrides: object
    ) -> SchedulerConfig:
        """Named settings: 'default'; 'eager' (one hit promotes, bigger block, for demos and
        tests); 'conservative' (needs sustained use, small block, archives sooner)."""
        presets: dict[str, dict[str, object]] = {
            "default": {},
            "eager": {
                "min_heat_to_promote": 0.9,
                "demote_below_heat": 0.5,
                "promote_token_budget": 4096,
            },
            "conservative": {
                "min_heat_to_promote": 4.5,
                "demote_below_heat": 2.0,
                "promote_token_budget": 1024,
                "archive_after_idle_s": 14 * 24 * 3600.0,
            },
        }
        if name not in presets:
            raise InvalidInputError(
                f"unknown scheduler preset {name!r}: use one of {sorted(presets)}"
            )
        return cls.model_validate({**presets[name], **overrides})


class StepKind(str, Enum):
    """What a plan step does."""

    PROMOTE = "promote"  # into the activation (KV) tier
    DEMOTE = "demote"  # out of the activation tier, back to plaintext
    ARCHIVE = "archive"  # lifecycle state -> archived
    EXPIRE = "expire"  # lifecycle state -> expired (TTL ran out)


class PlanStep(BaseModel):
    """One action for the executor, with the reason it is taken."""

    model_config = ConfigDict(frozen=True)

    kind: StepKind
    memory_id: str
    version: int = Field(description="The version the decision was made on.")
    reason: str = Field(description="Human-readable why, for the audit log.")
    heat: float = Field(description="The memory's heat decayed to the plan's time.")


class Plan(BaseModel):
    """The policy's output: steps (expire, archive, demote, promote) and the activation set."""

    model_config = ConfigDict(frozen=True)

    now: datetime = Field(description="The time the plan was made for.")
    steps: tuple[PlanStep, ...] = Field(description="Ordered: expire, archive, demote, promote.")
    activation_set: tuple[str, ...] = Field(
        description="Memory ids of the activation block, in block order (created_at, id)."
    )
    activation_tokens: int = Field(ge=0, description="Tokens of the activation set.")

    def of_kind(self, kind: StepKind) -> tuple[PlanStep, ...]:
        """The steps of one kind, in plan order."""
        return tuple(step for step in self.steps if step.kind is kind)

    @property
    def is_empty(self) -> bool:
        """True when the plan changes nothing."""
        return not self.steps


def is_expired(record: UsageRecord, now: datetime) -> bool:
    """Whether a live memory's TTL has run out at ``now``: :func:`memos_core.lifecycle.ttl_elapsed`
    (``now >= created_at + ttl``), for the states the scheduler manages."""
    return record.state in INDEXED and ttl_elapsed(record.created_at, record.ttl_seconds, now)


def is_cold(record: UsageRecord, heat: float, now: datetime, config: SchedulerConfig) -> bool:
    """Whether a generated/activated memory should be archived (see the module docstring)."""
    if config.archive_after_idle_s is None or record.state not in SEARCHABLE:
        return False
    if record.priority >= config.protect_priority:
        return False
    idle = (now - (record.last_access or record.created_at)).total_seconds()
    return idle >= config.archive_after_idle_s and heat <= config.archive_max_heat


def may_activate(record: UsageRecord, now: datetime, config: SchedulerConfig) -> bool:
    """Whether ``record`` could be in the activation set at ``now`` if its size fits: it is
    servable, neither expired nor archived by this plan, and eligible by tier, sensitivity,
    type and heat. ``token_count`` is not looked at: an executor counts tokens -- which needs
    the model's tokenizer -- only for memories for which this holds, so a plan with no
    candidate never loads a model."""
    if record.state not in SEARCHABLE or is_expired(record, now):
        return False
    heat = decayed_heat(record.heat, record.last_access, now, config.heat_half_life_s)
    return not is_cold(record, heat, now, config) and _admissible(record, heat, config)


def _eligible(record: UsageRecord, heat: float, config: SchedulerConfig) -> bool:
    """Whether a servable memory may be in the activation set at this heat."""
    if record.token_count <= 0 or record.token_count > config.promote_token_budget:
        return False
    return _admissible(record, heat, config)


def _admissible(record: UsageRecord, heat: float, config: SchedulerConfig) -> bool:
    """:func:`_eligible` but for the memory's size."""
    if record.tier is Tier.PARAMETRIC:  # an active adapter serves it; retiring it returns it
        return False
    if set(record.sensitivity) & set(config.never_activate_sensitivity):
        return False
    if config.activate_types is not None and record.type not in config.activate_types:
        return False
    incumbent = record.tier is Tier.ACTIVATION
    return heat >= (config.demote_below_heat if incumbent else config.min_heat_to_promote)


def select_activation(
    candidates: Iterable[tuple[UsageRecord, float]], config: SchedulerConfig
) -> list[UsageRecord]:
    """Greedy fill of the activation block from ``(record, decayed heat)`` candidates.

    Ranked by priority, then heat, then most recent access, then id; a memory that does not
    fit the remaining token budget is skipped and smaller ones may still enter. Returns the
    chosen records in block order ``(created_at, id)``.
    """
    ranked = sorted(
        candidates,
        key=lambda rh: (
            -rh[0].priority,
            -rh[1],
            -(rh[0].last_access.timestamp() if rh[0].last_access else 0.0),
            rh[0].id,
        ),
    )
    chosen: list[UsageRecord] = []
    budget = config.promote_token_budget
    for record, _ in ranked:
        if len(chosen) >= config.max_hot_memories:
            break
        if record.token_count <= budget:
            chosen.append(record)
            budget -= record.token_count
    return sorted(chosen, key=lambda r: (r.created_at, r.id))


def _step(kind: StepKind, record: UsageRecord, heat: float, reason: str) -> PlanStep:
    return PlanStep(
        kind=kind, memory_id=record.id, version=record.version, reason=reason, heat=heat
    )


def _lifecycle_steps(
    records: Sequence[UsageRecord], heats: dict[str, float], now: datetime, config: SchedulerConfig
) -> tuple[list[PlanStep], list[PlanStep]]:
    """The expire and archive steps."""
    expire: list[PlanStep] = []
    archive: list[PlanStep] = []
    for record in records:
        heat = heats[record.id]
        if is_expired(record, now):
            reason = f"TTL of {record.ttl_seconds:g} s ran out"
            expire.append(_step(StepKind.EXPIRE, record, heat, reason))
        elif is_cold(record, heat, now, config):
            archive.append(
                _step(
                    StepKind.ARCHIVE,
                    record,
                    heat,
                    f"idle at least {config.archive_after_idle_s:g} s with heat {heat:.3g} "
                    f"<= {config.archive_max_heat:g}",
                )
            )
    return expire, archive


def _demote_reason(
    record: UsageRecord, heat: float, leaving: set[str], config: SchedulerConfig
) -> str:
    if record.state not in SEARCHABLE:
        return f"memory is {record.state.value}"
    if record.id in leaving:
        return "expired or archived in this plan"
    if not _eligible(record, heat, config):
        return f"heat {heat:.3g} below {config.demote_below_heat:g}, or no longer eligible"
    return "displaced by hotter memories within the token budget"


def plan_schedule(
    records: Iterable[UsageRecord], config: SchedulerConfig, now: datetime
) -> Plan:
    """Decide expiry, archiving and the activation set for ``records`` at ``now``.

    Pure and deterministic: equal inputs give equal plans; input order does not matter.

    Raises:
        InvalidInputError: a naive ``now`` or two records with the same id.
    """
    _require_aware(now, "now")
    records = sorted(records, key=lambda r: r.id)
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        raise InvalidInputError("each memory may appear only once in the usage records")
    half_life = config.heat_half_life_s
    heats = {r.id: decayed_heat(r.heat, r.last_access, now, half_life) for r in records}
    expire, archive = _lifecycle_steps(records, heats, now, config)
    leaving = {s.memory_id for s in expire} | {s.memory_id for s in archive}
    candidates = [
        (r, heats[r.id])
        for r in records
        if r.state in SEARCHABLE and r.id not in leaving and _eligible(r, heats[r.id], config)
    ]
    hot = select_activation(candidates, config)
    hot_ids = {r.id for r in hot}
    demote = [
        _step(StepKind.DEMOTE, r, heats[r.id], _demote_reason(r, heats[r.id], leaving, config))
        for r in records
        if r.tier is Tier.ACTIVATION and r.id not in hot_ids
    ]
    promote = [
        _step(
            StepKind.PROMOTE,
            r,
            heats[r.id],
            f"heat {heats[r.id]:.3g} >= {config.min_heat_to_promote:g} and fits the token budget",
        )
        for r in sorted(hot, key=lambda r: r.id)
        if r.tier is not Tier.ACTIVATION
    ]
    return Plan(
        now=now,
        steps=tuple(expire + archive + demote + promote),
        activation_set=tuple(r.id for r in hot),
        activation_tokens=sum(r.token_count for r in hot),
    )
