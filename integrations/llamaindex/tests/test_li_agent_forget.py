"""A forget during an agent run: the run's own state loses the memory too.

A running agent keeps its tool calls, tool results and reasoning in the workflow
``Context`` (``FunctionAgent``: ``ctx.store["scratchpad"]``; ``ReActAgent``:
``"current_reasoning"``), sends them with every model call of the run and writes them to
memory when the run ends. ``forget_memory``, handed the ``Context`` by the agent, redacts
them after the forget; and the chat stores redact what is written in the minute after a
forget of their user (what a run held when the forget came from elsewhere). Real MemOS;
the models are llama-index's scripted mocks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from llama_index.core.agent.workflow import FunctionAgent, ReActAgent
from llama_index.core.base.llms.types import ToolCallBlock
from llama_index.core.llms import ChatMessage
from llama_index.core.llms.mock import MockFunctionCallingLLM
from memos_core import MemOS
from memos_core.integration import RecentForgets

from llama_index.memory.memos import MemOSAsyncChatStore, MemOSMemory, memos_tools

from .test_li_forget import files_holding

pytestmark = [
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20"),
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211"),
    pytest.mark.filterwarnings("ignore:is_running called from within a step:DeprecationWarning"),
]

SECRET = "My locker code is MARMOT9920"
MARKER = "MARMOT9920"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

Reply = ChatMessage | str | Callable[[Sequence[ChatMessage]], ChatMessage | str]


class Script:
    """A model's replies, in order (a callable reads the messages it is sent); every call's
    messages are kept in ``calls``."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.calls: list[str] = []

    def __call__(self, messages: Sequence[ChatMessage], **_: Any) -> ChatMessage:
        self.calls.append(json.dumps([m.model_dump(mode="json") for m in messages]))
        reply = self.replies.pop(0)
        if callable(reply):
            reply = reply(messages)
        return reply if isinstance(reply, ChatMessage) else ChatMessage(role="assistant",
                                                                        content=reply)


def tool_call(name: str, call_id: str, **kwargs: Any) -> ChatMessage:
    return ChatMessage(role="assistant", blocks=[
        ToolCallBlock(tool_call_id=call_id, tool_name=name, tool_kwargs=kwargs)])


def react_action(name: str, args: dict[str, Any]) -> str:
    return f"Thought: I need a tool.\nAction: {name}\nAction Input: {json.dumps(args)}"


def last_id(messages: Sequence[ChatMessage]) -> str:
    """The last memory id in the messages (a search result, a store reply)."""
    return re.findall(UUID, json.dumps([m.model_dump(mode="json") for m in messages]))[-1]


def memory(mos: MemOS, **kwargs: Any) -> MemOSMemory:
    return MemOSMemory.from_defaults(mos=mos, user_id="dana", session_id="s1", **kwargs)


async def run_function_agent(mos: MemOS, message: str, script: Script) -> str:
    agent = FunctionAgent(tools=memos_tools(mos, user_id="dana"),
                          llm=MockFunctionCallingLLM(response_generator=script))
    return str(await agent.run(user_msg=message, memory=memory(mos)))


async def test_function_agent_run_forgets_its_own_copies(mos: MemOS) -> None:
    await run_function_agent(mos, SECRET, Script("Noted."))
    run = Script(tool_call("search_memories", "c1", query="locker code"),
                 lambda ms: tool_call("forget_memory", "c2", memory_id=last_id(ms)),
                 "Done, forgotten.")

    await run_function_agent(mos, "Please forget my locker code.", run)

    assert MARKER in run.calls[1]  # the search result, before the forget
    assert MARKER not in run.calls[2]  # the model call after it
    assert files_holding(mos.data_dir, MARKER) == []  # the run wrote its state back redacted
    history = [m.content for m in await memory(mos).aget_all()]
    assert history[0] == "[forgotten]" and any(
        re.fullmatch(rf"\[{UUID}\] \[forgotten\]", c or "") for c in history)
    later = Script("A towel.")
    await run_function_agent(mos, "What should I pack for the gym?", later)
    assert MARKER not in later.calls[0]


