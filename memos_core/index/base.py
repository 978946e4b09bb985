"""The index protocol: what the retrieval layer needs from a vector index.

The index is derived data. It holds, per memory, a dense vector, a BM25 sparse vector and
the payload fields that filters need -- never the memory text (forgetting must leave no copy
of the text outside the vault). It can always be rebuilt from the vault.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

#: Payload keys every point carries. Filters only use these.
PAYLOAD_KEYS = (
    "user_id",       # str
    "agent_id",      # str | None
    "session_id",    # str | None
    "type",          # str (MemoryType value)
    "tags",          # list[str]
    "state",         # str (State value)
    "occurred_at",   # float epoch seconds | None
    "superseded",    # bool
    "version",       # int: the vault version this point was built from
    "readers",       # list[str]: users other than the owner allowed to read
)


@dataclass(frozen=True)
class SparseVec:
    """A sparse vector (BM25 term weights): parallel lists of indices and values."""

    indices: tuple[int, ...]
    values: tuple[float, ...]


@dataclass(frozen=True)
class IndexPoint:
    """One memory as the index sees it."""

    id: str                      # memory id (UUID string)
    dense: Sequence[float]       # normalised embedding
    sparse: SparseVec            # BM25 document vector
    payload: dict[str, Any]      # the PAYLOAD_KEYS above


@dataclass(frozen=True)
class IndexFilter:
    """Conjunction of conditions; a field left ``None`` means 'no condition'.

    ``user_ids`` matches points whose owner is one of them OR whose ``readers`` contains
    one of them (sharing). ``types``, ``tags`` and ``states`` are any-of (``tags``: the point
    has at least one of them). An *empty* tuple is any-of over nothing and matches no point
    (fail closed: an empty principal list must never mean 'everyone').
    ``occurred_after``/``occurred_before`` are inclusive; a point whose ``occurred_at`` is
    ``None`` fails either. ``include_superseded=False`` drops points with ``superseded`` true.
    """

    user_ids: tuple[str, ...] | None = None
    agent_id: str | None = None
    session_id: str | None = None
    types: tuple[str, ...] | None = None
    tags: tuple[str, ...] | None = None
    states: tuple[str, ...] | None = None
    occurred_after: float | None = None   # inclusive, epoch seconds
    occurred_before: float | None = None  # inclusive, epoch seconds
    include_superseded: bool = False


@dataclass(frozen=True)
class ScoredId:
    """A search hit: memory id and score (higher is better).

    Dense scores are cosine similarities in [-1, 1]; sparse scores are BM25 with IDF
    (>= 0, unbounded, only comparable within one query).
    """

    id: str
    score: float


class IndexLockedError(RuntimeError):
    """The index storage is already open in this or another process."""


class IndexCorruptError(RuntimeError):
    """The index's files cannot be read (damaged, truncated, overwritten). The index is
    derived data: ``MemOS`` rebuilds it from the vault."""


@runtime_checkable
class VectorIndex(Protocol):
    """Dense + sparse search over memories with payload filters.

    Contracts:

    - ``upsert`` replaces a point with the same id (vectors and the whole payload); it
      checks every point first (UUID id, dense length ``dim`` with finite non-zero values,
      payload keys within ``PAYLOAD_KEYS`` with ``user_id`` and ``version`` present) and
      raises ``ValueError`` before writing anything if one is bad. A point the index holds
      at a later ``version`` is left as it is (processes sharing an index may write one
      memory's versions in either order; reconcile deletes such points first).
    - ``set_payload`` merges the given keys into an existing point's payload; a missing id
      raises ``KeyError`` (upsert the full point instead). A payload with a ``version``
      changes nothing when the point already holds that version or a later one.
    - ``delete`` of a missing id does not raise.
    - searches return at most ``limit`` results, best first (see ``ScoredId`` for score
      ranges), never a point that fails the filter; ``limit`` 0 returns ``[]``.
    - ``versions`` maps every point id to its payload ``version``; ``count`` counts points.
    - ``flush`` makes acknowledged writes durable; ``optimize`` (re)builds search indexes
      after bulk writes (a no-op where the engine does it in the background); ``close``
      is idempotent.
    """

    dim: int

    def upsert(self, points: Sequence[IndexPoint]) -> None: ...
    def set_payload(self, id: str, payload: dict[str, Any]) -> None: ...
    def delete(self, ids: Iterable[str]) -> None: ...
    def search_dense(self, vector: Sequence[float], flt: IndexFilter, limit: int) -> list[ScoredId]: ...
    def search_sparse(self, vector: SparseVec, flt: IndexFilter, limit: int) -> list[ScoredId]: ...
    def versions(self) -> dict[str, int]: ...
    def count(self) -> int: ...
    def clear(self) -> None: ...
    def flush(self) -> None: ...
    def optimize(self) -> None: ...
    def close(self) -> None: ...


#: a dense query vector, or a function that computes it (called at most once)
QueryVector = Sequence[float] | Callable[[], Sequence[float]]


def search_hybrid(index: VectorIndex, vector: QueryVector | None, sparse: SparseVec | None,
                  flt: IndexFilter, limit: int) -> tuple[list[ScoredId], list[ScoredId]]:
    """Dense and BM25 hits for one query: ``(index.search_dense(vector, flt, limit),
    index.search_sparse(sparse, flt, limit))``, ``[]`` for a ``None`` vector.

    ``vector`` may be a function that computes the vector (the query embedding), called at
    most once: an index on a server sends the BM25 query first and computes the vector while
    the server works on it.

    An index may implement this as an optional method ``search_hybrid`` with the same
    signature and results -- the server-mode index (:class:`~memos_core.index.pgvector.PgVectorIndex`)
    sends both queries to the server together; otherwise the two searches run in turn.
    """
    own = getattr(index, "search_hybrid", None)
    if own is not None:
        dense, keyword = own(vector, sparse, flt, limit)
        return list(dense), list(keyword)
    if callable(vector):
        vector = vector()
    return (index.search_dense(vector, flt, limit) if vector is not None else [],
            index.search_sparse(sparse, flt, limit) if sparse is not None else [])
