"""Exceptions of the local model runtime and the KV tier built on it.

They derive from :mod:`memos_core.errors` so one ``except MemOSError`` catches them, and from
the builtin a caller would expect.
"""

from __future__ import annotations

from memos_core.errors import InvalidInputError, MemOSError


class ModelLoadError(MemOSError, RuntimeError):
    """A model or tokenizer could not be loaded or converted (missing file, offline, bad id)."""


class PrefixBoundaryError(InvalidInputError):
    """The prompt's tokens do not start with the cached prefix's tokens.

    Raised when a chat template or tokenizer merges tokens across the boundary between the
    prefix block and the query, so the cached KV would not equal recomputing the prompt.
    """


class UnsupportedCacheError(MemOSError, NotImplementedError):
    """The model's KV cache layout (sliding window, linear attention, ...) is not supported."""
