"""``MemOS.chat(messages=...)``: the one rule both adapters use for a whole conversation.

System messages open the memory-aware system turn; user/assistant turns before the last
are the history; the last message is the question. Runs the tiny random Llama (its text is
noise; the prompt's token counts and the trace are what is checked).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from typing import Any

import pytest

from memos_core import MemOS
from memos_core.chat import split_messages, system_turn
from memos_core.cube import utcnow
from memos_core.errors import InvalidInputError
from memos_core.runtime import LocalModel
from memos_core.scheduler import SchedulerConfig

SYSTEM = "Answer in one short sentence."
QUESTION = "What bike do I have?"


@pytest.fixture(scope="module")
def tiny() -> LocalModel:
    return LocalModel.tiny(seed=0)


@pytest.fixture
def store(make_mos: Any, tiny: LocalModel) -> MemOS:
    mos = make_mos()
    mos.attach_model(tiny)
    mos.add("I have a green Brompton bike.", user_id="ann", type="fact")
    return mos


def test_split_reads_system_history_and_question() -> None:
    split = split_messages([
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
        {"role": "assistant", "content": ""},  # e.g. a turn that only held a tool call
        {"role": "developer", "content": "Be kind."},
        {"role": "user", "content": QUESTION},
    ])
    assert split.system == f"{SYSTEM}\n\nBe kind."
    assert split.history == [{"role": "user", "content": "hi"},
                             {"role": "assistant", "content": "hello"}]
    assert split.query == QUESTION
    assert system_turn(split.system, "MEM") == f"{SYSTEM}\n\nBe kind.\n\nMEM"


@pytest.mark.parametrize(("messages", "match"), [
    ([], "empty"),
    ("hi", "list"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "last message"),
    ([{"role": "tool", "content": "42"}, {"role": "user", "content": "hi"}], "role 'tool'"),
    ([{"content": "hi"}], "role"),
    ([{"role": "user", "content": [{"type": "image", "url": "x"}]}], "non-text"),
])
def test_bad_messages_are_clear_errors(messages: Any, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        split_messages(messages)


def test_messages_equal_query_with_system_and_system_reaches_the_prompt(store: MemOS) -> None:
    plain = store.chat(QUESTION, user_id="ann", max_new_tokens=2)
    with_system = store.chat(QUESTION, user_id="ann", system=SYSTEM, max_new_tokens=2)
    as_messages = store.chat(user_id="ann", max_new_tokens=2, messages=[
        {"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}])

    assert with_system.text == as_messages.text
    assert with_system.trace.prefill_tokens == as_messages.trace.prefill_tokens
    assert with_system.trace.prefill_tokens > plain.trace.prefill_tokens  # the system text
    with pytest.raises(InvalidInputError, match="not both"):
        store.chat(QUESTION, user_id="ann", messages=[{"role": "user", "content": QUESTION}])
    with pytest.raises(InvalidInputError, match="nothing to answer"):
        store.chat(user_id="ann")


def test_system_text_with_a_hot_block_sends_the_block_as_text(store: MemOS) -> None:
    facts = store.list(user_id="ann")
    store.vault.record_usage([c.id for c in facts], utcnow(), store.config.heat_half_life_s)
    store.schedule(config=SchedulerConfig.preset("eager", min_heat_to_promote=0.9,
                                                demote_below_heat=0.5))
    cached = store.chat(QUESTION, user_id="ann", max_new_tokens=2)
    assert cached.trace.kv_prefix is True

    answer = store.chat(QUESTION, user_id="ann", system=SYSTEM, max_new_tokens=2)

    assert answer.trace.kv_prefix is False
    assert answer.trace.fallback and "system message" in answer.trace.fallback
    assert answer.trace.from_activation == cached.trace.from_activation  # same memories


def test_both_adapters_send_the_same_prompt(store: MemOS) -> None:
    """LangChain's ChatMemOS and LlamaIndex's MemOSLLM follow the core's rule: the same
    conversation is the same prompt (same tokens prefilled, same greedy answer)."""
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
    from langchain_memos import ChatMemOS
    from llama_index.core.llms import ChatMessage
    from llama_index.memory.memos import MemOSLLM

    lc = ChatMemOS(mos=store, user_id="ann", max_tokens=3).invoke(
        [SystemMessage(SYSTEM), HumanMessage("hi"), AIMessage("hello"), HumanMessage(QUESTION)])
    li = MemOSLLM(mos=store, user_id="ann", max_new_tokens=3).chat([
        ChatMessage(role="system", content=SYSTEM), ChatMessage(role="user", content="hi"),
        ChatMessage(role="assistant", content="hello"),
        ChatMessage(role="user", content=QUESTION)])

    assert lc.response_metadata["trace"]["prefill_tokens"] == li.raw["prefill_tokens"]
    assert lc.content == li.message.content
