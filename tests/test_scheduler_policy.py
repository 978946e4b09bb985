"""The scheduler policy: pure functions, no model and no store."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from memos_core.cube import MemoryType, State, Tier
from memos_core.errors import InvalidInputError
from memos_core.scheduler import (
    Plan,
    SchedulerConfig,
    StepKind,
    UsageRecord,
    bump_heat,
    decayed_heat,
    is_expired,
    may_activate,
    plan_schedule,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)
DAY = 24 * 3600.0
HALF = 7 * DAY


def rec(id_: str, **kw: object) -> UsageRecord:
    """A record created a day ago, touched now, 100 tokens, unless overridden."""
    base: dict[str, object] = {
        "id": id_,
        "created_at": NOW - timedelta(days=1),
        "updated_at": NOW - timedelta(days=1),
        "last_access": NOW,
        "heat": 0.0,
        "token_count": 100,
    }
    base.update(kw)
    return UsageRecord(**base)  # type: ignore[arg-type]


def kinds(plan: Plan) -> list[tuple[str, str]]:
    return [(s.kind.value, s.memory_id) for s in plan.steps]


# ---------------------------------------------------------------- heat


@pytest.mark.parametrize(
    ("heat", "elapsed_s", "half_life", "expected"),
    [
        (8.0, 0.0, HALF, 8.0),
        (8.0, HALF, HALF, 4.0),
        (8.0, 3 * HALF, HALF, 1.0),
        (1.0, 10.0, 10.0, 0.5),
        (0.0, HALF, HALF, 0.0),
        (5.0, -100.0, HALF, 5.0),  # clock skew: last access in the future decays nothing
    ],
)
def test_decayed_heat(heat: float, elapsed_s: float, half_life: float, expected: float) -> None:
    last = NOW - timedelta(seconds=elapsed_s)
    assert decayed_heat(heat, last, NOW, half_life) == pytest.approx(expected)


def test_decayed_heat_never_accessed_keeps_heat() -> None:
    assert decayed_heat(3.0, None, NOW, HALF) == 3.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((1.0, NOW, NOW, 0.0), "half_life_s"),
        ((1.0, NOW, NOW.replace(tzinfo=None), HALF), "timezone-aware"),
        ((1.0, NOW.replace(tzinfo=None), NOW, HALF), "timezone-aware"),
    ],
)
def test_decayed_heat_rejects_bad_input(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        decayed_heat(*args)  # type: ignore[arg-type]


def test_bump_heat_decays_then_adds() -> None:
    assert bump_heat(4.0, NOW - timedelta(seconds=HALF), NOW, HALF) == pytest.approx(3.0)
    assert bump_heat(0.0, None, NOW, HALF, weight=2.5) == pytest.approx(2.5)
    with pytest.raises(InvalidInputError):
        bump_heat(1.0, None, NOW, HALF, weight=-1)


# ---------------------------------------------------------------- TTL


@pytest.mark.parametrize(
    ("age_s", "ttl", "state", "expected"),
    [
        (100.0, 50.0, State.GENERATED, True),
        (50.0, 50.0, State.ACTIVATED, True),  # boundary: expires exactly at created_at + ttl
        (49.0, 50.0, State.GENERATED, False),
        (100.0, None, State.GENERATED, False),
        (100.0, 50.0, State.ARCHIVED, True),
        (100.0, 50.0, State.EXPIRED, False),  # already expired: no second step
        (100.0, 50.0, State.DELETED, False),
    ],
)
def test_is_expired(age_s: float, ttl: float | None, state: State, expected: bool) -> None:
    record = rec("m", created_at=NOW - timedelta(seconds=age_s), ttl_seconds=ttl, state=state)
    assert is_expired(record, NOW) is expected


# ---------------------------------------------------------------- whole plans

CFG = SchedulerConfig()  # promote at heat >= 2, keep while >= 1, budget 2048 tokens

PLAN_CASES = [
    pytest.param([], [], (), id="empty"),
    pytest.param([rec("a", heat=3.0)], [("promote", "a")], ("a",), id="hot-promoted"),
    pytest.param([rec("a", heat=1.2)], [], (), id="lukewarm-not-promoted"),
    pytest.param(
        [rec("a", heat=1.2, tier=Tier.ACTIVATION)], [], ("a",), id="hysteresis-incumbent-stays"
    ),
    pytest.param(
        [rec("a", heat=0.5, tier=Tier.ACTIVATION)], [("demote", "a")], (), id="cooled-demoted"
    ),
    pytest.param(
        [rec("a", heat=8.0, last_access=NOW - timedelta(days=21))],
        [],
        (),
        id="heat-decays-before-threshold",  # 8 halved three times = 1 < 2
    ),
    pytest.param(
        [rec("a", heat=5.0, created_at=NOW - timedelta(hours=2), ttl_seconds=3600.0)],
        [("expire", "a")],
        (),
        id="ttl-expired-not-promoted",
    ),
    pytest.param(
        [rec("a", heat=5.0, tier=Tier.ACTIVATION, created_at=NOW - timedelta(hours=2), ttl_seconds=60.0)],
        [("expire", "a"), ("demote", "a")],
        (),
        id="expired-incumbent-demoted",
    ),
    pytest.param(
        [rec("a", created_at=NOW - timedelta(days=90), last_access=None)],
        [("archive", "a")],
        (),
        id="cold-archived",
    ),
    pytest.param(
        [rec("a", created_at=NOW - timedelta(days=90), last_access=None, priority=5)],
        [],
        (),
        id="priority-protects-from-archive",
    ),
    pytest.param(
        [rec("a", heat=4.0, last_access=NOW - timedelta(days=40))],  # 40 d idle, heat ~0.08
        [("archive", "a")],
        (),
        id="idle-and-cold-archived",
    ),
    pytest.param(
        [rec("a", heat=9.0, state=State.ARCHIVED)], [], (), id="archived-not-promoted"
    ),
    pytest.param(
        [rec("a", heat=9.0, state=State.DELETED, tier=Tier.ACTIVATION)],
        [("demote", "a")],
        (),
        id="deleted-incumbent-demoted",
    ),
    pytest.param(
        [rec("a", heat=9.0, sensitivity=("secret",))], [], (), id="secret-never-activated"
    ),
    pytest.param([rec("a", heat=9.0, token_count=0)], [], (), id="no-token-count-not-promoted"),
    pytest.param(
        [rec("a", heat=9.0, token_count=5000)], [], (), id="larger-than-budget-not-promoted"
    ),
]


@pytest.mark.parametrize(("records", "expected_steps", "expected_set"), PLAN_CASES)
def test_plan_cases(
    records: list[UsageRecord], expected_steps: list[tuple[str, str]], expected_set: tuple[str, ...]
) -> None:
    plan = plan_schedule(records, CFG, NOW)
    assert kinds(plan) == expected_steps
    assert plan.activation_set == expected_set
    assert plan.is_empty is (not expected_steps)


@pytest.mark.parametrize(("records", "expected_steps", "expected_set"), PLAN_CASES)
def test_may_activate_is_the_plan_rule_without_the_size(
    records: list[UsageRecord], expected_steps: list[tuple[str, str]], expected_set: tuple[str, ...]
) -> None:
    """The executor counts tokens only where ``may_activate`` holds; so a memory it leaves at
    0 tokens must be one the plan would not activate at any size that fits the budget."""
    for record in records:
        sized = record.model_copy(update={"token_count": 100})
        assert may_activate(record, NOW, CFG) == (plan_schedule([sized], CFG, NOW).activation_set != ())


def test_budget_greedy_fill_by_priority_then_heat() -> None:
    cfg = SchedulerConfig(promote_token_budget=1000)
    records = [
        rec("hot", heat=9.0, token_count=600),
        rec("warm", heat=5.0, token_count=600),  # does not fit after "hot"
        rec("small", heat=3.0, token_count=300),  # fits in what is left
        rec("vip", heat=2.0, token_count=100, priority=3),  # priority first
    ]
    plan = plan_schedule(records, cfg, NOW)
    assert set(plan.activation_set) == {"vip", "hot", "small"}
    assert plan.activation_tokens == 1000
    assert [s.memory_id for s in plan.of_kind(StepKind.PROMOTE)] == ["hot", "small", "vip"]


def test_displaced_incumbent_is_demoted_with_reason() -> None:
    cfg = SchedulerConfig(promote_token_budget=100)
    records = [rec("old", heat=1.2, tier=Tier.ACTIVATION), rec("new", heat=6.0)]
    plan = plan_schedule(records, cfg, NOW)
    assert kinds(plan) == [("demote", "old"), ("promote", "new")]
    assert "displaced" in plan.of_kind(StepKind.DEMOTE)[0].reason


def test_max_hot_memories_caps_the_block() -> None:
    cfg = SchedulerConfig(max_hot_memories=2)
    records = [rec(f"m{i}", heat=float(3 + i)) for i in range(4)]
    assert set(plan_schedule(records, cfg, NOW).activation_set) == {"m3", "m2"}


def test_activation_set_is_in_block_order_not_heat_order() -> None:
    records = [
        rec("b", heat=9.0, created_at=NOW - timedelta(days=3)),
        rec("a", heat=3.0, created_at=NOW - timedelta(days=1)),
        rec("c", heat=5.0, created_at=NOW - timedelta(days=2)),
    ]
    assert plan_schedule(records, CFG, NOW).activation_set == ("b", "c", "a")


def test_activate_types_filter() -> None:
    cfg = SchedulerConfig(activate_types=(MemoryType.FACT,))
    records = [rec("f", heat=5.0, type=MemoryType.FACT), rec("e", heat=5.0, type=MemoryType.EPISODE)]
    assert plan_schedule(records, cfg, NOW).activation_set == ("f",)


def test_plan_is_deterministic_and_order_independent() -> None:
    records = [rec(f"m{i}", heat=float(i % 5), token_count=50 * (i % 3 + 1)) for i in range(30)]
    a = plan_schedule(records, CFG, NOW)
    b = plan_schedule(list(reversed(records)), CFG, NOW)
    assert a == b


@pytest.mark.parametrize(
    ("records", "now", "message"),
    [
        ([rec("a"), rec("a")], NOW, "only once"),
        ([rec("a")], NOW.replace(tzinfo=None), "timezone-aware"),
    ],
)
def test_plan_rejects_bad_input(records: list[UsageRecord], now: datetime, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        plan_schedule(records, CFG, now)


def test_record_rejects_naive_timestamps() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        rec("a", created_at=datetime(2025, 1, 1))


def test_record_from_cube_carries_usage_and_governance() -> None:
    from memos_core.cube import Governance, MemCube, Namespace, Usage

    cube = MemCube(
        namespace=Namespace(user_id="u"),
        text="Alice is vegetarian.",
        version=3,
        type=MemoryType.PREFERENCE,
        governance=Governance(ttl_seconds=60.0, priority=2, sensitivity=("pii",)),
        usage=Usage(access_count=4, last_access=NOW, heat=2.5, tier=Tier.ACTIVATION),
    )
    record = UsageRecord.from_cube(cube, token_count=9)
    assert (record.id, record.version, record.type, record.token_count) == (
        cube.id, 3, MemoryType.PREFERENCE, 9
    )
    assert (record.access_count, record.heat, record.tier, record.last_access) == (
        4, 2.5, Tier.ACTIVATION, NOW
    )
    assert (record.ttl_seconds, record.priority, record.sensitivity) == (60.0, 2, ("pii",))


# ---------------------------------------------------------------- config


@pytest.mark.parametrize("name", ["default", "eager", "conservative"])
def test_presets_are_valid_and_frozen(name: str) -> None:
    cfg = SchedulerConfig.preset(name)  # type: ignore[arg-type]
    assert cfg.demote_below_heat <= cfg.min_heat_to_promote
    with pytest.raises(ValueError):
        cfg.promote_token_budget = 1  # type: ignore[misc]
    assert SchedulerConfig.model_validate_json(cfg.model_dump_json()) == cfg


def test_preset_overrides_and_unknown_name() -> None:
    assert SchedulerConfig.preset("eager", max_hot_memories=3).max_hot_memories == 3
    with pytest.raises(InvalidInputError, match="unknown scheduler preset"):
        SchedulerConfig.preset("turbo")  # type: ignore[arg-type]


def test_config_rejects_inverted_hysteresis() -> None:
    with pytest.raises(ValueError, match="demote_below_heat"):
        SchedulerConfig(min_heat_to_promote=1.0, demote_below_heat=2.0)


def test_every_config_field_has_a_description() -> None:
    assert all(field.description for field in SchedulerConfig.model_fields.values())
