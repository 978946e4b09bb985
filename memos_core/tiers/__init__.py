"""Memory tiers: the forms a memory is served from besides its plaintext.

* :mod:`memos_core.tiers.activation` -- precomputed KV caches of hot memories.
* :mod:`memos_core.tiers.parametric` -- LoRA adapters trained on stable memories.
* :mod:`memos_core.tiers.tempfiles` -- the temporary paths both write before renaming them
  into place, and which of them a crashed writer left behind.

Subpackages import torch lazily; importing this package imports neither them nor torch.
"""

__all__: list[str] = []
