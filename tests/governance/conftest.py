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


@pytest.fixture(scope="session")
def tiny_model():  # noqa: ANN201 - memos_core.runtime.LocalModel (imports transformers)
    """A tiny random Llama with SmolLM2's tokenizer: a real local model for the KV tier and
    chat, fast enough for tests (its answers are noise; traces and caches are real)."""
    pytest.importorskip("transformers")
    from transformers import LlamaConfig

    from memos_core.runtime import LocalModel, default_tokenizer

    config = LlamaConfig(
        vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )
    return LocalModel.from_config(config, default_tokenizer(), seed=0)