async def test_store_update_and_forget_in_one_run(mos: MemOS) -> None:
    """The tool calls' arguments hold the old and the new text: the forget's redactor knows
    what the memory said in every version."""
    old, new = "Dana's gym locker code is MARMOT9920", "Dana's gym locker code is OTTER5531"
    run = Script(tool_call("store_memory", "a1", text=old),
                 lambda ms: tool_call("update_memory", "a2", memory_id=last_id(ms), text=new),
                 lambda ms: tool_call("forget_memory", "a3", memory_id=last_id(ms)),
                 "All done.")

    await run_function_agent(mos, "Store my locker code, fix it, then drop it.", run)

    assert "MARMOT9920" in run.calls[2] and "OTTER5531" in run.calls[2]
    assert "MARMOT9920" not in run.calls[3] and "OTTER5531" not in run.calls[3]
    assert files_holding(mos.data_dir, "MARMOT9920") == []
    assert files_holding(mos.data_dir, "OTTER5531") == []


async def test_react_agent_run_forgets_its_own_copies(mos: MemOS) -> None:
    async def run(message: str, script: Script) -> None:
        agent = ReActAgent(tools=memos_tools(mos, user_id="dana"), streaming=False,
                           llm=MockFunctionCallingLLM(response_generator=script))
        await agent.run(user_msg=message, memory=memory(mos, insert_method="user"))

    await run(SECRET, Script("Thought: ok.\nAnswer: Noted."))
    forget = Script(react_action("search_memories", {"query": "locker code"}),
                    lambda ms: react_action("forget_memory", {"memory_id": last_id(ms)}),
                    "Thought: done.\nAnswer: Forgotten.")

    await run("Please forget my locker code.", forget)

    assert MARKER in forget.calls[1] and MARKER not in forget.calls[2]
    assert files_holding(mos.data_dir, MARKER) == []
    later = Script("Thought: ok.\nAnswer: A towel.")
    await run("What should I pack for the gym?", later)
    assert MARKER not in later.calls[0]


async def test_forget_tool_outside_a_run_needs_no_context(mos: MemOS) -> None:
    tool = {t.metadata.name: t for t in memos_tools(mos, user_id="dana")}["forget_memory"]
    assert tool.requires_context
    assert "ctx" not in tool.metadata.get_parameters_dict()["properties"]
    first, second = (mos.add(f"{SECRET}{i}", user_id="dana").id for i in range(2))
    assert first in tool.call(memory_id=first).content
    assert second in (await tool.acall(memory_id=second)).content


@pytest.mark.parametrize("then_close", [False, True])
async def test_a_forget_tool_call_cancelled_midway_still_redacts_the_run_state(
        mos: MemOS, then_close: bool) -> None:
    """``forget_memory`` in a run forgets in a worker thread, then redacts the run's state
    on the loop. A call cancelled while the forget ran (a run cancelled, a tool timeout)
    used to skip that redaction: the forget completed, and the run kept the text to send
    and store again. The two are one unit now, which runs to its end after its caller
    stopped waiting -- also when the app closes the store then (``then_close``): close
    waited for the forget only, and the unit's check that the memory was forgotten was
    refused as a new call, so the redaction was skipped."""
    import asyncio
    import threading

    from llama_index.core.workflow import Context

    cube = mos.add(SECRET, user_id="dana")
    tool = {t.metadata.name: t for t in memos_tools(mos, user_id="dana")}["forget_memory"]
    ctx = Context(FunctionAgent(tools=[tool], llm=MockFunctionCallingLLM()))
    await ctx.store.set("current_tool_calls", [f"[{cube.id}] {SECRET}"])
    in_hook, release = threading.Event(), threading.Event()

    def slow_hook(_: Any) -> list[Any]:  # the forget is under way
        in_hook.set()
        release.wait(30)
        return []

    mos.on_forget(slow_hook)
    call = asyncio.ensure_future(tool.acall(memory_id=cube.id, ctx=ctx))
    assert await asyncio.to_thread(in_hook.wait, 30)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call  # the caller stops waiting at once
    closing = asyncio.ensure_future(mos.aclose()) if then_close else None
    while then_close and not mos._calls.closing:  # close() has begun, and waits
        await asyncio.sleep(0.01)
    release.set()
    await asyncio.gather(*(asyncio.all_tasks() - {asyncio.current_task()}))  # the unit
    assert closing is None or mos.closed

    assert await ctx.store.get("current_tool_calls") == [f"[{cube.id}] [forgotten]"]
    assert files_holding(mos.data_dir, MARKER) == []


