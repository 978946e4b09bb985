"""Fixtures for the langchain-memos tests: real MemOS instances in tmp_path, a scripted model.

Nothing of MemOS is faked (SQLite vault, embedded Qdrant index, the bundled MiniLM embedder,
shared by the whole process). The only fake is the chat model: LangChain's fakes have no
``bind_tools``, so :class:`ScriptedChatModel` adds one and records what the model was sent.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from memos_core import MemOS, MemOSConfig


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


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Embed with one torch thread while these tests run (restored afterwards).

    The adapters embed one short text per call. On a busy two-core machine OpenMP worker
    threads spin against each other: one MiniLM embedding measured 0.75 s with two threads
    and 0.02 s with one. This only changes speed, not results.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def make_mos(tmp_path: Path) -> Iterator[Callable[..., MemOS]]:
    """Open MemOS instances under tmp_path (same name = same data directory); all are
    closed at the end."""
    opened: list[MemOS] = []

    def make(name: str = "data") -> MemOS:
        mos = MemOS(tmp_path / name, config=MemOSConfig(show_progress=False))
        opened.append(mos)
        return mos

    yield make
    for mos in opened:
        mos.close()


@pytest.fixture
def mos(make_mos: Callable[..., MemOS]) -> MemOS:
    return make_mos()


@pytest.fixture(scope="module")
def module_mos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemOS]:
    """One MemOS for a whole test module, for tests that write nothing or use their own
    user ids (opening a data directory takes about a second)."""
    mos = MemOS(tmp_path_factory.mktemp("module"), config=MemOSConfig(show_progress=False))
    yield mos
    mos.close()
