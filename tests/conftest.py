"""Shared fixtures: a real MemOS on the embedded defaults, in a temporary directory.

Nothing is mocked: the vault is SQLite, the index is Qdrant (edge by default; the qdrant-client
local mode stands in for a server where a test is parametrised over both), the embedder is
the bundled MiniLM. The embedder is shared by the whole session (its weights are read-only).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

from memos_core import MemOS, MemOSConfig


@pytest.fixture(params=["edge", "qdrant"])
def backend(request) -> str:
    """Both index backends: Qdrant edge (default) and qdrant-client (local mode)."""
    return request.param


@pytest.fixture
def make_mos(tmp_path):
    """Factory for MemOS instances in tmp_path; closes whatever it opened."""
    opened: list[MemOS] = []

    def make(name: str = "data", **config) -> MemOS:
        config.setdefault("show_progress", False)
        mos = MemOS(tmp_path / name, config=MemOSConfig(**config))
        opened.append(mos)
        return mos

    yield make
    for mos in opened:
        mos.close()


@pytest.fixture
def mos(make_mos) -> MemOS:
    return make_mos()


@pytest.fixture
def any_mos(make_mos, backend) -> MemOS:
    """A MemOS on each index backend in turn."""
    return make_mos(index=backend)
