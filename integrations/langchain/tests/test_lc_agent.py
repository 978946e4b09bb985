"""End to end: ``create_agent`` with the store, the checkpointer, the middleware and the tools.

A scripted tool-calling model stands in for the LLM; everything else is real. The tests
check what the *model was sent*: a fact stored in one thread reaches the model in another
thread of the same user, never another user's, stops after it is forgotten, and survives
closing and reopening the data directory. Each scenario runs with ``invoke`` and ``ainvoke``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.tools import ToolRuntime
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.tools import tool
from lc_fakes import ScriptedChatModel, scripted, tool_call
from memos_core import MemOS

from langchain_memos import (
    MemOSCheckpointer,
    MemOSMiddleware,
    MemOSStore,
    MissingUserError,
    create_memory_tools,
)


@dataclass
class UserContext:
    user_id: str


@tool
def save_preference(topic: str, preference: str, runtime: ToolRuntime[UserContext, Any]) -> str:
    """Save one of the user's preferences in the agent's store."""
    runtime.store.put((runtime.context.user_id, "preferences"), topic, {"text": preference})
    return f"saved {topic}"


class Memory:
    """One data directory opened as the agent's whole memory (what an app would hold)."""

    def __init__(self, mos: MemOS) -> None:
        self.mos = mos
        self.checkpointer = MemOSCheckpointer(mos)
        self.store = MemOSStore(mos, user_label=0)

    def agent(self, model: ScriptedChatModel) -> Any:
        return create_agent(
            model,
            tools=[save_preference, *create_memory_tools(self.mos)],
            system_prompt="You are a helpful assistant.",
            middleware=[MemOSMiddleware(self.mos, k=10)],  # every relevant memory fits
            context_schema=UserContext,
            checkpointer=self.checkpointer,
            store=self.store,
        )

    def close(self) -> None:
        self.checkpointer.close()
        self.mos.close()


def _turn(memory: Memory, mode: str, user: str, thread: str, text: str,
          *replies: AIMessage | str) -> ScriptedChatModel:
    """One user turn on a fresh scripted model; returns the model (its ``calls``)."""
    model = scripted(*replies)
    agent = memory.agent(model)
    args = ({"messages": [HumanMessage(text)]}, {"configurable": {"thread_id": thread}})
    if mode == "sync":
        agent.invoke(*args, context=UserContext(user))
    else:
        asyncio.run(agent.ainvoke(*args, context=UserContext(user)))
    return model


