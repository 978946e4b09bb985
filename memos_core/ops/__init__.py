"""The operations that change memories, over the kernel (:class:`memos_core.store.MemoryStore`).

Each takes the store and validated, access-checked input (the facade, :mod:`memos_core.memos`,
validates and checks rights); each goes through the store's one write path.

* :mod:`~memos_core.ops.writes` -- add (with supersession), new versions, state changes,
  compress;
* :mod:`~memos_core.ops.forget` -- the forget cascade;
* :mod:`~memos_core.ops.share` -- share / revoke, per memory and per namespace;
* :mod:`~memos_core.ops.bundle` -- export / import bundles.
"""

from memos_core.ops import bundle, forget, share, writes

__all__ = ["bundle", "forget", "share", "writes"]
