"""The kernel of one data directory: the vault (source of truth) and every form derived from
it, behind one write path.

:class:`MemoryStore` owns the vault, the vector index, the graph, the embedder and entity
extractor, the write lock, the change listeners, the forget hooks and the derived-form
purgers (KV files, adapters). It knows nothing of principals: access checks are the facade's
(:mod:`memos_core.memos`), the operations that mutate (:mod:`memos_core.ops`) call
:meth:`MemoryStore.write`.

The write path, the only one (:meth:`MemoryStore.write`), under the write lock:

1. **commit** -- one vault transaction (new versions + audit records); its commit is the
   acknowledgement;
2. **derive** -- the index (embedded again, or for a governance-only change just its payload)
   and the graph follow the new versions;
3. **notify** -- the change listeners (the model engine drops KV blocks and retires adapters
   built from old versions).

After a crash between 1 and 2 the index is reconciled with the vault when the data directory
is opened again (:meth:`MemoryStore.reconcile`). The graph is not built at open: a user's view
of it is loaded from the vault when a search first needs it (:mod:`memos_core.graph.views`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from memos_core.config import MemOSConfig
from memos_core.cube import MemCube
from memos_core.embedding import Embedder, default_embedder
from memos_core.errors import CorruptDataError, InvalidInputError, MemOSError, first_line
from memos_core.extraction import EntityExtractor, RuleEntityExtractor
from memos_core.governance import index_privacy
from memos_core.governance.forget_hooks import ForgetHook, ForgetHooks, ForgetPasses
from memos_core.graph import GraphViews
from memos_core.index.base import IndexCorruptError, IndexFilter, IndexPoint, VectorIndex
from memos_core.index.sparse import encoder_for_store
from memos_core.lifecycle import INDEXED_STATES
from memos_core.progress import progress
from memos_core.results import DerivedForm
from memos_core.retrieval.filters import graph_row, payload_of
from memos_core.retrieval.hybrid import HybridRetriever
from memos_core.store import derived_record
from memos_core.store.derived_record import CLEAN_FOR_META, MODEL_META
from memos_core.store.feed import ChangeFollower
from memos_core.store.index_guard import TRACKERS_META, tracker_digest
from memos_core.vault import Edge, ListQuery, SQLiteVault, Vault

#: ``purger(memory_id)`` runs inside a forget, before the tombstone (it may still read the
#: derived files that hold the memory), and returns ``finish()``, which runs after the
#: tombstone, removes what is left and returns the derived forms it removed.
DerivedPurger = Callable[[str], Callable[[], list[DerivedForm]]]
Listener = Callable[[Sequence[MemCube]], None]
T = TypeVar("T")
logger = logging.getLogger("memos_core")

#: Free disk space below which the embedded index is not opened (see MemoryStore._check_room).
MIN_FREE_BYTES = 128 * 2**20
#: The file (in the data directory, or server mode's cache directory: the derived files are
#: that process's) listing forgotten memories whose KV files or adapters could not be purged.
PURGE_PENDING_FILE = "forget-pending.json"
#: Seconds between the follower's retries of pending purges (a failing disk is not hammered).
PURGE_RETRY_S = 60.0
#: Seconds between retries of an index update that keeps failing (each embeds every memory
#: still waiting and logs a traceback); short, so that search finds them soon after the
#: index is back.
INDEX_RETRY_S = 1.0


def _engine_error(exc: BaseException) -> str:
    """The engine's own words under an index error (the index layer's adds advice)."""
    cause = exc.__cause__ or exc
    return f"{type(cause).__name__}: {first_line(cause)}"


class MemoryStore:
    """Vault + index + graph + embedder of one data directory, kept in step.

    Args:
        data_dir: the data directory (it exists; the caller holds its lock).
        config: the store's settings.
        vault: the source of truth; default the SQLite vault ``data_dir/vault.sqlite3``.
        embedder / extractor: default the configured embedder and the rule extractor.

    Opening reconciles the index with the vault if it was not closed cleanly. Thread-safe:
    writes are serialised by :attr:`write_lock`; reads need no lock.
    """

    def __init__(self, data_dir: Path, config: MemOSConfig, *, vault: Vault | None = None,
                 embedder: Embedder | None = None,
                 extractor: EntityExtractor | None = None) -> None:
        self.data_dir = data_dir
        self.config = config
        #: what must live as long as this store does (the data-directory lock its MemOS
        #: took: a caller that keeps only ``mos.store`` keeps the directory locked)
        self.keep_alive: object = None
        self.vault: Vault = vault if vault is not None else SQLiteVault(data_dir / "vault.sqlite3")
        self.embedder: Embedder = embedder or default_embedder(config.embedder,
                                                                config.embedder_backend)
        self.extractor: EntityExtractor = extractor or RuleEntityExtractor()
        #: one writer at a time: vault, index and graph change together
        self.write_lock = threading.RLock()
        self.graph_lock = threading.RLock()
        self.forget_hooks = ForgetHooks()
        #: forgets' passes over stored conversations, which adapters' writes look out for
        self.forget_passes = ForgetPasses()
        self._listeners: list[Listener] = []
        self._close_callbacks: list[Callable[[], None]] = []
        self._purgers: list[DerivedPurger] = []
        #: embedded mode: committed memories whose index update failed (retried; see sync)
        self._deferred: set[str] = set()
        self._deferred_at = 0.0
        #: the length of the embedder's vectors, once a text was embedded (ready_embedder)
        self._embedder_dim = 0
        #: the index's recorded model, where the open could not load the embedder's
        self._unloaded_model: dict[str, Any] | None = None
        self._pending_lock = threading.Lock()
        self._pending = self._read_pending()
        #: damaged memories already logged by :meth:`report_damaged` (once per open store)
        self._damaged_seen: set[str] = set()
        self._retried_at = 0.0
        #: bumped by every rebuild of a damaged index; whether one was rebuilt since the open
        self._index_generation = 0
        self._rebuilt = False
        self.index: VectorIndex
        #: server mode: the vault has a change feed other processes write to; this process's
        #: derived state follows it (:mod:`memos_core.store.feed`)
        self.follower: ChangeFollower | None = None
        try:
            #: pinned per store: a store keeps the BM25 settings its vectors were made with
            self.bm25 = encoder_for_store(self.vault)
            # the feed head *before* the derived state is built: later changes are applied
            # again by the follower (harmless), none is missed
            cursor = self.vault.change_head() if hasattr(self.vault, "change_head") else None
            if cursor is not None:  # what it kept before may predate the cursor
                cast(Any, self.vault).drop_cached()
            self._open_derived(server=cursor is not None)
            if cursor is not None:
                self.follower = ChangeFollower(self, cursor,
                                               shared_index=self.config.index != "edge",
                                               repair_after_s=self.config.index_repair_after_s)
                # an index on the vault's server reads the feed head in its searches' round trip
                feed: Any = self.vault
                if hasattr(self.index, "probe") and getattr(self.index, "url", None) == feed.url:
                    self.index.probe = feed.head_probe()
        except BaseException:
            # a failed open leaves nothing open: the next open must not find a lock held
            for name, part in (("index", getattr(self, "index", None)), ("vault", self.vault)):
                try:
                    if part is not None:
                        part.close()
                except Exception:  # noqa: BLE001 - the original error is the one to raise
                    logger.warning("closing the %s after a failed open failed", name,
                                   exc_info=True)
            raise

    def _open_derived(self, server: bool = False) -> None:
        where = derived_record.index_identity(self.config, self.data_dir, server)
        shared = server and self.config.index != "edge"  # other processes use this index too
        model, rebuild = self._check_model(where, shared)
        self.index = self._open_index(int(model["dim"]))
        if shared:  # processes opening together: the first one's model is the index's
            claimed = derived_record.read_model(self.vault.set_meta_default(  # type: ignore[attr-defined]
                MODEL_META + where, json.dumps(model)))
            if claimed is not None and claimed != model:
                raise derived_record.model_changed_error(claimed, model, where)
        if server:  # processes opening together must agree on one tag key: first one wins
            import secrets

            self.vault.set_meta_default(index_privacy.KEY_META,  # type: ignore[attr-defined]
                                        secrets.token_hex(32))
        #: the HMAC key under which tags are stored in the index and graph
        #: (:mod:`memos_core.governance.index_privacy`)
        self.tag_key = index_privacy.store_key(self.vault)
        #: the graph, as per-user views loaded from the vault on demand (LRU-bounded by
        #: ``config.graph_max_memories``; :mod:`memos_core.graph.views`)
        self.graph = GraphViews(
            self.vault, lock=self.graph_lock, states=INDEXED_STATES,
            max_memories=self.config.graph_max_memories,
            prepare=lambda row: index_privacy.hide_payload(row, self.tag_key),
            owner_of=self._owner_of,
        )
        self.retriever = HybridRetriever(
            self.index, self.embedder, self.bm25, self.graph, self.graph_lock, self.extractor,
            self.config.retrieval,
        )
        self.retriever.texts = lambda ids: self.vault.texts(ids, on_damaged=self.report_damaged)
        unoptimized = self.vault.get_meta("index_unoptimized") or "0"
        # a counter of points since the last optimize: a damaged value only starts it again
        self._unoptimized = int(unoptimized) if unoptimized.isdigit() else 0
        try:
            self._catch_up(server, where, rebuild)
        except IndexCorruptError as exc:  # files the shard loaded but cannot read
            self._rebuild_damaged(exc)
            if not server:
                self.vault.set_meta(index_privacy.FORMAT_META, index_privacy.FORMAT)
        self._rebuilt = False  # a rebuild at open leaves the one a running store may do
        # the index is built with this model now (a rebuild has finished); a shared one's
        # record is claimed above, and a per-process index in a temporary cache directory
        # (server mode without cache_dir) is new at every open: a record of it would only
        # pile up in the shared vault
        if not shared and not (server and self.config.cache_dir is None):
            self.vault.set_meta(MODEL_META + where, json.dumps(model))
        if not server:
            self.vault.set_meta("index_clean", "0")
            self.vault.set_meta(CLEAN_FOR_META, where)
            # the digest describes the index as the last close left it: once this store
            # writes, it is out of date, and a kill late in close (index_clean set again,
            # the new digest not yet) must not make the next open take the intact index
            # for one changed behind its back and rebuild it
            self.vault.set_meta(TRACKERS_META, "")

    def _check_model(self, where: str, shared: bool) -> tuple[dict[str, Any], bool]:
        """The identity of this store's embedding model (its model loaded first where its
        dimension is not known without it), and whether the index ``where`` was built with
        another one and must be rebuilt (:mod:`memos_core.store.derived_record`). An index of
        this store's own is then deleted where it is a directory (a model of another
        dimension could not open it); one ``shared`` with other processes is refused.

        Raises:
            ModelLoadError: the model cannot be loaded.
            InvalidInputError: ``shared``, and built with another model.
        """
        recorded = derived_record.read_model(self.vault.get_meta(MODEL_META + where))
        dim = self.embedder.dim or self._load_at_open(recorded)
        if not dim and recorded is not None:  # the model cannot load: the index as it is
            return recorded, False
        model = derived_record.embedder_identity(self.embedder, dim)
        path = self.data_dir / "index"
        if recorded is None and self._rebuildable():  # the index's own dimension, if it has one
            made_for = derived_record.edge_dim(path)
            if made_for is not None and made_for != dim:
                recorded = {"model": "(not recorded)", "dim": made_for}
        if recorded is None or recorded == model:
            return model, False  # a store from before the record adopts the current model
        if shared:
            raise derived_record.model_changed_error(recorded, model, where)
        logger.warning("the index of %s was built with the embedding model %s; this store is "
                       "opened with %s: every memory is embedded again from the vault",
                       self.data_dir, derived_record.describe(recorded),
                       derived_record.describe(model))
        if self.config.qdrant_url is None and self.config.index != "pgvector" and path.is_dir():
            shutil.rmtree(path)  # both local kinds keep their files here: neither is valid
        self.vault.set_meta("index_clean", "0")
        return model, True

    def _load_at_open(self, recorded: dict[str, Any] | None) -> int:
        """Load the embedding model to learn its dimension; returns it. Where it cannot load
        and the index has a recorded model, returns 0: the store opens with its index as it
        is, so that a forget (which needs no vector) still works while the model is missing
        (offline, files gone); writes and searches raise ``ModelLoadError``
        (:meth:`ready_embedder`) until it loads, and then only if it is the recorded model."""
        from memos_core.runtime.errors import ModelLoadError

        try:
            return self.ready_embedder()
        except ModelLoadError as exc:
            if recorded is None:  # no index to open as it is: its dimension is not known
                raise
            logger.warning("%s; the store opens with its index as it is (built with %s): "
                           "forgets work, writes and searches raise until the model loads",
                           exc, derived_record.describe(recorded))
            self._unloaded_model = recorded
            return 0

    def _catch_up(self, server: bool, where: str, rebuild: bool) -> None:
        """Check that the opened index can be read, and bring it up to date with the vault:
        rebuilt where ``rebuild`` (another embedding model) or its format is old, else
        reconciled unless the index ``where`` itself was closed cleanly and in step."""
        if self._rebuildable():
            self._probe_index()
        if rebuild:
            self.reindex()
            if not server:
                self.vault.set_meta(index_privacy.FORMAT_META, index_privacy.FORMAT)
        elif server:
            # many processes share the vault: "closed cleanly" means nothing here, and a
            # writer killed between commit and index update leaves the index behind
            self.reconcile()
        elif self.vault.get_meta(index_privacy.FORMAT_META) != index_privacy.FORMAT:
            self.reindex()  # an index from before tags were hashed holds them in clear: rebuild
            self.vault.set_meta(index_privacy.FORMAT_META, index_privacy.FORMAT)
        elif (self.vault.get_meta("index_clean") != "1"
              or self.vault.get_meta(CLEAN_FOR_META) != where  # another index closed clean
              or self.index.count() != self._indexed_count()):
            self.reconcile()

    def _probe_index(self) -> None:
        """Read the embedded index's dense vectors: a vector file cut short is not noticed
        when the shard loads, only when a search or write reads it. One search for one point
        (a brute-force scan of the points not yet in an HNSW graph: milliseconds)."""
        dim = int(getattr(self.index, "dim", 0) or self.embedder.dim or self.ready_embedder())
        self.index.search_dense([1.0] + [0.0] * (dim - 1), IndexFilter(), 1)

    def _rebuildable(self) -> bool:
        """Whether the index is this process's embedded one (derived data it may rebuild)."""
        return self.config.index == "edge" and self.config.qdrant_url is None

    def _rebuild_damaged(self, exc: IndexCorruptError) -> None:
        """Rebuild the embedded index from the vault after ``exc`` showed its files damaged
        (a search or write found them unreadable). Once per open store: damage again means
        something keeps damaging it, and every rebuild embeds every memory; then, and for an
        index that is not this process's, :class:`CorruptDataError` saying what to do."""
        if not self._rebuildable():
            raise self._damaged(exc, "it is not this process's to rebuild") from exc
        with self.write_lock:
            if self._rebuilt:
                raise self._damaged(exc, "it was rebuilt once already since the store "
                                    "opened: check the disk") from exc
            self._rebuilt = True
            logger.warning("the index at %s is damaged (%s); rebuilding it from the vault",
                           self.data_dir / "index", _engine_error(exc))
            try:
                self.reindex()
            except Exception as again:  # noqa: BLE001 - said in the error, which chains it
                raise self._damaged(exc, f"rebuilding it failed: {first_line(again)}") from again
            self._deferred.clear()  # the vault holds them all: they are indexed now
            self._index_generation += 1

    def _damaged(self, exc: BaseException, why: str) -> CorruptDataError:
        return CorruptDataError(
            f"The search index of {self.data_dir} is damaged ({_engine_error(exc)}) and was not "
            f"rebuilt ({why}). Nothing stored is lost: the vault holds every memory. Rebuild "
            "the index from it with `memos reindex` or mos.reindex(), or close the store, "
            "delete its index/ directory and open it again.")

    def search_index(self, search: Callable[[], T]) -> T:
        """``search()``, a read of the index; where it finds the embedded index damaged, the
        index is rebuilt from the vault (:meth:`_rebuild_damaged`, under the write lock) and
        ``search()`` runs again. Raises :class:`CorruptDataError` where that cannot be done."""
        seen = self._index_generation
        try:
            return search()
        except IndexCorruptError as exc:
            with self.write_lock:
                if self._index_generation == seen:  # not rebuilt by another thread meanwhile
                    self._rebuild_damaged(exc)
        try:
            return search()
        except IndexCorruptError as exc:
            raise self._damaged(exc, "it is still damaged after a rebuild") from exc

    def _repaired(self, exc: Exception) -> bool:
        """Whether ``exc``, the failure of an index update under the write lock, showed the
        index damaged and it was rebuilt from the vault (which holds the update's memories)."""
        if not isinstance(exc, IndexCorruptError):
            return False
        try:
            self._rebuild_damaged(exc)
        except Exception:  # noqa: BLE001 - the caller defers the update; logged here
            logger.error("the index is damaged and was not rebuilt", exc_info=True)
            return False
        return True

    def _open_index(self, dim: int) -> VectorIndex:
        """Open the index for vectors of ``dim`` (the embedder's); an embedded one whose
        files cannot be read is rebuilt from the vault (it is derived data): its directory
        is deleted and reconcile refills it."""
        from memos_core.index import open_index

        path = self.data_dir / "index"

        def attempt() -> VectorIndex:
            url = self.config.index_url if self.config.index == "pgvector" else self.config.qdrant_url
            return open_index(self.config.index, path=path, url=url,
                              dim=dim, collection=self.config.qdrant_collection,
                              pool_size=self.config.pool_size)

        if self._rebuildable():
            self._check_room(path)
            self._refuse_local_qdrant(path)
            if path.is_file():  # not an index: derived data, rebuilt from the vault
                logger.warning("%s is a file, not an index; rebuilding the index from the "
                               "vault", path)
                path.unlink()
                self.vault.set_meta("index_clean", "0")
            elif self._trackers_changed(path):  # the engine would abort reading them
                logger.warning("the index at %s changed since the store closed (its id "
                               "trackers differ); rebuilding it from the vault", path)
                shutil.rmtree(path)
                self.vault.set_meta("index_clean", "0")
        try:
            try:
                return attempt()
            except IndexCorruptError as exc:
                if not self._rebuildable():
                    raise
                logger.warning("the index at %s is unreadable (%s); rebuilding it from the "
                               "vault", path, exc)
                shutil.rmtree(path)
                self.vault.set_meta("index_clean", "0")
                return attempt()
        except ValueError as exc:
            if isinstance(exc, MemOSError):
                raise
            # the index settings contradict each other (pgvector without a URL, a collection
            # name the server refuses): the library's ValueError, as the facade's error
            raise InvalidInputError(f"The index cannot be opened with these settings: {exc}"
                                    ) from exc

    def _refuse_local_qdrant(self, path: Path) -> None:
        """Refuse to open the embedded engine on ``path`` where Qdrant's local mode
        (``index="qdrant"`` without a URL) made its index there first: the engine takes only
        a directory of its own, and the user chooses which index the store keeps."""
        from memos_core.index.edge import _SHARD_MARKERS

        if (path.is_dir() and (path / "meta.json").is_file()
                and not any((path / name).exists() for name in _SHARD_MARKERS)):
            raise InvalidInputError(
                f"{path} holds the index of Qdrant's local mode (this store was opened with "
                'index="qdrant" before), not one of the embedded engine (index="edge"). Open '
                'the store with index="qdrant", or, to move it to index="edge", close every '
                f"process using it and delete {path}: the index is rebuilt from the vault, "
                "which holds every memory.")

    def _trackers_changed(self, path: Path) -> bool:
        """Whether the embedded index at ``path``, closed cleanly, has id trackers other than
        those it was closed with (:mod:`memos_core.store.index_guard`)."""
        recorded = self.vault.get_meta(TRACKERS_META)
        return (bool(recorded) and self.vault.get_meta("index_clean") == "1" and path.is_dir()
                and tracker_digest(path) != recorded)

    def _check_room(self, path: Path) -> None:
        """The embedded index maps its files into memory: on a disk with almost no room, a
        page it touches can kill the process (SIGBUS) instead of raising. Refuse to open it
        below :data:`MIN_FREE_BYTES` free."""
        try:
            free = shutil.disk_usage(path if path.exists() else self.data_dir).free
        except OSError:
            return
        if free < MIN_FREE_BYTES:
            raise MemOSError(
                f"Only {free // 2**20} MiB are free on the disk holding {self.data_dir}; the "
                f"embedded index needs at least {MIN_FREE_BYTES // 2**20} MiB to open safely. "
                "Free some space and open the store again (nothing was changed).")

    def hide_tags(self, tags: Sequence[str]) -> list[str]:
        """``tags`` as the index and graph store them (keyed hashes), for a tag filter."""
        return index_privacy.hide_tags(tags, self.tag_key)

    # -- the write path ------------------------------------------------------------------------

    def write(self, commit: Callable[[], Sequence[MemCube]], *, edges: Sequence[Edge] = (),
              embed: bool = True, progress_desc: str | None = None) -> list[MemCube]:
        """The one write path: ``commit()`` runs one vault transaction and returns the new
        current versions of the memories it changed (new memories, new versions,
        tombstones); then the index and the graph follow them and the listeners hear of
        them. Returns those versions. ``progress_desc``: a bulk write (an import) shows a
        progress bar of its embedding under that name (see :func:`memos_core.progress`).

        ``edges``: relations the transaction stored (they join the graph). ``embed=False``
        for a change of governance only (shares): the index points keep their vectors and
        get the new payload. Runs under :attr:`write_lock` (re-entrant: an operation may
        hold it around several writes). If ``commit`` raises, nothing derived changes.
        """
        with self.write_lock:
            if self._deferred:
                self._retry_deferred()
            changed = list(commit())
            try:
                self._derive(changed, embed, progress_desc)
            except Exception as exc:  # noqa: BLE001 - committed is acknowledged: index it later
                # a damaged embedded index is rebuilt from the vault, these memories with it;
                # otherwise the index (or, in server mode, the server's connection) failed
                # after the vault's commit: the next call retries, and in embedded mode so
                # does the next open if the store closes first (the index is not marked clean)
                if not self._repaired(exc):
                    logger.warning("updating the index after a commit failed; it is retried "
                                   "on the next call", exc_info=True)
                    self._defer(changed)
            except BaseException:
                # interrupted after the commit (Ctrl-C; SIGTERM, which the CLIs turn into
                # SystemExit): the index may hold the old versions. Deferred, so that a close
                # does not mark it clean (an update keeps the point count, which is all an open
                # checks of a clean index) and the next call or open indexes them again.
                self._defer(changed)
                raise
            finally:  # the graph and the listeners follow the commit, interrupted or not
                self._graph_apply(changed, edges)
                self._notify(changed)
            return changed

    def _defer(self, changed: Sequence[MemCube]) -> None:
        """Leave ``changed`` (committed) for the next call or open to index."""
        self._deferred.update(c.id for c in changed)
        self._deferred_at = 0.0  # the next call tries again

    def as_written(self, cube: MemCube) -> MemCube:
        """``cube``, a version this process has just committed, as the vault holds it (with
        its usage counters). In server mode another process may have written a later
        version since; that one is not what this call wrote, so the version itself is read
        then (``cube`` if the vault no longer has it: a forget scrubbed it)."""
        current = self.vault.get(cube.id)
        if current is not None and current.version == cube.version:
            return current
        written = self.vault.get_version(cube.id, cube.version) or cube
        return written.model_copy(update={"usage": (current or cube).usage})

    def ready_embedder(self) -> int:
        """Load the embedding model now if it is not loaded yet; returns the length of its
        vectors. The operations that write new text (add, update, compress, import, keyed
        puts) and search call it first, so a model that cannot load raises
        :class:`ModelLoadError` before anything is stored or searched; a forget or a state
        change needs no vector and does not. The open calls it for a model whose dimension
        is not known before it loads (the index is made for that dimension)."""
        if self._embedder_dim:  # (every search calls this: nothing before it)
            return self._embedder_dim
        from memos_core.runtime.errors import ModelLoadError

        try:
            vectors = self.embedder.embed(["memos"])
            dim = len(vectors[0])
        except MemOSError:
            raise
        except Exception as exc:  # noqa: BLE001 - any loader error, reported clearly
            raise ModelLoadError(
                f"The embedding model {getattr(self.embedder, 'name', '?')!r} could not be "
                f"loaded ({type(exc).__name__}: {first_line(exc)}). "
                "Nothing was stored. Check MemOSConfig.embedder / embedder_backend.") from exc
        recorded = self._unloaded_model
        if recorded is not None and derived_record.embedder_identity(self.embedder, dim) != recorded:
            raise ModelLoadError(
                f"The embedding model {getattr(self.embedder, 'name', '?')!r} loaded only "
                "after the store opened, and its index was built with another one "
                f"({derived_record.describe(recorded)}). Nothing was stored. Close the store "
                "and open it again: every memory is then embedded with this model.")
        self._embedder_dim = dim
        return dim

    def retry_index(self) -> None:
        """Index the committed memories a failed index update missed, if any (every call
        does this first; server mode's change feed too)."""
        if self._deferred:
            with self.write_lock:
                if self._deferred:
                    self._retry_deferred()

    def _retry_deferred(self) -> None:
        """:meth:`retry_index` under the write lock (at most once every
        :data:`INDEX_RETRY_S` seconds while it keeps failing)."""
        if time.monotonic() - self._deferred_at < INDEX_RETRY_S:
            return
        self._deferred_at = time.monotonic()
        ids, self._deferred = sorted(self._deferred), set()
        try:
            self.index_cubes(self._readable(ids))
        except Exception as exc:  # noqa: BLE001 - still failing: kept for the next call
            if self._repaired(exc):
                return
            logger.warning("indexing %d memories after an earlier failure failed again",
                           len(ids), exc_info=True)
            self._deferred.update(ids)

    def _derive(self, cubes: Sequence[MemCube], embed: bool,
                progress_desc: str | None = None) -> None:
        if embed:
            bar = progress(len(cubes), progress_desc or "", self.config.show_progress
                           and progress_desc is not None)
            for start in range(0, len(cubes), 256):  # bounded embedding batches
                self.index_cubes(cubes[start:start + 256])
                bar.update(len(cubes[start:start + 256]))
            bar.close()
            return
        held: dict[str, int] = {}
        if self.follower is not None and self.follower.shared_index:
            # an index other processes write too (pgvector, a Qdrant server)
            held = cast(Any, self.index).versions_of(
                [c.id for c in cubes if c.state.value in INDEXED_STATES])
        for cube in cubes:
            if cube.state.value not in INDEXED_STATES:
                self.index.delete([cube.id])
                continue
            point = held.get(cube.id)
            if point is not None and point >= cube.version:
                continue  # another process already indexed this version or a later one
            if point is not None and point < cube.version - 1:
                # a version between was never indexed (its writer died): the point may hold
                # an older text, which a payload change would stamp as current
                self.index_cubes([cube])
                continue
            try:
                self.index.set_payload(cube.id, {
                    "readers": list(cube.governance.readers), "version": cube.version,
                })
            except KeyError:  # the index lags the vault (e.g. before reconcile): embed it
                self.index_cubes([cube])

    def index_cubes(self, cubes: Sequence[MemCube]) -> None:
        """Embed and upsert memories into the index; those not in an indexed state (expired,
        tombstones) are removed from it. Derived state only: :meth:`write` calls it."""
        keep = [c for c in cubes if c.state.value in INDEXED_STATES]
        drop = [c.id for c in cubes if c.state.value not in INDEXED_STATES]
        if drop:
            self.index.delete(drop)
        if not keep:
            return
        dense = self.embedder.embed([c.text for c in keep])
        sparse = self.bm25.encode_documents([c.text for c in keep])
        self.index.upsert([
            IndexPoint(c.id, vec, sv, index_privacy.hide_payload(payload_of(c), self.tag_key))
            for c, vec, sv in zip(keep, dense, sparse)
        ])
        self._unoptimized += len(keep)

    def _graph_apply(self, cubes: Sequence[MemCube], edges: Sequence[Edge] = ()) -> None:
        """The loaded graph views follow changed memories and new relations (an unloaded
        view reads them from the vault when it is loaded)."""
        self.graph.apply([index_privacy.hide_payload(graph_row(cube), self.tag_key)
                          for cube in cubes], edges)

    def _owner_of(self, memory_id: str) -> str | None:
        cube = self.vault.get(memory_id)
        return None if cube is None else cube.namespace.user_id

    def sync(self) -> int:
        """Server mode: apply the changes other processes made since the last call to this
        process's derived state (graph, per-process index, KV blocks, adapters); returns how
        many. One cheap query when nothing changed. Both modes first index the memories
        whose index update failed after their commit, if any (embedded mode returns 0)."""
        if self.follower is not None:
            return self.follower.sync()
        self.retry_index()
        return 0

    # -- purges of derived files that failed -------------------------------------------------

    def _read_pending(self) -> set[str]:
        try:
            rows = json.loads((self.data_dir / PURGE_PENDING_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return set()
        except (OSError, ValueError) as exc:
            logger.warning("%s cannot be read (%s); forget the memories it listed again",
                           self.data_dir / PURGE_PENDING_FILE, exc)
            return set()
        return {r for r in rows if isinstance(r, str)} if isinstance(rows, list) else set()

    @property
    def purge_pending(self) -> frozenset[str]:
        """Forgotten memories whose derived files (KV blocks, adapters) this process could
        not purge yet; a forget of one retries, as do the open and the server-mode feed."""
        return frozenset(self._pending)

    def set_purge_pending(self, memory_id: str, pending: bool) -> None:
        """Record (or clear) a failed purge, in :data:`PURGE_PENDING_FILE`."""
        with self._pending_lock:
            if (memory_id in self._pending) == pending:
                return
            (self._pending.add if pending else self._pending.discard)(memory_id)
            path = self.data_dir / PURGE_PENDING_FILE
            try:
                if not self._pending:
                    path.unlink(missing_ok=True)
                    return
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_text(json.dumps(sorted(self._pending)), encoding="utf-8")
                os.replace(tmp, path)
            except OSError:  # kept in memory: this process still retries it
                logger.warning("%s could not be written", path, exc_info=True)

    def retry_purges(self) -> int:
        """Run every purger again for each pending memory; returns how many stay pending
        (each failure is logged)."""
        self._retried_at = time.monotonic()
        for memory_id in sorted(self._pending):
            try:
                for purger in self._purgers:
                    purger(memory_id)()
            except Exception:  # noqa: BLE001 - logged; it stays pending
                logger.warning("purging the derived files of forgotten memory %s failed "
                               "again", memory_id, exc_info=True)
                continue
            self.set_purge_pending(memory_id, False)
        return len(self._pending)

    def retry_purges_due(self) -> None:
        """:meth:`retry_purges` if some are pending and the last try is old enough."""
        if self._pending and time.monotonic() - self._retried_at >= PURGE_RETRY_S:
            self.retry_purges()

    @property
    def deferred(self) -> frozenset[str]:
        """The committed memories whose index update failed, to be retried (:meth:`sync`)."""
        return frozenset(self._deferred)

    @property
    def lagging(self) -> bool:
        """Some committed memories are not in the index yet (see :meth:`sync`)."""
        return bool(self._deferred)

    def current_for_search(self, memory_ids: Sequence[str], since: float) -> dict[str, MemCube]:
        """``vault.get_many(memory_ids)`` for a search that began at ``since`` (monotonic
        seconds). Server mode: served from the memories the vault keeps decoded, without a
        round trip, when that is as current as a read -- the feed head, read with the
        search's index query (sent after ``since``), is at or below the follower's cursor,
        so every change committed before the search began was applied here (a changed
        memory is dropped from the cache before the cursor passes its change) -- and every
        memory is held; otherwise read."""
        seen = getattr(self.vault, "head_seen_since", None)
        if self.follower is not None and seen is not None:
            head = seen(since)
            if head is not None and head <= self.follower.cursor:
                cubes = cast(Any, self.vault).cached_many(memory_ids)
                if cubes is not None:
                    return cast(dict[str, MemCube], cubes)
        return self.vault.get_many(memory_ids, on_damaged=self.report_damaged)

    def report_damaged(self, error: CorruptDataError) -> None:
        """Log, once per open store, a memory whose damaged record a read that shows many
        memories (list, search, export, indexing) leaves out: ``error`` names it and says
        what to do (its owner forgets it, or the vault is restored from a backup). An
        :data:`~memos_core.vault.OnDamaged` for those reads."""
        key = error.memory_id or str(error)
        with self._pending_lock:
            if key in self._damaged_seen:
                return
            self._damaged_seen.add(key)
        logger.error("%s", error)  # it names the memory and says what to do

    def _notify(self, cubes: Sequence[MemCube]) -> None:
        for listener in list(self._listeners):
            try:
                listener(cubes)
            except Exception:  # noqa: BLE001 - the write is committed; the others still hear
                logger.error("a change listener failed after a commit (%s)",
                             getattr(listener, "__qualname__", listener), exc_info=True)

    # -- listeners and hooks -------------------------------------------------------------------

    def on_change(self, listener: Listener) -> None:
        """Call ``listener(cubes)`` after every write, under the write lock, after the vault
        committed and the index and graph followed. An exception it raises is logged, not
        raised: the write is committed, and the other listeners still run (a forget's
        purgers redo what the model tiers' listener could not)."""
        self._listeners.append(listener)

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` first thing in :meth:`close` (newest first); must not raise."""
        self._close_callbacks.append(callback)

    def on_forget(self, hook: ForgetHook, *, path: Path | None = None,
                  covers: str | None = None) -> Callable[[], None]:
        """Register a conversation-log forget hook (see :mod:`memos_core.governance.forget_hooks`;
        ``path`` / ``covers``: the file / the vault redactor it stands in for); returns the
        function that unregisters it."""
        return self.forget_hooks.add(hook, path, covers=covers)

    def add_purger(self, purger: DerivedPurger) -> None:
        """Register a derived-form purger that every forget runs (see :data:`DerivedPurger`);
        the facade registers the KV-file and adapter purgers of the model tiers."""
        self._purgers.append(purger)

    @property
    def purgers(self) -> tuple[DerivedPurger, ...]:
        """The registered purgers, in registration order."""
        return tuple(self._purgers)

    # -- derived state: build, reconcile, reindex, optimize ------------------------------------

    def _indexed_count(self) -> int:
        return self.vault.count(ListQuery(states=INDEXED_STATES))

    def reconcile(self) -> dict[str, int]:
        """Make the index agree with the vault: add missing or stale points, drop extra ones.
        Returns ``{"reindexed": n, "removed": m}``."""
        with self.write_lock:
            index_versions = self.index.versions()
            current = self.vault.current_versions()
            wanted = {mid: v for mid, (v, state) in current.items() if state in INDEXED_STATES}
            stale = [mid for mid, v in wanted.items() if index_versions.get(mid) != v]
            extra = [mid for mid in index_versions if mid not in wanted]
            unknown = sum(1 for mid in extra if mid not in current)
            if unknown:  # the vault commits first: it lost memories (a damaged WAL, a restore)
                logger.error("the index holds %d memories the vault at %s does not have; the "
                             "vault lost them (a damaged or deleted WAL, an older backup). "
                             "Their index points are removed now.", unknown, self.data_dir)
            # points at versions the vault no longer has: an upsert never moves a point back
            # a version, so they go first and are indexed again from the vault
            ahead = [mid for mid in stale if index_versions.get(mid, 0) > wanted[mid]]
            if ahead:
                logger.error("the index holds %d memories at later versions than the vault at "
                             "%s; the vault lost them (a damaged or deleted WAL, an older "
                             "backup). They are indexed again from the vault now.", len(ahead),
                             self.data_dir)
            if extra or ahead:
                self.index.delete(extra + ahead)
            bar = progress(len(stale), "reconcile", self.config.show_progress)
            for start in range(0, len(stale), 256):
                self.index_cubes(self._readable(stale[start:start + 256]))
                bar.update(len(stale[start:start + 256]))
            bar.close()
            self.index.flush()
            self.maybe_optimize()
            return {"reindexed": len(stale), "removed": len(extra)}

    def _readable(self, ids: Sequence[str]) -> list[MemCube]:
        """The memories among ``ids`` the vault can read: one whose record is damaged is
        left out (and logged, named: :meth:`report_damaged`) so that it stops neither the
        others from being indexed nor the store from opening; reads of it still raise
        ``CorruptDataError``."""
        return list(self.vault.get_many(ids, on_damaged=self.report_damaged).values())

    def reindex(self) -> dict[str, int]:
        """Rebuild the index and the graph from the vault. Returns ``{"indexed": n}``."""
        with self.write_lock:
            self.index.clear()
            bar = progress(self._indexed_count(), "reindex", self.config.show_progress)
            done = 0
            live_ids = [mid for mid, (_, state) in self.vault.current_versions().items()
                        if state in INDEXED_STATES]
            for start in range(0, len(live_ids), 256):
                live = [c for c in self._readable(live_ids[start:start + 256])
                        if c.state.value in INDEXED_STATES]
                self.index_cubes(live)
                done += len(live)
                bar.update(len(live))
            bar.close()
            self.index.flush()
            self.optimize()
            self.graph.clear()  # views reload from the vault on their next use
            return {"indexed": done}

    def optimize(self) -> None:
        """Build the index's search structures over the points added since the last call
        (blocks writers while it runs)."""
        with self.write_lock:
            self.index.optimize()
            self._unoptimized = 0

    def maybe_optimize(self) -> None:
        """:meth:`optimize` once ``config.optimize_after`` points have accumulated."""
        if self._unoptimized >= self.config.optimize_after:
            self.optimize()

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the derived tiers (close callbacks), flush the index, mark it clean, close
        the index and the vault. Call once."""
        for callback in reversed(self._close_callbacks):  # derived tiers stop first
            callback()
        if self.follower is not None:
            # before the write lock: it stops the change-feed listener and waits for it, and
            # a wake-up of the listener under way may be waiting for that lock
            self.follower.close()
        with self.write_lock:
            try:
                if self.follower is not None:
                    self.follower.finish()  # points its own late index writes put back
                self.index.flush()
                if self.follower is None:  # one process owns the vault: its index is clean
                    self.vault.set_meta("index_unoptimized", str(self._unoptimized))
                    # unless a failed index update left memories out: the next open reconciles
                    self.vault.set_meta("index_clean", "0" if self._deferred else "1")
            finally:
                try:
                    self.index.close()
                    self._record_trackers()
                finally:
                    self.vault.close()

    def _record_trackers(self) -> None:
        """After a clean close of the embedded index: the digest of its id trackers, which
        the next open compares (:mod:`memos_core.store.index_guard`); none after another."""
        if self.follower is None and self._rebuildable():
            clean = self.vault.get_meta("index_clean") == "1"
            self.vault.set_meta(TRACKERS_META,
                                tracker_digest(self.data_dir / "index") if clean else "")
