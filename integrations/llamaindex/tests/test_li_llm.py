"""MemOSLLM: a llama-index LLM over ``MemOS.chat`` on the local model runtime.

The structural tests attach a tiny random Llama (``mos.attach_model``), so they are fast and
its answers are gibberish: they check what went in (the trace) and that every path returns
the same greedy text. The one ``slow`` test answers a question with SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: the machine is shared

import pytest
from llama_index.core import Settings
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
)
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.memory.memos import MemOSLLM, MemOSMemory
from llama_index.memory.memos.llm import DEFAULT_CONTEXT_WINDOW, MODEL_NAME

from memos_core import InvalidInputError, MemOS
from memos_core.runtime import LocalModel

CAT = "Maya's cat is a grey cat named Pastel."
QUESTION = "What is the name of Maya's cat?"
OTHER = "Tom's dog is a black dog named Biscuit."




@pytest.fixture(scope="module")
def tiny() -> LocalModel:
    return LocalModel.tiny(seed=0)


@pytest.fixture
def store(open_mos: Callable[..., MemOS], tiny: LocalModel) -> MemOS:
    mos = open_mos()
    mos.attach_model(tiny)
    return mos


@pytest.fixture
def facts(store: MemOS) -> tuple[str, str]:
    """(Maya's cat memory id, Tom's dog memory id)."""
    maya = store.add(CAT, user_id="maya", type="fact")
    tom = store.add(OTHER, user_id="tom", type="fact")
    return maya.id, tom.id


def user(text: str) -> ChatMessage:
    return ChatMessage(role="user", content=text)


def test_metadata_and_settings(store: MemOS, shared_mos: MemOS) -> None:
    idle = MemOSLLM(mos=shared_mos, user_id="maya", max_new_tokens=7)
    meta = idle.metadata
    assert meta.context_window == DEFAULT_CONTEXT_WINDOW  # no model loaded: none is loaded
    assert meta.num_output == 7 and meta.model_name == MODEL_NAME
    assert meta.is_chat_model and not meta.is_function_calling_model
    assert MemOSLLM(mos=store, user_id="maya").metadata.context_window == 4096  # attached
    Settings.llm = idle  # usable as the global LLM
    assert Settings.llm is idle


def test_chat_traces_the_users_memory_and_never_another_users(
    store: MemOS, facts: tuple[str, str]
) -> None:
    maya_id, tom_id = facts
    llm = MemOSLLM(mos=store, user_id="maya", max_new_tokens=6)

    response = llm.chat([
        ChatMessage(role="system", content="Be brief."),
        user("Hi, I am Maya."),
        ChatMessage(role="assistant", content="Hello Maya."),
        user(QUESTION),
    ])

    assert isinstance(response, ChatResponse)
    assert response.message.role.value == "assistant" and isinstance(response.message.content, str)
    extra = response.additional_kwargs
    assert maya_id in extra["memory_ids"] and tom_id not in extra["memory_ids"]
    assert extra["memory_tiers"][maya_id] == "plaintext"
    assert extra["user_id"] == "maya" and extra["memory_sections_removed"] == 0
    assert extra["prefill_tokens"] > 0 and extra["ttft_ms"] >= 0 and "TTFT" in extra["summary"]
    assert response.raw["user_id"] == "maya"
    assert {m["id"] for m in response.raw["memories"]} == set(extra["memory_ids"])
    assert response.message.additional_kwargs == {}  # stays storable by chat stores

    tom = MemOSLLM(mos=store, user_id="tom", max_new_tokens=2).chat([user(QUESTION)])
    assert maya_id not in tom.additional_kwargs["memory_ids"]


def test_stream_and_complete_match_chat(store: MemOS, facts: tuple[str, str]) -> None:
    llm = MemOSLLM(mos=store, user_id="maya", max_new_tokens=8)
    text = llm.chat([user(QUESTION)]).message.content

    parts = list(llm.stream_chat([user(QUESTION)]))

    assert "".join(p.delta or "" for p in parts) == text
    assert parts[-1].message.content == text
    assert all(p.raw is None for p in parts[:-1]) and parts[-1].raw is not None
    assert facts[0] in parts[-1].additional_kwargs["memory_ids"]
    texts = [p.message.content for p in parts]
    assert all(b.startswith(a) for a, b in itertools.pairwise(texts))  # cumulative

    done = llm.complete(QUESTION)
    assert isinstance(done, CompletionResponse) and done.text == text
    assert facts[0] in done.additional_kwargs["memory_ids"]
    pieces = list(llm.stream_complete(QUESTION))
    assert "".join(p.delta or "" for p in pieces) == text == pieces[-1].text


def test_async_twins_match_chat(store: MemOS, facts: tuple[str, str]) -> None:
    llm = MemOSLLM(mos=store, user_id="maya", max_new_tokens=8)
    text = llm.chat([user(QUESTION)]).message.content

    async def run() -> tuple[Any, Any, list[Any], list[Any], int]:
        ticks = 0

        async def ticker() -> None:  # runs while the model works: the loop is not blocked
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        chat = await llm.achat([user(QUESTION)])
        done = await llm.acomplete(QUESTION)
        parts = [p async for p in await llm.astream_chat([user(QUESTION)])]
        pieces = [p async for p in await llm.astream_complete(QUESTION)]
        task.cancel()
        return chat, done, parts, pieces, ticks

    chat, done, parts, pieces, ticks = asyncio.run(run())

    assert chat.message.content == done.text == text
    assert facts[0] in chat.additional_kwargs["memory_ids"]
    assert "".join(p.delta for p in parts) == parts[-1].message.content == text
    assert facts[0] in parts[-1].additional_kwargs["memory_ids"]
    assert "".join(p.delta for p in pieces) == pieces[-1].text == text
    assert ticks > 1


def test_simple_chat_engine_with_memos_memory(store: MemOS, facts: tuple[str, str]) -> None:
    llm = MemOSLLM(mos=store, user_id="maya", max_new_tokens=4)
    memory = MemOSMemory.from_defaults(mos=store, user_id="maya", session_id="s1")
    engine = SimpleChatEngine.from_defaults(llm=llm, memory=memory, system_prompt="Be brief.")

    first = engine.chat("I live in Porto.")
    second = asyncio.run(engine.achat(QUESTION))
    streamed = engine.stream_chat("Where do I live?")
    streamed_text = "".join(streamed.response_gen)

    history = memory.get_all()
    assert [m.role.value for m in history] == ["user", "assistant"] * 3
    assert history[1].content == first.response and history[3].content == second.response
    assert history[5].content == streamed_text.strip()  # llama-index strips streamed text
    porto = [c.id for c in store.list(user_id="maya") if "I live in Porto." in c.text]
    assert porto  # MemOSMemory wrote the turn through
    # the next answer retrieves it (its own memory, made by the engine's memory)
    trace = llm.chat([user("Where do I live?")]).additional_kwargs
    assert set(porto) & set(trace["memory_ids"])
    assert facts[1] not in trace["memory_ids"]


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda m: MemOSLLM(mos=m), "user_id"),
        (lambda m: MemOSLLM(mos=m, user_id=""), "user_id"),
        (lambda m: MemOSLLM(mos="./data", user_id="u"), "mos="),
        (lambda m: MemOSLLM(mos=m, user_id="u", k=0), "k"),
        (lambda m: MemOSLLM(mos=m, user_id="u", max_new_tokens=0), "max_new_tokens"),
    ],
)
def test_bad_construction_is_refused(shared_mos: MemOS, build: Any, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        build(shared_mos)


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([], "empty"),
        ([user("")], "no text"),
        ([user("   ")], "no text"),
        ([user("hi"), ChatMessage(role="assistant", content="hello")], "last message"),
        ([ChatMessage(role="tool", content="42"), user("hi")], "tool"),
        ("hello", "list of ChatMessage"),
        ([{"role": "user", "content": "hi"}], "ChatMessage"),
    ],
)
def test_bad_messages_are_refused(shared_mos: MemOS, messages: Any, match: str) -> None:
    llm = MemOSLLM(mos=shared_mos, user_id="u")
    with pytest.raises(InvalidInputError, match=match):
        llm.chat(messages)
    with pytest.raises(InvalidInputError, match=match):
        llm.stream_chat(messages)  # refused at the call, not at the first piece
    with pytest.raises(InvalidInputError, match=match):
        asyncio.run(llm.achat(messages))


def test_bad_prompt_is_refused(shared_mos: MemOS) -> None:
    llm = MemOSLLM(mos=shared_mos, user_id="u")
    with pytest.raises(InvalidInputError, match="no text"):
        llm.complete("")
    with pytest.raises(InvalidInputError, match="prompt must be a str"):
        llm.complete(None)  # type: ignore[arg-type]


@pytest.mark.slow
def test_smollm2_answers_from_memory(open_mos: Callable[..., MemOS]) -> None:
    from memos_core.scheduler import SchedulerConfig

    mos = open_mos()
    mos.attach_model(LocalModel.default())
    mos.add(CAT, user_id="maya", type="fact")
    mos.add(OTHER, user_id="tom", type="fact")
    mos.search(QUESTION, user_id="maya")  # an access: heat for the scheduler
    mos.schedule(config=SchedulerConfig.preset("eager"))
    llm = MemOSLLM(mos=mos, user_id="maya", max_new_tokens=24)

    response = llm.chat([user(QUESTION)])

    assert "pastel" in response.message.content.lower()
    extra = response.additional_kwargs
    assert extra["kv_prefix"] and list(extra["memory_tiers"].values()) == ["activation"]
