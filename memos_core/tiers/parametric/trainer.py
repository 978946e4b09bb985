"""Training a LoRA adapter (peft) on a copy of the local model.

The base model is never modified: training runs on a deep copy wrapped by peft. Each step
takes ``batch_size`` memory examples (cycled in a seeded shuffled order) and
``replay_per_step`` replay examples in one batch, and minimises

* the next-token loss on the memory completions only (prompt and padding positions are
  masked with -100), plus
* ``replay_weight`` times the replay loss: with ``replay_loss="kl"`` the KL divergence from
  the base model's next-token distribution to the adapter's at every position of each replay
  sequence (prompt and greedy completion; the base distributions are computed once, before
  the first step), with ``"tokens"`` the next-token loss on the base model's greedy
  completion.
"""

from __future__ import annotations

import copy
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from memos_core.runtime.errors import ModelLoadError
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
    seconds: float = Field(ge=0, description="Wall-clock seconds of training: the base "
                           "model's replay targets, then the optimisation loop.")
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


def _pad(tokenizer: Any, encoded: Sequence[tuple[list[int], list[int]]]) -> dict[str, Any]:
    """Right-padded tensors of encoded rows: input_ids, attention_mask, labels, each
    (rows, longest)."""
    import torch

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


def replay_targets(base: Any, tokenizer: Any, replay: Sequence[Example]) -> list[Any]:
    """The base model's log-probabilities at every position of each replay sequence, one
    ``(length, vocab)`` float32 tensor per example (what ``replay_loss="kl"`` matches)."""
    import torch

    targets = []
    with torch.no_grad():
        for example in replay:
            ids, _ = _encode(tokenizer, example)
            logits = base(input_ids=torch.tensor([ids], device=base.device)).logits
            targets.append(logits[0].float().log_softmax(-1))  # (length, vocab)
    return targets


def _kl(logits: Any, targets: Sequence[Any]) -> Any:
    """Sum over positions of KL(base || adapted); ``logits`` (rows, width, vocab) are the
    adapted model's on replay rows, ``targets`` their base log-probabilities."""
    import torch

    total = logits.new_zeros((), dtype=torch.float32)
    for row, target in zip(logits, targets):
        adapted = row[: target.shape[0]].float().log_softmax(-1)  # (length, vocab)
        total = total + (target.exp() * (target - adapted)).sum()
    return total


def _ce_sum(logits: Any, labels: Any) -> Any:
    """Summed next-token cross-entropy over the labelled positions (labels -100 skipped)."""
    import torch

    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1),
        ignore_index=_IGNORE, reduction="sum")


