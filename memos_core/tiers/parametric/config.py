"""Settings of the parametric tier: how adapters are trained and when one may go live.

:class:`ParametricConfig` is a frozen pydantic model, saved verbatim into every adapter's
manifest (so an adapter records exactly how it was made). Use :meth:`ParametricConfig.preset`
for named settings rather than long argument lists.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from memos_core.errors import InvalidInputError


class ParametricConfig(BaseModel):
    """Training, evaluation and gate knobs for one adapter."""

    # a misspelt field is an error; so is an infinite or NaN number
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    # -- LoRA -------------------------------------------------------------------------------
    lora_r: int = Field(default=8, ge=1, description="LoRA rank.")
    lora_alpha: float = Field(default=16.0, gt=0, description="LoRA scaling numerator.")
    lora_dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout on LoRA inputs.")
    target_modules: tuple[str, ...] = Field(
        default=("q_proj", "v_proj"),
        min_length=1,
        description="Module names that get LoRA weights (q/v keeps drift lower than all "
        "projections, see docs/parametric.md).",
    )
    layer_fraction: float = Field(
        default=0.5, gt=0, le=1,
        description="LoRA goes into this top fraction of the decoder layers (1.0: all). The "
        "top half learns the facts as well as all layers, in about half the backward time.",
    )
    # -- optimisation -----------------------------------------------------------------------
    steps: int | None = Field(
        default=None, ge=1,
        description="Optimizer steps; None: enough for ``epochs`` passes over the memory "
        "examples at ``batch_size`` (at least ``min_steps``).")
    epochs: float = Field(default=12.0, gt=0, description="Passes over the memory examples "
                          "when ``steps`` is None.")
    min_steps: int = Field(default=10, ge=1, description="Fewest steps when ``steps`` is None.")
    learning_rate: float = Field(default=4e-3, gt=0, description="AdamW learning rate.")
    batch_size: int = Field(default=4, ge=1, description="Memory examples per step.")
    replay_per_step: int = Field(
        default=4, ge=0, description="Replay examples (the base model's own completions) per step."
    )
    seed: int = Field(default=0, description="Seeds LoRA init and example order.")
    # -- data -------------------------------------------------------------------------------
    train_statements: bool = Field(
        default=False,
        description="Also learn each statement whole (from an empty prompt), not only its "
        "cloze form.",
    )
    train_questions: bool = Field(
        default=False,
        description="Also learn each memory's question form in chat format (answer: the "
        "statement), so the adapter can answer in a chat, not only complete raw text; "
        "chat prompts are long, so this costs several times the training time (preset "
        "``chat``).",
    )
    replay_tokens: int = Field(
        default=8, ge=1,
        description="Tokens of the base model's greedy completion per replay prompt.",
    )
    replay_loss: Literal["kl", "tokens"] = Field(
        default="kl",
        description="``kl``: match the base model's whole next-token distribution at every "
        "position of each replay sequence (distillation); ``tokens``: only learn its greedy "
        "tokens (cross-entropy). ``kl`` drifts less for the same recall.",
    )
    replay_neighbours: bool = Field(
        default=True,
        description="Also replay each memory's cloze prompt about someone else (``data."
        "neighbour``) with the base model's answer, so the adapter ties an answer to its "
        "subject, not to the sentence pattern.",
    )
    replay_weight: float = Field(
        default=5.0, ge=0,
        description="Weight of the KL replay loss (``replay_loss='kl'``); see "
        "docs/parametric.md for what 1, 3 and 5 did to drift.")
    # -- evaluation and gate ----------------------------------------------------------------
    recall_tokens: int = Field(
        default=8, ge=1, description="Tokens generated when checking recall of a memory."
    )
    question_tokens: int = Field(
        default=24, ge=1,
        description="Tokens generated when a memory's question is asked in a chat.")
    control_tokens: int = Field(
        default=6, ge=1, description="Tokens generated for a control prompt."
    )
    control_words: int = Field(
        default=1,
        ge=1,
        description="Leading words of a control answer (lowercased, punctuation dropped) that "
        "must stay unchanged: the answer itself; the words after it wander.",
    )
    control_min_confidence: float = Field(
        default=0.5, ge=0, le=1,
        description="A control prompt counts only if the base model gives its first answer "
        "token at least this probability; weaker answers flip under any change of weights.",
    )
    min_controls: int = Field(
        default=20, ge=1,
        description="Fewest confident control prompts a gate decision needs; with fewer the "
        "gate fails (drift could not be measured).",
    )
    min_recall: float = Field(
        default=0.95, ge=0, le=1, description="Recall an adapter needs to be activated (0..1)."
    )
    max_control_regressions: int = Field(
        default=1, ge=0, description="Most control prompts whose answer may change."
    )
    check_in_context: bool = Field(
        default=True,
        description="Also ask each memory's question in a chat with the trained memories in "
        "the prompt (as a chat gives them), with the base model before training and the "
        "adapted one after: an adapter must not lose answers the prompt alone gives.",
    )
    max_context_regressions: int = Field(
        default=0, ge=0,
        description="Most memories the base model answers right with the memories in the "
        "prompt and the adapted model does not (``check_in_context``).",
    )
    # -- answering ----------------------------------------------------------------------------
    leave_out_held: bool = Field(
        default=False,
        description="Chat leaves out of the prompt the memories this adapter answered right "
        "when asked in a chat at evaluation (fewer prompt tokens). Off by default: evaluation "
        "asks each question with no other memory in the prompt, and a chat's prompt holds "
        "others; a related one (\"Maya moved to Porto\" beside the left-out \"Maya's "
        "hometown is Tromso\") can lead the adapted model to a wrong answer that the fact in "
        "the prompt prevents. Off, the adapter only adds to the prompt's memories.",
    )

    def steps_for(self, memory_examples: int) -> int:
        """The optimizer steps a run over ``memory_examples`` examples takes."""
        if self.steps is not None:
            return self.steps
        per_step = max(1, min(self.batch_size, memory_examples))
        return max(self.min_steps, math.ceil(self.epochs * memory_examples / per_step))

    @classmethod
    def preset(
        cls, name: Literal["default", "chat", "quick", "test"], **overrides: object
    ) -> ParametricConfig:
        """Named settings: ``default`` (cloze forms, 12 epochs at 4e-3, r=8 on q/v of the
        top half of the layers, distilled replay); ``chat`` (question forms in chat format
        too: the adapter can answer in a chat, at several times the training time);
        ``quick`` (half the epochs, for demos: recall suffers); ``test`` (a few steps on a
        tiny model: exercises the pipeline, learns nothing; every control counts)."""
        presets: dict[str, dict[str, object]] = {
            "default": {},
            "chat": {"train_questions": True},
            "quick": {"epochs": 6.0},
            "test": {"steps": 3, "lora_r": 2, "lora_alpha": 4.0, "batch_size": 4,
                     "replay_per_step": 2, "replay_tokens": 4, "recall_tokens": 4, "question_tokens": 4,
                     "control_tokens": 3, "control_words": 2, "control_min_confidence": 0.0,
                     "min_controls": 1},
        }
        if name not in presets:
            raise InvalidInputError(f"unknown preset {name!r}: choose one of {sorted(presets)}")
        return cls.model_validate({**presets[name], **overrides})
