"""The scheduler: a pure policy (usage -> plan) and, elsewhere, the executor that applies it.

See :mod:`memos_core.scheduler.policy`.
"""

from memos_core.scheduler.policy import (
    Plan,
    PlanStep,
    SchedulerConfig,
    StepKind,
    UsageRecord,
    bump_heat,
    decayed_heat,
    is_cold,
    is_expired,
    plan_schedule,
    select_activation,
)

__all__ = [
    "Plan",
    "PlanStep",
    "SchedulerConfig",
    "StepKind",
    "UsageRecord",
    "bump_heat",
    "decayed_heat",
    "is_cold",
    "is_expired",
    "plan_schedule",
    "select_activation",
]
