"""The server backend: a Qdrant server or cluster through ``qdrant-client``.

The same collection layout as the embedded backend (``"dense"`` cosine, ``"bm25"`` sparse
with the IDF modifier, the filter payload), so both pass one conformance suite. The
client's local mode (``":memory:"`` or a directory) works too and is what the tests use as
a stand-in for a server; it scans every point on filtered search, so it is for tests and
small data only.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator, Sequence
from os import PathLike, fspath
from threading import RLock
from typing import Any
from uuid import UUID

from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from memos_core.errors import ServerUnavailableError
from memos_core.index.base import IndexFilter, IndexLockedError, IndexPoint, ScoredId, SparseVec
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
_BATCH = 256  # points per request: keeps request bodies well under server limits
_SCROLL_PAGE = 4096
_PAYLOAD_INDEXES = {
    "user_id": models.PayloadSchemaType.KEYWORD,
    "readers": models.PayloadSchemaType.KEYWORD,
    "agent_id": models.PayloadSchemaType.KEYWORD,
    "session_id": models.PayloadSchemaType.KEYWORD,
    "type": models.PayloadSchemaType.KEYWORD,
    "tags": models.PayloadSchemaType.KEYWORD,
    "state": models.PayloadSchemaType.KEYWORD,
    "occurred_at": models.PayloadSchemaType.FLOAT,
    "superseded": models.PayloadSchemaType.BOOL,
}


def _condition(cond: Condition) -> Any:
    """One plan condition as a qdrant-client condition."""
    if isinstance(cond, AnyOf):
        return models.FieldCondition(key=cond.key, match=models.MatchAny(any=list(cond.values)))
    if isinstance(cond, IsTrue):
        return models.FieldCondition(key=cond.key, match=models.MatchValue(value=True))
    if isinstance(cond, Between):
        return models.FieldCondition(key=cond.key, range=models.Range(gte=cond.gte, lte=cond.lte))
    if isinstance(cond, Either):
        return models.Filter(should=[_condition(option) for option in cond.options])
    raise TypeError(f"unknown filter condition {cond!r}")


def _not_after(version: int) -> models.Filter:
    """Points whose payload ``version`` is at most ``version``."""
    return models.Filter(must=[models.FieldCondition(key="version",
                                                     range=models.Range(lte=version))])


def client_filter(plan: FilterPlan) -> models.Filter | None:
    """The qdrant-client filter of a plan; ``None`` for an empty plan."""
    if plan.is_empty:
        return None
    return models.Filter(
        must=[_condition(c) for c in plan.must] or None,
        must_not=[_condition(c) for c in plan.must_not] or None,
    )


#: The oldest Qdrant server whose writes can be conditional on the stored point (an upsert's
#: ``update_filter``): processes sharing a collection write one memory's versions in any order.
MIN_SERVER = (1, 16)


def check_server_version(version: str) -> None:
    """Raise ``ValueError`` for a Qdrant server older than :data:`MIN_SERVER` (a version
    string it does not parse is let through: a development build)."""
    try:
        found = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return
    if found < MIN_SERVER:
        raise ValueError(
            f"The Qdrant server runs {version}; memos-core needs {MIN_SERVER[0]}.{MIN_SERVER[1]} "
            "or later (its writes are conditional on the stored version). Upgrade the server, "
            "or use the pgvector index.")


def _make_client(target: str | PathLike[str]) -> QdrantClient:
    """A client for a URL, ``":memory:"`` or a local directory."""
    text = fspath(target)
    if text.startswith(("http://", "https://")):
        return QdrantClient(url=text)
    try:
        # Our own lock serialises calls, so SQLite may be used from any thread.
        if text == ":memory:":
            return QdrantClient(location=text, force_disable_check_same_thread=True)
        return QdrantClient(path=text, force_disable_check_same_thread=True)
    except RuntimeError as exc:
        if "already accessed" in str(exc):
            raise IndexLockedError(
                f"the local Qdrant storage at {text} is already open (in this process or "
                "another): close the other client first, or use a Qdrant server"
            ) from exc
        raise


def _is_local(client: QdrantClient) -> bool:
    options = client.init_options
    return options.get("location") == ":memory:" or options.get("path") is not None


class QdrantClientIndex:
    """A :class:`~memos_core.index.base.VectorIndex` on a Qdrant collection.

    ``client_or_url_or_path``: a ready ``QdrantClient`` (not closed by :meth:`close`), an
    ``http(s)://`` URL, ``":memory:"`` or a directory for the client's local mode. The
    collection is created if missing (with payload indexes on a server); an existing one
    must have this layout and ``dim``, else ``ValueError``. Writes wait for the server to
    apply them, so a search right after an upsert sees it. Thread-safe (local mode is
    serialised by a lock; the remote client is thread-safe itself).
    """

    def __init__(
        self,
        client_or_url_or_path: QdrantClient | str | PathLike[str],
        dim: int,
        collection: str = "memos",
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if not isinstance(collection, str) or not collection:
            raise ValueError(f"collection must be a non-empty string, got {collection!r}")
        self.dim = dim
        self.collection = collection
        if isinstance(client_or_url_or_path, QdrantClient):
            self._client: QdrantClient | None = client_or_url_or_path
            self._owns_client = False
        else:
            self._client = _make_client(client_or_url_or_path)
            self._owns_client = True
        self.local = _is_local(self._client)
        self._lock: contextlib.AbstractContextManager[Any] = (
            RLock() if self.local else contextlib.nullcontext()
        )
        with self._client_locked() as client:
            try:
                self._ensure_collection(client)
            except ResponseHandlingException as exc:  # no answer from the server
                if self._owns_client:
                    client.close()
                where = ("the client's server" if isinstance(client_or_url_or_path, QdrantClient)
                         else fspath(client_or_url_or_path))
                raise ServerUnavailableError(f"The Qdrant server at {where} cannot be reached "
                                             f"({exc}). Start it, or check qdrant_url.") from exc

    def __repr__(self) -> str:
        return (
            f"QdrantClientIndex(collection={self.collection!r}, dim={self.dim}, "
            f"local={self.local})"
        )

    def __enter__(self) -> QdrantClientIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _client_locked(self) -> Iterator[QdrantClient]:
        with self._lock:
            if self._client is None:
                raise RuntimeError(f"{self!r} is closed; open a new QdrantClientIndex")
            yield self._client

    # -- collection ---------------------------------------------------------------------

    def _ensure_collection(self, client: QdrantClient) -> None:
        if not self.local:
            check_server_version(client.info().version)
        if not client.collection_exists(self.collection):
            self._create_collection(client)
            return
        info = client.get_collection(self.collection)
        params = info.config.params
        dense = params.vectors.get(DENSE) if isinstance(params.vectors, dict) else None
        sparse = (params.sparse_vectors or {}).get(SPARSE)
        if (
            dense is None
            or dense.size != self.dim
            or dense.distance != models.Distance.COSINE
            or sparse is None
            or sparse.modifier != models.Modifier.IDF
        ):
            raise ValueError(
                f"Qdrant collection {self.collection!r} exists with another layout than "
                f"dense cosine dim={self.dim} + bm25 sparse with IDF (found vectors "
                f"{params.vectors!r}, sparse {params.sparse_vectors!r}). Use another "
                "collection name or delete it: the index is rebuilt from the vault"
            )

    def _create_collection(self, client: QdrantClient) -> None:
        client.create_collection(
            self.collection,
            vectors_config={
                DENSE: models.VectorParams(size=self.dim, distance=models.Distance.COSINE)
            },
            sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
        )
        if self.local:
            return  # local mode ignores payload indexes (and warns about each one)
        for field, schema in _PAYLOAD_INDEXES.items():
            client.create_payload_index(self.collection, field, schema, wait=True)

    # -- writes -------------------------------------------------------------------------

    def upsert(self, points: Sequence[IndexPoint]) -> None:
        """Insert or replace points (see the protocol); all are checked before any write."""
        structs: list[tuple[int, models.PointStruct]] = []
        for pid, dense, sparse, payload in check_points(points, self.dim):
            vectors: dict[str, Any] = {DENSE: dense}
            if sparse.indices:
                vectors[SPARSE] = models.SparseVector(
                    indices=list(sparse.indices), values=list(sparse.values)
                )
            structs.append((payload["version"],
                            models.PointStruct(id=pid, vector=vectors, payload=payload)))
        with self._client_locked() as client:
            for version, batch in batches_by_version(structs, _BATCH):
                # a point stored at a later version stays (processes sharing the
                # collection may write one memory's versions in either order)
                client.upsert(self.collection, batch, wait=True,
                              update_filter=_not_after(version))

    def set_payload(self, id: str, payload: dict[str, Any]) -> None:
        """Merge ``payload`` into point ``id``'s payload; ``KeyError`` if it does not exist.
        A payload with a ``version`` changes nothing when the point already holds that
        version or a later one (one conditional update on the server: processes sharing
        the collection may write one memory's versions in either order)."""
        pid = canonical_id(id)
        fields = check_payload(payload, partial=True)
        with self._client_locked() as client:
            if "version" in fields:
                older = models.Filter(must=[models.HasIdCondition(has_id=[pid]),
                                            _not_after(fields["version"] - 1)])
                client.set_payload(self.collection, fields,
                                   points=models.FilterSelector(filter=older), wait=True)
                if not client.retrieve(self.collection, ids=[pid], with_payload=False,
                                       with_vectors=False):
                    raise KeyError(f"no point {pid} in the index; upsert it instead")
                return
            try:
                client.set_payload(self.collection, fields, points=[pid], wait=True)
            except KeyError:  # local mode
                raise KeyError(f"no point {pid} in the index; upsert it instead") from None
            except UnexpectedResponse as exc:  # server: 404 "No point with id ..."
                if exc.status_code == 404:
                    raise KeyError(f"no point {pid} in the index; upsert it instead") from None
                raise

    def delete(self, ids: Iterable[str]) -> None:
        """Delete points by id; missing ids are ignored."""
        pids: list[int | str | UUID] = list(dict.fromkeys(canonical_id(i) for i in ids))
        with self._client_locked() as client:
            for start in range(0, len(pids), _BATCH):
                selector = models.PointIdsList(points=pids[start : start + _BATCH])
                client.delete(self.collection, points_selector=selector, wait=True)

    def clear(self) -> None:
        """Remove every point: the collection is dropped and created anew."""
        with self._client_locked() as client:
            client.delete_collection(self.collection)
            self._create_collection(client)

    # -- reads --------------------------------------------------------------------------

    def _query(self, query: Any, using: str, flt: IndexFilter, limit: int,
               params: models.SearchParams | None = None) -> list[ScoredId]:
        plan = plan_filter(flt)
        if plan is None or check_limit(limit) == 0:
            return []
        with self._client_locked() as client:
            response = client.query_points(
                self.collection,
                query=query,
                using=using,
                query_filter=client_filter(plan),
                search_params=params,
                limit=limit,
                with_payload=False,
                with_vectors=False,
            )
        return [ScoredId(str(hit.id), float(hit.score)) for hit in response.points]

    def search_dense(self, vector: Sequence[float], flt: IndexFilter, limit: int) -> list[ScoredId]:
        """Nearest points by cosine similarity, best first."""
        return self._query(dense_list(vector, self.dim), DENSE, flt, limit)

    def search_sparse(self, vector: SparseVec, flt: IndexFilter, limit: int) -> list[ScoredId]:
        """Points by BM25 (query term weights x stored TF weights x IDF), best first.

        Only points sharing a term with the query are returned; an empty query vector
        returns ``[]``.
        """
        check_sparse(vector)
        if not vector.indices:
            return []
        query = models.SparseVector(indices=list(vector.indices), values=list(vector.values))
        # IDF over the points the principals own or read (filters.idf_corpus), not the
        # whole collection: other users' memories must not show in a user's scores
        corpus = idf_corpus(flt)
        params = None if corpus is None else models.SearchParams(
            idf=models.IdfCorpusParams(corpus=client_filter(corpus) or models.Filter()))
        return self._query(query, SPARSE, flt, limit, params)

    def versions(self) -> dict[str, int]:
        """``{id: payload["version"]}`` for every point (scrolls the whole collection)."""
        out: dict[str, int] = {}
        offset = None
        with self._client_locked() as client:
            while True:
                records, offset = client.scroll(
                    self.collection,
                    limit=_SCROLL_PAGE,
                    offset=offset,
                    with_payload=["version"],
                    with_vectors=False,
                )
                for record in records:
                    out[str(record.id)] = int((record.payload or {}).get("version", -1))
                if offset is None:
                    return out

    def versions_of(self, ids: Sequence[str]) -> dict[str, int]:
        """``{id: payload["version"]}`` of the points among ``ids`` that are in the index
        (missing ids are left out; one request per 256 ids). The change feed's follower
        uses it to find memories whose writer committed them but never indexed them
        (:mod:`memos_core.store.feed`).

        Raises ``ValueError`` for an id that is not a UUID string."""
        pids: list[int | str | UUID] = list(dict.fromkeys(canonical_id(i) for i in ids))
        out: dict[str, int] = {}
        with self._client_locked() as client:
            for start in range(0, len(pids), _BATCH):
                records = client.retrieve(
                    self.collection,
                    ids=pids[start : start + _BATCH],
                    with_payload=["version"],
                    with_vectors=False,
                )
                for record in records:
                    out[str(record.id)] = int((record.payload or {}).get("version", -1))
        return out

    def count(self) -> int:
        """The exact number of points."""
        with self._client_locked() as client:
            return int(client.count(self.collection, exact=True).count)

    # -- maintenance --------------------------------------------------------------------

    def flush(self) -> None:
        """Nothing to do: the server (or local mode) has persisted every acknowledged write."""
        with self._client_locked():
            return

    def optimize(self) -> None:
        """Nothing to do: the server optimizes in the background; local mode has no indexes."""
        with self._client_locked():
            return

    def close(self) -> None:
        """Release the client if this index created it. Idempotent."""
        with self._lock:
            client, self._client = self._client, None
            if client is not None and self._owns_client:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    client.close()
