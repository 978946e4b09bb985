"""Plans and timings of the server-mode search statements on the LoCoMo dev set.

Starts a PostgreSQL (``LocalPostgres``), ingests every dev conversation through
``MemOS("postgresql://...")``, then, for every 8th question (at most 100), builds the index's
own statements (``PgVectorIndex._dense_sql`` / ``_bm25``; the BM25 statistics cache is dropped
before each, so the statement also counts IDF statistics and ``N``, as after ``idf_ttl_s``)
and prints: the scan nodes and times of ``EXPLAIN ANALYZE`` for the dense ("ann") and both
BM25 variants; p50/mean/p95 ms of each statement over the questions, twice (the "hop" rows:
the query plus four capitalised words of the user's turns, like the entity hop); and whether
the HNSW statement and the exact one return the same top 50.

    python benchmarks/server_statements.py
"""

import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from _machine import machine_info, markdown_machine, markdown_server, server_versions  # noqa: E402
from server_mode import load
from memos_core import MemOS, MemOSConfig
from memos_core.embedding.onnx import OnnxEmbedder
from memos_core.testing.postgres import LocalPostgres
from memos_core.index.filters import plan_filter
from memos_core.index.pgvector import _DenseParam
from memos_core.retrieval.filters import build_filter
from memos_core.lifecycle import SEARCHABLE_STATES
from psycopg import sql

DATA = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("../shared/data/locomo/locomo_dev.json")
print(markdown_machine(machine_info()))
data = load(DATA, None, None)
emb = OnnxEmbedder("minilm")
with LocalPostgres() as server:
    url = server.create_database("explain")
    print(markdown_server(server_versions(url)))
    with MemOS(url, embedder=emb, config=MemOSConfig(show_progress=False)) as mos:
        by_user = {}
        for t in data["turns"]:
            by_user.setdefault(t["user"], []).append(t["item"])
        for u, items in by_user.items():
            mos.add_many(items, user_id=u)
        mos.index.optimize()
        idx = mos.index
        qas = data["qas"][::8][:100]
        qv = emb.embed([qa["q"] for qa in qas])
        def stmts(qa, v, keyword):
            idx.keyword = keyword
            idx._forget_stats()
            flt = build_filter((qa["user"],), states=SEARCHABLE_STATES)
            where, params = idx._where(plan_filter(flt))
            ann, exact = idx._dense_sql(where)
            vec = _DenseParam(v.tolist())  # the query vector as the index sends it (binary)
            sp = mos.store.bm25.encode_query(qa["q"])
            b = idx._bm25(sp, flt, where, params, 50)
            words = [w for w in re.findall(r"[A-Z][a-z]+", " ".join(t["text"] for t in by_user[qa["user"]][:50]))][:4]
            hp = mos.store.bm25.encode_query(qa["q"] + " " + " ".join(words))
            h = idx._bm25(hp, flt, where, params, 50)
            return {"ann": (ann, (vec, *params, 50)), "exact": (exact, (vec, *params, 50)),
                    f"bm25 {keyword}": (b[0], b[1]), f"hop {keyword}": (h[0], h[1])}
        sets = [{**stmts(qa, v, "scan"), **stmts(qa, v, "postings")} for qa, v in zip(qas, qv)]
        with idx._pool.connection() as conn:
            for name in ("ann", "bm25 scan", "bm25 postings"):
                st, args = sets[0][name]
                plan = [r[0] for r in conn.execute(sql.SQL("EXPLAIN (ANALYZE) ") + st, args).fetchall()]
                print("==", name, "|", " / ".join(l.strip()[:110] for l in plan if "Scan" in l or "Time" in l))
            for _round in range(2):
                for name in sets[0]:
                    ts = []
                    for s in sets:
                        t0 = time.perf_counter()
                        conn.execute(*s[name]).fetchall()
                        ts.append((time.perf_counter() - t0) * 1000)
                    ts.sort()
                    print(f"{name}: p50 {ts[len(ts)//2]:.2f} mean {sum(ts)/len(ts):.2f} p95 {ts[int(len(ts)*.95)]:.2f} ms  load {os.getloadavg()[0]:.2f}")
            same = sum({r[0] for r in conn.execute(*s["ann"]).fetchall()} == {r[0] for r in conn.execute(*s["exact"]).fetchall()} for s in sets)
            print("ann==exact top-50 sets:", same, "/", len(sets))
            print("points:", conn.execute(sql.SQL("select count(*) from {}").format(idx._points)).fetchone())
