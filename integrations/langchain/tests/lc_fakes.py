"""The one fake in these tests: a chat model that "calls tools".

LangChain's fake chat models have no ``bind_tools``, so ``create_agent`` cannot use them;
:class:`ScriptedChatModel` adds one and records every list of messages it was sent, which is
how the tests see what memory reached the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage


class ScriptedChatModel(GenericFakeChatModel):
    """A fake chat model that "calls tools": it answers with the scripted messages in order
    and records every list of messages it was sent (``model.calls``)."""

    calls: list[list[BaseMessage]] = []

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any) -> "ScriptedChatModel":
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self.calls.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


def scripted(*replies: AIMessage | str) -> ScriptedChatModel:
    """A model that answers ``replies`` in order (each call takes the next one)."""
    return ScriptedChatModel(messages=iter(replies), calls=[])


def tool_call(name: str, call_id: str = "call-1", **args: Any) -> AIMessage:
    """An AI message that asks for one tool call."""
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": call_id, "type": "tool_call"}])
