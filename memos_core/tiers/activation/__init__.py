"""Activation memory: hot memories composed into one prefix block whose KV cache is kept.

See :mod:`memos_core.tiers.activation.tier` for the guarantees and docs/activation.md for
how it is used and measured. Importing this package does not import torch.
"""

from memos_core.tiers.activation.compose import (
    DEFAULT_INSTRUCTIONS,
    MemoryRef,
    as_refs,
    block_id,
    block_messages,
    block_text,
    bullet,
)
from memos_core.tiers.activation.storage import (
    KVBlock,
    KVCacheFormatError,
    block_path,
    load_block,
    read_header,
    save_block,
)
from memos_core.tiers.activation.tier import (
    KVBlockInfo,
    KVBudget,
    KVBudgetError,
    KVCacheTier,
)

__all__ = [
    "DEFAULT_INSTRUCTIONS",
    "KVBlock",
    "KVBlockInfo",
    "KVBudget",
    "KVBudgetError",
    "KVCacheFormatError",
    "KVCacheTier",
    "MemoryRef",
    "as_refs",
    "block_id",
    "block_messages",
    "block_path",
    "block_text",
    "bullet",
    "load_block",
    "read_header",
    "save_block",
]
