"""Memory tools: called directly (sync and async) and by a FunctionAgent with scripted tool
calls (MockFunctionCallingLLM); the user is bound when the tools are built."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ToolCallBlock
from llama_index.core.llms import ChatMessage
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.tools import FunctionTool
from memos_core import AccessDeniedError, InvalidInputError, MemOS, MemoryNotFoundError

from llama_index.memory.memos import TOOL_NAMES, MemOSMemory, memos_tools

# FunctionAgent's workflow inspects pydantic objects with inspect.getmembers, which trips
# pydantic's own deprecation warnings (llama-index's, not ours).
pytestmark = [
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20"),
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211"),
]

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def by_name(tools: Sequence[FunctionTool]) -> dict[str, FunctionTool]:
    return {t.metadata.name: t for t in tools}


def call(tool: FunctionTool, use_async: bool, **kwargs: Any) -> str:
    out = asyncio.run(tool.acall(**kwargs)) if use_async else tool.call(**kwargs)
    return out.content


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_store_search_update_forget(mos: MemOS, use_async: bool) -> None:
    tools = by_name(memos_tools(mos, user_id="alice", agent_id="helper", session_id="s1"))
    stored = call(tools["store_memory"], use_async, text="Alice's dog is called Rex.",
                  memory_type="fact", tags=["pets"])
    memory_id = UUID.search(stored).group(0)
    cube = mos.get(memory_id, user_id="alice")
    assert (cube.type.value, cube.tags, cube.agent_id, cube.session_id) == (
        "fact", ("pets",), "helper", "s1")

    found = call(tools["search_memories"], use_async, query="What is the dog's name?")
    assert f"[{memory_id}] Alice's dog is called Rex." in found

    updated = call(tools["update_memory"], use_async, memory_id=memory_id,
                   text="Alice's dog is called Max.")
    assert "version 2" in updated
    assert "Max" in call(tools["search_memories"], use_async, query="dog name")

    assert memory_id in call(tools["forget_memory"], use_async, memory_id=memory_id)
    assert call(tools["search_memories"], use_async, query="dog name") == "No memories match."


def test_user_comes_from_the_builder_not_the_model(mos: MemOS) -> None:
    alice = by_name(memos_tools(mos, user_id="alice"))
    bob = by_name(memos_tools(mos, user_id="bob"))
    for tool in alice.values():
        assert "user_id" not in tool.metadata.get_parameters_dict()["properties"]
    stored = alice["store_memory"].call(text="Alice's PIN is 1234.").content
    memory_id = UUID.search(stored).group(0)

    assert "1234" not in bob["search_memories"].call(query="PIN").content
    with pytest.raises(InvalidInputError, match="search_memories has no argument 'user_id'"):
        bob["search_memories"].call(query="PIN", user_id="alice")
    with pytest.raises(AccessDeniedError, match="may not change"):
        bob["update_memory"].call(memory_id=memory_id, text="stolen")
    with pytest.raises(AccessDeniedError):
        bob["forget_memory"].call(memory_id=memory_id)
    assert mos.get(memory_id, user_id="alice").text == "Alice's PIN is 1234."


@pytest.mark.skipif(not hasattr(MemOS, "compress"), reason="memos-core has no MemOS.compress yet")
@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_compress(mos: MemOS, use_async: bool) -> None:
    tools = by_name(memos_tools(mos, user_id="alice"))
    ids = [UUID.search(tools["store_memory"].call(text=t).content).group(0)
           for t in ("Alice drinks tea at 8.", "Alice drinks tea at 16.")]
    out = call(tools["compress_memories"], use_async, memory_ids=ids,
               summary="Alice drinks tea twice a day.")
    summary_id = UUID.search(out).group(0)
    summary = mos.get(summary_id, user_id="alice")
    assert set(summary.provenance.derived_from) == set(ids)
    assert all(mos.get(i, user_id="alice").state.value == "archived" for i in ids)
    found = tools["search_memories"].call(query="when does Alice drink tea").content
    assert summary_id in found and not any(i in found for i in ids)


@pytest.mark.skipif(not hasattr(MemOS, "compress"), reason="memos-core has no MemOS.compress yet")
def test_forget_reply_names_the_summaries_only_flagged(mos: MemOS) -> None:
    tools = by_name(memos_tools(mos, user_id="alice"))
    ids = [UUID.search(tools["store_memory"].call(text=t).content).group(0)
           for t in ("Alice drinks tea at 8.", "Alice drinks tea at 16.")]
    out = tools["compress_memories"].call(memory_ids=ids, summary="Alice drinks tea at 8 and 16.")
    summary_id = UUID.search(out.content).group(0)

    reply = tools["forget_memory"].call(memory_id=ids[0]).content

    assert reply.startswith(f"Forgot memory {ids[0]}.") and summary_id in reply
    # the summary keeps its text (flagged, not forgotten): the reply tells the model to check
    assert mos.get(summary_id, user_id="alice").text == "Alice drinks tea at 8 and 16."


@pytest.mark.parametrize(("k", "lines"), [(None, 3), (2, 2), ("2", 2), (10**6, 3)],
                         ids=["default", "int", "numeric-str", "above-max_k"])
def test_search_k_is_capped_at_max_k_and_may_come_as_a_str(
        shared_mos: MemOS, user: str, k: object, lines: int) -> None:
    """The model's ``k`` reaches the tool unvalidated (FunctionTool ignores the schema)."""
    tools = by_name(memos_tools(shared_mos, user_id=user, max_k=3))
    for hobby in ("chess", "rowing", "pottery", "birdwatching"):
        tools["store_memory"].call(text=f"The user's hobby is {hobby}.")
    found = tools["search_memories"].call(query="hobby", k=k).content
    assert len(found.splitlines()) == lines


