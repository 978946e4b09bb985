"""How fast could MiniLM embed on this machine? The linear layers' arithmetic as a ceiling.

MiniLM-L6 spends almost all of its arithmetic in six linear layers per transformer block:
query, key, value and output projections (hidden x hidden) and the feed-forward pair
(hidden x 4 hidden, 4 hidden x hidden). This script times each of those matrix products on
this machine, on the runtime and number format each embedder uses, at the row count one of
the embedder's batches has (``--rows``, default 1024 word pieces, the embedders'
``batch_tokens``):

- fp32: ONNX Runtime ``MatMul`` (the ``onnx`` embedder's runtime);
- bf16: torch ``linear`` with bf16 weights and inputs (the ``bf16`` embedder's);
- int8: ONNX Runtime ``MatMul`` quantised as the ``onnx-int8`` export is (dynamic, weights
  per channel: ``DynamicQuantizeLinear`` + ``MatMulInteger`` + the scale).

From those times and each text's real word-piece count it computes the texts/s an embedder
would reach if the linear layers were all it ran (attention scores, softmax, layer norms,
GELU, casts and pooling cost nothing): an upper bound on that format's speed here. Then it
embeds the same texts with each embedder (calls of 256, the write path's size; best of
``--repeat``) and prints the share of the bound each reaches.

``--profile`` adds where the bf16 embedder's time goes (torch's profiler, self time per
operator), with transformers' fused attention kernel ("sdpa") and with plain batched
products ("eager", the default).

    python benchmarks/encoder_ceiling.py --data ../shared/data/locomo/locomo_dev.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, markdown_machine  # noqa: E402
from encoder import texts_from  # noqa: E402
from memos_core.embedding import new_embedder  # noqa: E402

#: format -> the embedder backend that computes in it
FORMATS = {"fp32": "onnx", "bf16": "bf16", "int8": "onnx-int8"}


def median_seconds(run: Callable[[], Any], repeat: int) -> float:
    for _ in range(3):
        run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ort_matmul(rows: int, k: int, n: int, quantize: bool, repeat: int) -> float:
    """Seconds for one [rows, k] x [k, n] product in ONNX Runtime, fp32 or quantised as the
    int8 export is."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array((rng.standard_normal((k, n)) * 0.05).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])], "matmul",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, n])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "matmul.onnx"
        onnx.save(model, str(path))
        if quantize:
            import logging

            from onnxruntime.quantization import QuantType, quantize_dynamic

            logging.getLogger().setLevel(logging.ERROR)  # its pre-processing advice

            quantized = Path(tmp) / "matmul_int8.onnx"
            quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8,
                             per_channel=True, op_types_to_quantize=["MatMul"])
            path = quantized
        opts = ort.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = rng.standard_normal((rows, k)).astype(np.float32)
    return median_seconds(lambda: session.run(None, {"X": x}), repeat)


def torch_bf16_linear(rows: int, k: int, n: int, repeat: int) -> float:
    """Seconds for one [rows, k] x [k, n] product in torch with bf16 inputs and weights."""
    import torch

    gen = torch.Generator().manual_seed(0)
    weight = (torch.randn(n, k, generator=gen) * 0.05).to(torch.bfloat16)
    x = torch.randn(rows, k, generator=gen).to(torch.bfloat16)
    with torch.inference_mode():
        return median_seconds(lambda: torch.nn.functional.linear(x, weight), repeat)


