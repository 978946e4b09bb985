"""Pure parts of the parametric tier: cloze forms, the gate, drift comparison, consolidation
candidates, configs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from memos_core.cube import MemoryType, State, Tier
from memos_core.scheduler import (
    ConsolidationConfig,
    SchedulerConfig,
    UsageRecord,
    consolidation_candidates,
    plan_schedule,
)
from memos_core.tiers.parametric import (
    CONTROL_PROMPTS,
    REPLAY_PROMPTS,
    ParametricConfig,
    cloze,
    gate,
)
from memos_core.tiers.parametric.data import (
    memory_examples,
    neighbour,
    question,
    replay_examples,
)
from memos_core.tiers.parametric.evaluation import (
    answer_recalled,
    control_kept,
    leading_words,
)
from memos_core.tiers.parametric.trainer import length_groups

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Zorvin's cat is named Pastel.", ("Zorvin's cat is named", " Pastel")),
        ("  Quenby lives in Tromso!  ", ("Quenby lives in", " Tromso")),
        ("Ada prefers green tea", ("Ada prefers green", " tea")),
        ("Bob is 42.", ("Bob is", " 42")),
        ("Too short", None),
        ("", None),
    ],
)
def test_cloze(text: str, expected: tuple[str, str] | None) -> None:
    assert cloze(text) == expected


def test_memory_examples_and_replay() -> None:
    examples = memory_examples("m1", "Zorvin's cat is named Pastel.")
    assert [(e.prompt, e.completion) for e in examples] == [
        ("", "Zorvin's cat is named Pastel."), ("Zorvin's cat is named", " Pastel")]
    with pytest.raises(ValueError, match="too short"):
        memory_examples("m2", "Hi there")
    assert [e.completion for e in replay_examples(["a", "b"], [" x", "  "])] == [" x"]
    with pytest.raises(ValueError):
        replay_examples(["a"], [])


def test_prompt_sets_are_large_and_disjoint() -> None:
    assert len(REPLAY_PROMPTS) >= 20 and len(CONTROL_PROMPTS) >= 20
    assert not set(REPLAY_PROMPTS) & set(CONTROL_PROMPTS)


@pytest.mark.parametrize(
    ("recall", "regressions", "min_recall", "max_reg", "passed"),
    [
        (1.0, 0, 0.95, 1, True),
        (0.95, 1, 0.95, 1, True),
        (0.94, 0, 0.95, 1, False),
        (1.0, 2, 0.95, 1, False),
        (0.5, 5, 0.95, 1, False),
        (0.0, 0, 0.0, 0, True),
    ],
)
def test_gate(recall: float, regressions: int, min_recall: float, max_reg: int,
              passed: bool) -> None:
    config = ParametricConfig(min_recall=min_recall, max_control_regressions=max_reg)
    decision = gate(recall, regressions, config)
    assert decision.passed is passed
    assert len(decision.reasons) == 2 and str(regressions) in decision.reasons[1]


@pytest.mark.parametrize(
    ("base", "adapted", "words", "kept"),
    [
        (" Jupiter, but it's", " Jupiter, with a", 1, True),
        (" Jupiter, but it's", " Jupiter, with a", 2, False),
        (" Paris.\n\nThe", " Paris. The", 2, True),
        (" helium, with", " oxygen and", 1, False),
        (" John F. Kennedy", " John Tyler.", 2, False),
        ("", "", 1, True),
        (" Tower, and the", " Tower's mast, which", 1, True),  # a word is letters and digits
        (" H2O, the", " H2O.", 1, True),
    ],
)
def test_control_kept(base: str, adapted: str, words: int, kept: bool) -> None:
    assert control_kept(base, adapted, words) is kept


@pytest.mark.parametrize(
    ("completion", "answer", "recalled"),
    [(" Pastel.\n\nThe", " Pastel", True), (" pastel", "Pastel", True),
     (" Paste", " Pastel", False), (" anything", " ", False)],
)
def test_answer_recalled(completion: str, answer: str, recalled: bool) -> None:
    assert answer_recalled(completion, answer) is recalled
    assert leading_words(" A, b! c", 2) == "a b"


def record(mid: str, **kw: object) -> UsageRecord:
    values: dict[str, object] = dict(
        id=mid, type=MemoryType.FACT, heat=5.0, last_access=NOW, access_count=5,
        created_at=NOW - timedelta(days=30), updated_at=NOW - timedelta(days=10), token_count=8)
    values.update(kw)
    return UsageRecord(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "chosen"),
    [
        ({}, True),
        ({"type": MemoryType.PREFERENCE}, True),
        ({"type": MemoryType.EPISODE}, False),
        ({"heat": 1.0}, False),
        ({"last_access": NOW - timedelta(days=21)}, False),  # 5 -> 0.625 after 3 half-lives
        ({"updated_at": NOW - timedelta(days=2)}, False),  # not stable yet
        ({"state": State.ARCHIVED}, False),
        ({"tier": Tier.PARAMETRIC}, False),
        ({"tier": Tier.ACTIVATION}, True),
        ({"sensitivity": ("secret",)}, False),
        # the tier never trains on these: they must not start a job that learns nothing
        ({"superseded": True}, False),
        ({"ttl_seconds": 29 * 24 * 3600.0}, False),  # created 30 days ago: run out
        ({"ttl_seconds": 31 * 24 * 3600.0}, True),
    ],
)
def test_consolidation_candidates(changes: dict[str, object], chosen: bool) -> None:
    got = consolidation_candidates([record("m", **changes)], ConsolidationConfig(), NOW)
    assert got == (["m"] if chosen else [])


def test_consolidation_candidates_cap_order_and_naive_time() -> None:
    records = [record(f"m{i}", heat=float(i + 3)) for i in range(5)]
    config = ConsolidationConfig(max_memories=2)
    assert consolidation_candidates(records, config, NOW) == ["m3", "m4"]
    assert consolidation_candidates(list(reversed(records)), config, NOW) == ["m3", "m4"]
    parametric = [record("p", tier=Tier.PARAMETRIC)]
    assert consolidation_candidates(parametric, config, NOW, include_parametric=True) == ["p"]
    with pytest.raises(Exception, match="timezone-aware"):
        consolidation_candidates(records, config, NOW.replace(tzinfo=None))


def test_policy_never_promotes_a_parametric_memory() -> None:
    records = [record("a", tier=Tier.PARAMETRIC), record("b")]
    plan = plan_schedule(records, SchedulerConfig.preset("eager"), NOW)
    assert [s.memory_id for s in plan.steps if s.kind.value == "promote"] == ["b"]


@pytest.mark.parametrize("config_cls", [ParametricConfig, ConsolidationConfig])
def test_configs_round_trip_and_describe_every_field(config_cls: type) -> None:
    config = config_cls()
    assert config_cls.model_validate_json(config.model_dump_json()) == config
    assert all(f.description for f in config_cls.model_fields.values())


@pytest.mark.parametrize("name", ["default", "quick", "test"])
def test_presets(name: str) -> None:
    config = ParametricConfig.preset(name, seed=3)
    assert config.seed == 3
    with pytest.raises(ValueError, match="unknown preset"):
        ParametricConfig.preset("huge")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "asked", "other"),
    [
        ("Zorvin's cat is named Pastel.", "What is Zorvin's cat named?", "My cat is named"),
        ("Fenwick's car is a Volvo.", "What is Fenwick's car?", "My car is a"),
        ("Mirela's favourite colour is teal.", "What is Mirela's favourite colour?",
         "My favourite colour is"),
        ("Zorvin Mirela's brother is called Olek.", "What is Zorvin Mirela's brother called?",
         "My brother is called"),
        ("Quenby lives in Tromso.", "Quenby lives in what?", "Someone lives in"),
        ("Too short", None, None),
    ],
)
def test_question_and_neighbour_forms(text: str, asked: str | None, other: str | None) -> None:
    assert question(text) == asked
    assert neighbour(text) == other


def test_question_examples_are_chat_formatted() -> None:
    def chat(q: str) -> tuple[str, str]:
        return f"<user>{q}</user><assistant>", "<end>"

    examples = memory_examples("m1", "Zorvin's cat is named Pastel.", statement=False, chat=chat)
    assert [(e.prompt, e.completion) for e in examples] == [
        ("Zorvin's cat is named", " Pastel"),
        ("<user>What is Zorvin's cat named?</user><assistant>",
         "Zorvin's cat is named Pastel.<end>")]


@pytest.mark.parametrize(
    ("lengths", "groups"),
    [
        ([12, 60, 14, 62, 15, 16, 13, 14], [[0, 2, 4, 5, 6, 7], [1, 3]]),
        ([10, 11, 12], [[0, 1, 2]]),  # splitting would save too little
        ([5], [[0]]),
        ([], []),
    ],
)
def test_length_groups(lengths: list[int], groups: list[list[int]]) -> None:
    assert length_groups(lengths) == groups


def test_steps_follow_epochs_unless_fixed() -> None:
    assert ParametricConfig(epochs=8, batch_size=4).steps_for(20) == 40
    assert ParametricConfig(epochs=8, batch_size=4).steps_for(1) == 10  # min_steps
    assert ParametricConfig(steps=7).steps_for(500) == 7
    assert ParametricConfig.preset("chat").train_questions is True
    with pytest.raises(ValueError, match="unknown preset"):
        ParametricConfig.preset("fast")  # type: ignore[arg-type]


def test_gate_needs_enough_confident_controls() -> None:
    config = ParametricConfig(min_controls=20)
    assert gate(1.0, 0, config, controls=20).passed
    decision = gate(1.0, 0, config, controls=19)
    assert not decision.passed and "only 19 confident control prompts" in decision.reasons[0]


def test_gate_refuses_answers_lost_with_the_memories_in_the_prompt() -> None:
    """The demo's adapter passed recall and drift, then answered its own facts wrong in a
    chat that had them in the prompt (where the base model answered right)."""
    config = ParametricConfig(min_controls=1)
    assert gate(1.0, 0, config, controls=20, context_regressions=0).passed
    decision = gate(1.0, 0, config, controls=20, context_regressions=2)
    assert not decision.passed
    assert "answers lost with the memories in the prompt 2 > 0" in decision.reasons[-1]
    assert gate(1.0, 0, config.model_copy(update={"max_context_regressions": 2}),
                context_regressions=2).passed
    # what was gained is said beside the loss (it does not change the verdict)
    traded = gate(1.0, 0, config, controls=20, context_regressions=1, context_right=(6, 12))
    assert not traded.passed and traded.reasons[-1] == (
        "answers lost with the memories in the prompt 1 > 0 "
        "(answered right with them: adapted 12, base 6)")


def test_evaluate_counts_context_regressions_and_scrubbed_drops_their_text(tiny) -> None:  # noqa: ANN001
    """A memory the base model answered right in context and the adapted one did not counts;
    one the base model missed too does not. A forget's scrub leaves no answer text."""
    from memos_core.tiers.parametric.evaluation import evaluate, scrubbed

    config = ParametricConfig.preset("test")
    memories = [("m1", "Zorvin's cat is named Pastel."), ("m2", "Mirela's car is a Volvo.")]
    ev = evaluate(tiny.model, tiny.tokenizer, memories, [], config,
                  context=lambda q: f"Facts: Zorvin's cat is named Pastel.\n{q}",
                  base_in_context={"m1": True, "m2": False})
    assert [i.base_context_recalled for i in ev.items] == [True, False]
    assert all(i.context_completion is not None for i in ev.items)
    assert ev.context_regressions == sum(i.context_recalled is False for i in ev.items[:1])
    assert all(i.context_completion is None for i in scrubbed(ev).items)


