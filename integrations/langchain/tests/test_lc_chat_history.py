"""MemOSChatMessageHistory: exact round-trip, a RunnableWithMessageHistory chain, clear."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory
from memos_core import InvalidInputError, MemOS

from langchain_memos import MemOSChatMessageHistory


def _conversation() -> list:
    return [
        SystemMessage("be brief"),
        HumanMessage("I moved to Porto last month.", id="h1", name="alice"),
        AIMessage("", id="a1", tool_calls=[{"name": "store_memory", "args": {"text": "lives in Porto"},
                                             "id": "call-1", "type": "tool_call"}]),
        ToolMessage("Stored memory 1.", tool_call_id="call-1", id="t1"),
        AIMessage("Noted: Porto!", id="a2", additional_kwargs={"x": [1, 2]}),
    ]


def test_messages_round_trip_exactly_and_are_searchable(mos: MemOS) -> None:
    history = MemOSChatMessageHistory(mos, user_id="alice", session_id="s1")
    history.add_messages(_conversation())
    assert history.messages == _conversation()
    assert MemOSChatMessageHistory(mos, user_id="alice", session_id="s2").messages == []
    assert MemOSChatMessageHistory(mos, user_id="bob", session_id="s1").messages == []
    hits = mos.search("when did she move?", user_id="alice", k=10)
    [hit] = [h for h in hits if h.text == "alice: I moved to Porto last month."]
    assert (hit.memory.type.value, hit.memory.session_id) == ("episode", "s1")


def test_forgetting_a_message_removes_it_from_the_history(mos: MemOS) -> None:
    history = MemOSChatMessageHistory(mos, user_id="alice", session_id="s1")
    history.add_messages(_conversation())
    [cube] = [c for c in mos.list(user_id="alice") if c.text.startswith("alice:")]
    mos.forget(cube.id, user_id="alice")
    assert [m.id for m in history.messages] == [None, "a1", "t1", "a2"]
    history.clear()
    assert history.messages == [] and mos.list(user_id="alice") == []


def test_runnable_with_message_history_sync_and_async(mos: MemOS) -> None:
    import asyncio

    seen: list[int] = []

    def echo(messages: list) -> AIMessage:
        seen.append(len(messages))
        return AIMessage(f"turn {len(seen)}")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # deprecated upstream, still used
        chain = RunnableWithMessageHistory(
            RunnableLambda(echo), lambda sid: MemOSChatMessageHistory(mos, user_id="alice", session_id=sid)
        )
    config = {"configurable": {"session_id": "chat"}}
    chain.invoke([HumanMessage("hi")], config)
    chain.invoke([HumanMessage("again")], config)
    asyncio.run(chain.ainvoke([HumanMessage("async")], config))
    assert seen == [1, 3, 5]
    texts = [m.content for m in MemOSChatMessageHistory(mos, user_id="alice", session_id="chat").messages]
    assert texts == ["hi", "turn 1", "again", "turn 2", "async", "turn 3"]


def test_restart_keeps_the_history(make_mos: Callable[..., MemOS]) -> None:
    mos = make_mos("restart")
    MemOSChatMessageHistory(mos, user_id="alice", session_id="s").add_messages(_conversation())
    mos.close()
    assert MemOSChatMessageHistory(make_mos("restart"), user_id="alice", session_id="s").messages == _conversation()


def test_bad_input(mos: MemOS) -> None:
    history = MemOSChatMessageHistory(mos, user_id="alice", session_id="s")
    with pytest.raises(InvalidInputError, match="not a LangChain BaseMessage"):
        history.add_messages([{"role": "user", "content": "hi"}])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match="JSON"):
        history.add_messages([HumanMessage("hi"), AIMessage("x", additional_kwargs={"f": object()})])
    assert history.messages == []  # the batch stored nothing
    with pytest.raises(InvalidInputError, match="session_id"):
        MemOSChatMessageHistory(mos, user_id="alice", session_id="")
    with pytest.raises(TypeError, match="MemOS"):
        MemOSChatMessageHistory(object(), user_id="a", session_id="s")  # type: ignore[arg-type]
