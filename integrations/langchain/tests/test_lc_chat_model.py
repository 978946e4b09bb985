"""ChatMemOS: a LangChain chat model over MemOS's local model and its memory tiers.

Structural tests run a tiny random Llama attached with ``mos.attach_model`` (fast, greedy,
deterministic; its text is noise). The test marked slow answers a real question with
SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: the machine is shared

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.caches import InMemoryCache
from langchain_core.globals import get_llm_cache, set_llm_cache

from langchain_memos import ChatMemOS, MissingUserError
from langchain_memos.chat_model import _cut_at_stop, _StopCutter

from memos_core import InvalidInputError, MemOS
from memos_core.cube import utcnow
from memos_core.scheduler import SchedulerConfig

EAGER = SchedulerConfig.preset("eager", min_heat_to_promote=0.9, demote_below_heat=0.5)
CAT = "Alice's cat is called Pastel."
QUESTION = "What is the name of Alice's cat?"
ALICE = [CAT, "Alice works as a nurse in Lisbon."]
BOB = ["Bob's cat is called Whiskers.", "Bob plays the trumpet in a brass band."]




@pytest.fixture(scope="module")
def tiny() -> Any:
    from memos_core.runtime import LocalModel

    return LocalModel.tiny(seed=0)


@pytest.fixture
def store(make_mos: Callable[..., MemOS], tiny: Any) -> tuple[MemOS, list[Any], list[Any]]:
    mos = make_mos()
    mos.attach_model(tiny)
    alice = [mos.add(t, user_id="alice", type="fact") for t in ALICE]
    bob = [mos.add(t, user_id="bob", type="fact") for t in BOB]
    return mos, alice, bob


def ids(message: Any) -> set[str]:
    return {m["id"] for m in message.response_metadata["memories"]}


def test_invoke_answers_with_the_users_memories_and_says_which(store: Any) -> None:
    mos, alice, bob = store
    model = ChatMemOS(mos=mos, user_id="alice", max_new_tokens=6)

    before = model.invoke(QUESTION)

    assert isinstance(before, AIMessage) and isinstance(before.content, str)
    meta = before.response_metadata
    assert meta["user_id"] == "alice" and meta["kv_prefix"] is False
    assert alice[0].id in ids(before) and not ids(before) & {c.id for c in bob}
    assert {m["tier"] for m in meta["memories"]} == {"plaintext"}
    assert "plaintext mem" in meta["trace_summary"]
    assert before.usage_metadata["output_tokens"] == meta["trace"]["new_tokens"] > 0

    mos.vault.record_usage([c.id for c in alice], utcnow(), mos.config.heat_half_life_s)
    mos.schedule(config=EAGER)
    after = model.invoke([HumanMessage(QUESTION)])

    assert after.response_metadata["kv_prefix"] is True
    assert {m["id"] for m in after.response_metadata["memories"] if m["tier"] == "activation"} == {
        c.id for c in alice
    }
    assert "KV prefix 2 mem" in after.response_metadata["trace_summary"]
    assert not ids(after) & {c.id for c in bob}


def test_another_users_memory_never_appears(store: Any) -> None:
    mos, alice, bob = store
    model = ChatMemOS(mos=mos, max_new_tokens=4)

    as_bob = model.invoke("What is the name of Alice's cat?", config={"configurable": {"user_id": "bob"}})
    as_alice = model.invoke(QUESTION, config={"configurable": {"user_id": "alice"}})

    assert as_bob.response_metadata["user_id"] == "bob"
    assert ids(as_bob) <= {c.id for c in bob} and not ids(as_bob) & {c.id for c in alice}
    assert ids(as_alice) <= {c.id for c in alice} and alice[0].id in ids(as_alice)
    assert "Pastel" not in str(as_bob.response_metadata["trace"])


def test_user_comes_from_the_running_graphs_config(store: Any) -> None:
    from langgraph.graph import END, START, MessagesState, StateGraph

    mos, _, bob = store
    model = ChatMemOS(mos=mos, max_new_tokens=4)

    def answer(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}  # no config passed here

    graph = StateGraph(MessagesState).add_node("answer", answer)
    graph = graph.add_edge(START, "answer").add_edge("answer", END).compile()
    out = graph.invoke({"messages": [HumanMessage(QUESTION)]}, {"configurable": {"user_id": "bob"}})

    reply = out["messages"][-1]
    assert reply.response_metadata["user_id"] == "bob" and ids(reply) <= {c.id for c in bob}


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_user_comes_from_the_agents_runtime_context(store: Any, mode: str) -> None:
    """create_agent(context_schema=...) passes the user as the run's context, as the
    MissingUserError message tells users to: ChatMemOS reads it there too."""
    import asyncio
    from dataclasses import dataclass

    from langchain.agents import create_agent

    @dataclass
    class User:
        user_id: str

    mos, _, bob = store
    agent = create_agent(ChatMemOS(mos=mos, max_new_tokens=4), [], context_schema=User)
    args = ({"messages": [HumanMessage(QUESTION)]},)
    if mode == "sync":
        out = agent.invoke(*args, context=User("bob"))
    else:
        out = asyncio.run(agent.ainvoke(*args, context=User("bob")))

    reply = out["messages"][-1]
    assert reply.response_metadata["user_id"] == "bob" and ids(reply) <= {c.id for c in bob}


def test_history_reaches_the_model(store: Any) -> None:
    mos, _, _ = store
    model = ChatMemOS(mos=mos, user_id="alice", max_new_tokens=4)

    alone = model.invoke(QUESTION).response_metadata["trace"]["prefill_tokens"]
    with_history = model.invoke(
        [HumanMessage("Hi, I have a question."), AIMessage("Sure, ask."), HumanMessage(QUESTION)]
    ).response_metadata["trace"]["prefill_tokens"]

    assert with_history > alone


def test_stream_chunks_join_to_the_invoke_text(store: Any) -> None:
    mos, alice, _ = store
    model = ChatMemOS(mos=mos, user_id="alice", max_new_tokens=8)

    chunks = list(model.stream(QUESTION))
    answer = model.invoke(QUESTION)

    assert all(isinstance(c, AIMessageChunk) for c in chunks) and len(chunks) > 2
    assert "".join(c.content for c in chunks) == answer.content
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    assert alice[0].id in ids(merged) and merged.response_metadata["finish_reason"] in {"eos", "length"}
    assert merged.usage_metadata["output_tokens"] == answer.usage_metadata["output_tokens"]


def test_stop_sequences_cut_invoke_and_stream_alike(store: Any) -> None:
    mos, _, _ = store
    model = ChatMemOS(mos=mos, user_id="alice", max_new_tokens=8)
    full = model.invoke(QUESTION).content
    assert len(full) > 4
    stop = full[3:5]

    cut = model.invoke(QUESTION, stop=[stop])
    streamed = "".join(c.content for c in model.stream(QUESTION, stop=[stop]))

    assert cut.content == full[: full.find(stop)] == streamed
    assert cut.response_metadata["finish_reason"] == "stop"


@pytest.mark.parametrize(("pieces", "stop"), [
    (["The", " name", " of", " Maya", "'s", " cat"], ["name of Maya"]),  # stop > text so far
    (["The", " name", " of", " Maya", "'s", " cat"], ["Maya's cat is"]),  # never completes
    (["ab", "cd", "ef"], ["bcdefgh", "cde"]),
    (["a"], ["abcdef"]),
    (["x", "y", "z"], None),
])
def test_stop_cutter_streams_what_invoke_would_cut(pieces: list[str], stop: list[str] | None) -> None:
    """With a buffer shorter than the held-back length the cut went negative and let the
    start of a stop sequence out, so the stream missed a stop that invoke honoured."""
    cutter = _StopCutter(stop)
    streamed = "".join(cutter.feed(p) for p in pieces)
    streamed += "" if cutter.stopped else cutter.flush()
    assert streamed == _cut_at_stop("".join(pieces), stop)[0]


def test_a_stop_longer_than_the_first_chunks_cuts_the_stream_too(store: Any) -> None:
    mos, _, _ = store
    model = ChatMemOS(mos=mos, user_id="alice", max_new_tokens=8)
    full = model.invoke(QUESTION).content
    assert len(full) > 6
    for stop in {full[1:n] for n in range(4, len(full))}:  # each starts with the 2nd character
        streamed = "".join(c.content for c in model.stream(QUESTION, stop=[stop]))
        assert streamed == full[: full.find(stop)], stop


async def test_ainvoke_and_astream(store: Any) -> None:
    mos, alice, bob = store
    model = ChatMemOS(mos=mos, max_new_tokens=8)
    config = {"configurable": {"user_id": "alice"}}

    answer = await model.ainvoke(QUESTION, config=config)
    chunks = [c async for c in model.astream(QUESTION, config=config)]

    assert "".join(c.content for c in chunks) == answer.content
    assert alice[0].id in ids(answer) and not ids(answer) & {c.id for c in bob}
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    assert ids(merged) == ids(answer)


@pytest.fixture
def llm_cache() -> Iterator[InMemoryCache]:
    """LangChain's process-wide LLM cache on, as ``set_llm_cache`` turns it on."""
    before = get_llm_cache()
    cache = InMemoryCache()
    set_llm_cache(cache)
    yield cache
    set_llm_cache(before)


