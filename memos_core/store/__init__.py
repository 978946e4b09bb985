"""The kernel: :class:`MemoryStore` -- vault, index, graph, embedder, write lock, listeners
and hooks of one data directory, with the one write path. See :mod:`memos_core.store.kernel`."""

from memos_core.store.kernel import DerivedPurger, MemoryStore

__all__ = ["DerivedPurger", "MemoryStore"]
