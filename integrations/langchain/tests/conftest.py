"""Fixtures for the langchain-memos tests: real MemOS instances in tmp_path.

Nothing of MemOS is faked (SQLite vault, embedded Qdrant index, the bundled MiniLM embedder,
shared by the whole process). The only fake in these tests is the chat model (lc_fakes.py).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from memos_core import MemOS, MemOSConfig


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
