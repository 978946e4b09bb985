"""Fixtures of the parametric tier tests: a tiny random Llama (fast training, noise answers)
and a store with a few facts in it."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

from memos_core import MemOS

FACTS = (
    "Zorvin's cat is named Pastel.",
    "Mirela's favourite colour is teal.",
    "Quenby lives in Tromso.",
)


@pytest.fixture(scope="session")
def tiny():  # noqa: ANN201 - memos_core.runtime.LocalModel (imports transformers)
    pytest.importorskip("peft")
    from transformers import LlamaConfig

    from memos_core.runtime import LocalModel, default_tokenizer

    config = LlamaConfig(
        vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )
    return LocalModel.from_config(config, default_tokenizer(), seed=0)


@pytest.fixture
def store(make_mos, tiny) -> tuple[MemOS, list[str]]:
    """A store on the tiny model with three facts of 'ada' and one note."""
    mos = make_mos()
    mos.attach_model(tiny)
    ids = [mos.add(text, user_id="ada", type="fact").id for text in FACTS]
    mos.add("Remember to water the plants on Friday.", user_id="ada", type="note")
    return mos, ids
