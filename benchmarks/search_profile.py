"""Where a search's time goes at scale, and what each retrieval setting costs, side by side.

Builds the synthetic store of benchmarks/scale.py (``--vectors pooled``: real MiniLM vectors
from a pool plus noise at ingest, so ingest is quick; queries use the real model), then runs
the same queries under every configuration in turn -- query 1 under A, B, C, query 2 under
B, C, A, query 3 under C, A, B, ... -- so that load from other jobs on a shared machine falls
on all of them alike, and no configuration always pays for the first (cold) search of a
user's data. For each configuration: search p50 / p95 / p99 and the mean and p95 of each stage of
the query path, measured by wrapping the store's own methods: query embedding (cache off),
dense search, BM25 search, graph expansion, vault read of the candidates, second-stage
ranking, and the rest (fusion, filters, hit building).

    python benchmarks/search_profile.py --n 100000 --out search_100k.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, markdown_machine, time_calls  # noqa: E402
from scale import ACTIVITIES, NAMES, PooledEmbedder, ingest, log  # noqa: E402

#: name -> (RetrievalConfig changes, OnnxEmbedder keywords for the query embedder or None)
CONFIGS: dict[str, tuple[dict[str, Any], dict[str, Any] | None]] = {
    "default": ({}, None),
    "query embedder 1 thread": ({}, {"threads": 1}),
    "query embedder unfused": ({}, {"fuse": False}),
    "no entity hop (hop_weight=0)": ({"hop_weight": 0.0}, None),
    "rerank_depth=10": ({"rerank_depth": 10}, None),
    "graph_seeds=5": ({"graph_seeds": 5}, None),
    "candidates=30": ({"candidates": 30}, None),
    "no graph (graph_weight=0)": ({"graph_weight": 0.0}, None),
}
STAGES = ("query embedding", "dense search", "bm25 search", "graph expansion", "vault read",
          "second stage")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return round(values[min(int(len(values) * q), len(values) - 1)], 2) if values else 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--users", type=int, default=100)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--pool-size", type=int, default=5000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--configs", default=",".join(CONFIGS), help="names from CONFIGS")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    import memos_core.memos as memos_module
    from memos_core import MemOS, MemOSConfig
    from memos_core.config import RetrievalConfig
    from memos_core.embedding import QueryCache
    from memos_core.embedding.onnx import OnnxEmbedder

    names = args.configs.split(",")
    rng = random.Random(args.seed)
    real = OnnxEmbedder("minilm")
    real.embed(["warm up"])
    pooled = PooledEmbedder(real, pool_size=args.pool_size, sigma=0.02, seed=args.seed + 1)
    pool_s = pooled.build(show_progress=False)
    result: dict[str, Any] = {"n": args.n, "users": args.users, "queries": args.queries,
                              "pool_size": args.pool_size, "pool_build_s": round(pool_s, 1)}
    with tempfile.TemporaryDirectory() as tmp:
        base_cfg = MemOSConfig(show_progress=False, retrieval=RetrievalConfig(query_cache=0))
        mos = MemOS(Path(tmp) / "d", config=base_cfg, embedder=pooled)
        ingest_s, _ = ingest(mos, args.n, args.users, rng)
        mos.optimize()
        mos.index.flush()
        pooled.phase = "query"
        result["ingest_s"] = round(ingest_s, 1)
        result["load_avg_after_ingest"] = round(os.getloadavg()[0], 2)
        log(f"ingest {ingest_s:.0f} s")
        setups = {}
        for name in names:
            changes, emb_kw = CONFIGS[name]
            emb = real if emb_kw is None else OnnxEmbedder("minilm", **emb_kw)
            emb.embed(["warm up"])
            rc = base_cfg.retrieval.model_copy(update=changes)
            setups[name] = (base_cfg.model_copy(update={"retrieval": rc}), rc, QueryCache(emb, 0))
        lat: dict[str, list[float]] = defaultdict(list)
        stages: dict[str, dict[str, list[float]]] = {n: defaultdict(list) for n in names}
        qrng = random.Random(args.seed + 1)
        queries = [(f"when did {qrng.choice(NAMES)} {qrng.choice(ACTIVITIES)}?",
                    f"user{qrng.randrange(args.users)}") for _ in range(args.queries)]
        retr = mos.retriever
        for i, (q, user) in enumerate(queries):
            for name in names[i % len(names):] + names[:i % len(names)]:
                cfg, rc, cache = setups[name]
                mos.config, retr.config, retr.query_vectors = cfg, rc, cache
                spent: dict[str, float] = defaultdict(float)
                with contextlib.ExitStack() as stack:
                    stack.enter_context(time_calls(cache, "get", spent, "query embedding", scale=1000))
                    stack.enter_context(time_calls(mos.index, "search_dense", spent, "dense search", scale=1000))
                    stack.enter_context(time_calls(mos.index, "search_sparse", spent, "bm25 search", scale=1000))
                    stack.enter_context(time_calls(retr, "_expand", spent, "graph expansion", scale=1000))
                    stack.enter_context(time_calls(mos.vault, "get_many", spent, "vault read", scale=1000))
                    stack.enter_context(time_calls(memos_module, "rerank", spent, "second stage", scale=1000))
                    t0 = time.perf_counter()
                    mos.search(q, user_id=user, k=10, record_usage=False)
                    total = (time.perf_counter() - t0) * 1000
                lat[name].append(total)
                for stage in STAGES:
                    stages[name][stage].append(spent.get(stage, 0.0))
                stages[name]["rest"].append(total - sum(spent.values()))
            if (i + 1) % 50 == 0:
                log(f"queries: {i + 1}/{len(queries)}, load {os.getloadavg()[0]:.1f}")
        mos.config = base_cfg
        mos.close()
    result["load_avg"] = round(os.getloadavg()[0], 2)
    result["machine"] = machine_info()
    result["configs"] = {
        name: {"search_ms_p50": pct(lat[name], 0.5), "search_ms_p95": pct(lat[name], 0.95),
               "search_ms_p99": pct(lat[name], 0.99),
               "stages_ms": {s: {"mean": round(sum(v) / len(v), 2), "p95": pct(v, 0.95)}
                             for s, v in stages[name].items()}}
        for name in names}
    print(markdown_machine(result["machine"]))
    print(f"\n{args.n} memories, {args.users} users, pooled vectors ({args.pool_size}-vector "
          f"pool); {args.queries} queries, k=10, query cache off, configurations interleaved "
          f"per query in rotating order; load average after ingest {result['load_avg_after_ingest']}, at the end "
          f"{result['load_avg']}\n")
    cols = [*STAGES, "rest"]
    print("| configuration | search p50 ms | p95 | p99 | " + " | ".join(
        f"{c} mean / p95" for c in cols) + " |")
    print("|---|---|---|---|" + "---|" * len(cols))
    for name, r in result["configs"].items():
        cells = " | ".join(f"{r['stages_ms'][c]['mean']} / {r['stages_ms'][c]['p95']}" for c in cols)
        print(f"| {name} | {r['search_ms_p50']} | {r['search_ms_p95']} | {r['search_ms_p99']} "
              f"| {cells} |")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
