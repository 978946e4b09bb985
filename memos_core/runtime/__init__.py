"""Local model runtime: load a causal LM, fingerprint it, generate with an optional KV prefix.

Importing this package does not import torch or transformers; the first model load does.

    from memos_core.runtime import LocalModel

    model = LocalModel.default()                 # SmolLM2-135M-Instruct, offline
    prefix = model.build_prefix([{"role": "system", "content": "Alice is vegetarian."}])
    result = model.generate(prefix, [{"role": "user", "content": "What does Alice eat?"}])
    result.text, result.trace.ttft_ms, result.trace.prefill_tokens
"""

from memos_core.runtime.errors import ModelLoadError, PrefixBoundaryError, UnsupportedCacheError
from memos_core.runtime.fingerprint import ModelFingerprint, config_hash, tokenizer_hash
from memos_core.runtime.generation import GenerationResult, GenerationTrace, TextStream
from memos_core.runtime.loader import (
    ConvertedModel,
    cache_root,
    default_gguf_path,
    ensure_converted,
)
from memos_core.runtime.model import LocalModel, default_tokenizer
from memos_core.runtime.prefix import Message, PrefixCache

__all__ = [
    "ConvertedModel",
    "GenerationResult",
    "GenerationTrace",
    "LocalModel",
    "Message",
    "ModelFingerprint",
    "ModelLoadError",
    "PrefixBoundaryError",
    "PrefixCache",
    "TextStream",
    "UnsupportedCacheError",
    "cache_root",
    "config_hash",
    "default_gguf_path",
    "default_tokenizer",
    "ensure_converted",
    "tokenizer_hash",
]
