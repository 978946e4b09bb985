"""MemOS.chat: the hot block as a KV prefix, other retrieved memories as text, and the trace.

Structural tests run a tiny random Llama (fast); tests marked slow answer real questions with
SmolLM2-135M-Instruct. No test asserts on wall-clock time."""

from __future__ import annotations

import asyncio
import os
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: the machine is shared

import pytest

from memos_core import MemOS, Tier
from memos_core.chat import (
    PLAINTEXT_HEADER,
    QUESTION_LEAD,
    AsyncChatStream,
    ChatAnswer,
    ChatStream,
    user_turn,
)
from memos_core.cube import utcnow
from memos_core.engine import engine_for
from memos_core.errors import InvalidInputError
from memos_core.runtime import LocalModel
from memos_core.scheduler import SchedulerConfig
from memos_core.tiers.activation import KVBudget

EAGER = SchedulerConfig.preset("eager", min_heat_to_promote=0.9, demote_below_heat=0.5)
CAT = "Alice's cat is called Pastel."
QUESTION = "What is the name of Alice's cat?"
ALICE = [CAT, "Alice works as a nurse in Lisbon.", "Alice is training for a half marathon."]
BOB = ["Bob's cat is called Whiskers.", "Bob plays the trumpet in a brass band."]




@pytest.fixture(scope="module")
def tiny() -> LocalModel:
    return LocalModel.tiny(seed=0)


def populate(mos: MemOS) -> tuple[list[Any], list[Any]]:
    alice = [mos.add(t, user_id="alice", type="fact") for t in ALICE]
    bob = [mos.add(t, user_id="bob", type="fact") for t in BOB]
    return alice, bob


def heat_all(mos: MemOS, cubes: list[Any]) -> None:
    mos.vault.record_usage([c.id for c in cubes], utcnow(), mos.config.heat_half_life_s)


@pytest.fixture
def store(make_mos, tiny: LocalModel) -> MemOS:
    mos = make_mos()
    mos.attach_model(tiny)
    return mos


# ---------------------------------------------------------------- structure (tiny model)


def test_opening_and_searching_make_no_engine(make_mos) -> None:
    mos = make_mos()
    mos.add(CAT, user_id="alice")
    mos.search("cat", user_id="alice")
    assert mos._engine is None  # the engine is made on first use of a model feature


def test_plaintext_before_schedule_and_kv_after(store: MemOS) -> None:
    alice, bob = populate(store)

    before = store.chat(QUESTION, user_id="alice", max_new_tokens=4)

    assert isinstance(before, ChatAnswer)
    trace = before.trace
    assert not trace.kv_prefix and trace.block_id is None and trace.prefix_tokens == 0
    assert trace.from_activation == () and alice[0].id in trace.from_plaintext
    assert all(m.tier is Tier.PLAINTEXT and m.retrieved for m in trace.memories)

    heat_all(store, alice)
    store.schedule(config=EAGER)
    after = store.chat(QUESTION, user_id="alice", max_new_tokens=4).trace

    assert after.kv_prefix and after.block_id is not None and not after.block_built
    assert set(after.from_activation) == {c.id for c in alice}
    assert after.from_plaintext == ()  # every hit is already in the hot block
    assert after.prefix_tokens > after.prefill_tokens > 0
    assert {m.id for m in after.memories if m.retrieved} >= {alice[0].id}
    bob_ids = {c.id for c in bob}
    assert not bob_ids & {m.id for t in (trace, after) for m in t.memories}
    assert "KV prefix 3 mem" in after.summary() and "TTFT" in after.summary()


def test_kv_and_text_paths_send_the_same_prompt(store: MemOS) -> None:
    alice, _ = populate(store)
    heat_all(store, alice)
    store.schedule(config=EAGER)

    kv = store.chat(QUESTION, user_id="alice", max_new_tokens=6)
    text = store.chat(QUESTION, user_id="alice", max_new_tokens=6, kv_prefix=False)

    assert kv.trace.kv_prefix and not text.trace.kv_prefix and text.trace.fallback is None
    assert text.trace.prefix_tokens == 0
    assert text.trace.prefill_tokens == kv.trace.prefix_tokens + kv.trace.prefill_tokens
    assert text.trace.from_activation == kv.trace.from_activation  # still the hot block's
    assert text.text == kv.text