def test_the_global_llm_cache_never_serves_another_users_answer(store: Any, llm_cache: Any) -> None:
    """The cache key held the prompt but not the user: Bob got Alice's cached answer."""
    from langgraph.graph import END, START, MessagesState, StateGraph

    mos, alice, bob = store
    as_alice = ChatMemOS(mos=mos, user_id="alice", max_new_tokens=4).invoke(QUESTION)
    as_bob = ChatMemOS(mos=mos, user_id="bob", max_new_tokens=4).invoke(QUESTION)
    assert as_alice.response_metadata["user_id"] == "alice" and alice[0].id in ids(as_alice)
    assert as_bob.response_metadata["user_id"] == "bob" and ids(as_bob) <= {c.id for c in bob}

    model = ChatMemOS(mos=mos, max_new_tokens=4)  # the user from the running graph's config

    def answer(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState).add_node("answer", answer)
    graph = graph.add_edge(START, "answer").add_edge("answer", END).compile()
    for user, theirs in (("alice", alice), ("bob", bob)):
        out = graph.invoke({"messages": [HumanMessage(QUESTION)]}, {"configurable": {"user_id": user}})
        reply = out["messages"][-1]
        assert reply.response_metadata["user_id"] == user and ids(reply) <= {c.id for c in theirs}


