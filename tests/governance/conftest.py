"""Fixtures for the governance tests (the shared ones live in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Embed with one torch thread (restored afterwards): these tests embed one short text
    per call, and on a busy two-core machine OpenMP workers spin against each other (one
    MiniLM embedding: ~0.75 s with two threads, ~0.02 s with one). Speed only."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
