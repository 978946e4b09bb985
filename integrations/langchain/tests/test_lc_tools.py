"""create_memory_tools: schemas a model can use, each tool's effect in MemOS, errors."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool
from memos_core import MemOS

from langchain_memos import TOOL_NAMES, MissingUserError, create_memory_tools


def _call(tools: dict[str, BaseTool], name: str, config: dict | None = None, **args: Any) -> ToolMessage:
    return tools[name].invoke({"type": "tool_call", "name": name, "args": args, "id": "c1"}, config)


async def _acall(tools: dict[str, BaseTool], name: str, **args: Any) -> ToolMessage:
    return await tools[name].ainvoke({"type": "tool_call", "name": name, "args": args, "id": "c1"})


@pytest.fixture
def tools(mos: MemOS) -> dict[str, BaseTool]:
    return {t.name: t for t in create_memory_tools(mos, user_id="alice")}


def test_schemas_hide_the_user_and_describe_every_argument(tools: dict[str, BaseTool]) -> None:
    assert tuple(tools) == TOOL_NAMES
    for tool in tools.values():
        schema = tool.tool_call_schema.model_json_schema()
        assert "user_id" not in schema["properties"] and "runtime" not in schema["properties"]
        assert all(p.get("description") for p in schema["properties"].values()), tool.name
        assert len(tool.description) > 40
    assert set(tools["store_memory"].tool_call_schema.model_json_schema()["required"]) == {"text"}


def test_store_search_update_compress_forget(mos: MemOS, tools: dict[str, BaseTool]) -> None:
    stored = _call(tools, "store_memory", text="Alice is vegetarian", memory_type="preference", tags=["diet"],
                   config={"configurable": {"thread_id": "t9"}})
    first = stored.artifact["id"]
    cube = mos.get(first, user_id="alice")
    assert (cube.type.value, cube.tags, cube.session_id) == ("preference", ("diet",), "t9")
    second = _call(tools, "store_memory", text="Alice loves grilled tofu").artifact["id"]

    found = _call(tools, "search_memories", query="what does Alice eat?", k=2)
    assert first in found.content and second in found.content
    assert {a["id"] for a in found.artifact} == {first, second}

    updated = _call(tools, "update_memory", memory_id=first, text="Alice is vegan")
    assert "version 2" in updated.content
    assert mos.get(first, user_id="alice").text == "Alice is vegan"

    summary = _call(tools, "compress_memories", memory_ids=[first, second],
                    summary="Alice is vegan and loves grilled tofu")
    summary_cube = mos.get(summary.artifact["id"], user_id="alice")
    assert summary_cube.type.value == "summary"
    assert set(summary_cube.provenance.derived_from) == {first, second}
    assert mos.get(first, user_id="alice").state.value == "archived"
    assert [a["id"] for a in _call(tools, "search_memories", query="tofu").artifact] == [summary.artifact["id"]]

    _call(tools, "forget_memory", memory_id=summary.artifact["id"])
    assert _call(tools, "search_memories", query="tofu").content == "No memories found."


def test_forget_tells_the_model_which_summaries_may_still_repeat_it(
        mos: MemOS, tools: dict[str, BaseTool]) -> None:
    pin = _call(tools, "store_memory", text="Alice's card PIN is 4821").artifact["id"]
    chess = _call(tools, "store_memory", text="Alice plays chess on Sundays").artifact["id"]
    summary = _call(tools, "compress_memories", memory_ids=[pin, chess],
                    summary="Alice: card PIN 4821; chess on Sundays.").artifact["id"]
    reply = _call(tools, "forget_memory", memory_id=pin).content
    assert reply.startswith(f"Forgot memory {pin}.")
    assert summary in reply and "update or forget them" in reply  # flagged, not forgotten
    assert _call(tools, "forget_memory", memory_id=chess).content == f"Forgot memory {chess}." \
        + " Summaries made from it keep their own text, which may repeat what was forgotten: " \
        + f"{summary}. Check them with search_memories and update or forget them if they do."


async def test_async_tools(mos: MemOS, tools: dict[str, BaseTool]) -> None:
    stored = await _acall(tools, "store_memory", text="Alice plays chess on Sundays")
    found = await _acall(tools, "search_memories", query="weekend hobbies")
    assert found.artifact[0]["id"] == stored.artifact["id"]
    await _acall(tools, "forget_memory", memory_id=stored.artifact["id"])
    assert mos.list(user_id="alice") == []


def test_user_comes_from_config_not_from_the_model(mos: MemOS) -> None:
    tools = {t.name: t for t in create_memory_tools(mos)}
    _call(tools, "store_memory", text="Bob likes jazz", config={"configurable": {"user_id": "bob"}})
    assert [c.text for c in mos.list(user_id="bob")] == ["Bob likes jazz"]
    # An argument named like the user is not part of the schema; pydantic drops it.
    _call(tools, "store_memory", text="Carol likes folk", user_id="mallory",
          config={"configurable": {"user_id": "carol"}})
    assert mos.list(user_id="mallory") == []
    with pytest.raises(MissingUserError, match="does not know the user"):
        _call(tools, "search_memories", query="jazz")


@pytest.mark.parametrize(
    ("name", "args", "words"),
    [
        ("update_memory", {"memory_id": "not-an-id", "text": "x"}, "No memory with id"),
        ("forget_memory", {"memory_id": "6f1c2f7e-0000-4000-8000-000000000000"}, "No memory with id"),
        ("store_memory", {"text": "   "}, "empty"),
        ("store_memory", {"text": "x", "memory_type": "gossip"}, "Invalid arguments"),
        ("search_memories", {"query": "x", "k": 0}, "Invalid arguments"),
        ("compress_memories", {"memory_ids": ["only-one"], "summary": "s"}, "Invalid arguments"),
    ],
)
def test_model_mistakes_come_back_as_messages(module_mos: MemOS, name: str,
                                              args: dict[str, Any], words: str) -> None:
    tools = {t.name: t for t in create_memory_tools(module_mos, user_id="mistaken")}
    reply = _call(tools, name, **args)
    assert reply.status == "error" and words in reply.content


def test_other_users_memories_are_out_of_reach(mos: MemOS, tools: dict[str, BaseTool]) -> None:
    secret = mos.add("Bob's PIN is 1234", user_id="bob")
    assert "AccessDeniedError" in _call(tools, "forget_memory", memory_id=secret.id).content
    assert "may not change" in _call(tools, "update_memory", memory_id=secret.id, text="x").content
    assert _call(tools, "search_memories", query="PIN").content == "No memories found."
    assert mos.get(secret.id, user_id="bob").text == "Bob's PIN is 1234"


def test_include_and_bad_arguments(module_mos: MemOS) -> None:
    assert [t.name for t in create_memory_tools(module_mos, include=["search_memories"])] == ["search_memories"]
    with pytest.warns(DeprecationWarning, match="search_memories"):
        old = create_memory_tools(module_mos, include=["search_memory"])
    assert [t.name for t in old] == ["search_memories"]
    with pytest.raises(ValueError, match="Unknown memory tools"):
        create_memory_tools(module_mos, include=["delete_everything"])
    with pytest.raises(ValueError, match="k must be"):
        create_memory_tools(module_mos, k=0)
    with pytest.raises(TypeError, match="MemOS"):
        create_memory_tools(None)  # type: ignore[arg-type]


def test_forget_outside_a_graph_answers_as_before(mos: MemOS, tools: dict[str, BaseTool]) -> None:
    """Called directly (no graph state to redact), forget_memory answers with its text."""
    first = _call(tools, "store_memory", text="Alice plays chess").artifact["id"]
    assert tools["forget_memory"].invoke({"memory_id": first}) == f"Forgot memory {first}."
    second = _call(tools, "store_memory", text="Alice plays go").artifact["id"]
    reply = _call(tools, "forget_memory", memory_id=second)
    assert (reply.content, reply.artifact["memory_id"]) == (f"Forgot memory {second}.", second)


def test_search_caps_k_at_max_k(mos: MemOS) -> None:
    """A model asking for more memories than allowed gets the most allowed, not a
    validation error (as the LlamaIndex tools do)."""
    for n in range(4):
        mos.add(f"Alice's hobby number {n} is chess variant {n}", user_id="alice")
    tools = {t.name: t for t in create_memory_tools(mos, user_id="alice", max_k=3)}
    reply = _call(tools, "search_memories", query="hobby", k=100)
    assert reply.status == "success" and len(reply.artifact) == 3
    default = {t.name: t for t in create_memory_tools(mos, user_id="alice")}
    assert len(_call(default, "search_memories", query="hobby", k=500).artifact) == 4
    with pytest.raises(ValueError, match="max_k"):
        create_memory_tools(mos, max_k=0)
    few = {t.name: t for t in create_memory_tools(mos, user_id="alice", k=10, max_k=2)}
    assert len(_call(few, "search_memories", query="hobby").artifact) == 2


def test_a_shared_memory_names_its_owner(mos: MemOS) -> None:
    """A memory another user shared reads as theirs in the tool's output and the
    middleware's recall (the model took "user: I'm allergic to peanuts." for this user)."""
    from langchain_memos.middleware import _shown_to

    said = mos.add([{"role": "user", "content": "I'm allergic to peanuts."}], user_id="alice")[0]
    note = mos.add("The spare key is under the blue pot.", user_id="alice")
    mos.share_namespace(with_user_id="bob", user_id="alice")
    tools = {t.name: t for t in create_memory_tools(mos, user_id="bob")}
    reply = _call(tools, "search_memories", query="peanuts allergy", k=5)
    assert "alice: I'm allergic to peanuts." in reply.content and "user: I'm" not in reply.content
    reply = _call(tools, "search_memories", query="spare key", k=5)
    assert "The spare key is under the blue pot. (shared by alice)" in reply.content
    [hit] = [h for h in mos.search("peanuts", user_id="bob", k=5) if h.id == said.id]
    assert _shown_to(hit, "bob").text == "alice: I'm allergic to peanuts."
    assert _shown_to(hit, "alice") is hit and note.text == mos.get(note.id, user_id="bob").text


def test_a_cancelled_forget_tool_call_still_forgets(mos: MemOS, tools: dict[str, BaseTool]) -> None:
    """An agent run cancelled (a timeout) while the tool's forget waits for a worker thread:
    the forget still runs (asyncio.to_thread dropped a queued call, and the text stayed)."""
    import asyncio

    from memos_core import MemoryDeletedError
    from memos_core.testing.executor import cancel_while_queued, hold_executor

    memory_id = mos.add("Alice's locker code is 4471", user_id="alice").id

    async def scenario() -> None:
        gate = hold_executor()  # the only worker thread is busy
        call = asyncio.ensure_future(_acall(tools, "forget_memory", memory_id=memory_id))
        await cancel_while_queued(call, gate)

    asyncio.run(scenario())
    with pytest.raises(MemoryDeletedError):
        mos.get(memory_id, user_id="alice")