async def test_messages_written_just_after_a_forget_are_redacted(
        mos: MemOS, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a run held when the user's memory was forgotten elsewhere (no tool, no
    Context): its tool results and answers reach the log without the text, the user's own
    messages (new input) as they are; another user's forget leaves them alone."""
    dana = memory(mos)
    queue = MemOSAsyncChatStore(mos=mos, user_id="dana")
    [cube] = mos.add([{"role": "user", "content": SECRET, "id": "m1"}], user_id="dana")
    mos.forget(mos.add("Erin's locker code is MARMOT9920", user_id="erin").id, user_id="erin")
    await queue.add_messages("k", [ChatMessage(role="assistant", content=f"{SECRET}.")])
    assert [m.content for m in await queue.get_messages("k")] == [f"{SECRET}."]

    mos.forget(cube.id, user_id="dana")
    late = [ChatMessage(role="tool", content=f"[{cube.id}] user: {SECRET}"),
            ChatMessage(role="assistant", content=f"Your code: {SECRET}."),
            ChatMessage(role="user", content=SECRET)]
    await dana.aput_messages(late)
    await queue.add_messages("k", late[1:2])

    assert [m.content for m in await dana.aget_all()] == [
        f"[{cube.id}] [forgotten]", "Your code: [forgotten].", SECRET]
    assert [m.content for m in await queue.get_messages("k")][1] == "Your code: [forgotten]."
    monkeypatch.setattr(RecentForgets, "window_s", 0.0)  # the minute is over
    await queue.add_messages("k", late[1:2])
    assert [m.content for m in await queue.get_messages("k")][2] == f"Your code: {SECRET}."


async def test_a_forget_never_redacts_a_messages_structure_nor_is_pushed_out(
        mos: MemOS) -> None:
    """Another user's memory whose whole text is "assistant" turned, for a store without a
    user, every assistant message's role into "[forgotten]" (the key's history could not be
    read again); and 256 forgets of another user pushed a forget out of the window."""
    shared = MemOSAsyncChatStore(mos=mos)  # no user: every user's forget reaches it
    await shared.add_messages("k", [ChatMessage(role="user", content="hi")])
    role = mos.add("assistant", user_id="bob")
    mos.forget(role.id, user_id="bob")
    await shared.add_messages("k", [ChatMessage(role="assistant", content="At 3pm.")])
    assert [(m.role.value, m.content) for m in await shared.get_messages("k")] == [
        ("user", "hi"), ("assistant", "At 3pm.")]

    queue = MemOSAsyncChatStore(mos=mos, user_id="dana")
    [cube] = mos.add([{"role": "user", "content": SECRET, "id": "m1"}], user_id="dana")
    mos.forget(cube.id, user_id="dana")
    burst = mos.add_many([f"Bob's note {i}" for i in range(260)], user_id="bob")
    mos.forget_many([c.id for c in burst], user_id="bob")
    await queue.add_messages("q", [ChatMessage(role="assistant", content=f"Noted: {SECRET}.")])
    assert [m.content for m in await queue.get_messages("q")] == ["Noted: [forgotten]."]
