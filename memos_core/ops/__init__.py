"""The operations over the kernel (:class:`memos_core.store.MemoryStore`): those that change
memories, and search.

Each takes the store and validated, access-checked input (the facade, :mod:`memos_core.memos`,
validates and checks rights); each change goes through the store's one write path.

* :mod:`~memos_core.ops.writes` -- add (with supersession), new versions, state changes,
  compress;
* :mod:`~memos_core.ops.forget` -- the forget cascade;
* :mod:`~memos_core.ops.share` -- share / revoke, per memory and per namespace;
* :mod:`~memos_core.ops.bundle` -- export / import bundles;
* :mod:`~memos_core.ops.search` -- search: candidates, the vault's checks, the second stage,
  redaction, usage.
"""

from memos_core.ops import bundle, forget, search, share, writes

__all__ = ["bundle", "forget", "search", "share", "writes"]
