"""The bf16 embedder gives the torch (sentence-transformers) vectors up to rounding, and the
"onnx+bf16" split sends small calls to ONNX and bulk calls to bf16. Real models only; bf16
runs (emulated, slower) on CPUs without bf16 hardware too, so these tests run everywhere."""

from __future__ import annotations

import logging

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from memos_core.embedding import (  # noqa: E402
    BULK_FROM,
    SentenceTransformerEmbedder,
    _SplitEmbedder,
    default_embedder,
    new_embedder,
    resolve_backend,
)
from memos_core.embedding.bf16 import Bf16Embedder  # noqa: E402
from memos_core.embedding.onnx import OnnxEmbedder  # noqa: E402
from memos_core.embedding.pieces import cpuinfo_has_bf16, native_bf16  # noqa: E402
from memos_core.errors import InvalidInputError, MemOSError  # noqa: E402

from test_embedding_onnx import TEXTS  # noqa: E402  (tests/ is on sys.path)


@pytest.fixture(scope="module")
def torch_vectors() -> np.ndarray:
    return SentenceTransformerEmbedder("minilm").embed(TEXTS)


@pytest.fixture(scope="module")
def bf16() -> Bf16Embedder:
    return Bf16Embedder("minilm")


def test_bf16_matches_torch_vectors(bf16, torch_vectors):
    """bf16 products, fp32 sums, norms and pooling: cosine >= 0.9999 to the fp32 model on
    short, long, truncated, unicode and empty texts (the issue asks 0.999 of a backend)."""
    vectors = bf16.embed(TEXTS)
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosine = np.sum(vectors * torch_vectors, axis=1)
    assert cosine.min() >= 0.9999, dict(zip(TEXTS, cosine.round(6)))
    assert bf16.backend == "bf16" and bf16.dim == 384
    assert bf16.embed([]).shape == (0, 384)


def test_bf16_rows_barely_depend_on_batching(bf16):
    """The kernels round differently for other batch shapes: rows move by at most 1e-4 in
    cosine (0.99996 at worst here), far inside the backends' 0.999."""
    together = bf16.embed(TEXTS * 2)
    alone = np.stack([bf16.embed([t])[0] for t in TEXTS])
    small = Bf16Embedder("minilm", batch_size=3, batch_tokens=40, sort_by_length=False).embed(TEXTS)
    assert np.sum(together[:len(TEXTS)] * alone, axis=1).min() >= 0.9999
    assert np.sum(together[len(TEXTS):] * small, axis=1).min() >= 0.9999


def test_fused_attention_gives_the_same_vectors(bf16, torch_vectors):
    """The default plain-product ("eager") attention and transformers' fused kernel
    ("sdpa") agree with each other and with the fp32 model."""
    assert bf16.attention == "eager"
    fused = Bf16Embedder("minilm", attention="sdpa").embed(TEXTS)
    assert np.sum(fused * bf16.embed(TEXTS), axis=1).min() >= 0.9999
    assert np.sum(fused * torch_vectors, axis=1).min() >= 0.9999


def test_bf16_refuses_a_model_without_mean_pooling_and_bad_limits(tmp_path):
    (tmp_path / "modules.json").write_text('[{"type": "x.Transformer"}]')
    with pytest.raises(MemOSError, match="bf16 embedder.*torch backend"):
        Bf16Embedder(str(tmp_path)).embed(["x"])
    with pytest.raises(InvalidInputError, match="batch_size and batch_tokens"):
        Bf16Embedder("minilm", batch_tokens=0)
    with pytest.raises(InvalidInputError, match="attention must be 'eager' or 'sdpa'"):
        Bf16Embedder("minilm", attention="flash")


class _Counting:
    def __init__(self, inner, backend):
        self.inner, self.backend, self.sizes = inner, backend, []
        self.name, self.dim = inner.name, inner.dim

    def embed(self, texts):
        self.sizes.append(len(texts))
        return self.inner.embed(texts)


