"""Agent frameworks load the server's tools through their own MCP clients.

* LangChain: ``langchain-mcp-adapters``' ``MultiServerMCPClient`` loads the tools into
  ``create_agent`` (over stdio and over HTTP).
* LlamaIndex: ``llama-index-tools-mcp``'s ``BasicMCPClient`` + ``McpToolSpec`` load them into
  a ``FunctionAgent``.

The only fake is the chat model: a scripted one that asks for tool calls in order and
records what it was sent, so the tests see what memory reached "the model".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_mcp_adapters.client import MultiServerMCPClient
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ToolCallBlock
from llama_index.core.llms import ChatMessage
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.tools.mcp import BasicMCPClient, McpToolSpec
from mcp_helpers import HttpFixture, server_env, stdio_params


pytestmark = [  # llama-index's workflow trips pydantic's own deprecation warnings
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20"),
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211"),
]
TOOLS = {"store", "search", "get", "update", "forget", "compress", "history", "share", "revoke"}


# -- LangChain ------------------------------------------------------------------------------

class ScriptedChatModel(GenericFakeChatModel):
    """Answers with the scripted messages in order; records each list of messages sent."""

    calls: list[list[BaseMessage]] = []

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> "ScriptedChatModel":
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self.calls.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


def tool_call(name: str, **args: Any) -> AIMessage:
    return AIMessage(content="", tool_calls=[
        {"name": name, "args": args, "id": f"call-{name}", "type": "tool_call"}])


def text_of(message: BaseMessage) -> str:
    """A message's text (tool results come as a list of content blocks)."""
    content = message.content
    if isinstance(content, str):
        return content
    return "".join(b["text"] if isinstance(b, dict) else str(b) for b in content)


async def lc_turn(connection: dict[str, Any], question: str, *replies: AIMessage | str
                  ) -> tuple[ScriptedChatModel, list[ToolMessage]]:
    """One agent turn with the tools loaded from ``connection``; returns the model and the
    tool messages of the run."""
    tools = await MultiServerMCPClient({"memos": connection}).get_tools()
    assert {t.name for t in tools} == TOOLS
    model = ScriptedChatModel(messages=iter(replies), calls=[])
    agent = create_agent(model, tools=tools, system_prompt="You are a helpful assistant.")
    result = await agent.ainvoke({"messages": [HumanMessage(question)]})
    return model, [m for m in result["messages"] if isinstance(m, ToolMessage)]


async def test_langchain_agent_over_http(http_server: HttpFixture) -> None:
    def connection(user: str) -> dict[str, Any]:
        return {"transport": "streamable_http", "url": http_server.url,
                "headers": {"Authorization": f"Bearer {http_server.token[user]}"}}

    _, stored = await lc_turn(connection("alice"), "Remember that I am vegetarian.",
                              tool_call("store", text="Alice is vegetarian.", type="preference"),
                              "Noted.")
    memory_id = json.loads(text_of(stored[0]))["stored"]["id"]

    model, found = await lc_turn(connection("alice"), "What should I cook tonight?",
                                 tool_call("search", query="what does alice eat"),
                                 "Something vegetarian.")
    sent = text_of(model.calls[1][-1])  # the tool result the model was sent
    assert "Alice is vegetarian." in sent and memory_id in sent and "why" in sent

    model, other = await lc_turn(connection("bob"), "What does Alice eat?",
                                 tool_call("search", query="what does alice eat"), "No idea.")
    assert "vegetarian" not in text_of(model.calls[1][-1])
    model, failed = await lc_turn(connection("bob"), "Forget Alice's diet.",
                                  tool_call("forget", memory_id=memory_id), "Could not.")
    assert failed[0].status == "error" and "denied" in text_of(failed[0])
    assert http_server.mos.get(memory_id, user_id="alice").text == "Alice is vegetarian."


async def test_langchain_agent_over_stdio(tmp_path: Path) -> None:
    params = stdio_params(tmp_path / "data", "alice")
    connection = {"transport": "stdio", "command": params.command, "args": params.args,
                  "env": server_env()}
    await lc_turn(connection, "Remember my cat's name.",
                  tool_call("store", text="Alice's cat is called Miso."), "Noted.")
    model, _ = await lc_turn(connection, "What's my cat called?",
                             tool_call("search", query="name of the cat"), "Miso.")
    assert "Alice's cat is called Miso." in text_of(model.calls[1][-1])


# -- LlamaIndex -----------------------------------------------------------------------------

def scripted_llm(calls: list[tuple[str, dict[str, Any]]], seen: list[list[ChatMessage]]
                 ) -> MockFunctionCallingLLM:
    """Makes ``calls`` (one per turn), then answers with the tool results it was sent."""
    plan = list(calls)

    def respond(messages: Sequence[ChatMessage], **_: Any) -> ChatMessage:
        seen.append(list(messages))
        if plan:
            name, kwargs = plan.pop(0)
            return ChatMessage(role="assistant", blocks=[ToolCallBlock(
                tool_call_id=f"call-{len(plan)}", tool_name=name, tool_kwargs=kwargs)])
        results = [m.content or "" for m in messages if m.role.value == "tool"]
        return ChatMessage(role="assistant", content="Done: " + " | ".join(results))

    return MockFunctionCallingLLM(response_generator=respond)


async def li_turn(url: str, token: str, message: str,
                  calls: list[tuple[str, dict[str, Any]]]) -> str:
    client = BasicMCPClient(url, headers={"Authorization": f"Bearer {token}"})
    tools = await McpToolSpec(client=client).to_tool_list_async()
    assert {t.metadata.name for t in tools} == TOOLS
    seen: list[list[ChatMessage]] = []
    agent = FunctionAgent(tools=tools, llm=scripted_llm(calls, seen),
                          system_prompt="You are a helpful assistant.")
    return str(await agent.run(user_msg=message))


async def test_llamaindex_function_agent_over_http(http_server: HttpFixture) -> None:
    url, token = http_server.url, http_server.token
    reply = await li_turn(url, token["alice"], "Remember I live in Lisbon.",
                          [("store", {"text": "Alice lives in Lisbon."})])
    assert "Alice lives in Lisbon." in reply and '"owner": "alice"' in reply
    reply = await li_turn(url, token["alice"], "Where do I live?",
                          [("search", {"query": "where does alice live"})])
    assert "Alice lives in Lisbon." in reply and '"why"' in reply
    reply = await li_turn(url, token["bob"], "Where does Alice live?",
                          [("search", {"query": "where does alice live"})])
    assert "Lisbon" not in reply
    reply = await li_turn(url, token["alice"], "Search nothing.", [("search", {"query": ""})])
    assert "query is empty" in reply
    assert [c.text for c in http_server.mos.list(user_id="alice")] == ["Alice lives in Lisbon."]