def test_stream_pieces_join_to_the_answer(store: MemOS) -> None:
    alice, _ = populate(store)
    heat_all(store, alice)
    store.schedule(config=EAGER)

    stream = store.chat(QUESTION, user_id="alice", max_new_tokens=8, stream=True)
    assert isinstance(stream, ChatStream)
    with pytest.raises(RuntimeError, match="not finished"):
        stream.answer
    pieces = list(stream)
    answer = store.chat(QUESTION, user_id="alice", max_new_tokens=8)

    assert "".join(pieces) == stream.answer.text == answer.text
    assert stream.trace.kv_prefix and stream.trace.new_tokens == answer.trace.new_tokens


def test_a_changed_member_is_rebuilt_on_the_chat_path(store: MemOS) -> None:
    alice, _ = populate(store)
    heat_all(store, alice)
    store.schedule(config=EAGER)
    store.update(alice[0].id, "Alice's cat is called Pastel Blue.", user_id="alice")

    trace = store.chat(QUESTION, user_id="alice", max_new_tokens=2).trace

    assert trace.kv_prefix and trace.block_built
    used = {m.id: m.version for m in trace.memories}
    assert used[alice[0].id] == 2


def test_a_forget_while_the_block_is_built_leaves_no_block(store: MemOS, monkeypatch) -> None:
    """A forget that lands after chat read the hot set and before it built the block: the
    forget's purge found no file to delete, so the block built from the old hot set must not
    be kept, used or written to disk; chat sends what is hot now as text."""
    alice, _ = populate(store)
    heat_all(store, alice)
    store.schedule(config=EAGER)
    engine = engine_for(store)
    engine.tier.clear()  # so chat builds the block
    executor = engine.executor
    read = executor.hot_memories
    calls = []

    def racing(user_id: str) -> list[Any]:
        cubes = read(user_id)
        if not calls:  # a concurrent forget lands right after chat's first read
            calls.append(store.forget(alice[0].id, user_id="alice"))
        return cubes

    monkeypatch.setattr(executor, "hot_memories", racing)
    trace = store.chat(QUESTION, user_id="alice", max_new_tokens=2).trace

    assert not trace.kv_prefix and "changed while their block was built" in trace.fallback
    assert alice[0].id not in {m.id for m in trace.memories}
    assert set(trace.from_activation) == {c.id for c in alice[1:]}
    assert [m.id for m in trace.memories][:2] == [c.id for c in alice[1:]]  # block order
    assert engine.tier.blocks() == []
    secret = ALICE[0].rstrip(".").split()[-1]
    assert not [p for p in store.data_dir.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_a_memory_text_damaged_in_a_kv_file_never_reaches_the_prompt(
        make_mos, tiny: LocalModel, tmp_path) -> None:
    """A KV file's ``messages`` (the hot memories' text) changed on disk, the header still
    valid JSON: chat must not answer from that text (nor from the prefix computed for
    another one); the file is dropped and the block rebuilt from the memories as stored."""
    mos = make_mos("kv")
    mos.attach_model(tiny)
    alice, _ = populate(mos)
    heat_all(mos, alice)
    mos.schedule(config=EAGER)
    mos.close()
    [path] = (tmp_path / "kv" / "kv").glob("*.safetensors")
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = raw[8:8 + size].replace(b"Pastel", b"Rocket", 1)  # same length: still JSON
    path.write_bytes(raw[:8] + header + raw[8 + size:])

    again = make_mos("kv")
    again.attach_model(tiny)
    trace = again.chat(QUESTION, user_id="alice", max_new_tokens=2).trace

    assert trace.kv_prefix and trace.block_built and trace.fallback is None
    assert set(trace.from_activation) == {c.id for c in alice}
    assert b"Rocket" not in path.read_bytes() and b"Pastel" in path.read_bytes()
    again_trace = again.chat(QUESTION, user_id="alice", max_new_tokens=2).trace
    assert again_trace.kv_prefix and not again_trace.block_built


def test_history_goes_between_the_block_and_the_question(store: MemOS) -> None:
    alice, _ = populate(store)
    history = [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello."}]
    plain = store.chat(QUESTION, user_id="alice", max_new_tokens=2).trace
    with_history = store.chat(QUESTION, user_id="alice", history=history, max_new_tokens=2).trace
    assert with_history.prefill_tokens > plain.prefill_tokens


def test_a_block_over_budget_falls_back_to_text(make_mos, tiny: LocalModel) -> None:
    mos = make_mos("small")
    engine = engine_for(mos)
    engine.budget = KVBudget(max_tokens=16)
    mos.attach_model(tiny)
    alice, _ = populate(mos)
    heat_all(mos, alice)

    report = mos.schedule(config=EAGER)
    trace = mos.chat(QUESTION, user_id="alice", max_new_tokens=2).trace

    assert report.for_user("alice").error.startswith("KVBudgetError")  # type: ignore[union-attr]
    assert not trace.kv_prefix and trace.fallback and trace.fallback.startswith("KVBudgetError")
    assert set(trace.from_activation) == {c.id for c in alice}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"history": "hi"}, "history"),
        ({"history": [{"role": "system", "content": "x"}]}, "history\\[0\\]"),
        ({"history": [{"role": "user", "content": 3}]}, "history\\[0\\]"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": True}, "max_new_tokens"),
        ({"k": 0}, "k"),
        ({"user_id": ""}, "user_id"),
        ({"stream": "yes"}, "stream"),  # was read by its truthiness: a stream came back
        ({"kv_prefix": "no"}, "kv_prefix"),
        # longer than the 4096 positions of the tiny model: prefilled for minutes before
        ({"max_new_tokens": 10**12}, "reads at once"),
        ({"history": [{"role": "user", "content": "word " * 5000}]}, "reads at once"),
        ({"system": "word " * 5000}, "reads at once"),
        ({"history": [{"role": "user", "content": "x" * 1_000_001}]}, "history\\[0\\] is"),
    ],
)
def test_bad_arguments_raise(store: MemOS, kwargs: dict[str, Any], message: str) -> None:
    call: dict[str, Any] = {"user_id": "alice", **kwargs}
    with pytest.raises(InvalidInputError, match=message):
        store.chat(QUESTION, **call)