def _system_prompt(model: ScriptedChatModel) -> str:
    first = model.calls[0][0]
    assert isinstance(first, SystemMessage)
    return first.text


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_cross_thread_recall_isolation_forgetting_and_restart(
    make_mos: Callable[..., MemOS], mode: str
) -> None:
    memory = Memory(make_mos("agent"))
    # Thread 1: the user states a fact (recorded by the middleware); then the model stores
    # it with the memory tool and a preference in the store (a memory-tool turn: the model
    # handled memory itself, so the middleware records nothing of it).
    _turn(memory, mode, "alice", "t1", "I'm allergic to peanuts.", "Noted.")
    _turn(memory, mode, "alice", "t1", "Keep that in mind, and that I like window seats.",
          tool_call("store_memory", text="Alice is allergic to peanuts", memory_type="fact"),
          tool_call("save_preference", "call-2", topic="seat", preference="Alice prefers window seats"),
          "Got it, I'll remember both.")
    assert memory.store.get(("alice", "preferences"), "seat").value == {"text": "Alice prefers window seats"}

    # Thread 2, same user: both reach the model through the system message.
    model = _turn(memory, mode, "alice", "t2", "Book me a snack for my flight.", "Peanut-free, by the window.")
    prompt = _system_prompt(model)
    assert prompt.startswith("You are a helpful assistant.")
    assert "Alice is allergic to peanuts" in prompt and "Alice prefers window seats" in prompt
    # ... without being saved into thread 2's state.
    state = memory.agent(scripted()).get_state({"configurable": {"thread_id": "t2"}})
    assert [type(m) for m in state.values["messages"]] == [HumanMessage, AIMessage]

    # Another user's thread never sees Alice's memories.
    model = _turn(memory, mode, "bob", "t3", "Book me a snack for my flight.", "Sure.")
    assert "peanut" not in _system_prompt(model).lower()

    # The user's statement was recorded as an episodic memory of its thread; the answer
    # stays in the thread (the checkpointer), out of searched memory.
    episodes = memory.mos.list(user_id="alice", session_id="t1", types=["episode"])
    assert [c.text for c in episodes] == ["user: I'm allergic to peanuts."]

    # Forget it: the model calls forget_memory with the ids recall showed it (the fact and
    # the episode of thread 1 that mentions it). Gone from the next recall.
    shown = [c for c in memory.mos.list(user_id="alice") if "peanuts" in c.text and c.id in prompt]
    assert len(shown) == 2
    forget_calls = AIMessage(content="", tool_calls=[
        {"name": "forget_memory", "args": {"memory_id": c.id}, "id": f"f{i}", "type": "tool_call"}
        for i, c in enumerate(shown)
    ])
    _turn(memory, mode, "alice", "t4", "Forget my allergy.", forget_calls, "Forgotten.")
    model = _turn(memory, mode, "alice", "t5", "Any food I should avoid?", "None that I know of.")
    assert "allergic to peanuts" not in _system_prompt(model)
    assert all("peanuts" not in h.text for h in memory.mos.search("peanuts", user_id="alice", k=20))

    # Restart: a new MemOS on the same directory keeps threads, store items and memories.
    memory.close()
    memory = Memory(make_mos("agent"))
    state = memory.agent(scripted()).get_state({"configurable": {"thread_id": "t1"}})
    assert state.values["messages"][-1].content == "Got it, I'll remember both."
    model = _turn(memory, mode, "alice", "t1", "Which seat do I like?", "Window.")
    assert "Alice prefers window seats" in _system_prompt(model)
    # thread 1 resumes; its first message was the forgotten episode's source, so it is redacted
    assert [m.content for m in model.calls[0] if isinstance(m, HumanMessage)] == [
        "[forgotten]", "Keep that in mind, and that I like window seats.", "Which seat do I like?",
    ]
    memory.close()


def test_current_thread_episodes_are_not_injected_twice(mos: MemOS) -> None:
    memory = Memory(mos)
    _turn(memory, "sync", "alice", "t1", "My dog is called Rex.", "Nice name!")
    model = _turn(memory, "sync", "alice", "t1", "What is my dog called?", "Rex.")
    assert "Rex" not in _system_prompt(model)  # already in the conversation itself
    model = _turn(memory, "sync", "alice", "t2", "What is my dog called?", "Rex.")
    assert "user: My dog is called Rex." in _system_prompt(model)


def test_middleware_without_a_user_says_how_to_give_one(mos: MemOS) -> None:
    agent = create_agent(scripted("hi"), middleware=[MemOSMiddleware(mos)])
    with pytest.raises(MissingUserError, match="context="):
        agent.invoke({"messages": [HumanMessage("hello")]})


def test_a_replay_says_how_to_pass_the_user_and_both_ways_work(mos: MemOS) -> None:
    """LangGraph's time travel, ``invoke(None, snapshot.config)``: the snapshot's config
    names only the thread and the checkpoint, so the middleware does not know the user
    (it never reads one from stored data). Its error says how to pass the user on a replay
    or fork, and both ways it names work (docs/langchain.md, "Replaying and forking")."""
    model = scripted("Noted.", "Pasta.", "Risotto.", "A salad.")
    agent = create_agent(model, middleware=[MemOSMiddleware(mos)], checkpointer=MemOSCheckpointer(mos))
    config = {"configurable": {"thread_id": "t1", "user_id": "alice"}}
    agent.invoke({"messages": [HumanMessage("I'm vegetarian.")]}, config)
    agent.invoke({"messages": [HumanMessage("What should I cook tonight?")]}, config)
    past = [s for s in agent.get_state_history(config) if s.next == ("model",)][0]

    with pytest.raises(MissingUserError) as raised:
        agent.invoke(None, past.config)
    for advice in ("Replaying or forking from a checkpoint", "snapshot.config['configurable']",
                   "'user_id': 'alice'", "context={'user_id': 'alice'}"):
        assert advice in str(raised.value)
    again = {"configurable": {**past.config["configurable"], "user_id": "alice"}}
    assert agent.invoke(None, again)["messages"][-1].content == "Risotto."
    assert agent.invoke(None, past.config, context={"user_id": "alice"})["messages"][-1].content == "A salad."
    assert [c.text for c in mos.list(user_id="alice")] == ["user: I'm vegetarian."]  # once


