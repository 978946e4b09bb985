"""The memory graph (a compact in-memory structure), derived from the vault and rebuilt at open."""

from memos_core.graph.memory_graph import GraphHit, MemoryGraph

__all__ = ["GraphHit", "MemoryGraph"]