def test_split_sends_small_calls_to_onnx_and_bulk_calls_to_bf16(bf16, torch_vectors):
    onnx = _Counting(OnnxEmbedder("minilm"), "onnx")
    bulk = _Counting(bf16, "bf16")
    split = _SplitEmbedder(onnx, bulk)
    assert split.backend == "onnx+bf16" and BULK_FROM > 1
    one = split.embed([TEXTS[2]])
    few = split.embed(TEXTS[:BULK_FROM - 1])
    many = split.embed(TEXTS)
    assert onnx.sizes == [1, BULK_FROM - 1] and bulk.sizes == [len(TEXTS)]
    # either side gives the model's vectors, so a text embedded alone (a query) and in bulk
    # (a write) agree
    assert float(one[0] @ many[2]) >= 0.9999
    assert np.sum(few * torch_vectors[:BULK_FROM - 1], axis=1).min() >= 0.999
    assert np.sum(many * torch_vectors, axis=1).min() >= 0.9999


def test_lazy_split_waits_for_torch(bf16, monkeypatch):
    """Chosen by "auto", the bf16 side serves only once torch is imported by something else:
    an agent that never loads torch never pays its import for embedding."""
    onnx = _Counting(OnnxEmbedder("minilm"), "onnx")
    bulk = _Counting(bf16, "bf16")
    split = _SplitEmbedder(onnx, bulk, lazy=True)
    imported = False
    monkeypatch.setattr(split, "_torch_imported", lambda: imported)
    split.embed(TEXTS[:6])
    split.embed(TEXTS[:1])
    assert split.backend == "onnx"  # what serves bulk calls now
    imported = True
    assert split.backend == "onnx+bf16"
    split.embed(TEXTS[:5])
    split.embed(TEXTS[:1])
    assert onnx.sizes == [6, 1, 1] and bulk.sizes == [5]


def test_split_falls_back_to_the_small_side_when_bf16_cannot_load(tmp_path, caplog):
    (tmp_path / "modules.json").write_text("not json")
    onnx = OnnxEmbedder("minilm")
    split = _SplitEmbedder(onnx, Bf16Embedder(str(tmp_path)))
    with caplog.at_level(logging.WARNING):
        vectors = split.embed(TEXTS[:6])
    assert vectors.shape == (6, 384) and split.backend == "onnx"
    assert "bulk embedder bf16 unavailable" in caplog.text
    np.testing.assert_allclose(vectors, onnx.embed(TEXTS[:6]), atol=1e-5)


def test_forced_backends(monkeypatch):
    monkeypatch.setenv("MEMOS_EMBEDDER_BACKEND", "bf16")
    assert resolve_backend() == "bf16" and isinstance(default_embedder(), Bf16Embedder)
    monkeypatch.setenv("MEMOS_EMBEDDER_BACKEND", "onnx+bf16")
    split = default_embedder()
    assert isinstance(split, _SplitEmbedder) and split.backend == "onnx+bf16"
    assert not split.lazy  # named: bf16 from the first bulk call
    monkeypatch.delenv("MEMOS_EMBEDDER_BACKEND")
    auto = new_embedder("minilm", "auto")
    if native_bf16():  # chosen by "auto": bf16 waits for torch
        assert isinstance(auto, _SplitEmbedder) and auto.lazy
    else:
        assert not isinstance(auto, _SplitEmbedder)


@pytest.mark.parametrize(("flags", "expected"), [
    ("fpu avx2 avx512f avx512_bf16 avx512_vnni", True),   # AMD Zen 4, Intel Cooper Lake
    ("fpu avx2 amx_bf16 amx_tile", True),                 # Intel Sapphire Rapids
    ("fpu avx2 avx512f avx512_vnni", False),              # Zen 3, Ice Lake: no bf16 hardware
])
def test_cpuinfo_flags_decide_bf16(tmp_path, flags, expected):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: x\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    assert cpuinfo_has_bf16(info) is expected
    assert cpuinfo_has_bf16(tmp_path / "missing") is False


def test_memos_on_bf16_finds_what_it_stored(make_mos):
    mos = make_mos("b", embedder_backend="bf16")
    ids = mos.add_many([{"text": t} for t in ("I ride a green gravel bike.",
                                                "My sister lives in Porto.",
                                                "We adopted a dog called Toby.",
                                                "I bake sourdough on Sundays.")], user_id="u")
    assert len(ids) == 4 and mos.stats(user_id="u")["embedder_backend"] == "bf16"
    hits = mos.search("what pet do we have?", user_id="u", k=1)
    assert hits[0].memory.text == "We adopted a dog called Toby."
