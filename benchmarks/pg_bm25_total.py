"""BM25's N on PostgreSQL: counted by a scan of the points, or kept by triggers.

The pgvector index's BM25 statement needs N (the points with a sparse vector) whenever its
cached value is older than ``idf_ttl_s``. It used to count N with ``count(*)`` over the
points table inside the statement; now statement triggers keep it in ``<collection>_counts``
(:meth:`PgVectorIndex._ensure_counts`). This script fills one index with N points (8-d dense
vectors, short generated texts for BM25), then, in one process and one database, times the
BM25 statement for a user's filtered search with its N taken each way (the same statement
otherwise, alternating), and prints p50/p95 ms and that both gave the same hits.

    python benchmarks/pg_bm25_total.py --n 100000 200000
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, markdown_machine, markdown_server, server_versions  # noqa: E402

from memos_core.index import IndexFilter, IndexPoint, PgVectorIndex  # noqa: E402
from memos_core.index.filters import plan_filter  # noqa: E402
from memos_core.index.pg_bm25 import bm25_statement  # noqa: E402
from memos_core.index.sparse import Bm25Encoder  # noqa: E402
from memos_core.testing.postgres import LocalPostgres  # noqa: E402

WORDS = ("tea garden bike lake river violin pottery camping painting museum school dog cat "
         "guitar novel recipe marathon hiking beach concert").split()


def fill(idx: PgVectorIndex, enc: Bm25Encoder, start: int, stop: int, rng: random.Random) -> None:
    batch = []
    for i in range(start, stop):
        words = " ".join(rng.choice(WORDS) for _ in range(8))
        vec = [rng.gauss(0, 1) for _ in range(8)]
        batch.append(IndexPoint(str(uuid.UUID(int=i + 1)), vec, enc.encode_document(words),
                                {"user_id": f"user{i % 100}", "version": 1}))
        if len(batch) == 5000:
            idx.upsert(batch)
            batch = []
    if batch:
        idx.upsert(batch)


def ms(values: list[float]) -> str:
    values = sorted(values)
    return f"{statistics.median(values):.2f} / {values[int(0.95 * (len(values) - 1))]:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[100_000])
    ap.add_argument("--queries", type=int, default=100)
    args = ap.parse_args()
    print(markdown_machine(machine_info()))
    rng = random.Random(0)
    enc = Bm25Encoder()
    rows = []
    with LocalPostgres() as server:
        url = server.create_database("bm25_total")
        print(markdown_server(server_versions(url)))
        idx = PgVectorIndex(url, 8)
        done = 0
        for n in sorted(args.n):
            t0 = time.perf_counter()
            fill(idx, enc, done, n, rng)
            done = n
            fill_s = time.perf_counter() - t0
            times: dict[str, list[float]] = {"scan": [], "kept": []}
            same = True
            for q in range(args.queries):
                query = enc.encode_query(" ".join(rng.sample(WORDS, 2)))
                where, params = idx._where(plan_filter(IndexFilter(user_ids=(f"user{q % 100}",))))
                got = {}
                for way in (("scan", "kept") if q % 2 else ("kept", "scan")):
                    statement, sargs = bm25_statement(
                        idx.keyword, idx._points, idx._terms, where, params, query.indices,
                        query.values, {}, list(query.indices), None, 10,
                        counts=idx._counts if way == "kept" else None)
                    with idx._conn() as conn:
                        t = time.perf_counter()
                        got[way] = conn.execute(statement, sargs).fetchall()
                        times[way].append((time.perf_counter() - t) * 1000)
                same = same and got["scan"] == got["kept"]
            rows.append((n, fill_s, ms(times["scan"]), ms(times["kept"]), same))
        idx.close()
    print("\n| points | fill s | BM25 statement, N by scan p50 / p95 ms | N kept by triggers p50 / p95 ms | same rows |")
    print("|---|---|---|---|---|")
    for n, fill_s, scan, kept, same in rows:
        print(f"| {n} | {fill_s:.1f} | {scan} | {kept} | {same} |")


if __name__ == "__main__":
    main()