def test_a_null_memory_type_is_the_default_fact(shared_mos: MemOS, user: str) -> None:
    """A model often sends null for an optional argument; FunctionTool passes it as it came."""
    tools = by_name(memos_tools(shared_mos, user_id=user))
    stored = tools["store_memory"].call(text="The user likes green tea.", memory_type=None,
                                        tags=None).content
    cube = shared_mos.get(UUID.search(stored).group(0), user_id=user)
    assert (cube.type.value, cube.tags) == ("fact", ())


TOOL_ERRORS: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("store_memory", {"text": ""}, InvalidInputError, "text is empty"),
    ("store_memory", {"text": "x", "memory_type": "gossip"}, InvalidInputError,
     "type='gossip' is not one of"),
    ("store_memory", {"text": "x", "tags": [""]}, InvalidInputError, "tags must contain"),
    ("search_memories", {"query": "  "}, InvalidInputError, "query is empty"),
    ("search_memories", {"query": "x", "k": 0}, InvalidInputError, "k must be an int"),
    ("search_memories", {"query": "x", "k": "two"}, InvalidInputError, "k must be a whole number"),
    ("update_memory", {"memory_id": "nope", "text": "x"}, MemoryNotFoundError, "No memory with id"),
    ("update_memory", {"memory_id": "00000000-0000-4000-8000-000000000000", "text": "x"},
     MemoryNotFoundError, "No memory with id"),
    ("forget_memory", {"memory_id": "nope"}, MemoryNotFoundError, "No memory with id"),
    ("compress_memories", {"memory_ids": [], "summary": "s"}, InvalidInputError,
     "memory_ids must be a non-empty list"),
    ("compress_memories", {"memory_ids": "abc", "summary": "s"}, InvalidInputError,
     "memory_ids must be a non-empty list"),
]


@pytest.mark.parametrize(("name", "kwargs", "error", "match"), TOOL_ERRORS,
                         ids=[f"{c[0]}-{c[3][:20]}" for c in TOOL_ERRORS])