def test_bad_query_and_closed_store(make_mos, tiny: LocalModel) -> None:
    mos = make_mos("closed")
    mos.attach_model(tiny)
    with pytest.raises(InvalidInputError):
        mos.chat("", user_id="alice")
    with pytest.raises(InvalidInputError, match="4,096 tokens"):
        mos.chat("word " * 5000, user_id="alice")
    mos.close()
    with pytest.raises(InvalidInputError, match="closed"):
        mos.chat(QUESTION, user_id="alice")


def test_attach_model_rejects_other_objects(store: MemOS) -> None:
    with pytest.raises(InvalidInputError, match="LocalModel"):
        store.attach_model("SmolLM2")


def test_user_turn_lists_plaintext_then_the_question() -> None:
    class Memory:
        text = "Alice likes tea.\nStrong."

    assert user_turn("Q?", []) == "Q?"
    turn = user_turn("Q?", [Memory()])  # type: ignore[list-item]
    assert turn == f"{PLAINTEXT_HEADER}\n- Alice likes tea.\n  Strong.\n\n{QUESTION_LEAD}Q?"


def test_a_memory_shared_by_another_user_reaches_the_prompt_with_its_owner(store: MemOS) -> None:
    """Chat's plaintext memories come from search, which returns what others shared: the
    model reads whose it is, as in the adapters' recall (not a fact of the viewer's)."""
    shared = store.add("I eat steak every day.", user_id="mallory")
    store.share(shared.id, with_user_id="alice", user_id="mallory")
    own = store.add("Alice is vegetarian.", user_id="alice")
    turn = user_turn("What does Alice eat?", [own, shared], "alice")
    assert "- Alice is vegetarian.\n" in turn
    assert "- I eat steak every day. (shared by mallory)" in turn


