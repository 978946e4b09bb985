"""What the server-mode search's statements cost when they follow an idle gap, as in a search.

A search's statements each follow a few ms of client work: the query embedding, fusion,
graph expansion. This script separates the parts of that cost. Each statement is timed in
a tight loop, and after 4 ms of sleep (the server's process and caches have gone cold, as
after an embedding).

- the round trip of a trivial statement;
- the dense+BM25 call (`PgVectorIndex.search_hybrid`, the vector given);
- the BM25 statement under `plan_cache_mode` `force_custom_plan` (what the index sets) and
  `auto` (generic plans allowed), on two connections set up as the index's, with the
  server's generic-plan count;
- the vault read of a search's candidates (`PostgresVault.get_many`), split into the statement
  and the decoding of its rows;
- that statement with the document as `doc::text` (JSONB, the schema), as a `text` column (a
  copy added to this throwaway database) and with no document;
- the vault read with the vault's cache of decoded memories (``cube_cache``, the default: the
  server sends only the row versions of memories it holds unchanged) against a second vault
  object without it (``cube_cache=0``), in turn on every read.

The calls are the ones the LoCoMo dev questions make (captured from real searches). The
vectors are embedded once beforehand: the model is not timed. Variants of one call (plan
modes, document forms) run in turn on every call, in an order that rotates.

    python benchmarks/server_cold_costs.py --out server_cold_costs.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, markdown_machine, markdown_server, server_versions  # noqa: E402
from locomo_retrieval import CATEGORIES, turns_of  # noqa: E402
from search_inprocess import SameVectors  # noqa: E402
from server_mode import EXTRA_VERSIONS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GAP_S = 0.004


def timed(calls: list[Any], run: Callable[[Any], Any], *, gap: bool, reps: int) -> dict[str, float]:
    """Median and mean ms of ``run(call)`` over ``calls`` x ``reps``; with ``gap``, each after
    a 4 ms sleep."""
    return compare(calls, {"": run}, gap=gap, reps=reps)[""]


def compare(calls: list[Any], variants: dict[str, Callable[[Any], Any]], *, gap: bool,
            reps: int) -> dict[str, dict[str, float]]:
    """:func:`timed` for several variants of one call, run in turn on every call (in an order
    that rotates per call, so that neither goes first more often)."""
    spent: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    turn = 0
    for _ in range(reps):
        for call in calls:
            turn += 1
            for name in names[turn % len(names):] + names[: turn % len(names)]:
                if gap:
                    time.sleep(GAP_S)
                t0 = time.perf_counter()
                variants[name](call)
                spent[name].append((time.perf_counter() - t0) * 1000)
    return {name: {"median": round(statistics.median(v), 3), "mean": round(statistics.fmean(v), 3),
                   "n": len(v)} for name, v in spent.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/locomo/locomo_dev.json")
    p.add_argument("--searches", type=int, default=200, help="searches whose calls are replayed")
    p.add_argument("--reps", type=int, default=2, help="replays of every call per row")
    p.add_argument("--out", type=Path, help="write the JSON result here")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import psycopg

    import memos_core as core
    from memos_core.embedding.onnx import OnnxEmbedder
    from memos_core.index.filters import plan_filter
    from memos_core.testing.postgres import LocalPostgres
    from memos_core.vault import pg_sql
    from memos_core.vault.postgres import PostgresVault

    samples = json.loads(args.data.read_text())
    questions = [(s["sample_id"], str(qa["question"])) for s in samples for qa in s["qa"]
                 if qa.get("category") in CATEGORIES][: args.searches]
    embedder = SameVectors(OnnxEmbedder("minilm"))
    embedder.embed([q for _, q in questions])
    rows: dict[str, dict[str, float]] = {}
    with LocalPostgres() as pg:
        url = pg.create_database("cold_costs")
        mos = core.MemOS(url, embedder=embedder, config=core.MemOSConfig(show_progress=False))
        for sample in samples:
            mos.add_many(turns_of(sample), user_id=sample["sample_id"])
        index, vault = mos.index, mos.vault
        hybrid_calls: list[tuple[Any, ...]] = []
        reads: list[list[str]] = []
        real_hybrid, real_get_many = index.search_hybrid, vault.get_many

        def capture_hybrid(vector: Any, *rest: Any) -> Any:
            vector = vector() if callable(vector) else vector
            hybrid_calls.append((vector, *rest))
            return real_hybrid(vector, *rest)

        def capture_read(ids: Any) -> Any:
            reads.append(list(ids))
            return real_get_many(ids)

        index.search_hybrid, vault.get_many = capture_hybrid, capture_read
        try:
            for user, q in questions:
                mos.search(q, user_id=user, k=10, record_usage=False)
        finally:
            del index.search_hybrid, vault.get_many
        load_before = round(os.getloadavg()[0], 2)

        def trivial(_: Any) -> None:
            with index._conn() as conn:
                conn.execute("SELECT 1").fetchall()

        for gap in (False, True):
            when = "after a 4 ms sleep" if gap else "tight loop"
            rows[f"round trip of SELECT 1, {when}"] = timed(hybrid_calls, trivial, gap=gap, reps=args.reps)
            rows[f"dense+BM25 call, {when}"] = timed(
                hybrid_calls, lambda c: index.search_hybrid(*c), gap=gap, reps=args.reps)

        # the BM25 statement on two connections set up as the index's, one per plan mode
        keyword = [c for c in hybrid_calls if c[1] is not None and c[1].indices]
        modes = ("force_custom_plan", "auto")
        conns = {}
        for mode in modes:
            conn = psycopg.connect(url, autocommit=True)
            index._configure(conn)
            conn.execute("SELECT set_config('plan_cache_mode', %s, false)", (mode,))
            conns[mode] = conn

        def bm25_on(mode: str) -> Callable[[Any], Any]:
            def run(call: Any) -> Any:
                plan = plan_filter(call[2])
                where, params = index._where(plan)
                statement, args, _ = index._bm25(call[1], call[2], where, params, call[3])
                return conns[mode].execute(statement, args, prepare=True).fetchall() if statement else []
            return run

        for c in keyword[:20]:  # past the 5 custom plans after which a generic one may win
            for mode in modes:
                bm25_on(mode)(c)
        for mode, r in compare(keyword, {m: bm25_on(m) for m in modes}, gap=True,
                               reps=args.reps).items():
            rows[f"BM25 statement, plan_cache_mode={mode}, after a 4 ms sleep"] = r
        generic = conns["auto"].execute(
            "SELECT coalesce(sum(generic_plans), 0) FROM pg_prepared_statements").fetchone()[0]
        for conn in conns.values():
            conn.close()

        def statement(sql: str) -> Callable[[list[str]], Any]:
            def run(ids: list[str]) -> Any:
                with vault._conn() as conn:
                    return conn.execute(sql, (ids,), prepare=True).fetchall()
            return run

        uncached = PostgresVault(url, cube_cache=0)
        for label, r in compare(reads, {"with the cube cache": vault.get_many,
                                        "without (cube_cache=0)": uncached.get_many},
                                gap=True, reps=args.reps).items():
            rows[f"vault read (get_many) {label}, after a 4 ms sleep"] = r
        uncached.close()
        read_rows = {tuple(ids): statement(pg_sql._READ_WITH_USAGE)(ids) for ids in reads}
        rows["vault read: the statement, after a 4 ms sleep"] = timed(
            reads, statement(pg_sql._READ_WITH_USAGE), gap=True, reps=args.reps)
        rows["vault read: decoding its rows"] = timed(
            reads, lambda ids: [pg_sql._decode(r[0], pg_sql._usage_of(*r[1:5]), vault._usage.overlay)
                                for r in read_rows[tuple(ids)]], gap=False, reps=args.reps)
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("ALTER TABLE memories ADD COLUMN doc_copy text")
            admin.execute("UPDATE memories SET doc_copy = doc::text")
            admin.execute("VACUUM ANALYZE memories")
        join = "FROM memories m LEFT JOIN usage u ON u.id = m.id WHERE m.id = ANY(%s)"
        usage = "u.access_count, u.last_access, u.heat, u.tier"
        forms = {"the document as doc::text (JSONB)": "m.doc::text",
                 "the document from a text column": "m.doc_copy", "no document": "m.id"}
        for label, r in compare(reads, {label: statement(f"SELECT {column}, {usage} {join}")
                                        for label, column in forms.items()},
                                gap=True, reps=args.reps).items():
            rows[f"vault read statement, {label}, after a 4 ms sleep"] = r
        load_after = round(os.getloadavg()[0], 2)
        result = {"machine": machine_info(),
                  "server_versions": server_versions(url, EXTRA_VERSIONS),
                  "searches": len(questions), "dense_bm25_calls": len(hybrid_calls),
                  "vault_reads": len(reads),
                  "ids_per_read": round(statistics.fmean(len(r) for r in reads), 1),
                  "bm25_generic_plans_under_auto": int(generic),
                  "load_before": load_before, "load_after": load_after, "rows": rows}
        mos.close()
    print(markdown_machine(result["machine"]))
    print(markdown_server(result["server_versions"]))
    print(f"\n{result['searches']} LoCoMo dev searches (k=10) replayed: {result['dense_bm25_calls']} "
          f"dense+BM25 calls, {result['vault_reads']} vault reads of {result['ids_per_read']} ids "
          f"on average; load average {load_before} before, {load_after} after; generic plans of "
          f"the BM25 statement under plan_cache_mode=auto: {result['bm25_generic_plans_under_auto']}\n")
    print("| what | median ms | mean ms | calls |")
    print("|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['median']} | {r['mean']} | {r['n']} |")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
