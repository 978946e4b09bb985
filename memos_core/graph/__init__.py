"""The memory graph: a compact in-memory structure derived from the vault, held as per-user
views loaded on demand (:mod:`memos_core.graph.views`)."""

from memos_core.graph.memory_graph import GraphHit, MemoryGraph
from memos_core.graph.views import GraphSource, GraphView, GraphViews

__all__ = ["GraphHit", "GraphSource", "GraphView", "GraphViews", "MemoryGraph"]