async def test_achat_and_async_stream(store: MemOS) -> None:
    alice, _ = populate(store)
    heat_all(store, alice)
    await store.aschedule(config=EAGER)

    answer = await store.achat(QUESTION, user_id="alice", max_new_tokens=5)
    stream = await store.achat(QUESTION, user_id="alice", max_new_tokens=5, stream=True)
    assert isinstance(stream, AsyncChatStream)
    pieces = [piece async for piece in stream]

    assert "".join(pieces) == stream.answer.text == answer.text
    assert answer.trace.kv_prefix and stream.trace.kv_prefix


async def test_async_stream_read_on_after_a_timed_out_read(store: MemOS) -> None:
    """A keep-alive loop: each read waits a moment for the next piece, and on timeout (a
    ping) reads again. The timed-out read's model step goes on; the next read gets its piece:
    no piece lost or repeated, and no "generator already executing"."""
    populate(store)
    answer = await store.achat(QUESTION, user_id="alice", max_new_tokens=12)
    stream = await store.achat(QUESTION, user_id="alice", max_new_tokens=12, stream=True)

    pieces: list[str] = []
    with pytest.raises(asyncio.TimeoutError):  # far too short for a model step
        pieces.append(await asyncio.wait_for(anext(stream), 1e-6))
    for _ in range(3):  # more pings, whether or not the first step is done meanwhile
        try:
            pieces.append(await asyncio.wait_for(anext(stream), 1e-6))
        except asyncio.TimeoutError:
            pass
    pieces += [piece async for piece in stream]

    assert len(pieces) > 1
    assert "".join(pieces) == stream.answer.text == answer.text


# ---------------------------------------------------------------- SmolLM2 answers


@pytest.fixture(scope="module")
def smol() -> LocalModel:
    return LocalModel.default()


@pytest.mark.slow
def test_smollm2_answers_from_plaintext_then_from_the_kv_tier(make_mos, smol: LocalModel) -> None:
    mos = make_mos("smol")
    mos.attach_model(smol)
    alice, bob = populate(mos)
    bob_ids = {c.id for c in bob}

    before = mos.chat(QUESTION, user_id="alice", max_new_tokens=16)
    assert "Pastel" in before.text
    assert alice[0].id in before.trace.from_plaintext and not before.trace.kv_prefix

    report = mos.schedule(config=EAGER)  # the chat's search counted as a hit on each memory
    assert alice[0].id in report.for_user("alice").activation_set  # type: ignore[union-attr]
    after = mos.chat(QUESTION, user_id="alice", max_new_tokens=16)
    text = mos.chat(QUESTION, user_id="alice", max_new_tokens=16, kv_prefix=False)

    assert "Pastel" in after.text and after.text == text.text
    assert alice[0].id in after.trace.from_activation and after.trace.kv_prefix
    assert after.trace.prefill_tokens < text.trace.prefill_tokens
    assert text.trace.prefill_tokens == after.trace.prefix_tokens + after.trace.prefill_tokens
    for trace in (before.trace, after.trace, text.trace):
        assert not bob_ids & {m.id for m in trace.memories}
        assert "Whiskers" not in " ".join(m.text for m in trace.memories)

    bob_answer = mos.chat("What is the name of Bob's cat?", user_id="bob", max_new_tokens=16)
    assert "Whiskers" in bob_answer.text
    assert not {c.id for c in alice} & {m.id for m in bob_answer.trace.memories}


@pytest.mark.slow
def test_smollm2_stream_matches_and_async_works(make_mos, smol: LocalModel) -> None:
    mos = make_mos("smol-stream")
    mos.attach_model(smol)
    alice, _ = populate(mos)
    heat_all(mos, alice)
    mos.schedule(config=EAGER)

    stream = mos.chat(QUESTION, user_id="alice", max_new_tokens=16, stream=True)
    pieces = list(stream)
    answer = asyncio.run(mos.achat(QUESTION, user_id="alice", max_new_tokens=16))

    assert len(pieces) > 1 and "".join(pieces) == stream.answer.text == answer.text
    assert "Pastel" in answer.text and stream.trace.kv_prefix
