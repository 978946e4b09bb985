"""Forms of the server-mode search statements, side by side on the statements real searches send.

Starts a PostgreSQL (``LocalPostgres``), ingests ``--conversations`` LoCoMo dev conversations
through ``MemOS("postgresql://...")`` and runs every question of them once, recording what the
pgvector index executes (the dense statement, the BM25 statements: "full" when some IDF
statistic was stale and the statement counts it, "cached" otherwise) and the entity hop's
inputs. Then it replays them, the forms of each taking turns (the order alternating), so load
from other jobs falls on every form alike, and prints p50 / mean ms per form:

- **prepare**: each BM25 statement unprepared, prepared with ``plan_cache_mode =
  force_custom_plan`` (planned per execution; what the index does), and prepared with the
  server's default ``auto`` (a generic plan after five custom ones); the rows must agree.
- **pipeline**: the dense and BM25 statements of one search in a libpq pipeline, their
  results fetched inside the pipeline block (a flush, then the Sync's wait) or after it
  (the Sync's wait only; what the index does), the two sent one after the other, and the
  two as one statement (``SELECT 'D', d.* FROM (dense) d UNION ALL SELECT b.* FROM (bm25) b``).
- **hop**: the entity hop's BM25 statement as sent, and restricted to the rows that hold an
  added term (``p.id = ANY(ARRAY(SELECT id FROM terms WHERE term = ANY(...)))``, every term
  id folding onto an added term's ``sparsevec`` dimension) -- the statement an additive hop
  (the first BM25 scores of the other rows reused) would need; with how often that returned
  ``limit`` rows. The searches run with ``hop_source="index"``: the hop measured here is
  the index search; the default hop (since 2026-12-05) sends no statement.

    python benchmarks/server_statement_forms.py --conversations 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, markdown_machine, markdown_server, server_versions  # noqa: E402
from server_mode import load  # noqa: E402


def _stats(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} / {statistics.fmean(values):.3f}"


def _fetch(conn: Any, query: Any, params: Any, prepare: bool | None) -> list[Any]:
    return list(conn.execute(query, params, prepare=prepare).fetchall())


def _pipeline_inside(conn: Any, dense: tuple[Any, Any], keyword: tuple[Any, Any]) -> None:
    with conn.pipeline():
        a = conn.execute(*dense, prepare=True)
        b = conn.execute(*keyword, prepare=True)
        a.fetchall()
        b.fetchall()


def _pipeline_after(conn: Any, dense: tuple[Any, Any], keyword: tuple[Any, Any]) -> None:
    with conn.pipeline():
        a = conn.execute(*dense, prepare=True)
        b = conn.execute(*keyword, prepare=True)
    a.fetchall()
    b.fetchall()


def _sequential(conn: Any, dense: tuple[Any, Any], keyword: tuple[Any, Any]) -> None:
    conn.execute(*dense, prepare=True).fetchall()
    conn.execute(*keyword, prepare=True).fetchall()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data/locomo/locomo_dev.json"))
    p.add_argument("--conversations", type=int, default=3)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import psycopg
    from psycopg import sql

    import memos_core.retrieval.hybrid as hybrid
    from memos_core import MemOS, MemOSConfig
    from memos_core.config import RetrievalConfig
    from memos_core.embedding.onnx import OnnxEmbedder
    from memos_core.index.filters import plan_filter
    from memos_core.index.pg_bm25 import FOLD
    from memos_core.testing.postgres import LocalPostgres

    data = load(args.data, args.conversations, None)
    users = list(dict.fromkeys(t["user"] for t in data["turns"]))
    embedder = OnnxEmbedder("minilm")
    searches: list[dict[str, Any]] = []  # per search: its statements as executed
    hops: list[tuple[Any, ...]] = []
    load_start = os.getloadavg()
    with LocalPostgres() as server:
        url = server.create_database("forms")
        versions = server_versions(url)
        with MemOS(url, embedder=embedder, config=MemOSConfig(
                show_progress=False, retrieval=RetrievalConfig(hop_source="index"))) as mos:
            idx = mos.index
            for user in users:
                mos.add_many([t["item"] for t in data["turns"] if t["user"] == user], user_id=user)
            real_execute = psycopg.Connection.execute
            recording: list[dict[str, Any]] = []

            def execute(conn: Any, query: Any, params: Any = None, **kw: Any) -> Any:
                text = query.as_string(conn) if hasattr(query, "as_string") else str(query)
                if recording and ("<=>" in text or "<#>" in text):
                    kind = "dense" if "<=>" in text else "full" if "WITH q(term" in text else "cached"
                    recording[-1].setdefault(kind, []).append((query, params))
                return real_execute(conn, query, params, **kw)

            real_hop = hybrid.index_hop

            def hop(query: str, entities: Any, **kw: Any) -> Any:
                if entities:
                    base = kw["bm25"].encode_query(query)
                    vec = kw["bm25"].encode_query(query + " " + " ".join(entities))
                    hops.append((base, vec, kw["flt"], kw["n"]))
                return real_hop(query, entities, **kw)

            psycopg.Connection.execute = execute  # type: ignore[method-assign]
            hybrid.index_hop = hop
            try:
                for qa in data["qas"]:
                    recording.append({})
                    mos.search(qa["q"], user_id=qa["user"], k=20, record_usage=False)
                    searches.append(recording.pop())
            finally:
                psycopg.Connection.execute = real_execute  # type: ignore[method-assign]
                hybrid.index_hop = real_hop

            # restricted hop statements (built now: the same statistics cache state for both)
            hop_pairs = []
            for base, vec, flt, n in hops:
                added = [t for t in vec.indices if t not in set(base.indices)]
                dims = {t % FOLD + 1 for t in added}
                folding = sorted({k - 1 + j * FOLD for k in dims for j in range(5)
                                  if k - 1 + j * FOLD < 2**32})
                where, params = idx._where(plan_filter(flt))
                full = idx._bm25(vec, where, params, n)
                only = sql.SQL("{} AND p.id = ANY(ARRAY(SELECT t.id FROM {t} t WHERE "
                               "t.term = ANY(%s::bigint[])))").format(where, t=idx._terms)
                restricted = idx._bm25(vec, only, [*params, folding], n)
                if full[0] is not None and restricted[0] is not None:
                    hop_pairs.append(((full[0], full[1]), (restricted[0], restricted[1]), n))

            times: dict[str, list[float]] = {}
            full_rows = 0
            with idx._pool.connection() as conn, \
                    psycopg.connect(url, autocommit=True, prepare_threshold=2**62) as auto, \
                    psycopg.connect(url, autocommit=True, prepare_threshold=None) as plain:
                conn.execute("SELECT 1")

                def timed(name: str, fn: Any, *fn_args: Any) -> Any:
                    t0 = time.perf_counter()
                    out = fn(*fn_args)
                    times.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
                    return out

                # 1: BM25 statements prepared or not (the pooled connection: force_custom_plan)
                turn = 0
                for rec in searches:
                    for kind in ("full", "cached"):
                        for query, params in rec.get(kind, []):
                            forms = [("unprepared", plain, None), ("prepared, custom plans", conn, True),
                                     ("prepared, auto", auto, True)]
                            turn += 1
                            rows = [sorted(timed(f"bm25 {kind}: {name}", _fetch, c, query, params, prepare))
                                    for name, c, prepare in (forms if turn % 2 else forms[::-1])]
                            if not rows[0] == rows[1] == rows[2]:
                                raise SystemExit(f"the forms returned different rows: {query!r}")
                # 2: dense + BM25 of one search: pipeline fetch inside / after, sequential, one
                for i, rec in enumerate(searches):
                    if not rec.get("dense") or not (rec.get("full") or rec.get("cached")):
                        continue
                    dense, keyword = rec["dense"][0], (rec.get("full") or rec["cached"])[0]
                    both = sql.SQL("SELECT 'D', d.id, d.dist FROM ({}) d UNION ALL "
                                   "SELECT b.* FROM ({}) b").format(sql.SQL(dense[0].as_string(conn)),
                                                                    sql.SQL(keyword[0].as_string(conn)))
                    forms2 = [("pipeline, fetch inside", _pipeline_inside, (conn, dense, keyword)),
                              ("pipeline, fetch after", _pipeline_after, (conn, dense, keyword)),
                              ("two round trips", _sequential, (conn, dense, keyword)),
                              ("one statement (UNION ALL)", _fetch, (conn, both, (*dense[1], *keyword[1]), True))]
                    for name, fn, fn_args in forms2 if i % 2 else forms2[::-1]:
                        timed(f"dense+bm25: {name}", fn, *fn_args)
                # 3: the hop statement, whole or restricted to the rows holding added terms
                for i, (whole, restricted, n) in enumerate(hop_pairs):
                    forms3 = [("as sent", whole), ("restricted to rows with added terms", restricted)]
                    for name, (query, params) in forms3 if i % 2 else forms3[::-1]:
                        rows = timed(f"hop: {name}", _fetch, conn, query, params, True)
                        if name.startswith("restricted"):
                            full_rows += sum(1 for r in rows if r[0] == "h") >= n
    load_end = os.getloadavg()
    print(markdown_machine(machine_info()))
    print(markdown_server(versions))
    print(f"\n{len(users)} conversations, {len(searches)} searches replayed, {len(hop_pairs)} hops; "
          f"load average {[round(x, 2) for x in load_start]} at the start, "
          f"{[round(x, 2) for x in load_end]} at the end\n")
    print("| statement form | n | p50 / mean ms |")
    print("|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {len(values)} | {_stats(values)} |")
    print(f"\nrestricted hop statements that returned `limit` rows: {full_rows} of {len(hop_pairs)}")


if __name__ == "__main__":
    main()