def test_tool_errors_say_what_to_fix(shared_mos: MemOS, user: str, name: str,
                                     kwargs: dict[str, Any], error: type[Exception],
                                     match: str) -> None:
    tools = by_name(memos_tools(shared_mos, user_id=user))
    if name not in tools:
        pytest.skip("memos-core has no MemOS.compress yet")
    with pytest.raises(error, match=match):
        tools[name].call(**kwargs)
    assert shared_mos.list(user_id=user) == []


#: (tool, arguments from the model, what the error says): a call that does not fit the
#: tool's arguments gets the documented "<ErrorClass>: <what to fix>" text, not Python's
#: TypeError about a local function.
UNFIT_CALLS: list[tuple[str, dict[str, Any], str]] = [
    ("search_memories", {"query": "x", "user_id": "bob"},
     r"^InvalidInputError: search_memories has no argument 'user_id'; its arguments are "
     r"query, k\. The user, agent and session are set by the application"),
    ("forget_memory", {"memory_id": "x", "agent_id": "a"},
     r"^InvalidInputError: forget_memory has no argument 'agent_id'; its arguments are "
     r"memory_id\. The user"),
    ("store_memory", {"text": "x", "importance": 3},
     r"^InvalidInputError: store_memory has no argument 'importance'; its arguments are "
     r"text, memory_type, tags\.$"),
    ("update_memory", {"text": "x"},
     r"^InvalidInputError: update_memory needs the argument 'memory_id'; its arguments are "
     r"memory_id, text\.$"),
]


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize(("name", "kwargs", "match"), UNFIT_CALLS,
                         ids=[f"{c[0]}-{next(iter(c[1]))}" for c in UNFIT_CALLS])
