"""Memory tiers: the forms a memory is served from besides its plaintext.

* :mod:`memos_core.tiers.activation` -- precomputed KV caches of hot memories.

Subpackages import torch lazily; importing this package imports neither them nor torch.
"""

__all__: list[str] = []
