"""Fixtures for the LlamaIndex adapter tests: a real MemOS in tmp_path, offline mocks.

Nothing of MemOS is mocked (SQLite vault, embedded Qdrant, bundled MiniLM embedder). The
LLMs are llama-index's own mocks: ``MockLLM`` echoes its prompt, so a test can read what
memory put into it; ``MockFunctionCallingLLM`` plays scripted tool calls. ``Settings.llm``
and ``Settings.embed_model`` are set explicitly, or llama-index would reach for OpenAI.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import Settings
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from memos_core import MemOS, MemOSConfig


@pytest.fixture(autouse=True)
def offline_settings() -> Iterator[None]:
    """Mock LLM and embedder as llama-index's globals for every test; restored after."""
    Settings.llm = MockLLM()
    Settings.embed_model = MockEmbedding(embed_dim=8)
    yield


@pytest.fixture
def open_mos(tmp_path: Path) -> Iterator[Callable[..., MemOS]]:
    """``open_mos(name="data")`` opens (or reopens) a MemOS in tmp_path; all closed at the end.

    Close one (``mos.close()``) and call again with the same name to simulate a restart.
    """
    opened: list[MemOS] = []

    def open_(name: str = "data") -> MemOS:
        mos = MemOS(tmp_path / name, config=MemOSConfig(show_progress=False))
        opened.append(mos)
        return mos

    yield open_
    for mos in opened:
        mos.close()


@pytest.fixture
def mos(open_mos: Callable[..., MemOS]) -> MemOS:
    return open_mos()


@pytest.fixture(scope="module")
def shared_mos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemOS]:
    """One MemOS for a whole test module, for tests that only need *a* MemOS (bad input,
    chat history). They keep out of each other's way with their own ``user`` id."""
    mos = MemOS(tmp_path_factory.mktemp("shared"), config=MemOSConfig(show_progress=False))
    yield mos
    mos.close()


@pytest.fixture
def user() -> str:
    """A user id no other test uses."""
    return f"user-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def forgotten_before_aadd(mos: MemOS) -> Callable[[str, str], AbstractContextManager[None]]:
    """``with forgotten_before_aadd(memory_id, user_id): ...``: the first ``mos.aadd`` in the
    block first has ``mos.forget`` run to its end in another thread -- a forget between a
    write's look at recent forgets and its commit."""

    @contextmanager
    def forgotten(memory_id: str, user_id: str) -> Iterator[None]:
        forgetting = threading.Thread(target=lambda: mos.forget(memory_id, user_id=user_id))
        real_aadd = mos.aadd

        async def add_after_a_forget(*args: Any, **kwargs: Any) -> Any:
            if not forgetting.is_alive() and forgetting.ident is None:
                forgetting.start()
                await asyncio.to_thread(forgetting.join, 60)
            return await real_aadd(*args, **kwargs)

        mos.aadd = add_after_a_forget  # type: ignore[method-assign]
        try:
            yield
        finally:
            mos.aadd = real_aadd  # type: ignore[method-assign]

    return forgotten