def test_a_call_that_does_not_fit_the_tool_says_what_to_fix(
        shared_mos: MemOS, user: str, name: str, kwargs: dict[str, Any], match: str,
        use_async: bool) -> None:
    tools = by_name(memos_tools(shared_mos, user_id=user))
    with pytest.raises(InvalidInputError, match=match):
        call(tools[name], use_async, **kwargs)
    assert shared_mos.list(user_id=user) == []


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"user_id": ""}, "user_id must be a non-empty str"),
    ({"mos": None}, "memos_tools needs mos=<memos_core.MemOS>"),
    ({"include": ["store_memory", "teleport"]}, r"include names unknown tools \['teleport'\]"),
    ({"max_k": 0}, "max_k must be an int"),
])
def test_memos_tools_arguments(shared_mos: MemOS, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        memos_tools(**{"mos": shared_mos, "user_id": "alice", **kwargs})


def test_include_selects_tools_in_fixed_order(shared_mos: MemOS) -> None:
    chosen = memos_tools(shared_mos, user_id="a", include=["forget_memory", "store_memory"])
    assert [t.metadata.name for t in chosen] == ["store_memory", "forget_memory"]
    with pytest.warns(DeprecationWarning, match="deprecated"):
        old = memos_tools(shared_mos, user_id="a", include=["search"])
    assert [t.metadata.name for t in old] == ["search_memories"]
    everything = [t.metadata.name for t in memos_tools(shared_mos, user_id="a")]
    assert len(everything) == len(TOOL_NAMES) - (0 if hasattr(MemOS, "compress") else 1)


# -- a FunctionAgent driving the tools ------------------------------------------------------

def scripted(calls: list[tuple[str, dict[str, Any]]], seen: list[list[ChatMessage]]
             ) -> MockFunctionCallingLLM:
    """An LLM that makes ``calls`` (one per turn) and then answers with the tool results."""
    plan = list(calls)

    def respond(messages: Sequence[ChatMessage], **_: Any) -> ChatMessage:
        seen.append(list(messages))
        if plan:
            name, kwargs = plan.pop(0)
            return ChatMessage(role="assistant", blocks=[
                ToolCallBlock(tool_call_id=f"call-{len(plan)}", tool_name=name,
                              tool_kwargs=kwargs)])
        results = [m.content for m in messages if m.role.value == "tool"]
        return ChatMessage(role="assistant", content="Done: " + " | ".join(results))

    return MockFunctionCallingLLM(response_generator=respond)


async def run_agent(mos: MemOS, user: str, session: str, message: str,
                    calls: list[tuple[str, dict[str, Any]]]) -> tuple[str, list[list[ChatMessage]]]:
    seen: list[list[ChatMessage]] = []
    agent = FunctionAgent(tools=memos_tools(mos, user_id=user), llm=scripted(calls, seen),
                          system_prompt="You are a helpful assistant.")
    memory = MemOSMemory.from_defaults(mos=mos, user_id=user, session_id=session,
                                       remember_roles=["user"])
    result = await agent.run(user_msg=message, memory=memory)
    return str(result), seen


async def _agent_story(open_mos: Callable[..., MemOS]) -> None:
    mos = open_mos()
    reply, _ = await run_agent(mos, "alice", "s1", "Please remember that I am vegetarian.",
                               [("store_memory", {"text": "Alice is vegetarian."})])
    assert "Stored memory" in reply
    mos.close()

    mos = open_mos()
    reply, seen = await run_agent(mos, "alice", "s2", "What should I cook tonight?", [])
    prompt = "\n".join(m.content or "" for m in seen[0])
    assert "Alice is vegetarian." in prompt  # recalled into the agent's prompt by MemOSMemory

    _, seen = await run_agent(mos, "bob", "s3", "What should I cook tonight?", [])
    assert "vegetarian" not in "\n".join(m.content or "" for m in seen[0])

    reply, _ = await run_agent(mos, "alice", "s4", "Forget that I am vegetarian.",
                               [("search_memories", {"query": "vegetarian"})])
    memory_id = re.search(rf"\[({UUID.pattern})\] Alice is vegetarian\.", reply).group(1)
    reply, _ = await run_agent(mos, "alice", "s4", "Go ahead.",
                               [("forget_memory", {"memory_id": memory_id})])
    assert f"Forgot memory {memory_id}" in reply

    _, seen = await run_agent(mos, "alice", "s5", "What should I cook tonight?", [])
    assert "Alice is vegetarian." not in "\n".join(m.content or "" for m in seen[0])


async def test_function_agent_async(open_mos: Callable[..., MemOS]) -> None:
    await _agent_story(open_mos)


def test_function_agent_from_sync_code(open_mos: Callable[..., MemOS]) -> None:
    asyncio.run(_agent_story(open_mos))


async def test_agent_sees_tool_errors_as_results(mos: MemOS) -> None:
    reply, _ = await run_agent(mos, "alice", "s1", "Forget memory xyz.",
                               [("forget_memory", {"memory_id": "xyz"})])
    assert "No memory with id 'xyz'" in reply
    reply, _ = await run_agent(mos, "alice", "s1", "Search as bob.",
                               [("search_memories", {"query": "x", "user_id": "bob"})])
    assert "InvalidInputError: search_memories has no argument 'user_id'" in reply


def test_a_cancelled_forget_tool_call_still_forgets(mos: MemOS) -> None:
    """An agent run cancelled (a timeout) while the tool's forget waits for a worker thread:
    the forget still runs (asyncio.to_thread dropped a queued call, and the text stayed)."""
    from memos_core import MemoryDeletedError
    from memos_core.testing.executor import cancel_while_queued, hold_executor

    memory_id = mos.add("Alice's locker code is 4471", user_id="alice").id
    forget = by_name(memos_tools(mos, user_id="alice"))["forget_memory"]

    async def scenario() -> None:
        gate = hold_executor()  # the only worker thread is busy
        call = asyncio.ensure_future(forget.acall(memory_id=memory_id))
        await cancel_while_queued(call, gate)

    asyncio.run(scenario())
    with pytest.raises(MemoryDeletedError):
        mos.get(memory_id, user_id="alice")
