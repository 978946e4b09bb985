"""Server mode on one PostgreSQL: the pgvector index, client processes, LoCoMo, PostgresStore.

Prints (never asserts) four tables, each with the machine, versions and load average:

1. **Keyword search variants** on the LoCoMo turns (index level, one user's filter): the
   index's BM25 postings table (exact IDF) against a pgvector ``sparsevec`` column scanned
   with the same BM25 weights, and Postgres full-text search (``tsvector`` + GIN, ranked by
   ``ts_rank`` and ``ts_rank_cd``): recall@10 on the evidence turns, p50/p95 ms.
2. **Dense search under a user filter**: HNSW with pgvector 0.8 iterative scans (what
   ``PgVectorIndex`` runs, with its exact fallback), HNSW without iterative scans, and an
   exact scan: overlap with the exact top 10, p50/p95 ms.
3. **Client processes**: 1, 2 and 4 processes on one server, each upserting its share of the
   turns one transaction per memory, then running hybrid searches (dense + BM25 under the
   user filter): ingest/s over all processes, search p50/p95 ms.
4. **LoCoMo end to end** (the dev set): MemOS embedded (SQLite + qdrant-edge), MemOS in
   server mode on this server, and LangGraph's ``PostgresStore`` (pgvector, cosine, HNSW)
   with the same MiniLM embedder on the same server: adds/s, search p50/p95 ms (query
   embedding included), recall@5/10/20 and MRR. The systems are interleaved (each
   conversation ingested by all three, then each question asked of all three in an order
   that rotates per question), so that load from other jobs falls on them alike. With ``--profile``, also where each MemOS
   system's search time goes, stage by stage (mean and p95 ms per search; measured by
   wrapping the store's own methods, so the wrappers add a few microseconds per stage).

Server mode is ``MemOS("postgresql://...")`` when this checkout has it; otherwise the
pgvector index (``MemOSConfig(index="pgvector")``) with the embedded vault (the table says
which). Without ``--url`` the script starts its own PostgreSQL (``LocalPostgres``) and
stops it after.

    python benchmarks/server_mode.py --data ../shared/data/locomo/locomo_dev.json --quick
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import StageTimer as _StageTimer  # noqa: E402
from _machine import (SERVER_PACKAGES, machine_info, markdown_machine,  # noqa: E402
                      markdown_server, server_versions)
from locomo_retrieval import CATEGORIES, KS, normalise_evidence, score, turns_of  # noqa: E402

DIM = 384
EXTRA_VERSIONS = (*SERVER_PACKAGES, "langgraph", "langgraph-checkpoint-postgres")


# -- data ------------------------------------------------------------------------------------

def load(data: Path, conversations: int | None, questions: int | None) -> dict[str, Any]:
    """Turns (text, user, dia id, stable uuid) and scorable questions of the data file."""
    samples = json.loads(data.read_text())[:conversations]
    turns, qas = [], []
    for sample in samples:
        user = sample["sample_id"]
        items = turns_of(sample)
        dias = set()
        for item in items:
            dia = item["metadata"]["dia_id"]
            dias.add(dia)
            turns.append({"user": user, "dia": dia, "text": item["text"], "item": item,
                          "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"locomo/{user}/{dia}"))})
        for qa in sample["qa"]:
            evidence = [e for e in normalise_evidence(qa.get("evidence", [])) if e in dias]
            if qa.get("category") in CATEGORIES and evidence:
                qas.append({"user": user, "q": str(qa["question"]), "evidence": evidence,
                            "category": qa["category"]})
    if questions is not None:
        step = max(1, len(qas) // questions)
        qas = qas[::step][:questions]
    return {"samples": samples, "turns": turns, "qas": qas}


def ms_stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": round(ordered[len(ordered) // 2], 2),
            "p95": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 2)}


def recall_at(ranked: list[str], evidence: list[str], k: int = 10) -> float:
    return len(set(evidence) & set(ranked[:k])) / len(set(evidence))


# -- 1 and 2: variants at the index level --------------------------------------------------

def index_variants(url: str, turns: list[dict], qas: list[dict], vecs: Any, qvecs: Any,
                   tenants: int = 1) -> dict[str, Any]:
    """Keyword and filtered-dense variants on the LoCoMo turns (collection 'bench').

    ``tenants`` > 1 loads that many copies of every conversation, each under its own user
    (a server shared by many users); the questions still go to the first copy."""
    import psycopg

    from memos_core.index import Bm25Encoder, IndexFilter, IndexPoint, PgVectorIndex

    enc = Bm25Encoder()
    dia_of = {t["id"]: t["dia"] for t in turns}
    scan = PgVectorIndex(url, DIM, collection="bench", keyword="scan")
    postings = PgVectorIndex(url, DIM, collection="bench", keyword="postings")
    scan.clear()
    sparse = [enc.encode_document(t["text"]) for t in turns]
    copies = []
    for copy in range(tenants):
        for t, v, sv in zip(turns, vecs, sparse):
            pid = t["id"] if copy == 0 else str(uuid.uuid5(uuid.NAMESPACE_URL, f"{t['id']}/{copy}"))
            user = t["user"] if copy == 0 else f"{t['user']}#{copy}"
            copies.append((pid, user, t["text"], IndexPoint(pid, v.tolist(), sv, {"user_id": user, "version": 1})))
    for start in range(0, len(copies), 2000):
        scan.upsert([c[3] for c in copies[start:start + 2000]])
    out: dict[str, Any] = {"keyword": {}, "dense": {}, "points": len(copies), "tenants": tenants}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_fts")
        conn.execute("CREATE TABLE bench_fts (id uuid PRIMARY KEY, user_id text, tsv tsvector)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO bench_fts VALUES (%s, %s, to_tsvector('english', %s))",
                            [c[:3] for c in copies])
        conn.execute("CREATE INDEX ON bench_fts USING gin (tsv)")
        conn.execute("CREATE INDEX ON bench_fts (user_id)")
        for table in ("bench_fts", "bench_points", "bench_terms"):
            conn.execute(f"VACUUM ANALYZE {table}")  # as autovacuum would after a bulk load

        def fts(rank: str):
            query = (f"WITH q AS (SELECT array_to_string(array(SELECT quote_literal(l) FROM "
                     f"unnest(tsvector_to_array(to_tsvector('english', %s))) l), ' | ') AS s) "
                     f"SELECT f.id FROM bench_fts f, q WHERE q.s <> '' AND f.user_id = %s AND "
                     f"f.tsv @@ q.s::tsquery ORDER BY {rank}(f.tsv, q.s::tsquery) DESC LIMIT 10")
            return lambda qa, _qv: [str(r[0]) for r in conn.execute(query, (qa["q"], qa["user"]))]

        def bm25(idx: Any):
            def run(qa: dict, _qv: Any) -> list[str]:
                hits = idx.search_sparse(enc.encode_query(qa["q"]), IndexFilter(user_ids=(qa["user"],)), 10)
                return [h.id for h in hits]
            return run

        keyword = {"BM25, sparsevec scan of the user's rows (PgVectorIndex default)": bm25(scan),
                   "BM25, postings of the query terms (keyword='postings')": bm25(postings),
                   "Postgres full-text, ts_rank": fts("ts_rank"),
                   "Postgres full-text, ts_rank_cd": fts("ts_rank_cd")}
        for name, fn in keyword.items():
            out["keyword"][name] = _measure(fn, qas, qvecs, dia_of)

        def dense_sql(mode: str):
            """Plain SQL: 'exact' scans the user's rows; 'iterative'/'off' force the HNSW index
            (the owner test is hidden from the B-tree, bitmap and sequential scans are off)."""
            exact_sql = ("SELECT id FROM (SELECT id, dense <=> %s::vector AS dist FROM bench_points "
                         "WHERE user_id = %s OFFSET 0) s ORDER BY dist LIMIT 10")
            hnsw_sql = ("SELECT id FROM bench_points WHERE (user_id || '') = %s "
                        "ORDER BY dense <=> %s::vector LIMIT 10")

            def run(qa: dict, qv: Any) -> list[str]:
                text = "[" + ",".join(repr(float(x)) for x in qv) + "]"
                if mode == "exact":
                    return [str(r[0]) for r in conn.execute(exact_sql, (text, qa["user"]))]
                with conn.transaction():
                    conn.execute("SELECT set_config('hnsw.iterative_scan', %s, true), "
                                 "set_config('hnsw.ef_search', '100', true), "
                                 "set_config('enable_bitmapscan', 'off', true), "
                                 "set_config('enable_seqscan', 'off', true)",
                                 ("relaxed_order" if mode == "iterative" else "off",))
                    rows = conn.execute(hnsw_sql, (qa["user"], text)).fetchall()
                return [str(r[0]) for r in rows]
            return run

        def dense_index(qa: dict, qv: Any) -> list[str]:
            return [h.id for h in scan.search_dense(qv.tolist(), IndexFilter(user_ids=(qa["user"],)), 10)]

        exact = {qa["q"] + qa["user"]: dense_sql("exact")(qa, qv) for qa, qv in zip(qas, qvecs)}
        variants = {
            "PgVectorIndex (planner: HNSW + iterative scan, or exact; exact fallback)": dense_index,
            "HNSW forced, iterative scan relaxed_order (SQL)": dense_sql("iterative"),
            "HNSW forced, iterative scan off (SQL)": dense_sql("off"),
            "exact scan of the user's rows (SQL)": dense_sql("exact")}
        for name, fn in variants.items():
            out["dense"][name] = _measure(fn, qas, qvecs, dia_of, truth=exact)
        conn.execute("DROP TABLE IF EXISTS bench_fts")
    scan.clear()
    scan.close()
    postings.close()
    return out


def _measure(fn: Any, qas: list[dict], qvecs: Any, dia_of: dict[str, str],
             truth: dict[str, list[str]] | None = None) -> dict[str, float]:
    lat, recalls, overlap, returned = [], [], [], []
    for qa, qv in zip(qas, qvecs):
        t0 = time.perf_counter()
        ids = fn(qa, qv)
        lat.append((time.perf_counter() - t0) * 1000)
        recalls.append(recall_at([dia_of[i] for i in ids], qa["evidence"]))
        returned.append(len(ids))
        if truth is not None:
            expected = truth[qa["q"] + qa["user"]]
            overlap.append(len(set(ids) & set(expected)) / max(1, len(expected)))
    row = {"recall@10": round(statistics.fmean(recalls), 4), **ms_stats(lat),
           "avg_returned": round(statistics.fmean(returned), 2)}
    if truth is not None:
        row["overlap_exact@10"] = round(statistics.fmean(overlap), 4)
    return row


# -- 3: client processes -------------------------------------------------------------------

def _worker(url: str, collection: str, points: list[tuple], queries: list[tuple], barrier: Any,
            queue: Any) -> None:
    from memos_core.index import IndexFilter, IndexPoint, PgVectorIndex, SparseVec

    idx = PgVectorIndex(url, DIM, collection=collection, pool_size=1)
    try:
        barrier.wait()
        t0 = time.perf_counter()
        for pid, dense, ind, val, user in points:
            idx.upsert([IndexPoint(pid, dense, SparseVec(ind, val), {"user_id": user, "version": 1})])
        ingest_s = time.perf_counter() - t0
        barrier.wait()
        lat = []
        t0 = time.perf_counter()
        for dense, ind, val, user in queries:
            s = time.perf_counter()
            flt = IndexFilter(user_ids=(user,))
            idx.search_dense(dense, flt, 10)
            idx.search_sparse(SparseVec(ind, val), flt, 10)
            lat.append((time.perf_counter() - s) * 1000)
        queue.put({"points": len(points), "ingest_s": ingest_s, "lat": lat,
                   "search_s": time.perf_counter() - t0})
    finally:
        idx.close()


def _memos_worker(url: str, items: list[tuple], queries: list[tuple], barrier: Any, queue: Any) -> None:
    """One client process of MemOS(url): adds (one call per memory), then searches."""
    from memos_core import MemOS, MemOSConfig
    from memos_core.embedding.onnx import OnnxEmbedder

    embedder = OnnxEmbedder("minilm")
    embedder.embed(["warm up"])
    with MemOS(url, embedder=embedder, config=MemOSConfig(show_progress=False)) as mos:
        barrier.wait()
        t0 = time.perf_counter()
        for text, user, when in items:
            mos.add(text, user_id=user, occurred_at=when)
        ingest_s = time.perf_counter() - t0
        barrier.wait()
        lat = []
        t0 = time.perf_counter()
        for q, user in queries:
            s = time.perf_counter()
            mos.search(q, user_id=user, k=10, record_usage=False)
            lat.append((time.perf_counter() - s) * 1000)
        queue.put({"points": len(items), "ingest_s": ingest_s, "lat": lat,
                   "search_s": time.perf_counter() - t0})


def memos_processes(url: str, turns: list[dict], qas: list[dict], counts: tuple[int, ...],
                    memories: int, queries_per_process: int) -> list[dict[str, Any]]:
    """The same through ``MemOS(url)`` end to end (embedding on this machine's CPUs): each
    run adds ``memories`` new memories in all, split over the processes, then searches."""
    ctx = mp.get_context("spawn")
    rows = []
    for run, n in enumerate(counts):
        chosen = turns[run * memories:(run + 1) * memories] or turns[:memories]
        items = [(t["text"], f"{t['user']}-run{run}", t["item"]["occurred_at"]) for t in chosen]
        queries = [(qa["q"], f"{qa['user']}-run{run}") for qa in qas]
        barrier, queue = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_memos_worker, args=(
            url, items[i::n], [queries[(i + j * n) % len(queries)] for j in range(queries_per_process)],
            barrier, queue)) for i in range(n)]
        for p in procs:
            p.start()
        results = [queue.get(timeout=1200) for _ in procs]
        for p in procs:
            p.join()
        lat = [x for r in results for x in r["lat"]]
        rows.append({"processes": n, "memories": sum(r["points"] for r in results),
                     "ingest_per_s": round(sum(r["points"] for r in results) / max(r["ingest_s"] for r in results), 1),
                     "searches": len(lat),
                     "searches_per_s": round(len(lat) / max(r["search_s"] for r in results), 1),
                     **ms_stats(lat)})
    return rows


def processes(url: str, turns: list[dict], qas: list[dict], vecs: Any, qvecs: Any,
              counts: tuple[int, ...], queries_per_process: int) -> list[dict[str, Any]]:
    """Ingest/s and hybrid search latency with ``n`` client processes on one server."""
    from memos_core.index import Bm25Encoder, PgVectorIndex

    enc = Bm25Encoder()
    points = []
    for t, v in zip(turns, vecs):
        s = enc.encode_document(t["text"])
        points.append((t["id"], v.tolist(), s.indices, s.values, t["user"]))
    queries = []
    for qa, qv in zip(qas, qvecs):
        s = enc.encode_query(qa["q"])
        queries.append((qv.tolist(), s.indices, s.values, qa["user"]))
    ctx = mp.get_context("spawn")
    rows = []
    for n in counts:
        PgVectorIndex(url, DIM, collection="procs").clear()  # schema made once, emptied per run
        barrier, queue = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_worker, args=(
            url, "procs", points[i::n], [queries[(i + j * n) % len(queries)] for j in range(queries_per_process)],
            barrier, queue)) for i in range(n)]
        for p in procs:
            p.start()
        results = [queue.get(timeout=900) for _ in procs]
        for p in procs:
            p.join()
        lat = [x for r in results for x in r["lat"]]
        rows.append({"processes": n, "memories": sum(r["points"] for r in results),
                     "ingest_per_s": round(sum(r["points"] for r in results) / max(r["ingest_s"] for r in results), 1),
                     "searches": len(lat),
                     "searches_per_s": round(len(lat) / max(r["search_s"] for r in results), 1),
                     **ms_stats(lat)})
    PgVectorIndex(url, DIM, collection="procs").clear()
    return rows


# -- 4: LoCoMo end to end --------------------------------------------------------------------

#: stage name -> (where, attribute); "where" names a part of a MemOS or a module
STAGES = (("feed check", "follower", "sync"), ("query embedding", "query_vectors", "get"),
          ("dense search", "index", "search_dense"), ("bm25 search", "index", "search_sparse"),
          ("dense+bm25 (one call)", "index", "search_hybrid"),
          ("entity hop", "hybrid_module", "entity_hop"),
          ("graph expansion", "retriever", "_expand"),
          # the vault read, or the cached hits that stand for it (the store's method, where
          # the checkout has one; the vault's read inside it counts for it)
          ("vault read", "store", "current_for_search"), ("vault read", "vault", "get_many"),
          # the second stage: in memos_core/ops/search.py since 2026-12-07, the facade's
          # module before
          ("second stage", "search_module", "rerank"), ("second stage", "memos_module", "rerank"),
          ("record usage", "vault", "record_usage"))


class StageTimer(_StageTimer):
    """The stages of one MemOS's search path (:data:`STAGES`), timed: see
    ``_machine.StageTimer`` (the entity hop's BM25 search counts for the hop only)."""

    def __init__(self, mos: Any) -> None:
        import sys

        import memos_core.memos as memos_module
        import memos_core.retrieval.hybrid as hybrid_module

        super().__init__({"follower": mos.store.follower,
                          "search_module": sys.modules.get("memos_core.ops.search"),
                          "query_vectors": mos.retriever.query_vectors, "index": mos.index,
                          "retriever": mos.retriever, "vault": mos.vault, "store": mos.store,
                          "memos_module": memos_module, "hybrid_module": hybrid_module}, STAGES)


def stage_table(per_search: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and p95 ms of each stage over the searches (0 where a search skipped it)."""
    names = list(dict.fromkeys(n for n, *_ in STAGES if any(n in s for s in per_search))) + ["rest"]
    out = {}
    for name in names:
        values = sorted(s.get(name, 0.0) for s in per_search)
        out[name] = {"mean": round(statistics.fmean(values), 2),
                     "p95": round(values[min(len(values) - 1, int(len(values) * 0.95))], 2)}
    return out

def _server_memos(url: str, tmp: Path, embedder: Any) -> tuple[Any, str]:
    """MemOS in server mode on ``url``: ``MemOS(url)`` (vault and pgvector index in the
    database) where this checkout has it, else the pgvector index with an embedded vault."""
    from memos_core import MemOS, MemOSConfig

    try:
        from memos_core.server_mode import is_postgres_url  # noqa: F401 - MemOS(url) exists
    except ImportError:
        config = MemOSConfig(show_progress=False, index="pgvector", index_url=url)
        return MemOS(tmp / "server", embedder=embedder, config=config), "pgvector index + SQLite vault"
    return (MemOS(url, embedder=embedder, config=MemOSConfig(show_progress=False)),
            "MemOS(postgresql://): vault + pgvector index")


def locomo(url: str, data: dict[str, Any], embedder: Any, tmp: Path,
           profile: bool = False) -> dict[str, Any]:
    """Ingest each conversation and score its questions on each system (``profile``: also
    time the stages of the MemOS systems' searches)."""
    from langgraph.store.base import PutOp
    from langgraph.store.postgres import PostgresStore

    from memos_core import MemOS, MemOSConfig

    qas_by_user: dict[str, list[dict]] = {}
    for qa in data["qas"]:
        qas_by_user.setdefault(qa["user"], []).append(qa)
    turns_by_user: dict[str, list[dict]] = {}
    for t in data["turns"]:
        turns_by_user.setdefault(t["user"], []).append(t)
    out: dict[str, Any] = {}
    with ExitStack() as stack:
        embedded = stack.enter_context(MemOS(tmp / "embedded", embedder=embedder,
                                             config=MemOSConfig(show_progress=False)))
        server, server_label = _server_memos(url, tmp, embedder)
        stack.enter_context(server)
        pg_store = stack.enter_context(PostgresStore.from_conn_string(
            url, pool_config={"max_size": 4},
            index={"dims": DIM, "embed": lambda texts: embedder.embed(list(texts)).tolist(),
                   "fields": ["text"], "distance_type": "cosine"}))
        pg_store.setup()

        stage_samples: dict[str, list[dict[str, float]]] = {}

        def memos_system(mos: Any, name: str):
            def ingest(user: str, turns: list[dict]) -> dict[str, str]:
                cubes = mos.add_many([t["item"] for t in turns], user_id=user)
                last = max((t["item"]["occurred_at"] for t in turns if t["item"]["occurred_at"]), default=None)
                if last is not None:  # relative dates count back from the conversation's last day
                    mos.retriever.now = lambda last=last: last
                return {c.id: c.metadata["dia_id"] for c in cubes}

            def search(user: str, q: str, dia: dict[str, str]) -> list[str]:
                if not profile:
                    return [dia[h.id] for h in mos.search(q, user_id=user, k=max(KS), record_usage=False)]
                timer = StageTimer(mos)
                hits, _ = timer.run(mos.search, q, user_id=user, k=max(KS), record_usage=False)
                stage_samples.setdefault(name, []).append(timer.spent)
                return [dia[h.id] for h in hits]
            return ingest, search

        def store_ingest(user: str, turns: list[dict]) -> dict[str, str]:
            pg_store.batch([PutOp(("locomo", user), t["dia"], {"text": t["text"]}) for t in turns])
            return {}

        def store_search(user: str, q: str, _dia: dict[str, str]) -> list[str]:
            return [item.key for item in pg_store.search(("locomo", user), query=q, limit=max(KS))]

        embedded_name, server_name = "MemOS embedded (SQLite + qdrant-edge)", f"MemOS server ({server_label})"
        systems = {embedded_name: memos_system(embedded, embedded_name),
                   server_name: memos_system(server, server_name),
                   "LangGraph PostgresStore (pgvector HNSW cosine)": (store_ingest, store_search)}
        systems_mos = {embedded_name: embedded, server_name: server}
        # Interleaved, so that load from other jobs on a shared machine falls on every system
        # alike: each conversation is ingested by every system, then each of its questions
        # is asked of every system in turn, in an order that rotates per question.
        names = list(systems)
        ingest_s = dict.fromkeys(names, 0.0)
        added = dict.fromkeys(names, 0)
        lat: dict[str, list[float]] = {n: [] for n in names}
        rows: dict[str, list[dict]] = {n: [] for n in names}
        asked = 0
        for user, turns in turns_by_user.items():
            dias = {}
            for name in names:
                t0 = time.perf_counter()
                dias[name] = systems[name][0](user, turns)
                ingest_s[name] += time.perf_counter() - t0
                added[name] += len(turns)
            for qa in qas_by_user.get(user, []):
                for name in names[asked % len(names):] + names[:asked % len(names)]:
                    t0 = time.perf_counter()
                    ranked = systems[name][1](user, qa["q"], dias[name])
                    lat[name].append((time.perf_counter() - t0) * 1000)
                    rows[name].append(score(ranked, qa["evidence"]))
                asked += 1
            print(f"  {user}: done ({round(time.perf_counter(), 1)})", file=sys.stderr, flush=True)
        for name in names:
            out[name] = {"adds_per_s": round(added[name] / ingest_s[name], 1), **ms_stats(lat[name]),
                         **{key: round(statistics.fmean(r[key] for r in rows[name]), 4)
                            for key in rows[name][0]},
                         "questions": len(rows[name])}
            follower = getattr(getattr(systems_mos.get(name), "store", None), "follower", None)
            if follower is not None:  # how many searches skipped the feed's head query
                out[name]["head_skips"] = getattr(follower, "head_skips", None)
            cached = getattr(getattr(systems_mos.get(name), "vault", None), "cached_reads", None)
            if cached is not None:  # how many searches took their hits from the cube cache
                out[name]["cached_reads"] = cached
    if stage_samples:
        out["_stages"] = {name: stage_table(samples) for name, samples in stage_samples.items()}
    return out


# -- report ----------------------------------------------------------------------------------

def markdown(result: dict[str, Any]) -> str:
    lines = [markdown_machine(result["machine"]), markdown_server(result["server_versions"]),
             f"{result['conversations']} conversations, {result['memories']} memories, "
             f"{result['questions']} questions; load average {result['load_before']} before, "
             f"{result['load_after']} after (1 min)", ""]
    for v in result.get("variants", []):
        scope = (f"{v['points']} points, {v['tenants']} cop{'y' if v['tenants'] == 1 else 'ies'} of "
                 "each conversation under its own user")
        lines += [f"Keyword search, one user's filter, index level ({scope}):", "",
                  "| variant | recall@10 | p50 ms | p95 ms | avg hits |", "|---|---|---|---|---|"]
        for name, r in v["keyword"].items():
            lines.append(f"| {name} | {r['recall@10']:.3f} | {r['p50']} | {r['p95']} | {r['avg_returned']} |")
        lines += ["", f"Dense search, one user's filter, index level ({scope}):", "",
                  "| variant | overlap with exact top 10 | recall@10 | p50 ms | p95 ms | avg hits |",
                  "|---|---|---|---|---|---|"]
        for name, r in v["dense"].items():
            lines.append(f"| {name} | {r['overlap_exact@10']:.3f} | {r['recall@10']:.3f} | {r['p50']} | "
                         f"{r['p95']} | {r['avg_returned']} |")
        lines.append("")
    if "processes" in result:
        lines += ["Client processes on one server (PgVectorIndex; one transaction per memory; a search "
                  "= dense + BM25 under the user filter):", "",
                  "| processes | memories | ingest/s (all) | searches | searches/s (all) | search p50 ms | p95 ms |",
                  "|---|---|---|---|---|---|---|"]
        for r in result["processes"]:
            lines.append(f"| {r['processes']} | {r['memories']} | {r['ingest_per_s']} | {r['searches']} | "
                         f"{r['searches_per_s']} | {r['p50']} | {r['p95']} |")
        lines.append("")
    if "memos_processes" in result:
        lines += ["Client processes on one server, end to end through MemOS(postgresql://) (each "
                  "process embeds with MiniLM on this machine's CPUs; one add() per memory; "
                  "search k=10):", "",
                  "| processes | memories | adds/s (all) | searches | searches/s (all) | search p50 ms | p95 ms |",
                  "|---|---|---|---|---|---|---|"]
        for r in result["memos_processes"]:
            lines.append(f"| {r['processes']} | {r['memories']} | {r['ingest_per_s']} | {r['searches']} | "
                         f"{r['searches_per_s']} | {r['p50']} | {r['p95']} |")
        lines.append("")
    if "locomo" in result:
        lines += ["LoCoMo end to end (same MiniLM embedder, query embedding included in latency):", "",
                  "| system | adds/s | search p50 ms | p95 ms | recall@5 | recall@10 | recall@20 | all@10 | MRR |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, r in result["locomo"].items():
            if name == "_stages":
                continue
            lines.append(f"| {name} | {r['adds_per_s']} | {r['p50']} | {r['p95']} | {r['recall@5']:.3f} | "
                         f"{r['recall@10']:.3f} | {r['recall@20']:.3f} | {r['all@10']:.3f} | {r['mrr']:.3f} |")
        for name, r in result["locomo"].items():
            if r.get("cached_reads") is not None:
                lines += ["", f"{name}: {r['cached_reads']} of {r['questions']} searches served their "
                              "hits from the cube cache, without a vault read"]
        stages = result["locomo"].get("_stages")
        if stages:
            cols = list(dict.fromkeys(c for table in stages.values() for c in table))
            lines += ["", "Where a LoCoMo search's time goes (--profile; ms per search, mean / p95):", "",
                      "| system | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
            for name, table in stages.items():
                cells = " | ".join(f"{table[c]['mean']} / {table[c]['p95']}" if c in table else "-"
                                   for c in cols)
                lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data/locomo/locomo_dev.json"),
                   help="LoCoMo JSON (locomo10.json format)")
    p.add_argument("--url", default=None, help="an existing PostgreSQL (with pgvector); default: start one")
    p.add_argument("--quick", action="store_true", help="2 conversations, 150 questions, fewer searches")
    p.add_argument("--tenants", type=int, default=None,
                   help="also run the index variants with this many copies of every conversation, "
                        "each its own user (default 10, --quick 5)")
    p.add_argument("--skip", action="append", default=[], choices=("variants", "processes", "memos-processes", "locomo"))
    p.add_argument("--profile", action="store_true",
                   help="LoCoMo part: also time each stage of the MemOS systems' searches")
    p.add_argument("--out", type=Path, help="write the JSON result here")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from memos_core.embedding.onnx import OnnxEmbedder
    from memos_core.testing.postgres import LocalPostgres

    args.tenants = args.tenants or (5 if args.quick else 10)
    data = load(args.data, 2 if args.quick else None, 150 if args.quick else None)
    result: dict[str, Any] = {"conversations": len(data["samples"]), "memories": len(data["turns"]),
                              "questions": len(data["qas"]), "load_before": round(os.getloadavg()[0], 2),
                              "quick": args.quick}
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        if args.url:
            url = args.url
        else:
            server = stack.enter_context(LocalPostgres())
            url = server.create_database("bench")
        embedder = OnnxEmbedder("minilm")
        embedder.embed(["warm up"])
        vecs = qvecs = None
        if "variants" not in args.skip or "processes" not in args.skip:
            vecs = embedder.embed([t["text"] for t in data["turns"]])
            qvecs = embedder.embed([qa["q"] for qa in data["qas"]])
        if "variants" not in args.skip:
            result["variants"] = [index_variants(url, data["turns"], data["qas"], vecs, qvecs, n)
                                  for n in (1, args.tenants)]
        if "processes" not in args.skip:
            result["processes"] = processes(url, data["turns"], data["qas"], vecs, qvecs, (1, 2, 4),
                                            40 if args.quick else 150)
        if "memos-processes" not in args.skip:
            result["memos_processes"] = memos_processes(
                url, data["turns"], data["qas"], (1, 2, 4), 120 if args.quick else 300,
                10 if args.quick else 40)
        if "locomo" not in args.skip:
            result["locomo"] = locomo(url, data, embedder, Path(tmp), profile=args.profile)
        result["server_versions"] = server_versions(url, EXTRA_VERSIONS)
    result["load_after"] = round(os.getloadavg()[0], 2)
    result["machine"] = machine_info()
    print(markdown(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