def length_groups(lengths: Sequence[int]) -> list[list[int]]:
    """Row indices in one or two groups of similar length, so short rows are not padded to
    the longest (a chat-formatted question is several times a cloze prompt). Two groups
    only when that pads at least 20% fewer tokens."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    ranked = [lengths[i] for i in order]
    n = len(ranked)
    best_k, best = n, n * ranked[-1] if ranked else 0
    for k in range(1, n):
        cost = k * ranked[k - 1] + (n - k) * ranked[-1]
        if cost < best:
            best_k, best = k, cost
    if best_k == n or best > 0.8 * n * ranked[-1]:
        return [list(range(n))] if n else []
    return [sorted(order[:best_k]), sorted(order[best_k:])]


def _cycle(items: Sequence[int], rng: random.Random) -> Iterator[int]:
    """Endless walk over ``items``, reshuffled every pass (nothing when empty)."""
    order = list(items)
    while order:
        rng.shuffle(order)
        yield from order


def _batches(n_memory: int, n_replay: int,
             config: ParametricConfig) -> Iterator[tuple[list[int], list[int]]]:
    """Endless ``(memory indices, replay indices)`` per step."""
    rng = random.Random(config.seed)
    mem_iter, replay_iter = _cycle(range(n_memory), rng), _cycle(range(n_replay), rng)
    n_mem = min(config.batch_size, n_memory)
    n_rep = min(config.replay_per_step, n_replay)
    while True:
        yield [next(mem_iter) for _ in range(n_mem)], [next(replay_iter) for _ in range(n_rep)]


def peft_missing(exc: ImportError) -> ModelLoadError:
    """The error for a failed ``import peft``: peft comes with the ``[local-model]`` extra,
    which a plain ``pip install memos-core`` leaves out."""
    return ModelLoadError(f"LoRA adapters (the parametric tier) need peft ({exc}); install it "
                          "with pip install 'memos-core[local-model]'.")


def require_peft() -> None:
    """Raise :func:`peft_missing`'s error now if peft cannot be imported: a consolidation
    generates with the base model for a minute or more before it trains."""
    try:
        import peft  # noqa: F401
    except ImportError as exc:
        raise peft_missing(exc) from None


def lora_model(base: Any, config: ParametricConfig) -> Any:
    """A peft LoRA wrapper around a deep copy of ``base`` (which stays untouched), with LoRA
    weights on ``config.target_modules`` of the top ``config.layer_fraction`` of its layers.

    Raises:
        ModelLoadError: peft is not installed (the ``[local-model]`` extra).
    """
    import torch

    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise peft_missing(exc) from None

    layers = base.config.get_text_config(decoder=True).num_hidden_layers
    top = max(1, round(layers * config.layer_fraction))
    lora = LoraConfig(
        # peft annotates lora_alpha as int; it is only a scaling numerator (float works)
        r=config.lora_r, lora_alpha=config.lora_alpha,  # type: ignore[arg-type]
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules), bias="none", task_type="CAUSAL_LM",
        layers_to_transform=None if top >= layers else list(range(layers - top, layers)),
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
    stop: Callable[[], None] = lambda: None,
) -> tuple[Any, TrainingReport]:
    """Train a LoRA adapter on ``memory`` + ``replay``; returns ``(peft_model, report)``.

    ``base`` is a transformers causal LM and is not modified. The peft model comes back in
    eval mode. ``config.steps_for(len(memory))`` steps are taken. A tqdm bar on stderr shows
    the steps and the loss unless ``progress`` is False. ``stop`` is called before each step
    and may raise to end the training there (the store is closing).

    Raises:
        ValueError: no memory examples, or none of ``config.target_modules`` in the model.
    """
    import torch
    from tqdm import tqdm

    if not memory:
        raise ValueError("nothing to train: give at least one memory example")
    steps = config.steps_for(len(memory))
    started = time.perf_counter()
    distil = config.replay_loss == "kl"
    targets = replay_targets(base, tokenizer, replay) if distil and replay else []
    model = lora_model(base, config)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    batches = _batches(len(memory), len(replay), config)
    losses: list[float] = []
    bar = tqdm(total=steps, desc="LoRA", unit="step", file=sys.stderr, disable=not progress)
    try:
        for _ in range(steps):
            stop()
            mem_idx, rep_idx = next(batches)
            rows = [_encode(tokenizer, memory[i]) for i in mem_idx]
            rows += [_encode(tokenizer, replay[i]) for i in rep_idx]
            kl_rows = {len(mem_idx) + j: targets[i] for j, i in enumerate(rep_idx)} if distil else {}
            if kl_rows:  # replay rows carry no labels: the KL term covers them
                rows = [(ids, [_IGNORE] * len(ids)) if r in kl_rows else (ids, labels)
                        for r, (ids, labels) in enumerate(rows)]
            labelled = sum(sum(t != _IGNORE for t in labels[1:]) for _, labels in rows)
            positions = sum(t.shape[0] for t in kl_rows.values())
            optimizer.zero_grad(set_to_none=True)
            step_loss = 0.0
            for group in length_groups([len(ids) for ids, _ in rows]):
                tensors = {k: v.to(model.device)
                           for k, v in _pad(tokenizer, [rows[r] for r in group]).items()}
                logits = model(input_ids=tensors["input_ids"],
                               attention_mask=tensors["attention_mask"]).logits
                loss = _ce_sum(logits, tensors["labels"]) / max(labelled, 1)
                kl = [(k, kl_rows[r]) for k, r in enumerate(group) if r in kl_rows]
                if kl:
                    loss = loss + config.replay_weight * _kl(
                        logits[[k for k, _ in kl]], [t for _, t in kl]) / max(positions, 1)
                loss.backward()
                step_loss += float(loss.detach())
            optimizer.step()
            losses.append(step_loss)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            bar.update(1)
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    model.eval()
    report = TrainingReport(
        steps=steps, seconds=seconds, losses=tuple(losses),
        memory_examples=len(memory), replay_examples=len(replay),
        trainable_parameters=sum(p.numel() for p in params),
    )
    return model, report
