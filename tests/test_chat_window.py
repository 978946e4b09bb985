"""MemOS.chat when the memories it chose would make the prompt longer than the model's
context window: memories are left out (plaintext lowest-ranked first, then hot ones) until it
fits, and ``trace.left_out`` names them; only a question that cannot fit with no memory at
all is refused.

Runs the tiny random Llama with a 512-token window (its text is noise: the prompt's token
counts and the trace are what is checked)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: the machine is shared

import pytest

from memos_core import MemOS, Tier
from memos_core.chat import AsyncChatStream, ChatAnswer, ChatStream, ChatTrace, user_turn
from memos_core.cube import utcnow
from memos_core.errors import InvalidInputError
from memos_core.runtime import LocalModel
from memos_core.scheduler import SchedulerConfig

WINDOW = 512
NEW = 8
QUESTION = "What is the name of Alice's cat?"
EAGER = SchedulerConfig.preset("eager", min_heat_to_promote=0.9, demote_below_heat=0.5)


def long_memory(opening: str) -> str:
    """About 150 tokens: three of these overflow the 512-token window."""
    return opening + " " + " ".join(f"Detail number {i} of this long story." for i in range(18))


LONG = [long_memory(t) for t in (
    "Alice's cat is called Pastel.", "Alice's cat sleeps on the sofa all day.",
    "Alice works as a nurse in Lisbon.", "Alice is training for a half marathon.")]


@pytest.fixture(scope="module")
def small() -> LocalModel:
    return LocalModel.tiny(seed=0, max_position_embeddings=WINDOW)


@pytest.fixture
def store(make_mos: Any, small: LocalModel) -> MemOS:
    mos = make_mos()
    mos.attach_model(small)
    return mos


def prompt_tokens(trace: ChatTrace) -> int:
    return trace.prefix_tokens + trace.prefill_tokens


def heat(mos: MemOS, ids: list[str]) -> None:
    mos.vault.record_usage(ids, utcnow(), mos.config.heat_half_life_s)


def chat(mos: MemOS, mode: str, **kwargs: Any) -> ChatTrace:
    """One chat in ``mode`` (answer, stream, achat, astream); its trace."""
    if mode == "answer":
        answer = mos.chat(QUESTION, user_id="alice", max_new_tokens=NEW, **kwargs)
        assert isinstance(answer, ChatAnswer) and answer.trace.new_tokens > 0
        return answer.trace
    if mode == "stream":
        stream = mos.chat(QUESTION, user_id="alice", max_new_tokens=NEW, stream=True, **kwargs)
        assert isinstance(stream, ChatStream)
        assert "".join(stream) == stream.answer.text
        return stream.trace

    async def run() -> ChatTrace:
        if mode == "achat":
            answer = await mos.achat(QUESTION, user_id="alice", max_new_tokens=NEW, **kwargs)
            assert isinstance(answer, ChatAnswer)
            return answer.trace
        stream = await mos.achat(QUESTION, user_id="alice", max_new_tokens=NEW, stream=True,
                                 **kwargs)
        assert isinstance(stream, AsyncChatStream)
        assert "".join([piece async for piece in stream]) == stream.answer.text
        return stream.trace

    return asyncio.run(run())


@pytest.mark.parametrize("mode", ["answer", "stream", "achat", "astream"])
def test_long_plaintext_memories_are_left_out_lowest_ranked_first(
    store: MemOS, small: LocalModel, mode: str
) -> None:
    for text in LONG:
        store.add(text, user_id="alice", type="fact")
    ranked = [h.id for h in store.search(QUESTION, user_id="alice", k=4)]
    hits = [h.memory for h in store.search(QUESTION, user_id="alice", k=4)]
    assert len(small.encode(user_turn(QUESTION, hits, "alice"))) + NEW > WINDOW  # the premise

    trace = chat(store, mode, k=4)

    kept = list(trace.from_plaintext)
    assert trace.left_out and kept  # some memories fit, not all
    assert kept == ranked[: len(kept)]  # the best stay, in rank order
    assert list(trace.left_out) == ranked[len(kept):][::-1]  # lowest-ranked dropped first
    assert not set(trace.left_out) & {m.id for m in trace.memories}  # memories: what it saw
    assert all(m.tier is Tier.PLAINTEXT for m in trace.memories)
    assert prompt_tokens(trace) + NEW <= WINDOW
    assert f"; {len(trace.left_out)} mem left out for length;" in trace.summary()


def test_the_kv_prefix_stays_when_dropping_plaintext_is_enough(store: MemOS) -> None:
    hot = store.add("Alice's cat is called Pastel.", user_id="alice", type="fact")
    heat(store, [hot.id])
    store.schedule(config=EAGER)
    for text in LONG[1:]:
        store.add(text, user_id="alice", type="fact")

    trace = chat(store, "answer", k=4)

    assert trace.kv_prefix and trace.fallback is None and trace.prefix_tokens > 0
    assert trace.from_activation == (hot.id,)
    assert trace.left_out and hot.id not in trace.left_out
    assert prompt_tokens(trace) + NEW <= WINDOW


@pytest.mark.parametrize("kv_prefix", [True, False])
def test_a_hot_block_over_the_window_is_cut_and_sent_as_text(
    store: MemOS, kv_prefix: bool
) -> None:
    cubes = [store.add(text, user_id="alice", type="fact") for text in LONG]
    heat(store, [c.id for c in cubes])
    report = store.schedule(config=EAGER)
    hot = set(report.for_user("alice").activation_set)  # type: ignore[union-attr]
    assert len(hot) > 3  # more than the window holds

    trace = chat(store, "answer", k=1, kv_prefix=kv_prefix)

    assert not trace.kv_prefix and trace.prefix_tokens == 0
    assert trace.left_out and set(trace.left_out) <= hot
    assert set(trace.from_activation) == hot - set(trace.left_out)
    assert trace.from_activation  # what fits of the block is still sent, as text
    if kv_prefix:
        assert trace.fallback is not None and "context window" in trace.fallback
    found = store.search(QUESTION, user_id="alice", k=1)[0].id
    assert found in trace.from_activation  # the hot memory search found goes last
    assert prompt_tokens(trace) + NEW <= WINDOW


@pytest.mark.parametrize(("query", "new"), [
    ("word " * 600, NEW),  # the query alone is over the window
    (QUESTION, WINDOW),  # the tokens asked for alone fill it
])
def test_a_question_that_cannot_fit_without_memories_is_refused(
    store: MemOS, query: str, new: int
) -> None:
    for text in LONG:
        store.add(text, user_id="alice", type="fact")
    with pytest.raises(InvalidInputError, match="no memory is in it") as caught:
        store.chat(query, user_id="alice", max_new_tokens=new)
    assert f"{WINDOW} tokens" in str(caught.value) and "fewer memories" not in str(caught.value)


def test_a_memory_long_in_characters_but_short_in_tokens_is_kept(store: MemOS) -> None:
    """Only a head of a very long text is tokenised to tell it is over: 9,000 spaces are
    about 150 tokens, not the 9,000 / 16 characters per token that head allows for."""
    spaced = store.add("Alice's cat" + " " * 9000 + "is called Pastel.", user_id="alice")
    for text in LONG[2:]:
        store.add(text, user_id="alice", type="fact")
    assert store.search(QUESTION, user_id="alice", k=3)[0].id == spaced.id

    trace = chat(store, "answer", k=3)

    assert trace.from_plaintext[0] == spaced.id and trace.left_out
    assert prompt_tokens(trace) + NEW <= WINDOW