def test_consolidate_named_memories_are_checked_before_training(mos) -> None:
    """``consolidate(memory_ids=...)``: an unknown id or another user's was dropped without
    a word, and with no trainable memory left the error gave the wrong reason. Each is
    refused, saying why, before any training."""
    from memos_core.errors import AccessDeniedError, InvalidInputError, MemoryNotFoundError

    fact = mos.add("Ada's cat is called Pastel.", user_id="ada", type="fact").id
    secret = mos.add("Ada's door code is 4821.", user_id="ada", type="fact",
                     sensitivity=["secret"]).id
    episode = mos.add("Ada went to the market this morning.", user_id="ada", type="episode").id
    bobs = mos.add("Bob's cat is called Miso.", user_id="bob", type="fact").id
    cases = [
        (["00000000-0000-4000-8000-000000000000"], MemoryNotFoundError, "No memory"),
        ([fact, "00000000-0000-4000-8000-000000000000"], MemoryNotFoundError, "No memory"),
        (["garbage"], MemoryNotFoundError, "UUID"),
        ([bobs], AccessDeniedError, "User 'ada' may not read memory"),
        ([secret], InvalidInputError, r"none of memory_ids .*sensitivity tags \['secret'\]"),
        ([episode, secret], InvalidInputError, "only live, current facts and preferences"),
        ([], InvalidInputError, "memory_ids is empty"),
    ]
    for ids, error, message in cases:
        with pytest.raises(error, match=message):
            mos.consolidate(user_id="ada", memory_ids=ids)
    assert mos.adapters(user_id="ada") == []  # nothing was trained
