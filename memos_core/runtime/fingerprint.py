"""The model fingerprint: what a derived artifact (KV cache, adapter) was computed with.

A KV cache is only valid for the exact weights, config, tokenizer, dtype and library versions
that produced it. :class:`ModelFingerprint` records those and :attr:`ModelFingerprint.digest`
condenses them into one stable hex string (the same in every process, on every machine) that
artifacts carry and compare.

This module imports neither torch nor transformers; the ``*_hash`` helpers take the loaded
objects duck-typed.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# Config keys that describe where or how a config was saved, not what the model computes.
_VOLATILE_CONFIG_KEYS = frozenset(
    {
        "transformers_version",
        "_name_or_path",
        "_model_name_or_path",
        "_commit_hash",
        "_attn_implementation_autoset",
        "_attn_implementation_internal",
        "quantization_config",
        "torch_dtype",
        "dtype",
        "architectures",
        "output_attentions",
        "output_hidden_states",
        "use_cache",
    }
)


def _sha256_json(value: Any) -> str:
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def config_hash(config: Any) -> str:
    """Hex SHA-256 of a transformers config's computation-relevant fields.

    Keys that only record provenance (``transformers_version``, ``_name_or_path``, the GGUF
    ``quantization_config`` of a converted model, dtype which the fingerprint holds apart)
    are left out, so a model converted from GGUF and reloaded hashes like the original.
    """
    data = {k: v for k, v in config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
    return _sha256_json(data)


def tokenizer_hash(tokenizer: Any) -> str:
    """Hex SHA-256 of a tokenizer's vocabulary, merges/normalizers, specials and chat template."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        core: Any = backend.to_str()
    else:  # a slow (python) tokenizer: the vocabulary is the best summary we have
        core = sorted(tokenizer.get_vocab().items())
    return _sha256_json(
        {
            "core": core,
            "chat_template": getattr(tokenizer, "chat_template", None),
            "special_tokens": tokenizer.special_tokens_map,
            "class": type(tokenizer).__name__,
        }
    )


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose numerics a cached KV depends on."""
    versions: dict[str, str] = {}
    for name in ("torch", "transformers"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


class ModelFingerprint(BaseModel):
    """Identity of a loaded model, as far as derived artifacts care.

    Two fingerprints with equal :attr:`digest` produce identical KV caches for identical
    tokens (up to floating-point nondeterminism of the kernels).
    """

    model_config = ConfigDict(frozen=True)

    model_id: str = Field(
        description="Hub id, local path, or for converted GGUF files 'gguf:<name>@sha256:<hex>'."
    )
    config_hash: str = Field(description="SHA-256 of the model config (see config_hash()).")
    tokenizer_hash: str = Field(description="SHA-256 of the tokenizer (see tokenizer_hash()).")
    dtype: str = Field(description="Parameter dtype, e.g. 'torch.float32'.")
    adapter_version: str | None = Field(
        default=None, description="Active LoRA adapter version; None for the base model."
    )
    library_versions: dict[str, str] = Field(
        default_factory=library_versions, description="torch and transformers versions."
    )

    @property
    def digest(self) -> str:
        """Stable hex SHA-256 over every field (key order and process independent)."""
        return _sha256_json(self.model_dump(mode="json"))

    def short(self) -> str:
        """First 16 hex digits of :attr:`digest`, for file names and logs."""
        return self.digest[:16]