def test_the_global_llm_cache_never_serves_a_forgotten_memory(store: Any, llm_cache: Any) -> None:
    mos, alice, _ = store
    model = ChatMemOS(mos=mos, user_id="alice", max_new_tokens=4)
    assert alice[0].id in ids(model.invoke(QUESTION))

    mos.forget(alice[0].id, user_id="alice")

    assert alice[0].id not in ids(model.invoke(QUESTION))


@pytest.mark.parametrize("cache", [True, None, InMemoryCache()])
def test_an_llm_cache_is_refused(store: Any, cache: Any) -> None:
    with pytest.raises(InvalidInputError, match="not supported.*not the user"):
        ChatMemOS(mos=store[0], user_id="alice", cache=cache)
    model = ChatMemOS(mos=store[0], user_id="alice", cache=False)
    assert model.cache is False and ChatMemOS(mos=store[0], user_id="alice").cache is False
    with pytest.raises(ValueError, match="frozen"):  # pydantic's ValidationError
        model.cache = cache


@pytest.mark.parametrize("mos", [None, "./memdata", 3])
def test_a_wrong_mos_is_refused_at_construction(mos: Any) -> None:
    """It was accepted, and the first call failed with an AttributeError."""
    with pytest.raises(InvalidInputError, match="needs a memos_core.MemOS"):
        ChatMemOS(mos=mos, user_id="alice")


