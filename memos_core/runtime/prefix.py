"""An immutable key/value cache of a prompt prefix, and forks of it for generation.

A :class:`PrefixCache` holds, for every decoder layer, the keys and values the model computed
for the prefix tokens. It is never written after it is built:

* :meth:`PrefixCache.fork` hands out a fresh ``transformers.DynamicCache`` whose layers start
  out *sharing* the stored tensors (no copy). This is safe because ``DynamicLayer.update``
  in transformers 5.x appends with ``torch.cat`` and rebinds ``layer.keys``; it never writes
  into the old tensor, so generating on the fork leaves the stored tensors untouched. The
  first appended token makes the fork's own ``[prefix + new]`` tensor, which is the copy
  every generation needs anyway. tests/test_kv_cache.py checks this (length, data pointer
  and values of the stored tensors after generation) for the installed version.
* Only plain full-attention ``DynamicLayer`` caches are supported: sliding-window and
  linear-attention layers drop or fold old states, so a shared prefix would be wrong for
  them. Building a prefix for such a model raises :class:`UnsupportedCacheError`.

Tensor layout per layer: keys and values of shape ``(1, num_kv_heads, prefix_len, head_dim)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from memos_core.runtime.errors import UnsupportedCacheError

if TYPE_CHECKING:
    import torch
    from transformers import DynamicCache

Message = dict[str, str]


class PrefixCache:
    """KV cache of the prompt prefix rendered from ``messages`` (usually one system message).

    Build one with :meth:`memos_core.runtime.LocalModel.build_prefix`, or load one with
    :func:`memos_core.tiers.activation.load_block`. Treat the tensors as read-only.

    Attributes:
        messages: the chat messages the prefix was rendered from (copies are handed out).
        token_ids: the prefix tokens, exactly as the model saw them.
        fingerprint_digest: :attr:`ModelFingerprint.digest` of the model that computed it.
    """

    __slots__ = ("_messages", "_token_ids", "_layers", "_fingerprint_digest")

    def __init__(
        self,
        *,
        messages: Sequence[Message],
        token_ids: Sequence[int],
        layers: Sequence[tuple[torch.Tensor, torch.Tensor]],
        fingerprint_digest: str,
    ) -> None:
        if not layers:
            raise ValueError("a PrefixCache needs at least one layer of keys and values")
        n = len(token_ids)
        for index, (keys, values) in enumerate(layers):
            # keys, values: (1, kv_heads, n, head_dim)
            if keys.dim() != 4 or keys.shape != values.shape or keys.shape[0] != 1:
                raise ValueError(
                    f"layer {index}: keys/values must both be (1, heads, tokens, head_dim), "
                    f"got {tuple(keys.shape)} and {tuple(values.shape)}"
                )
            if keys.shape[2] != n:
                raise ValueError(
                    f"layer {index} holds {keys.shape[2]} positions but there are {n} prefix tokens"
                )
        self._messages = tuple((str(m["role"]), str(m["content"])) for m in messages)
        self._token_ids = tuple(int(t) for t in token_ids)
        self._layers = tuple((k, v) for k, v in layers)
        self._fingerprint_digest = fingerprint_digest

    @property
    def messages(self) -> list[Message]:
        """The prefix's chat messages (a fresh list each call)."""
        return [{"role": role, "content": content} for role, content in self._messages]

    @property
    def token_ids(self) -> tuple[int, ...]:
        return self._token_ids

    @property
    def fingerprint_digest(self) -> str:
        return self._fingerprint_digest

    @property
    def num_tokens(self) -> int:
        """Number of prefix tokens (the cached sequence length)."""
        return len(self._token_ids)

    @property
    def num_layers(self) -> int:
        return len(self._layers)

    @property
    def nbytes(self) -> int:
        """Bytes held by the key and value tensors."""
        return sum(t.numel() * t.element_size() for layer in self._layers for t in layer)

    def layers(self) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        """The per-layer ``(keys, values)`` tensors. Read-only by contract: never write them."""
        return self._layers

    def fork(self) -> DynamicCache:
        """A new ``DynamicCache`` positioned after the prefix, for one generation.

        The fork may be grown, cropped or thrown away freely; this object is unaffected
        (see the module docstring for why sharing the tensors is safe).
        """
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        cache = DynamicCache()
        for keys, values in self._layers:
            layer = DynamicLayer()  # type: ignore[no-untyped-call]
            layer.lazy_initialization(keys, values)  # records dtype/device, marks initialized
            layer.keys, layer.values = keys, values  # shared; update() rebinds, never writes
            cache.layers.append(layer)
        return cache

    def __repr__(self) -> str:
        return (
            f"PrefixCache(tokens={self.num_tokens}, layers={self.num_layers}, "
            f"bytes={self.nbytes}, fingerprint={self._fingerprint_digest[:12]})"
        )


def layers_from_cache(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Extract ``(keys, values)`` per layer from a freshly prefilled ``DynamicCache``.

    Raises:
        UnsupportedCacheError: a layer is not a plain full-attention ``DynamicLayer``.
    """
    from transformers.cache_utils import DynamicLayer

    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    for index, layer in enumerate(cache.layers):
        if type(layer) is not DynamicLayer or not layer.is_initialized:
            raise UnsupportedCacheError(
                f"layer {index} uses {type(layer).__name__}; KV prefixes support only "
                "full-attention models whose cache is made of DynamicLayer (Llama, Qwen2, ...)"
            )
        out.append((cast("torch.Tensor", layer.keys), cast("torch.Tensor", layer.values)))  # initialized
    return out
