"""Parametric memory: stable memories consolidated into peft LoRA adapters on the local model,
gated by evaluation (recall, drift, answers with the memories in the prompt), versioned, and
retired when a memory is forgotten.

torch, transformers and peft load lazily, on the first training or adapter load.
"""

from memos_core.tiers.parametric.adapted import load_adapted
from memos_core.tiers.parametric.config import ParametricConfig
from memos_core.tiers.parametric.data import CONTROL_PROMPTS, REPLAY_PROMPTS, Example, cloze
from memos_core.tiers.parametric.evaluation import Evaluation, GateDecision, evaluate, gate
from memos_core.tiers.parametric.store import (
    AdapterManifest,
    AdapterStore,
    MemoryRef,
    RetrainRequest,
)
from memos_core.tiers.parametric.tier import (
    ConsolidationResult,
    ParametricTier,
    consolidatable,
)
from memos_core.tiers.parametric.trainer import TrainingReport, train_lora

__all__ = [
    "CONTROL_PROMPTS",
    "REPLAY_PROMPTS",
    "AdapterManifest",
    "AdapterStore",
    "ConsolidationResult",
    "Evaluation",
    "Example",
    "GateDecision",
    "MemoryRef",
    "ParametricConfig",
    "ParametricTier",
    "RetrainRequest",
    "TrainingReport",
    "cloze",
    "consolidatable",
    "evaluate",
    "gate",
    "load_adapted",
    "train_lora",
]
