"""Micro benchmark of the vector index: upsert rate and search latency at N memories.

For the embedded backend (EdgeIndex) at ``--n`` points it measures:

* BM25 encoding rate and upsert rate (batches of 1,000 checked points, vectors precomputed);
* search latency p50/p95 over ``--queries`` queries, limit 10, for dense, dense filtered on
  one user (1% of points), dense with the default retrieval filter (states + not superseded,
  matching ~all points), sparse (BM25) and sparse filtered on one user;
* all of that twice: on the freshly written shard (brute force over the appendable segment)
  and after ``optimize()`` (HNSW + int8 quantization), with the optimize time;
* dense recall@10 against exact numpy search.

qdrant-client's local mode runs the same measurements (no optimize phase) when
``--n <= 10000``; it scans every point and is far too slow beyond that.

Data are synthetic and seeded: embeddings of rank 48 plus noise (sentence embeddings are
far from uniform, and uniform random vectors would understate HNSW recall), normalised to
``--dim`` (384, MiniLM's size); texts of 8-14 words drawn Zipf-like from a 20,000-word
vocabulary; sparse queries are 3 words of a stored text. Prints a markdown table with the
machine and versions; ``--out FILE.json`` also writes the numbers.

    .venv/bin/python benchmarks/index_micro.py --n 100000 --out results/index_micro.json
    .venv/bin/python benchmarks/index_micro.py --n 5000             # both backends, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, markdown_machine  # noqa: E402

from memos_core.index import (  # noqa: E402
    Bm25Encoder,
    EdgeIndex,
    IndexFilter,
    IndexPoint,
    QdrantClientIndex,
    VectorIndex,
)

USERS = 100
BATCH = 1000
CLIENT_MAX_N = 10_000
DEFAULT_FILTER = IndexFilter(states=("generated", "activated"))  # what retrieval passes
USER_FILTER = IndexFilter(user_ids=("u7",), states=("generated", "activated"))


def make_embeddings(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` unit vectors (float32) of rank 48 plus noise."""
    basis = rng.normal(size=(48, dim)).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 10_000):
        rows = min(10_000, n - start)
        block = rng.normal(size=(rows, 48)).astype(np.float32) @ basis
        block += 1.0 * rng.normal(size=(rows, dim)).astype(np.float32)
        out[start : start + rows] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def make_texts(n: int, rng: np.random.Generator) -> list[str]:
    """Word ranks are Zipf-distributed with the 100 most frequent ranks cut off, as the
    encoder's stopword list would."""
    vocab = [f"w{i:05d}" for i in range(20_000)]
    ranks = np.minimum(rng.zipf(1.1, size=(n, 14)) + 99, len(vocab) - 1)
    lengths = rng.integers(8, 15, size=n)
    return [" ".join(vocab[r] for r in ranks[i, : lengths[i]]) for i in range(n)]


def payload(i: int) -> dict[str, Any]:
    return {
        "user_id": f"u{i % USERS}", "version": 1, "state": "activated" if i % 10 else "generated",
        "tags": [f"t{i % 7}"], "occurred_at": float(1_700_000_000 + i), "superseded": i % 50 == 0,
        "type": "fact",
    }


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3)}


def time_calls(call: Callable[[int], Any], count: int) -> dict[str, float]:
    call(0)  # warm up
    samples = []
    for j in range(count):
        start = time.perf_counter()
        call(j)
        samples.append(time.perf_counter() - start)
    return percentiles(samples)


def measure_searches(index: VectorIndex, queries: np.ndarray, words: list[Any], count: int) -> dict[str, Any]:
    q = [row.tolist() for row in queries]
    return {
        "dense": time_calls(lambda j: index.search_dense(q[j], IndexFilter(include_superseded=True), 10), count),
        "dense+user": time_calls(lambda j: index.search_dense(q[j], USER_FILTER, 10), count),
        "dense+default": time_calls(lambda j: index.search_dense(q[j], DEFAULT_FILTER, 10), count),
        "sparse": time_calls(lambda j: index.search_sparse(words[j], IndexFilter(include_superseded=True), 10), count),
        "sparse+user": time_calls(lambda j: index.search_sparse(words[j], USER_FILTER, 10), count),
    }