def shapes(config: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
    """The linear layers of one transformer block: name -> (k, n, how many)."""
    h, f = int(config["hidden_size"]), int(config["intermediate_size"])
    return {"projection (q, k, v, out)": (h, h, 4), "feed-forward up": (h, f, 1),
            "feed-forward down": (f, h, 1)}


def embed_rate(backend: str, texts: list[str], repeat: int) -> float:
    """Texts/s embedding ``texts`` in calls of 256, fastest of ``repeat`` rounds."""
    emb = new_embedder("minilm", backend)
    emb.embed(texts[:256])  # load and warm up
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        for i in range(0, len(texts), 256):
            emb.embed(texts[i:i + 256])
        best = max(best, len(texts) / (time.perf_counter() - start))
    return best


def bf16_profile(texts: list[str], attention: str) -> dict[str, float]:
    """Share of the bf16 embedder's self CPU time per torch operator, largest first, embedding
    ``texts`` in calls of 256; "total ms" is the profiled time."""
    from torch.profiler import ProfilerActivity, profile

    from memos_core.embedding.bf16 import Bf16Embedder

    emb = Bf16Embedder("minilm", attention=attention)
    emb.embed(texts[:256])  # load and warm up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(0, len(texts), 256):
            emb.embed(texts[i:i + 256])
    times = sorted(((e.key, e.self_cpu_time_total) for e in prof.key_averages()),
                   key=lambda kv: -kv[1])
    total = sum(t for _, t in times)
    return {**{name.removeprefix("aten::"): t / total for name, t in times}, "total ms": total / 1e3}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, help="LoCoMo JSON (else generated sentences)")
    p.add_argument("--texts", type=int, default=1000)
    p.add_argument("--rows", type=int, default=1024, help="rows of each timed product")
    p.add_argument("--gemm-repeat", type=int, default=30)
    p.add_argument("--repeat", type=int, default=3, help="embedding rounds per embedder")
    p.add_argument("--formats", default=",".join(FORMATS))
    p.add_argument("--profile", action="store_true", help="where the bf16 embedder's time goes")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    formats = args.formats.split(",")
    if unknown := [f for f in formats if f not in FORMATS]:
        raise SystemExit(f"unknown format {unknown[0]!r}: one of {', '.join(FORMATS)}")
    texts = texts_from(args.data, args.texts, random.Random(0))

    tokenizer = new_embedder("minilm", "onnx")
    tokenizer.embed(texts[:1])
    pieces = [len(ids) for ids in tokenizer._tokenize(texts)]
    config = json.loads((tokenizer._model_dir() / "config.json").read_text())
    layers, hidden = int(config["num_hidden_layers"]), int(config["hidden_size"])
    blocks = shapes(config)
    linear_flops = 2 * sum(k * n * count for k, n, count in blocks.values()) * layers
    # q.k scores and the weighted sum of values: 2 products of length x length x hidden
    attention_flops = [2 * 2 * length * length * hidden * layers for length in pieces]
    per_text = [linear_flops * length for length in pieces]

    timings: dict[str, dict[str, float]] = {}
    for fmt in formats:
        timings[fmt] = {}
        for name, (k, n, _) in blocks.items():
            if fmt == "bf16":
                seconds = torch_bf16_linear(args.rows, k, n, args.gemm_repeat)
            else:
                seconds = ort_matmul(args.rows, k, n, fmt == "int8", args.gemm_repeat)
            timings[fmt][name] = seconds

    rows = []
    for fmt in formats:
        # seconds per word piece through all the linear layers of the model
        per_piece = layers * sum(timings[fmt][name] * count
                                 for name, (_, _, count) in blocks.items()) / args.rows
        ceiling = len(texts) / (per_piece * sum(pieces))
        gflops = linear_flops / per_piece / 1e9
        measured = embed_rate(FORMATS[fmt], texts, args.repeat)
        rows.append({"format": fmt, "backend": FORMATS[fmt], "gflops": round(gflops, 1),
                     "ceiling_texts_s": round(ceiling, 1), "measured_texts_s": round(measured, 1),
                     "share": round(measured / ceiling, 3),
                     "gemm_ms": {k: round(v * 1e3, 3) for k, v in timings[fmt].items()}})

    print(markdown_machine(machine_info()))
    print(f"\n{len(texts)} {'LoCoMo turns' if args.data else 'generated sentences'}, "
          f"{statistics.fmean(pieces):.1f} word pieces on average; MiniLM: {layers} blocks, "
          f"hidden {hidden}, feed-forward {config['intermediate_size']}; "
          f"{statistics.fmean(per_text) / 1e9:.3f} GFLOP per text in the linear layers, "
          f"attention scores another {100 * sum(attention_flops) / sum(per_text):.1f}% "
          f"(not in the bound); products timed at {args.rows} rows, median of "
          f"{args.gemm_repeat}; load average {os.getloadavg()[0]:.2f}\n")
    names = list(blocks)
    print("| format (embedder) | " + " | ".join(f"{n} ms" for n in names)
          + " | GFLOP/s | bound texts/s | embedder texts/s | share of bound |")
    print("|---|" + "---|" * (len(names) + 4))
    for r in rows:
        print(f"| {r['format']} ({r['backend']}) | "
              + " | ".join(str(r["gemm_ms"][n]) for n in names)
              + f" | {r['gflops']} | {r['ceiling_texts_s']} | {r['measured_texts_s']} | "
              f"{r['share']:.0%} |")
    profiles = {}
    if args.profile:
        profiles = {a: bf16_profile(texts, a) for a in ("sdpa", "eager")}
        ops = list(dict.fromkeys(op for shares in profiles.values()
                                 for op in [o for o in shares if o != "total ms"][:8]))
        for shares in profiles.values():
            shares["other"] = 1.0 - sum(shares.get(op, 0.0) for op in ops)
        print(f"\nbf16 embedder, self CPU time per operator ({len(texts)} texts, calls of 256):\n")
        print("| operator | " + " | ".join(f"attention {a}" for a in profiles) + " |")
        print("|---|" + "---|" * len(profiles))
        for op in [*ops, "other"]:
            print(f"| {op} | " + " | ".join(
                f"{shares.get(op, 0.0):.1%}" for shares in profiles.values()) + " |")
        print("| total (profiled) ms | " + " | ".join(
            f"{shares['total ms']:.0f}" for shares in profiles.values()) + " |")
    if args.out:
        args.out.write_text(json.dumps({"machine": machine_info(), "args": {
            k: str(v) for k, v in vars(args).items()}, "mean_pieces": statistics.fmean(pieces),
            "rows": rows, "bf16_profile": profiles}, indent=2))


if __name__ == "__main__":
    main()