def test_user_from_configurable_and_memory_tools_from_the_middleware(mos: MemOS) -> None:
    mos.add("Carol speaks Portuguese", user_id="carol")
    model = scripted(tool_call("search_memories", query="languages"), "Portuguese.")
    agent = create_agent(model, middleware=[MemOSMiddleware(mos, memory_tools=True, k=1)])
    out = agent.invoke({"messages": [HumanMessage("Which languages do I speak?")]},
                       {"configurable": {"user_id": "carol"}})
    assert "Carol speaks Portuguese" in out["messages"][2].content  # the tool's answer
    assert "Carol speaks Portuguese" in _system_prompt(model)


# ---------------------------------------------------------------- recall is not polluted


BIKE_FACT = "I have a green Brompton bike."
BIKE_QUESTION = "What bike do I have?"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_repeated_question_still_recalls_the_fact_first(mos: MemOS, mode: str) -> None:
    memory = Memory(mos)
    _turn(memory, mode, "dana", "t1", BIKE_FACT, "Nice bike!")
    _turn(memory, mode, "dana", "t2", BIKE_QUESTION, "A green Brompton.")
    _turn(memory, mode, "dana", "t3", BIKE_QUESTION, "A green Brompton.")
    model = _turn(memory, mode, "dana", "t4", BIKE_QUESTION, "A green Brompton.")

    recalled = [line for line in _system_prompt(model).splitlines() if line.startswith("- ")]
    assert recalled and recalled[0].startswith(f"- user: {BIKE_FACT}"), recalled
    assert not any(BIKE_QUESTION in line for line in recalled)
    # the questions and answers are in their threads, not in searched memory
    assert [c.text for c in mos.list(user_id="dana")] == [f"user: {BIKE_FACT}"]
    state = memory.agent(scripted()).get_state({"configurable": {"thread_id": "t2"}})
    assert [m.content for m in state.values["messages"]] == [BIKE_QUESTION, "A green Brompton."]


def test_questions_recorded_on_request_still_rank_below_statements(mos: MemOS) -> None:
    chatty = MemOSMiddleware(mos, remember_roles=("user", "assistant"), remember_questions=True)
    agent = create_agent(scripted("Nice bike!", "A green Brompton.", "A green Brompton.", "ok"),
                         middleware=[chatty])
    for thread, text in [("t1", BIKE_FACT), ("t2", BIKE_QUESTION), ("t3", BIKE_QUESTION)]:
        agent.invoke({"messages": [HumanMessage(text)]},
                     {"configurable": {"thread_id": thread, "user_id": "erin"}})
    assert len(mos.list(user_id="erin")) == 6  # everything was recorded
    model = scripted("A green Brompton.")
    create_agent(model, middleware=[chatty]).invoke(
        {"messages": [HumanMessage(BIKE_QUESTION)]},
        {"configurable": {"thread_id": "t4", "user_id": "erin"}})
    recalled = [line for line in _system_prompt(model).splitlines() if line.startswith("- ")]
    assert recalled[0].startswith(f"- user: {BIKE_FACT}"), recalled
    with pytest.raises(ValueError, match="remember_roles"):
        MemOSMiddleware(mos, remember_roles=("tool",))
