"""Training a LoRA adapter (peft) on a copy of the local model.

The base model is never modified: training runs on a deep copy wrapped by peft. Each step
takes ``batch_size`` memory examples (cycled in a seeded shuffled order) and
``replay_per_step`` replay examples, and minimises the next-token loss on the completions
only (prompt and padding positions are masked with -100).
"""

from __future__ import annotations

import copy
import random
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from memos_core.tiers.parametric.config import ParametricConfig
from memos_core.tiers.parametric.data import Example

_IGNORE = -100
# peft 0.21 still calls transformers' deprecated ``is_gradient_checkpointing`` when it wraps a
# model; the warning is about peft's code, not ours.
_PEFT_DEPRECATION = "`is_gradient_checkpointing` is deprecated"


class TrainingReport(BaseModel):
    """What a training run did."""

    model_config = ConfigDict(frozen=True)

    steps: int = Field(ge=0)
    seconds: float = Field(ge=0, description="Wall-clock seconds of the optimisation loop.")
    losses: tuple[float, ...] = Field(description="Mean loss of each step, in order.")
    memory_examples: int = Field(ge=0)
    replay_examples: int = Field(ge=0)
    trainable_parameters: int = Field(ge=0)


def _encode(tokenizer: Any, example: Example) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)``: prompt and completion tokenized apart (the same split the
    evaluation uses), loss on the completion only."""
    prompt = (tokenizer(example.prompt, add_special_tokens=False)["input_ids"]
              if example.prompt else [])
    completion = tokenizer(example.completion, add_special_tokens=False)["input_ids"]
    return prompt + completion, [_IGNORE] * len(prompt) + completion


def collate(tokenizer: Any, batch: Sequence[Example]) -> dict[str, Any]:
    """Right-padded tensors: input_ids, attention_mask, labels, each (batch, longest)."""
    import torch

    encoded = [_encode(tokenizer, e) for e in batch]
    width = max(len(ids) for ids, _ in encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = [i + [pad] * (width - len(i)) for i, _ in encoded]
    mask = [[1] * len(i) + [0] * (width - len(i)) for i, _ in encoded]
    labels = [lab + [_IGNORE] * (width - len(lab)) for _, lab in encoded]
    return {
        "input_ids": torch.tensor(ids),  # (batch, width)
        "attention_mask": torch.tensor(mask),  # (batch, width)
        "labels": torch.tensor(labels),  # (batch, width)
    }


def _cycle(items: Sequence[Example], rng: random.Random) -> Iterator[Example]:
    """Endless walk over ``items``, reshuffled every pass (nothing when empty)."""
    order = list(items)
    while order:
        rng.shuffle(order)
        yield from order


def _batches(memory: Sequence[Example], replay: Sequence[Example],
             config: ParametricConfig) -> Iterator[list[Example]]:
    rng = random.Random(config.seed)
    mem_iter, replay_iter = _cycle(memory, rng), _cycle(replay, rng)
    n_mem = min(config.batch_size, len(memory))
    n_rep = min(config.replay_per_step, len(replay))
    while True:
        yield [next(mem_iter) for _ in range(n_mem)] + [next(replay_iter) for _ in range(n_rep)]


def lora_model(base: Any, config: ParametricConfig) -> Any:
    """A peft LoRA wrapper around a deep copy of ``base`` (which stays untouched)."""
    import torch
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules), bias="none", task_type="CAUSAL_LM",
    )
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(config.seed)  # LoRA A matrices are random: make them reproducible
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_PEFT_DEPRECATION, category=FutureWarning)
            return get_peft_model(copy.deepcopy(base), lora)
    finally:
        torch.random.set_rng_state(state)


def train_lora(
    base: Any,
    tokenizer: Any,
    memory: Sequence[Example],
    replay: Sequence[Example],
    config: ParametricConfig,
    *,
    progress: bool = True,
) -> tuple[Any, TrainingReport]:
    """Train a LoRA adapter on ``memory`` + ``replay``; returns ``(peft_model, report)``.

    ``base`` is a transformers causal LM and is not modified. The peft model comes back in
    eval mode. A tqdm bar on stderr shows the steps and the loss unless ``progress`` is False.

    Raises:
        ValueError: no memory examples, or none of ``config.target_modules`` in the model.
    """
    import torch
    from tqdm import tqdm

    if not memory:
        raise ValueError("nothing to train: give at least one memory example")
    model = lora_model(base, config)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    batches = _batches(memory, replay, config)
    losses: list[float] = []
    bar = tqdm(total=config.steps, desc="LoRA", unit="step", file=sys.stderr, disable=not progress)
    started = time.perf_counter()
    try:
        for _ in range(config.steps):
            tensors = collate(tokenizer, next(batches))
            loss = model(**tensors).loss  # scalar: mean over completion tokens
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            bar.update(1)
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    model.eval()
    report = TrainingReport(
        steps=config.steps, seconds=seconds, losses=tuple(losses),
        memory_examples=len(memory), replay_examples=len(replay),
        trainable_parameters=sum(p.numel() for p in params),
    )
    return model, report
