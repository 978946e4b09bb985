"""The embedded backend: Qdrant's engine in-process through ``qdrant-edge-py``.

One ``EdgeShard`` per index directory holds the named vectors ``"dense"`` (cosine) and
``"bm25"`` (sparse, IDF modifier) and the filter payload, with a payload index on every
filter field.

Things about qdrant-edge-py 0.9 that shape this module:

- **Locking.** A shard directory can be open once: a second ``EdgeShard.load`` (this
  process or another) fails on the WAL's file lock. That surfaces here as
  :class:`~memos_core.index.base.IndexLockedError`.
- **The GIL.** Every shard call holds the GIL until it returns: calls from several
  threads are safe but run one at a time, and a long ``optimize()`` stalls every other
  Python thread (an asyncio loop included) while it runs. A lock in :class:`EdgeIndex`
  also serialises calls explicitly, so ``clear()``/``close()`` cannot race a search.
- **No background optimizer.** Upserts land in an appendable segment searched by brute
  force: fine for thousands of points, but at 100k x 384 a dense search takes 10-25 ms
  and 35-100 ms with a filter that most points pass (0.4-0.8 ms once optimized).
  :meth:`EdgeIndex.optimize` builds the HNSW graphs; call it after bulk loads (rebuild,
  import) and from maintenance when many points were added.
- **BM25 statistics.** A search with principals counts IDF over the live points they own
  or read (an IDF corpus filter, :func:`~memos_core.index.filters.idf_corpus`). For a
  store-wide search the sparse index's own IDF counts deleted and replaced points until
  their segment is rebuilt, so scores drift a little after deletes (qdrant-client's local
  mode is exact). ``EdgeIndexConfig(exact_idf=True)`` pays ~1 ms per search for exact IDF.
- **Python ``True`` in ``MatchValue``** is taken as the integer 1 and matches no bool
  payload; ``numpy.bool_(True)`` matches, from numpy 2.3 on (before, it is an int as well,
  and superseded memories came back in default searches). The superseded condition relies
  on that: :func:`check_numpy` refuses an older numpy at import.
- **Damaged files.** The engine reports damage in three ways: a bare ``Exception`` (a
  vector chunk cut short: ``vector 0 is not readable``, ``... is out of bounds``, and after
  a failed update ``Not recovered from previous error`` for every later one), a Rust panic
  (a cut ``status.dat``), which pyo3 raises as ``pyo3_runtime.PanicException``, a
  ``BaseException`` that ``except Exception`` lets through; and, for a garbled
  ``mutable_id_tracker.mappings``, an abort of the whole process that nothing in-process can
  catch. The first two become :class:`~memos_core.index.base.IndexCorruptError` here, at
  open and in every call, so that the store rebuilds the index from the vault.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from os import PathLike
from pathlib import Path
from threading import RLock
from uuid import UUID
from typing import Any

import numpy as np
import qdrant_edge as qe
from pydantic import BaseModel, ConfigDict, Field

from memos_core.index.base import (
    IndexCorruptError,
    IndexFilter,
    IndexLockedError,
    IndexPoint,
    ScoredId,
    SparseVec,
)
from memos_core.index.filters import (
    AnyOf,
    Between,
    Condition,
    Either,
    FilterPlan,
    IsTrue,
    idf_corpus,
    plan_filter,
)
from memos_core.index.points import (
    batches_by_version,
    canonical_id,
    check_limit,
    check_payload,
    check_points,
    check_sparse,
    dense_list,
)

DENSE = "dense"
SPARSE = "bm25"
_BATCH = 1024  # points per update operation
_SCROLL_PAGE = 4096
_SHARD_MARKERS = ("edge_config.json", "segments", "wal")
logger = logging.getLogger("memos_core")


class EdgeIndexConfig(BaseModel):
    """Tuning of the embedded index; the defaults suit memories up to a few 100k."""

    model_config = ConfigDict(frozen=True, extra="forbid")  # a misspelt field is an error

    hnsw_m: int = Field(default=16, ge=4, le=128, description="HNSW edges per node.")
    hnsw_ef_construct: int = Field(
        default=100,
        ge=8,
        le=1000,
        description="HNSW build candidates: higher builds slower and recalls better.",
    )
    search_ef: int | None = Field(
        default=128, ge=1, description="HNSW candidates per search; None for the engine default."
    )
    quantize: bool = Field(
        default=True,
        description="Keep an int8 copy of the dense vectors in RAM for search (results are "
        "rescored with the full vectors): HNSW builds several times faster and searches scan "
        "a quarter of the bytes.",
    )
    exact_idf: bool = Field(
        default=False,
        description="Compute BM25 IDF over the live points on every store-wide sparse "
        "search. By default the engine's statistics are used, as on a Qdrant server: like "
        "Lucene's, they still count deleted and replaced points until their segment is "
        "rebuilt (optimize() past the vacuum threshold, or reopen), which shifts scores "
        "slightly. Exact IDF costs about 1 ms more per sparse search at 100k points. A "
        "search with principals always counts the live points they own or read "
        "(filters.idf_corpus).",
    )
    max_search_threads: int | None = Field(
        default=None, ge=1, description="Threads of the shard's search pool; None: one per CPU."
    )


def _payload_indexes() -> dict[str, Any]:
    # Only the owner field gets per-value HNSW links (filtered search within one user's
    # memories stays fast and accurate); for the rest a plain payload index is enough and
    # per-value graphs would multiply the optimize() time.
    flat = qe.KeywordIndexParams(enable_hnsw=False)
    return {
        "user_id": qe.KeywordIndexParams(),
        "readers": flat,
        "agent_id": flat,
        "session_id": flat,
        "type": flat,
        "tags": flat,
        "state": flat,
        "occurred_at": qe.FloatIndexParams(enable_hnsw=False),
        "superseded": qe.BoolIndexParams(enable_hnsw=False),
    }


def _edge_config(dim: int, config: EdgeIndexConfig) -> qe.EdgeConfig:
    quantization = None
    if config.quantize:
        quantization = qe.ScalarQuantizationConfig(qe.ScalarType.Int8, memory=qe.Memory.Pinned)
    dense = qe.EdgeVectorParams(
        size=dim, distance=qe.Distance.Cosine, quantization_config=quantization
    )
    return qe.EdgeConfig(
        vectors={DENSE: dense},
        sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        hnsw_config=qe.HnswIndexConfig(
            m=config.hnsw_m, ef_construct=config.hnsw_ef_construct, full_scan_threshold=10_000
        ),
        max_search_threads=config.max_search_threads,
    )


def _not_after(version: int) -> qe.Filter:
    """Points whose payload ``version`` is at most ``version``."""
    return qe.Filter(must=[qe.FieldCondition("version", range=qe.RangeFloat(lte=version))])


def check_numpy(version: str) -> None:
    """Raise ImportError for a numpy older than 2.3 (see the module doc: the superseded
    filter would match nothing, silently)."""
    if np.lib.NumpyVersion(version) < "2.3.0":
        raise ImportError(
            f"memos-core needs numpy >= 2.3 for its embedded index (found {version}): with an "
            "older numpy its filters cannot tell superseded memories. Upgrade it: "
            "pip install 'numpy>=2.3'.")


check_numpy(np.__version__)


def _condition(cond: Condition) -> Any:
    """One plan condition as a qdrant-edge condition."""
    if isinstance(cond, AnyOf):
        return qe.FieldCondition(cond.key, match=qe.MatchAny(list(cond.values)))
    if isinstance(cond, IsTrue):
        return qe.FieldCondition(cond.key, match=qe.MatchValue(np.bool_(True)))  # type: ignore[arg-type]  # see module doc
    if isinstance(cond, Between):
        return qe.FieldCondition(cond.key, range=qe.RangeFloat(gte=cond.gte, lte=cond.lte))
    if isinstance(cond, Either):
        return qe.Filter(should=[_condition(option) for option in cond.options])
    raise TypeError(f"unknown filter condition {cond!r}")


def edge_filter(plan: FilterPlan) -> qe.Filter | None:
    """The qdrant-edge filter of a plan; ``None`` for an empty plan."""
    if plan.is_empty:
        return None
    return qe.Filter(
        must=[_condition(c) for c in plan.must] or None,
        must_not=[_condition(c) for c in plan.must_not] or None,
    )


#: Words of the engine's errors that mean its files are damaged (a truncated vector chunk
#: fails reads with the first, writes with the second, and every later update with the third).
_DAMAGE_WORDS = ("is not readable", "out of bounds", "Not recovered from previous error")


def is_panic(exc: BaseException) -> bool:
    """Whether ``exc`` is a Rust panic raised through pyo3 (``pyo3_runtime.PanicException``).

    pyo3 creates that class on the first panic and registers no importable module for it,
    so it is recognised by name. It derives from ``BaseException``: ``except Exception``
    misses it, and catching ``BaseException`` must let KeyboardInterrupt/SystemExit by."""
    kind = type(exc)
    return kind.__name__ == "PanicException" and kind.__module__ == "pyo3_runtime"


def _damage(exc: BaseException, path: Path) -> IndexCorruptError | None:
    """The :class:`IndexCorruptError` for an engine error of a call on the open shard at
    ``path`` that shows its files damaged; ``None`` for any other exception."""
    if not (is_panic(exc) or (isinstance(exc, Exception) and not isinstance(exc, KeyError)
                              and any(w in str(exc) for w in _DAMAGE_WORDS))):
        return None
    return IndexCorruptError(
        f"the edge index at {path} is damaged ({type(exc).__name__}: {str(exc)[:300]}). It is "
        "derived data: rebuild it from the vault (MemOS.reindex(), `memos reindex`; MemOS "
        "does so itself when it meets the damage)")


def _translate(exc: BaseException, path: Path, dim: int) -> Exception:
    """A readable exception for an engine error (or panic) raised while opening ``path``."""
    text = str(exc)
    # the engine's messages name the path, which may itself contain "lock": look past it
    words = text.replace(str(path), "<path>")
    if "WouldBlock" in words or "Resource temporarily unavailable" in words:
        return IndexLockedError(
            f"the edge index at {path} is already open (in this process or another): close "
            "the other MemOS/EdgeIndex first, or give this one its own data directory"
        )
    if "ncompatible" in text:
        return ValueError(
            f"the edge index at {path} was built with other vector settings than dim={dim} "
            f"({text}). Use the embedding model it was built with, or delete {path}: the index "
            "is derived data and is rebuilt from the vault"
        )
    return IndexCorruptError(
        f"could not open the edge index at {path}: {text}. The index is derived data: "
        "delete the directory and it is rebuilt from the vault (MemOS does so itself)"
    )


class EdgeIndex:
    """A :class:`~memos_core.index.base.VectorIndex` on an embedded qdrant-edge shard.

    ``EdgeIndex(path, dim)`` opens the shard in ``path`` or creates one there; the
    directory belongs to the index (``clear()`` empties it), so a non-empty directory that
    holds no shard is refused. Raises :class:`IndexLockedError` if the shard is open
    elsewhere and ``ValueError`` if it was built for another ``dim``.

    Writes go to the shard's write-ahead log and survive a crash; ``flush()`` also writes
    the segments. Thread-safe: calls are serialised by an internal lock.
    """

    def __init__(
        self, path: str | PathLike[str], dim: int, config: EdgeIndexConfig | None = None
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        self.dim = dim
        self.path = Path(path)
        self.config = config or EdgeIndexConfig()
        self._lock = RLock()
        rescore = qe.QuantizationSearchParams(rescore=True) if self.config.quantize else None
        self._dense_params = qe.SearchParams(hnsw_ef=self.config.search_ef, quantization=rescore)
        self._sparse_params: qe.SearchParams | None = None
        if self.config.exact_idf:
            # An (empty) IDF corpus filter makes the engine count only live points.
            self._sparse_params = qe.SearchParams(idf=qe.IdfParams(corpus=qe.Filter()))
        self._shard: qe.EdgeShard | None = self._open()

    def __repr__(self) -> str:
        return f"EdgeIndex({str(self.path)!r}, dim={self.dim})"

    def __enter__(self) -> EdgeIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- opening ------------------------------------------------------------------------

    def _open(self) -> qe.EdgeShard:
        config = _edge_config(self.dim, self.config)
        is_shard = any((self.path / name).exists() for name in _SHARD_MARKERS)
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"edge index path {self.path} is a file; give a directory")
        if self.path.is_dir() and not is_shard and any(self.path.iterdir()):
            raise ValueError(
                f"{self.path} is not empty and holds no edge index; give the index a "
                "directory of its own (it deletes its contents on clear())"
            )
        try:
            if is_shard:
                shard = qe.EdgeShard.load(str(self.path), config)
            else:
                shard = qe.EdgeShard.create(str(self.path), config)
        except BaseException as exc:  # a bare Exception, or a panic on damaged files
            if isinstance(exc, Exception) or is_panic(exc):
                raise _translate(exc, self.path, self.dim) from exc
            raise
        try:
            existing = shard.info().payload_schema
            for field, schema in _payload_indexes().items():
                if field not in existing:
                    shard.update(qe.UpdateOperation.create_field_index(field, schema))
        except BaseException as exc:
            shard.close()  # release the directory lock
            if isinstance(exc, Exception) or is_panic(exc):
                raise _translate(exc, self.path, self.dim) from exc
            raise
        return shard

    @contextmanager
    def _shard_locked(self) -> Iterator[qe.EdgeShard]:
        """The open shard, under the lock; an engine error that shows its files damaged
        leaves as :class:`IndexCorruptError` (see the module doc)."""
        with self._lock:
            if self._shard is None:
                raise RuntimeError(f"{self!r} is closed; open a new EdgeIndex")
            try:
                yield self._shard
            except BaseException as exc:
                damage = _damage(exc, self.path)
                if damage is None:
                    raise
                raise damage from exc

    # -- writes -------------------------------------------------------------------------

    def upsert(self, points: Sequence[IndexPoint]) -> None:
        """Insert or replace points (see the protocol); all are checked before any write.

        Written in operations of 1,024 points, each atomic; a crash between two leaves the
        earlier ones written (the caller's reconcile with the vault repairs that).
        """
        checked = check_points(points, self.dim)
        batch: list[tuple[int, qe.Point]] = []
        for pid, dense, sparse, payload in checked:
            vectors: dict[str, Any] = {DENSE: dense}
            if sparse.indices:
                vectors[SPARSE] = qe.SparseVector(list(sparse.indices), list(sparse.values))
            batch.append((payload["version"], qe.Point(pid, vectors, payload)))
        with self._shard_locked() as shard:
            for version, part in batches_by_version(batch, _BATCH):
                # a point stored at a later version stays, as on the shared backends
                shard.update(qe.UpdateOperation.upsert_points(part, _not_after(version)))

    def set_payload(self, id: str, payload: dict[str, Any]) -> None:
        """Merge ``payload`` into point ``id``'s payload; ``KeyError`` if it does not exist.
        A payload with a ``version`` changes nothing when the point already holds that
        version or a later one."""
        pid = canonical_id(id)
        fields = check_payload(payload, partial=True)
        with self._shard_locked() as shard:
            if "version" in fields:  # one update: never moves the point back a version
                older = qe.Filter(must=[qe.HasIdCondition({pid}),
                                        _not_after(fields["version"] - 1)])
                shard.update(qe.UpdateOperation.set_payload_by_filter(older, fields))
                if not shard.retrieve([pid], with_payload=False, with_vector=False):
                    raise KeyError(f"no point {pid} in the index; upsert it instead")
                return
            try:
                shard.update(qe.UpdateOperation.set_payload([pid], fields))
            except Exception as exc:
                if "No point with id" in str(exc):
                    raise KeyError(f"no point {pid} in the index; upsert it instead") from None
                raise

    def delete(self, ids: Iterable[str]) -> None:
        """Delete points by id; missing ids are ignored."""
        pids: list[int | UUID | str] = list(dict.fromkeys(canonical_id(i) for i in ids))
        if not pids:
            return
        with self._shard_locked() as shard:
            for start in range(0, len(pids), _BATCH):
                shard.update(qe.UpdateOperation.delete_points(pids[start : start + _BATCH]))

    def clear(self) -> None:
        """Remove every point: the shard directory is deleted and created anew. Works on a
        damaged shard too (that is how the store rebuilds one)."""
        with self._lock:
            if self._shard is None:
                raise RuntimeError(f"{self!r} is closed; open a new EdgeIndex")
            shard, self._shard = self._shard, None
            try:
                shard.close()
            except BaseException as exc:  # its files go anyway: what it could not close
                if not (isinstance(exc, Exception) or is_panic(exc)):
                    raise
                logger.warning("closing the damaged edge index at %s failed (%s); deleting "
                               "it anyway", self.path, exc)
            shutil.rmtree(self.path)
            self._shard = self._open()

    # -- reads --------------------------------------------------------------------------

    def _query(
        self, query: Any, params: qe.SearchParams | None, flt: IndexFilter, limit: int
    ) -> list[ScoredId]:
        """Run one query; ``[]`` without touching the shard if the filter matches nothing."""
        plan = plan_filter(flt)
        if plan is None or check_limit(limit) == 0:
            return []
        request = qe.QueryRequest(
            limit=limit,
            query=query,
            filter=edge_filter(plan),
            params=params,
            with_payload=False,
            with_vector=False,
        )
        with self._shard_locked() as shard:
            hits = shard.query(request)
        return [ScoredId(str(hit.id), float(hit.score)) for hit in hits]

    def search_dense(self, vector: Sequence[float], flt: IndexFilter, limit: int) -> list[ScoredId]:
        """Nearest points by cosine similarity, best first."""
        query = qe.Query.Nearest(dense_list(vector, self.dim), using=DENSE)
        return self._query(query, self._dense_params, flt, limit)

    def search_sparse(self, vector: SparseVec, flt: IndexFilter, limit: int) -> list[ScoredId]:
        """Points by BM25 (query term weights x stored TF weights x IDF), best first.

        Only points sharing a term with the query are returned; an empty query vector
        returns ``[]``.
        """
        check_sparse(vector)
        if not vector.indices:
            return []
        sparse = qe.SparseVector(list(vector.indices), list(vector.values))
        query = qe.Query.Nearest(sparse, using=SPARSE)
        return self._query(query, self._idf_params(flt), flt, limit)

    def _idf_params(self, flt: IndexFilter) -> qe.SearchParams | None:
        """The sparse search's parameters: IDF counted over the points the filter's
        principals own or read (:func:`~memos_core.index.filters.idf_corpus`); over the
        whole shard for a store-wide search."""
        corpus = idf_corpus(flt)
        if corpus is None:
            return self._sparse_params
        return qe.SearchParams(idf=qe.IdfParams(corpus=edge_filter(corpus) or qe.Filter()))

    def versions(self) -> dict[str, int]:
        """``{id: payload["version"]}`` for every point (scrolls the whole shard)."""
        out: dict[str, int] = {}
        offset = None
        selector = qe.PayloadSelector.Include(["version"])
        with self._shard_locked() as shard:
            while True:
                request = qe.ScrollRequest(
                    offset=offset, limit=_SCROLL_PAGE, with_payload=selector, with_vector=False
                )
                records, offset = shard.scroll(request)
                for record in records:
                    out[str(record.id)] = int((record.payload or {}).get("version", -1))
                if offset is None:
                    return out

    def count(self) -> int:
        """The exact number of points."""
        with self._shard_locked() as shard:
            return int(shard.count(qe.CountRequest(exact=True)))

    # -- maintenance --------------------------------------------------------------------

    def flush(self) -> None:
        """Write pending changes to the segment files (the WAL already has them)."""
        with self._shard_locked() as shard:
            shard.flush()

    def optimize(self) -> None:
        """Merge segments and build the HNSW and quantized indexes; blocks until done.

        Searches stay correct without it but scan the unindexed points by brute force,
        which at 100k points costs 10-100 ms per search. Cost of optimizing: 20-70 s for
        100k 384-d points on two cores (~20 s to fold 10k new points into 100k), all the
        while holding the GIL (other Python threads stall). So call it after bulk loads and in
        idle maintenance, not on the request path. Returns at once when there is nothing
        to do (e.g. fewer new points than the engine's indexing threshold, ~10k at 384-d).

        Flushes afterwards: qdrant-edge keeps the segments an optimize replaced on disk and
        mapped in memory until the next flush, so repeated optimizes without one grew disk
        and RSS with every bulk load (13 GB RSS at 300k memories in benchmarks/scale.py).
        """
        with self._shard_locked() as shard:
            shard.optimize()
            shard.flush()

    def close(self) -> None:
        """Flush and release the shard (and its directory lock). Idempotent."""
        with self._lock:
            if self._shard is None:
                return
            shard, self._shard = self._shard, None
            try:
                shard.flush()
            except BaseException as exc:
                damage = _damage(exc, self.path)
                if damage is None:
                    raise
                raise damage from exc
            finally:
                shard.close()
