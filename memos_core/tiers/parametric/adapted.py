"""The adapted model: an adapter's weights merged into a copy of the base model, named in its
fingerprint so no KV cache of the base model or of another adapter is ever reused for it,
and the chat form adapters are evaluated and served in.

torch and peft load lazily, on the first merge.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from memos_core.tiers.parametric.trainer import _PEFT_DEPRECATION, peft_missing

if TYPE_CHECKING:
    from memos_core.runtime import LocalModel


def adapter_tag(version: str, weights_sha256: str) -> str:
    """The fingerprint's adapter field: version plus a hash of its weights, so two stores'
    ``v1`` never share KV caches."""
    return f"{version}@{weights_sha256[:16]}"


def chat_form(model: LocalModel, question: str) -> tuple[str, str]:
    """``(prompt, end)``: ``question`` as the user turn of a chat with the memory
    instructions as system message (how ``MemOS.chat`` asks when no hot block is cached), up
    to the assistant's turn, and the text that ends the assistant's turn."""
    from memos_core.tiers.activation.compose import DEFAULT_INSTRUCTIONS

    messages = [{"role": "system", "content": DEFAULT_INSTRUCTIONS},
                {"role": "user", "content": question}]
    return model.render(messages, add_generation_prompt=True), model.tokenizer.eos_token or ""


def in_context_form(model: LocalModel, memories: Sequence[object], question: str) -> str:
    """``question`` asked in a chat whose system message holds ``memories`` (cubes), as
    ``MemOS.chat`` sends a hot block as text: what the gate's in-context check asks."""
    from memos_core.tiers.activation.compose import as_refs, block_messages

    messages = [*block_messages(as_refs(memories)), {"role": "user", "content": question}]
    return model.render(messages, add_generation_prompt=True)


def load_adapted(base: LocalModel, adapter_dir: Path, tag: str) -> LocalModel:
    """A new :class:`LocalModel`: a copy of ``base`` with the adapter merged into its weights
    and ``adapter_version=tag`` in its fingerprint. ``base`` is not modified.

    Raises:
        ModelLoadError: peft is not installed (the ``[local-model]`` extra).
    """
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise peft_missing(exc) from None

    from memos_core.runtime import LocalModel

    with warnings.catch_warnings():  # see trainer._PEFT_DEPRECATION
        warnings.filterwarnings("ignore", message=_PEFT_DEPRECATION, category=FutureWarning)
        wrapped = PeftModel.from_pretrained(copy.deepcopy(base.model), str(adapter_dir))
    merged = wrapped.merge_and_unload()
    return LocalModel(merged, base.tokenizer, model_id=base.model_id, adapter_version=tag)


__all__ = ["adapter_tag", "chat_form", "in_context_form", "load_adapted"]
