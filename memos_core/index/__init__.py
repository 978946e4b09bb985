"""The vector index: dense + BM25 search with payload filters, derived from the vault.

Three backends behind one protocol (:class:`VectorIndex`): :class:`EdgeIndex`, Qdrant's
engine in-process (the default), :class:`QdrantClientIndex`, a Qdrant server through
``qdrant-client``, and :class:`PgVectorIndex`, PostgreSQL with pgvector (server mode, next
to the server-mode vault). :func:`open_index` picks one by name.

``qdrant_client`` is imported only when the client backend is used (``open_index("qdrant",
...)`` or ``memos_core.index.QdrantClientIndex``): importing it costs seconds, and the
default store never needs it. Likewise ``psycopg`` for ``PgVectorIndex``.
"""

from __future__ import annotations

from os import PathLike, fspath
from typing import TYPE_CHECKING, Any

from memos_core.index.base import (
    PAYLOAD_KEYS,
    IndexCorruptError,
    IndexFilter,
    IndexLockedError,
    IndexPoint,
    ScoredId,
    SparseVec,
    VectorIndex,
)
from memos_core.index.edge import EdgeIndex, EdgeIndexConfig
from memos_core.index.sparse import Bm25Encoder

__all__ = [
    "Bm25Encoder",
    "EdgeIndex",
    "EdgeIndexConfig",
    "IndexCorruptError",
    "IndexFilter",
    "IndexLockedError",
    "IndexPoint",
    "PAYLOAD_KEYS",
    "PgVectorIndex",
    "QdrantClientIndex",
    "ScoredId",
    "SparseVec",
    "VectorIndex",
    "open_index",
]

if TYPE_CHECKING:
    from memos_core.index.client import QdrantClientIndex
    from memos_core.index.pgvector import PgVectorIndex

KINDS = ("edge", "qdrant", "pgvector")


def __getattr__(name: str) -> Any:
    """``QdrantClientIndex`` / ``PgVectorIndex`` on first use (they import their clients)."""
    if name == "QdrantClientIndex":
        from memos_core.index.client import QdrantClientIndex

        return QdrantClientIndex
    if name == "PgVectorIndex":
        from memos_core.index.pgvector import PgVectorIndex

        return PgVectorIndex
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_index(
    kind: str,
    *,
    path: str | PathLike[str] | None = None,
    url: str | None = None,
    dim: int,
    collection: str = "memos",
    pool_size: int = 4,
) -> VectorIndex:
    """Open (or create) an index of the given kind.

    - ``"edge"``: the embedded engine in directory ``path`` (required; ``url`` must be
      ``None``).
    - ``"qdrant"``: qdrant-client against the server at ``url``; without a ``url``, the
      client's local mode in ``path`` (``":memory:"`` for a throwaway one). ``path`` is
      ignored when ``url`` is given. ``collection`` names the Qdrant collection: give every
      data directory that shares one server its own (an index holds one vault's memories).
    - ``"pgvector"``: PostgreSQL with pgvector at ``url`` (``postgresql://...``, required;
      ``path`` is ignored); ``collection`` prefixes its table names (lower-case
      letters, digits, ``_``); ``pool_size``: most connections its pool opens.

    Raises ``ValueError`` for an unknown kind or missing/contradictory arguments, and
    whatever the backend raises on open (e.g. :class:`IndexLockedError`).
    """
    if kind == "edge":
        if url is not None:
            raise ValueError(
                f"index kind 'edge' is embedded and takes no url (got {url!r}); "
                "use kind 'qdrant' to talk to a Qdrant server"
            )
        if path is None:
            raise ValueError("index kind 'edge' needs path= (the index directory)")
        return EdgeIndex(path, dim)
    if kind == "qdrant":
        from memos_core.index.client import QdrantClientIndex

        if url is not None:
            return QdrantClientIndex(url, dim, collection=collection)
        if path is None:
            raise ValueError("index kind 'qdrant' needs url= (a server) or path= (local mode)")
        return QdrantClientIndex(fspath(path), dim, collection=collection)
    if kind == "pgvector":
        if url is None:
            raise ValueError("index kind 'pgvector' needs url= (a postgresql:// URL)")
        from memos_core.index.pgvector import PgVectorIndex

        return PgVectorIndex(url, dim, collection=collection, pool_size=pool_size)
    raise ValueError(f"unknown index kind {kind!r}; expected one of {', '.join(KINDS)}")