@pytest.mark.parametrize("user_id", ["", "   ", 5, "a\x00b"])
def test_an_empty_or_wrong_user_is_refused_at_construction(
        make_mos: Callable[..., MemOS], user_id: Any) -> None:
    """``user_id=""`` was accepted and failed only at the first call (None still means: the
    user of each call)."""
    mos = make_mos()
    with pytest.raises(InvalidInputError, match="user_id"):
        ChatMemOS(mos=mos, user_id=user_id)
    assert ChatMemOS(mos=mos, user_id=None).user_id is None
    assert ChatMemOS(mos=mos, user_id="alice").user_id == "alice"


def test_missing_user_is_a_clear_error(store: Any) -> None:
    mos, _, _ = store
    model = ChatMemOS(mos=mos)

    with pytest.raises(MissingUserError, match="user_id"):
        model.invoke(QUESTION)
    with pytest.raises(MissingUserError):
        list(model.stream(QUESTION))


async def test_missing_user_is_a_clear_error_async(store: Any) -> None:
    model = ChatMemOS(mos=store[0])
    with pytest.raises(MissingUserError):
        await model.ainvoke(QUESTION)


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([], "no messages"),
        ([HumanMessage("")], "no text"),
        ([HumanMessage(QUESTION), AIMessage("an answer")], "last message must be the user's"),
        ([HumanMessage(content=[{"type": "image", "url": "https://example.org/cat.png"}])],
         "non-text content"),
        ([SystemMessage("Be brief.")], "last message must be the user's"),
        ([ToolMessage("42", tool_call_id="t1"), HumanMessage(QUESTION)], "role 'tool'"),
    ],
)
def test_bad_input_is_a_clear_error(store: Any, messages: list[Any], match: str) -> None:
    model = ChatMemOS(mos=store[0], user_id="alice")
    with pytest.raises(InvalidInputError, match=match):
        model.invoke(messages)


def test_text_blocks_are_accepted_and_no_tool_binding(store: Any) -> None:
    model = ChatMemOS(mos=store[0], user_id="alice", max_new_tokens=2)
    answer = model.invoke([HumanMessage(content=[{"type": "text", "text": QUESTION}])])
    assert store[1][0].id in ids(answer)
    assert model._llm_type == "memos"
    with pytest.raises(NotImplementedError, match="does not call tools.*MemOSMiddleware"):
        model.bind_tools([])


def test_token_counts_need_no_download(store: Any) -> None:
    mos, _, _ = store
    model = ChatMemOS(mos=mos, user_id="alice")
    from memos_core.engine import engine_for

    tok = engine_for(mos).model.tokenizer  # the tiny model is attached: its tokenizer counts
    assert model.get_num_tokens("hello world") == len(tok.encode("hello world", add_special_tokens=False)) > 0
    assert model.get_num_tokens_from_messages([HumanMessage("hello"), AIMessage("world")]) > 2


# ---------------------------------------------------------------- SmolLM2


@pytest.mark.slow
def test_smollm2_answers_a_stored_fact(make_mos: Callable[..., MemOS]) -> None:
    from memos_core.runtime import LocalModel

    mos = make_mos("smol")
    mos.attach_model(LocalModel.default())
    fact = mos.add("Maya's cat is a grey cat named Pastel.", user_id="maya", type="fact")
    mos.add("Tom's dog is a black dog named Rex.", user_id="tom", type="fact")
    mos.vault.record_usage([fact.id], utcnow(), mos.config.heat_half_life_s)
    mos.schedule(config=SchedulerConfig.preset("eager"))
    model = ChatMemOS(mos=mos, user_id="maya", max_new_tokens=24)

    answer = model.invoke("What is the name of Maya's cat?")

    assert "Pastel" in answer.content, answer.content
    assert fact.id in ids(answer) and answer.response_metadata["kv_prefix"] is True
    assert "".join(c.content for c in model.stream("What is the name of Maya's cat?")) == answer.content
