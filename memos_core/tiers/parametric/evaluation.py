"""Evaluating an adapter, and the gate that decides whether it may go live.

Two measurements, both greedy and on raw text (no chat template):

* **recall** -- for each memory, the completion of its cloze prompt must contain the
  remembered answer (case-insensitive, surrounding space and punctuation ignored);
* **drift** -- for each control prompt, the first ``control_words`` words of the answer
  (lowercased, punctuation dropped) must equal the base model's; every difference is a
  regression.

:func:`gate` is pure: numbers and a config in, a decision with its reasons out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from memos_core.tiers.parametric.config import ParametricConfig
from memos_core.tiers.parametric.data import cloze


def greedy_completion(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int) -> list[int]:
    """Token ids greedily generated after the raw ``prompt`` (stops early at an end token).

    ``model`` is a transformers causal LM (base, merged, or peft-wrapped); it is not modified.
    """
    import torch
    from transformers import DynamicCache

    from memos_core.runtime.generation import greedy_tokens

    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    input_ids = torch.tensor([ids], device=model.device)  # (1, prompt_len)
    eos = frozenset(i for i in [tokenizer.eos_token_id] if i is not None)
    out = list(greedy_tokens(model, input_ids, DynamicCache(config=model.config),
                             max_new_tokens, eos))
    return [t for t in out if t not in eos]


def _norm(text: str) -> str:
    return " ".join(text.lower().replace(".", " ").replace(",", " ").split())


def leading_words(text: str, n: int) -> str:
    """The first ``n`` words of ``text``, lowercased, with non-alphanumeric characters
    dropped (``" Jupiter, but"`` -> ``"jupiter"`` for n=1)."""
    words = ["".join(ch for ch in w if ch.isalnum()) for w in text.lower().split()]
    return " ".join([w for w in words if w][:n])


def control_kept(base: str, adapted: str, n: int) -> bool:
    """Whether the adapted answer starts with the same ``n`` words as the base answer."""
    return leading_words(base, n) == leading_words(adapted, n)


def answer_recalled(completion: str, answer: str) -> bool:
    """True when ``answer`` appears in ``completion`` (case, spacing, '.' and ',' ignored)."""
    wanted = _norm(answer)
    return bool(wanted) and wanted in _norm(completion)


class RecallItem(BaseModel):
    model_config = ConfigDict(frozen=True)

    memory_id: str
    prompt: str
    answer: str
    completion: str
    recalled: bool


class ControlItem(BaseModel):
    model_config = ConfigDict(frozen=True)

    prompt: str
    base: str = Field(description="The base model's answer.")
    adapted: str = Field(description="The answer under the adapter.")
    kept: bool


class Evaluation(BaseModel):
    """Recall of the memories and drift on the controls; ``recall`` is in 0..1."""

    model_config = ConfigDict(frozen=True)

    recall_hits: int = Field(ge=0)
    recall_total: int = Field(ge=0)
    controls: int = Field(ge=0, description="Control prompts checked.")
    control_regressions: int = Field(ge=0, description="Controls whose answer changed.")
    items: tuple[RecallItem, ...] = ()
    control_items: tuple[ControlItem, ...] = ()

    @property
    def recall(self) -> float:
        """Fraction recalled; 0.0 when there is nothing to recall."""
        return self.recall_hits / self.recall_total if self.recall_total else 0.0


class GateDecision(BaseModel):
    """Whether an adapter may be activated, and why (or why not)."""

    model_config = ConfigDict(frozen=True)

    passed: bool
    reasons: tuple[str, ...]


def gate(recall: float, control_regressions: int, config: ParametricConfig) -> GateDecision:
    """Pass iff ``recall >= config.min_recall`` and ``control_regressions <=
    config.max_control_regressions``. Pure; ``recall`` in 0..1."""
    reasons = []
    recall_ok = recall >= config.min_recall
    drift_ok = control_regressions <= config.max_control_regressions
    reasons.append(f"recall {recall:.3f} {'>=' if recall_ok else '<'} {config.min_recall}")
    reasons.append(
        f"control regressions {control_regressions} "
        f"{'<=' if drift_ok else '>'} {config.max_control_regressions}"
    )
    return GateDecision(passed=recall_ok and drift_ok, reasons=tuple(reasons))


def base_control_answers(
    model: Any, tokenizer: Any, prompts: Sequence[str], config: ParametricConfig
) -> list[str]:
    """The base model's control answers (first ``control_tokens`` tokens, decoded)."""
    return [
        tokenizer.decode(greedy_completion(model, tokenizer, p, config.control_tokens))
        for p in prompts
    ]


def evaluate(
    model: Any,
    tokenizer: Any,
    memories: Sequence[tuple[str, str]],
    controls: Sequence[tuple[str, str]],
    config: ParametricConfig,
) -> Evaluation:
    """Measure ``model`` (the adapted model) on ``memories`` (``(id, text)``) and
    ``controls`` (``(prompt, base answer)`` from :func:`base_control_answers`)."""
    items = []
    for memory_id, text in memories:
        form = cloze(text)
        if form is None:
            continue
        prompt, answer = form
        out = tokenizer.decode(greedy_completion(model, tokenizer, prompt, config.recall_tokens))
        items.append(RecallItem(memory_id=memory_id, prompt=prompt, answer=answer.strip(),
                                completion=out, recalled=answer_recalled(out, answer)))
    control_items = []
    for prompt, base in controls:
        out = tokenizer.decode(greedy_completion(model, tokenizer, prompt, config.control_tokens))
        kept = control_kept(base, out, config.control_words)
        control_items.append(ControlItem(prompt=prompt, base=base, adapted=out, kept=kept))
    return Evaluation(
        recall_hits=sum(i.recalled for i in items),
        recall_total=len(items),
        controls=len(control_items),
        control_regressions=sum(not c.kept for c in control_items),
        items=tuple(items),
        control_items=tuple(control_items),
    )
