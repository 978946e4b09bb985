"""Settings of the parametric tier: how adapters are trained and when one may go live.

:class:`ParametricConfig` is a frozen pydantic model, saved verbatim into every adapter's
manifest (so an adapter records exactly how it was made). Use :meth:`ParametricConfig.preset`
for named settings rather than long argument lists.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ParametricConfig(BaseModel):
    """Training, evaluation and gate knobs for one adapter."""

    model_config = ConfigDict(frozen=True)

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
    # -- optimisation -----------------------------------------------------------------------
    steps: int = Field(default=40, ge=1, description="Optimizer steps.")
    learning_rate: float = Field(default=1e-3, gt=0, description="AdamW learning rate.")
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
    replay_tokens: int = Field(
        default=8, ge=1,
        description="Tokens of the base model's greedy completion per replay prompt.",
    )
    # -- evaluation and gate ----------------------------------------------------------------
    recall_tokens: int = Field(
        default=8, ge=1, description="Tokens generated when checking recall of a memory."
    )
    control_tokens: int = Field(
        default=6, ge=1, description="Tokens generated for a control prompt."
    )
    control_words: int = Field(
        default=1,
        ge=1,
        description="Leading words of a control answer (lowercased, punctuation dropped) that "
        "must stay unchanged: the answer itself; the words after it wander.",
    )
    min_recall: float = Field(
        default=0.95, ge=0, le=1, description="Recall an adapter needs to be activated (0..1)."
    )
    max_control_regressions: int = Field(
        default=1, ge=0, description="Most control prompts whose answer may change."
    )

    @classmethod
    def preset(
        cls, name: Literal["default", "quick", "test"], **overrides: object
    ) -> ParametricConfig:
        """Named settings: ``default`` (40 steps, r=8 on q/v); ``quick`` (20 steps, for demos);
        ``test`` (a few steps on a tiny model: exercises the pipeline, learns nothing)."""
        presets: dict[str, dict[str, object]] = {
            "default": {},
            "quick": {"steps": 20, "learning_rate": 2e-3},
            "test": {"steps": 3, "lora_r": 2, "lora_alpha": 4.0, "batch_size": 4,
                     "replay_per_step": 2, "replay_tokens": 4, "recall_tokens": 4,
                     "control_tokens": 3, "control_words": 2},
        }
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}: choose one of {sorted(presets)}")
        return cls(**{**presets[name], **overrides})