def recall_at_10(index: VectorIndex, vectors: np.ndarray, ids: list[str], queries: np.ndarray) -> float:
    hits = 0
    for query in queries[:50]:
        exact = {ids[i] for i in np.argsort(-(vectors @ query))[:10]}
        found = {h.id for h in index.search_dense(query.tolist(), IndexFilter(include_superseded=True), 10)}
        hits += len(exact & found)
    return round(hits / (10 * min(50, len(queries))), 3)


def run_backend(name: str, index: VectorIndex, data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    points = data["points"]
    start = time.perf_counter()
    for lo in range(0, len(points), BATCH):
        index.upsert(points[lo : lo + BATCH])
    index.flush()
    upsert_s = time.perf_counter() - start
    result: dict[str, Any] = {"backend": name, "n": len(points), "upserts_per_s": round(len(points) / upsert_s)}
    print(f"[{name}] upserted {len(points)} in {upsert_s:.1f}s", flush=True)
    result["fresh"] = measure_searches(index, data["queries"], data["words"], args.queries)
    result["fresh"]["recall@10"] = recall_at_10(index, data["vectors"], data["ids"], data["queries"])
    if isinstance(index, EdgeIndex):
        start = time.perf_counter()
        index.optimize()
        result["optimize_s"] = round(time.perf_counter() - start, 1)
        print(f"[{name}] optimize {result['optimize_s']}s", flush=True)
        result["optimized"] = measure_searches(index, data["queries"], data["words"], args.queries)
        result["optimized"]["recall@10"] = recall_at_10(index, data["vectors"], data["ids"], data["queries"])
    return result


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    vectors = make_embeddings(args.n, args.dim, rng)
    texts = make_texts(args.n, rng)
    encoder = Bm25Encoder()
    start = time.perf_counter()
    sparse = encoder.encode_documents(texts)
    encode_rate = args.n / (time.perf_counter() - start)
    ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(args.n)]
    points = [IndexPoint(ids[i], vectors[i], sparse[i], payload(i)) for i in range(args.n)]
    # Queries near stored points (as a paraphrase would be), and 3 words from stored texts.
    picks = rng.integers(0, args.n, size=args.queries + 1)
    queries = vectors[picks] + 0.025 * rng.normal(size=(len(picks), args.dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    words = [encoder.encode_query(" ".join(rng.choice(texts[p].split(), 3))) for p in picks]
    return {"vectors": vectors, "ids": ids, "points": points, "queries": queries, "words": words,
            "bm25_docs_per_s": round(encode_rate)}


def markdown(results: list[dict[str, Any]], data: dict[str, Any], info: dict[str, Any]) -> str:
    kinds = ["dense", "dense+user", "dense+default", "sparse", "sparse+user"]
    head = "| backend | phase | upserts/s | optimize s | " + " | ".join(f"{k} p50/p95 ms" for k in kinds)
    lines = [head + " | recall@10 |", "|" + "---|" * (len(kinds) + 5)]
    for r in results:
        for phase in ("fresh", "optimized"):
            if phase not in r:
                continue
            cells = [f"{r[phase][k]['p50_ms']:.2f} / {r[phase][k]['p95_ms']:.2f}" for k in kinds]
            opt = str(r.get("optimize_s", "-")) if phase == "optimized" else "-"
            lines.append(f"| {r['backend']} (n={r['n']}) | {phase} | {r['upserts_per_s']} | {opt} | "
                         + " | ".join(cells) + f" | {r[phase]['recall@10']} |")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return ("\n".join(lines) + f"\n\nBM25 encoding: {data['bm25_docs_per_s']} docs/s. "
            f"Load average at start: {info['load_avg_at_start']:.2f}, at end: {load:.2f}.\n"
            + markdown_machine(info))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="points to index")
    parser.add_argument("--dim", type=int, default=384, help="dense vector size")
    parser.add_argument("--queries", type=int, default=200, help="queries per measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    info = machine_info()
    info["load_avg_at_start"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    data = prepare(args)
    results = []
    with tempfile.TemporaryDirectory(prefix="index_micro_") as tmp:
        with EdgeIndex(Path(tmp) / "edge", args.dim) as edge:
            results.append(run_backend("edge", edge, data, args))
        if args.n <= CLIENT_MAX_N:
            with QdrantClientIndex(":memory:", args.dim) as client:
                results.append(run_backend("qdrant-client local", client, data, args))
    table = markdown(results, data, info)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"results": results, "bm25_docs_per_s": data["bm25_docs_per_s"],
                                        "machine": info, "args": {k: str(v) for k, v in vars(args).items()}},
                                       indent=2))


if __name__ == "__main__":
    main()
