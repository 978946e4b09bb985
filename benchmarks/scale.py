"""Scale: ingest N synthetic memories across 100 users, then time filtered end-to-end search.

Each memory is a generated sentence about a person, place, activity and date (so entities,
BM25 terms and embeddings vary like real notes). ``search`` is the full path: query embedding,
dense + BM25 in Qdrant with the user filter, graph expansion, fusion, vault read.

    python benchmarks/scale.py --n 10000 --out scale_10k.json
    python benchmarks/scale.py --n 1000000 --vectors pooled --out scale_1m_pooled.json

``--vectors model`` (the default) embeds every memory with the real MiniLM. At 2 CPU cores
that is about 165 memories/s, so 1M memories would take hours of embedding alone.
``--vectors pooled`` measures the store at that size without it: see :class:`PooledEmbedder`.
In pooled mode ingest/s leaves out document embedding and search results are not relevant to
their queries; latency, RSS and disk are what it measures. Queries still go through MiniLM.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, markdown_machine  # noqa: E402
from memos_core.embedding import new_embedder  # noqa: E402

NAMES = ["Ana", "Bruno", "Chen", "Dara", "Elif", "Farid", "Grace", "Hugo", "Ines", "Jonas",
         "Kemal", "Lena", "Mateo", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tove"]
PLACES = ["Lisbon", "Porto", "Berlin", "Nairobi", "Osaka", "Lima", "Oslo", "Quito", "Accra",
          "Hanoi", "Denver", "Tunis", "Krakow", "Perth", "Seville", "Tallinn"]
ACTIVITIES = ["went hiking", "started a pottery class", "adopted a dog", "ran a half marathon",
              "visited a museum", "cooked a curry", "fixed a bicycle", "read a novel",
              "joined a choir", "planted tomatoes", "learned to sail", "painted a mural",
              "wrote a poem", "bought a telescope", "watched a play", "baked sourdough"]
FEELINGS = ["loved it", "found it hard", "wants to do it again", "felt proud", "was tired after",
            "laughed a lot", "met new friends", "took many photos"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]


def sentence(rng: random.Random) -> str:
    return (f"{rng.choice(NAMES)} {rng.choice(ACTIVITIES)} in {rng.choice(PLACES)} on "
            f"{rng.randint(1, 28)} {rng.choice(MONTHS)} {rng.randint(2019, 2025)} and "
            f"{rng.choice(FEELINGS)}.")


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def disk_mb(path: Path) -> float:
    """Allocated disk space (the index preallocates sparse mmap files: size != usage)."""
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file()) / 1024**2


def pct(sorted_ms: Sequence[float], q: float) -> float:
    return round(sorted_ms[min(int(len(sorted_ms) * q), len(sorted_ms) - 1)], 2)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class PooledEmbedder:
    """Benchmark-only stand-in for MiniLM at ingest: real vectors, reused, with noise.

    ``build()`` embeds ``pool_size`` generated sentences once with the real model. In the
    ``"ingest"`` phase, ``embed`` maps each text to a pool vector picked by a stable hash of
    the text, adds gaussian noise (``sigma`` per dimension, seeded by the same hash) and
    renormalises: the index gets as many distinct vectors as texts, clustered the way real
    MiniLM vectors are, at no model cost, and the same text always gets the same vector.
    In the ``"query"`` phase every text goes to the real model, so query embedding costs what
    it costs in production. The benchmark sets ``phase``; nothing else in MemOS embeds.
    """

    def __init__(self, real: Any, *, pool_size: int, sigma: float, seed: int) -> None:
        self.real = real
        self.name = f"pooled({real.name})"
        self.dim = real.dim or 384
        self.pool_size = pool_size
        self.sigma = sigma
        self.seed = seed
        self.phase = "ingest"
        self.pool = np.zeros((0, self.dim), dtype=np.float32)

    def build(self, show_progress: bool) -> float:
        """Embed the pool with the real model; returns the seconds it took."""
        from memos_core.progress import progress

        rng = random.Random(self.seed)
        texts = [sentence(rng) for _ in range(self.pool_size)]
        bar = progress(len(texts), "pool", show_progress)
        t0 = time.perf_counter()
        parts = []
        for start in range(0, len(texts), 1024):
            parts.append(self.real.embed(texts[start:start + 1024]))
            bar.update(len(parts[-1]))
            if len(parts) % 5 == 0:
                log(f"pool: {start + len(parts[-1])}/{len(texts)} embedded "
                    f"({time.perf_counter() - t0:.0f} s)")
        bar.close()
        self.pool = np.concatenate(parts)  # (pool_size, dim), rows L2-normalised
        self.dim = self.pool.shape[1]
        return time.perf_counter() - t0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self.phase == "query" or not len(self.pool):
            return self.real.embed(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            h = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
            noise = np.random.default_rng([h, self.seed]).standard_normal(self.dim, np.float32)
            out[i] = self.pool[h % len(self.pool)] + self.sigma * noise
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out


def time_optimize(mos: Any) -> dict[str, float]:
    """Count the index optimisations add_many triggers, and their seconds (part of ingest).

    Each one is followed by an index flush: qdrant-edge-py 0.9 keeps the segments an
    optimize() replaced on disk and memory-mapped until the next flush(), and MemOS flushes
    only on close, so without it disk and RSS grow with the square of the memories (a first
    1M run reached 13 GB RSS at 300k memories). The flush is timed with the optimize it
    follows; a fix in ``EdgeIndex.optimize`` would make it unnecessary.
    """
    spent = {"calls": 0, "seconds": 0.0}
    inner = mos.optimize

    def timed() -> None:
        t0 = time.perf_counter()
        inner()
        mos.index.flush()
        spent["calls"] += 1
        spent["seconds"] += time.perf_counter() - t0

    mos.optimize = timed  # instance attribute: _maybe_optimize calls self.optimize()
    return spent


def ingest(mos: Any, n: int, users: int, rng: random.Random) -> tuple[float, list[dict]]:
    """Add n // users memories for each user; returns seconds and progress checkpoints."""
    per_user = n // users
    every = max(1, users // 10)
    checkpoints = []
    t0 = time.perf_counter()
    for u in range(users):
        items = [{"text": sentence(rng), "session_id": f"s{i // 20}"} for i in range(per_user)]
        mos.add_many(items, user_id=f"user{u}", batch_size=512)
        if (u + 1) % every == 0 or u + 1 == users:
            done, s = (u + 1) * per_user, time.perf_counter() - t0
            checkpoints.append({"memories": done, "seconds": round(s, 1),
                                "rss_mb": round(rss_mb(), 1), "load_avg": os.getloadavg()[0]})
            log(f"ingest: {done}/{per_user * users} in {s:.0f} s ({done / s:.1f}/s), "
                f"RSS {rss_mb():.0f} MB, load {os.getloadavg()[0]:.1f}")
    return time.perf_counter() - t0, checkpoints


def time_queries(mos: Any, queries: int, users: int,
                 rng: random.Random) -> tuple[list, list, list]:
    """Sorted latencies in ms: end-to-end search, the query embedding alone, and per query
    the difference of the two (an estimate of the store's part: index, graph, fusion, vault)."""
    lat, emb = [], []
    for _ in range(queries):
        q = f"when did {rng.choice(NAMES)} {rng.choice(ACTIVITIES)}?"
        user = f"user{rng.randrange(users)}"
        t0 = time.perf_counter()
        mos.search(q, user_id=user, k=10, record_usage=False)
        lat.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        mos.embedder.embed([q])  # the query embedding alone, to separate model from store
        emb.append((time.perf_counter() - t0) * 1000)
    store = [a - b for a, b in zip(lat, emb)]
    return sorted(lat), sorted(emb), sorted(store)


def run(n: int, users: int, queries: int, seed: int, vectors: str = "model",
        pool_size: int = 20_000, sigma: float = 0.02, backend: str = "onnx",
        query_backends: Sequence[str] = ("torch", "onnx"),
        store: Path | None = None, warm_views: bool = False,
        graph_max_memories: int | None = None) -> dict[str, Any]:
    """Ingest with ``backend``; then time the same queries once per ``query_backends``
    entry (that backend embeds the queries; the query cache is off so every query pays
    for its embedding). The ingest backend's query figures (if it is among them, else the
    first one's) are the top-level ones; RSS is read after its queries, before any other
    model is loaded.

    ``store``: build the store in this directory and keep it; if it already holds a store
    built by an earlier run, skip the ingest and time the queries only (to re-measure search
    latency at a quiet moment without ingesting again). ``warm_views``: load every user's
    graph view before the queries are timed (steady state; without it a user's first search
    in the process also loads that user's view from the vault). ``graph_max_memories``: the
    views' bound (``MemOSConfig.graph_max_memories``; None: the default)."""
    from memos_core import MemOS, MemOSConfig
    from memos_core.config import RetrievalConfig
    from memos_core.embedding import QueryCache

    rng = random.Random(seed)
    real = new_embedder("minilm", backend)
    real.embed(["warm up"])
    pooled, pool_s = None, None
    reuse = store is not None and (store / "d").exists()
    if vectors == "pooled" and not reuse:
        pooled = PooledEmbedder(real, pool_size=pool_size, sigma=sigma, seed=seed + 1)
        pool_s = pooled.build(show_progress=True)
        log(f"pool of {pool_size} vectors built in {pool_s:.1f} s")
    with contextlib.ExitStack() as stack:
        tmp = store or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        data = Path(tmp) / "d"
        bound = {} if graph_max_memories is None else {"graph_max_memories": graph_max_memories}
        mos = MemOS(data, config=MemOSConfig(show_progress=True,
                                             retrieval=RetrievalConfig(query_cache=0), **bound),
                    embedder=pooled or real)
        rss_before = rss_mb()  # model (and pool) loaded, store empty
        optimize = time_optimize(mos)
        if reuse:
            log(f"reusing the store in {data}: no ingest, queries only")
            ingest_s, checkpoints = float("nan"), []
        else:
            ingest_s, checkpoints = ingest(mos, n, users, rng)
        load_ingest = os.getloadavg()[0]
        mos.index.flush()
        if pooled is not None:
            pooled.phase = "query"
        by_backend = {}
        views_s = None
        if warm_views:
            t0 = time.perf_counter()
            for u in range(users):
                mos.graph.view((f"user{u}",))
            views_s = time.perf_counter() - t0
            log(f"loaded {users} graph views in {views_s:.1f} s before the queries")
        rss_after = None
        # the ingest backend first, and RSS read before another model is loaded for queries
        order = sorted(query_backends, key=lambda b: b != backend)
        for qb in order:
            if qb != backend and rss_after is None:
                rss_after = rss_mb()
            qemb = real if qb == backend else new_embedder("minilm", qb)
            qemb.embed(["warm up"])
            mos.store.embedder = mos.retriever.embedder = qemb
            mos.retriever.query_vectors = QueryCache(qemb, 0)
            qlat, qemb_ms, qstore = time_queries(mos, queries, users, random.Random(seed + 1))
            by_backend[qb] = {
                "search_ms_p50": pct(qlat, 0.5), "search_ms_p95": pct(qlat, 0.95),
                "embed_ms_p50": pct(qemb_ms, 0.5), "embed_ms_p95": pct(qemb_ms, 0.95),
                "store_ms_p50": pct(qstore, 0.5), "store_ms_p95": pct(qstore, 0.95),
                "load_avg": round(os.getloadavg()[0], 2)}
            log(f"queries with {qb}: {by_backend[qb]}")
            if qb == order[0]:
                lat, emb, store = qlat, qemb_ms, qstore
        if rss_after is None:
            rss_after = rss_mb()
        mos.close()  # flush the vault WAL and the index before measuring the disk
        total = (n // users) * users
        disk = disk_mb(data)
        return {
            "n": total,
            "backend": backend,
            "queries_by_backend": by_backend,
            "users": users,
            "vectors": vectors,
            "pool_size": pool_size if pooled else None,
            "pool_sigma": sigma if pooled else None,
            "pool_build_s": round(pool_s, 1) if pooled else None,
            "ingest_s": round(ingest_s, 1),
            "ingest_per_s": round(total / ingest_s, 1),
            "optimize_calls": optimize["calls"],
            "optimize_s": round(optimize["seconds"], 1),
            "ingest_checkpoints": checkpoints,
            "search_ms_p50": pct(lat, 0.5),
            "search_ms_p95": pct(lat, 0.95),
            "embed_ms_p50": pct(emb, 0.5),
            "embed_ms_p95": pct(emb, 0.95),
            "store_ms_p50": pct(store, 0.5),
            "store_ms_p95": pct(store, 0.95),
            "load_avg_after_ingest": load_ingest,
            "load_avg": os.getloadavg()[0],
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "rss_mb_before_ingest": round(rss_before, 1),
            "rss_mb": round(rss_after, 1),
            "rss_bytes_per_memory": round((rss_after - rss_before) * 1024**2 / total),
            "disk_mb": round(disk, 1),
            "disk_bytes_per_memory": round(disk * 1024**2 / total),
            "graph": mos.graph.stats(),
            "queries": queries,
            "views_preloaded_s": None if views_s is None else round(views_s, 1),
            "machine": machine_info(),
        }


def print_table(r: dict[str, Any]) -> None:
    print(markdown_machine(r["machine"]))
    print(f"load average (1 min) at the end of ingest {r['load_avg_after_ingest']:.1f}, "
          f"after the queries {r['load_avg']:.1f} (the machine has {os.cpu_count()} cores); "
          f"OMP_WAIT_POLICY={r['omp_wait_policy']}")
    if r["vectors"] == "pooled":
        print(f"vectors: pooled -- {r['pool_size']} real MiniLM vectors built in "
              f"{r['pool_build_s']} s (not in ingest/s), reused with noise sigma "
              f"{r['pool_sigma']}; ingest/s EXCLUDES document embedding; queries use the real "
              "model; search results are not relevant to their queries, only latency, RSS and "
              "disk are measured")
    else:
        print("vectors: model -- every memory embedded with the real MiniLM (in ingest/s)")
    print(f"ingest took {r['ingest_s']} s, of which {r['optimize_s']} s in "
          f"{r['optimize_calls']} index optimize() calls; RSS before ingest (model loaded, store empty) "
          f"{r['rss_mb_before_ingest']} MB; graph {r['graph']}")
    if r.get("views_preloaded_s") is not None:
        print(f"graph views of all {r['users']} users loaded before the queries "
              f"({r['views_preloaded_s']} s): steady-state latency")
    else:
        print("graph views load on demand: a user's first search in the process also loads "
              "that user's view (cold)")
    print("search minus query embedding: per query, the search time less the separately "
          "timed embedding of the same query (an estimate of the store's part)")
    print("\n| n | users | vectors | ingest/s | search p50 ms | search p95 ms "
          "| of which query embedding p50 / p95 ms | search minus query embedding p50 / p95 ms "
          "| RSS MB | RSS growth B/memory | disk MB | disk B/memory |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {r['n']} | {r['users']} | {r['vectors']} | {r['ingest_per_s']} | "
          f"{r['search_ms_p50']} | {r['search_ms_p95']} | {r['embed_ms_p50']} / "
          f"{r['embed_ms_p95']} | {r['store_ms_p50']} / {r['store_ms_p95']} | "
          f"{r['rss_mb']} | {r['rss_bytes_per_memory']} | "
          f"{r['disk_mb']} | {r['disk_bytes_per_memory']} |")
    print(f"\nIngest embedder: {r['backend']}. The same {r['queries']} queries on the same "
          "store, embedded by each backend (query cache off):\n")
    print("| query backend | search p50 ms | search p95 ms | query embedding p50 / p95 ms "
          "| search minus query embedding p50 / p95 ms | load avg |")
    print("|---|---|---|---|---|---|")
    for qb, q in r["queries_by_backend"].items():
        print(f"| {qb} | {q['search_ms_p50']} | {q['search_ms_p95']} | {q['embed_ms_p50']} / "
              f"{q['embed_ms_p95']} | {q['store_ms_p50']} / {q['store_ms_p95']} | "
              f"{q['load_avg']} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--users", type=int, default=100)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--vectors", choices=("model", "pooled"), default="model",
                   help="model: embed every memory with MiniLM; pooled: reuse a pool of real "
                        "MiniLM vectors plus noise at ingest (latency/RSS/disk only)")
    p.add_argument("--pool-size", type=int, default=20_000, help="pooled mode: pool vectors")
    p.add_argument("--pool-sigma", type=float, default=0.02,
                   help="pooled mode: gaussian noise per dimension before renormalising")
    p.add_argument("--backend", choices=("torch", "onnx", "onnx+bf16", "bf16", "onnx-int8"), default="onnx",
                   help="embedder for ingest (and the pool)")
    p.add_argument("--query-backends", default="torch,onnx",
                   help="comma-separated embedders to time the queries with, side by side")
    p.add_argument("--store", type=Path,
                   help="keep the store in this directory; if it holds one already, reuse it "
                        "and time the queries only (ingest figures are then NaN)")
    p.add_argument("--warm-views", action="store_true",
                   help="load every user's graph view before timing the queries")
    p.add_argument("--graph-max-memories", type=int, default=None,
                   help="the graph views' bound (default: MemOSConfig's)")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # SIGTERM as an exception, so the temporary data directory is removed on kill
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    r = run(args.n, args.users, args.queries, args.seed, args.vectors, args.pool_size,
            args.pool_sigma, args.backend, tuple(args.query_backends.split(",")),
            args.store, args.warm_views, args.graph_max_memories)
    print_table(r)
    if args.out:
        args.out.write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
