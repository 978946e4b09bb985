"""The scheduler: a pure policy (usage -> plan) and the executor that applies it.

See :mod:`memos_core.scheduler.policy` (pure, no store, no model),
:mod:`memos_core.scheduler.executor` (reads the vault, applies and audits a plan) and
:mod:`memos_core.scheduler.background` (runs the executor periodically in a thread);
:mod:`memos_core.scheduler.consolidation` picks memories for the parametric tier (pure).
"""

from memos_core.scheduler.background import BackgroundScheduler
from memos_core.scheduler.consolidation import ConsolidationConfig, consolidation_candidates
from memos_core.scheduler.executor import (
    SCHEDULER_AGENT,
    SchedulerExecutor,
    TierProvider,
    block_order,
    is_hot_candidate,
)
from memos_core.cube import bump_heat, decayed_heat  # heat is a usage counter; the policy reads it
from memos_core.scheduler.policy import (
    Plan,
    PlanStep,
    SchedulerConfig,
    StepKind,
    UsageRecord,
    is_cold,
    is_expired,
    may_activate,
    plan_schedule,
    select_activation,
)
from memos_core.scheduler.report import ScheduleReport, StepOutcome, UserSchedule

__all__ = [
    "BackgroundScheduler",
    "ConsolidationConfig",
    "Plan",
    "PlanStep",
    "SCHEDULER_AGENT",
    "ScheduleReport",
    "SchedulerConfig",
    "SchedulerExecutor",
    "StepKind",
    "StepOutcome",
    "TierProvider",
    "UsageRecord",
    "UserSchedule",
    "block_order",
    "bump_heat",
    "consolidation_candidates",
    "decayed_heat",
    "is_cold",
    "is_expired",
    "is_hot_candidate",
    "may_activate",
    "plan_schedule",
    "select_activation",
]
