"""Memory graph alone: RSS growth, build time and expansion time for N synthetic memories.

Rows are what ``SQLiteVault.graph_rows`` gives the graph (payload, entities from the rule
extractor on benchmarks/scale.py sentences, 100 users, sessions of 20), built before the
measurement starts, so the figure is the graph's own structures (strings shared with the
rows, e.g. ids, are not counted: the real figure per memory is somewhat higher).
``--from-commit SHA`` measures the ``memory_graph.py`` of another commit (read with
``git show``) for a before/after comparison on the same rows. Expansion: ``--expansions``
calls of ``expand`` as a search makes them (10 seed memories of one user, that user's
filter, the entities of a generated question, two neighbouring turns), mean milliseconds.

    python benchmarks/graph_memory.py --n 100000
    python benchmarks/graph_memory.py --n 100000 --from-commit 4dd81bc

``--views``: the same rows as memories in a real SQLite vault (made once, kept under
``--vault-dir``), then, each in a fresh process so that its RSS is its own: the whole graph
built at open as the store did before per-user views (``graph_rows`` + ``edges`` into one
``MemoryGraph``), against :class:`memos_core.graph.GraphViews` loading one user's view on
demand. Time to first search: from nothing built to the first expansion of one user's search
returned (the graph's part of a first search; embedding and index are not in it). Then every
user searched once, with the default bound and with ``--bound``: RSS, views and memories held.

    python benchmarks/graph_memory.py --n 100000 --views [--pg]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, markdown_machine, markdown_server, server_versions  # noqa: E402
from scale import rss_mb, sentence  # noqa: E402


def graph_class(commit: str | None) -> type:
    if commit is None:
        from memos_core.graph import MemoryGraph

        return MemoryGraph
    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(["git", "show", f"{commit}:memos_core/graph/memory_graph.py"],
                            cwd=root, check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_memory_graph.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_memory_graph", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.MemoryGraph


def synthetic_rows(n: int) -> list[dict]:
    """``n`` graph rows: 100 users, sessions of 20, entities of scale.py sentences."""
    from memos_core.extraction import RuleEntityExtractor

    rng, ex = random.Random(7), RuleEntityExtractor()
    rows = []
    for i in range(n):
        text = sentence(rng)
        rows.append({"id": str(uuid.UUID(int=rng.getrandbits(128))), "seq": None,
                     "user_id": f"user{i % 100}", "agent_id": None,
                     "session_id": f"s{(i // 100) // 20}", "type": "episode", "tags": [],
                     "state": "generated", "occurred_at": float(i), "superseded": False,
                     "version": 1, "readers": [], "entities": ex.extract(text), "text": text})
    return rows


def open_vault(where: str):  # type: ignore[no-untyped-def]
    """A SQLite vault at a path, or a PostgresVault for a postgresql:// URL."""
    if where.startswith("postgresql://"):
        from memos_core.vault.postgres import PostgresVault

        return PostgresVault(where)
    from memos_core.vault import SQLiteVault

    return SQLiteVault(where)


def make_vault(path: Path | str, n: int) -> None:
    """The synthetic rows as memories of a SQLite vault at ``path`` (kept for reruns) or of
    the PostgreSQL database at a URL."""
    from datetime import datetime, timezone

    from memos_core.cube import MemCube, Namespace
    from memos_core.progress import progress
    from memos_core.vault import Actor

    if isinstance(path, Path) and path.exists():
        return
    tmp = path.with_name(path.name + ".part") if isinstance(path, Path) else None
    if tmp is not None:
        tmp.unlink(missing_ok=True)
    vault = open_vault(str(tmp or path))
    rows = synthetic_rows(n)
    bar = progress(n, "vault", True)
    for start in range(0, n, 2000):
        vault.insert([MemCube(id=r["id"], namespace=Namespace(user_id=r["user_id"],
                                                               session_id=r["session_id"]),
                              text=r["text"], entities=tuple(r["entities"]),
                              occurred_at=datetime.fromtimestamp(r["occurred_at"], timezone.utc))
                      for r in rows[start:start + 2000]], Actor("bench"))
        bar.update(min(2000, n - start))
    bar.close()
    vault.close()
    if tmp is not None and isinstance(path, Path):
        tmp.rename(path)


def measure(path: str, mode: str, bound: int | None) -> dict:
    """One fresh process's measurement (see the module docstring)."""
    import threading

    from memos_core.extraction import RuleEntityExtractor
    from memos_core.graph import GraphViews, MemoryGraph
    from memos_core.lifecycle import INDEXED_STATES
    from memos_core.retrieval.filters import build_filter
    from scale import ACTIVITIES, NAMES

    vault = open_vault(path)
    user = "user42"
    mark = "%s" if path.startswith("postgresql://") else "?"
    seeds = [r[0] for r in vault._query(
        f"SELECT id FROM memories WHERE user_id={mark} ORDER BY seq LIMIT 10 OFFSET 300", (user,))]
    rng, ex = random.Random(11), RuleEntityExtractor()
    question = ex.extract(f"when did {rng.choice(NAMES)} {rng.choice(ACTIVITIES)}?")
    gc.collect()
    before = rss_mb()
    t0 = time.perf_counter()
    if mode == "whole":
        graph = MemoryGraph()
        for row in vault.graph_rows():
            if row["state"] in INDEXED_STATES:
                graph.upsert(row)
        for edge in vault.edges():
            graph.add_relation(edge.src, edge.dst, edge.kind)
        first = graph
    else:
        views = GraphViews(vault, lock=threading.RLock(), states=INDEXED_STATES,
                           max_memories=bound or 200_000)
        first = views.view([user])
    hits = first.expand([(m, 0.5) for m in seeds], build_filter((user,), states=("generated",)),
                        query_entities=question, neighbour_turns=2, entity_seed_weight=0.1)
    ttfs = time.perf_counter() - t0
    gc.collect()
    out = {"mode": mode, "bound": bound, "ttfs_s": ttfs, "rss_first_mb": rss_mb() - before,
           "hits": sorted(hits), "held_first": len(first)}
    if mode == "views":
        t0 = time.perf_counter()
        for u in range(100):
            views.view([f"user{u}"]).expand([], build_filter((f"user{u}",)),
                                            query_entities=question, entity_seed_weight=0.1)
        out["all_users_s"] = time.perf_counter() - t0
        gc.collect()
        out["rss_all_mb"] = rss_mb() - before
        out["views"] = views.stats()["views"]
        out["held_all"] = views.loaded_memories()
    vault.close()
    return out


def views_main(args: argparse.Namespace) -> None:
    server = None
    versions: dict[str, str] = {}
    if args.pg:
        from memos_core.testing.postgres import LocalPostgres

        server = LocalPostgres().start()
        where = server.create_database("bench_views")
        versions = server_versions(where)
        make_vault(where, args.n)
    else:
        path = Path(args.vault_dir) / f"graph_views_{args.n}.sqlite3"
        path.parent.mkdir(parents=True, exist_ok=True)
        make_vault(path, args.n)
        where = str(path)
    try:
        results = _measure_all(where, args.bound)
    finally:
        if server is not None:
            server.close()
    # the views count entity degrees over the user's memories (as searches do since
    # 0322a19), the whole graph over the store: their hits differ by design, the views' not
    views = [r for r in results if r["mode"] == "views"]
    same = all(r["hits"] == views[0]["hits"] for r in views)
    print(markdown_machine(machine_info()))
    if versions:
        print(markdown_server(versions))
    print(f"load average {os.getloadavg()[0]:.1f}; {args.n} memories, 100 users, one "
          f"{'PostgreSQL (embedded server, loopback)' if args.pg else 'SQLite'} vault; first "
          f"search: user42, 10 seeds, expansion hits: whole graph {len(results[0]['hits'])} "
          f"(entity degrees over the store), views {len(views[0]['hits'])} (over the user's "
          f"memories), the same in every view bound: {same}\n")
    print("| graph | bound (memories) | time to first search s | RSS after it MB "
          "| memories held | RSS after all 100 users MB | views / memories held |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        name = "whole graph at open" if r["mode"] == "whole" else "per-user views on demand"
        tail = (f"{r['rss_all_mb']:.1f} | {r['views']} / {r['held_all']}"
                if r["mode"] == "views" else f"{r['rss_first_mb']:.1f} | 1 / {r['held_first']}")
        print(f"| {name} | {r['bound'] or ('200000 (default)' if r['mode'] == 'views' else '-')} "
              f"| {r['ttfs_s']:.3f} | {r['rss_first_mb']:.1f} | {r['held_first']} | {tail} |")


def _measure_all(where: str, bound: int) -> list[dict]:
    import json

    results = []
    for mode, small in (("whole", None), ("views", None), ("views", bound)):
        run = subprocess.run([sys.executable, __file__, "--measure", mode, "--vault", where,
                              *(["--bound", str(small)] if small else [])],
                             check=True, capture_output=True, text=True)
        results.append(json.loads(run.stdout.strip().splitlines()[-1]))
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--from-commit", default=None)
    p.add_argument("--expansions", type=int, default=200)
    p.add_argument("--views", action="store_true", help="whole graph vs per-user views")
    p.add_argument("--vault-dir", default=str(Path(tempfile.gettempdir()) / "memos-bench"))
    p.add_argument("--bound", type=int, default=20_000, help="the small bound of --views")
    p.add_argument("--pg", action="store_true",
                   help="--views on a PostgresVault (an embedded server started for the run)")
    p.add_argument("--measure", choices=("whole", "views"), help=argparse.SUPPRESS)
    p.add_argument("--vault", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        import json

        print(json.dumps(measure(args.vault, args.measure, args.bound
                                 if "--bound" in sys.argv else None)))
        return
    if args.views:
        views_main(args)
        return
    from memos_core.extraction import RuleEntityExtractor

    cls = graph_class(args.from_commit)
    rng, ex = random.Random(7), RuleEntityExtractor()
    rows = synthetic_rows(args.n)
    gc.collect()
    before = rss_mb()
    t0 = time.perf_counter()
    graph = cls()
    for row in rows:
        graph.upsert(row)
    build = time.perf_counter() - t0
    gc.collect()
    grown = rss_mb() - before
    from memos_core.retrieval.filters import build_filter
    from scale import ACTIVITIES, NAMES

    by_user: dict[str, list[str]] = {}
    for row in rows:
        by_user.setdefault(row["user_id"], []).append(row["id"])
    calls = []
    for _ in range(args.expansions):
        user = f"user{rng.randrange(100)}"
        calls.append(([(m, 0.5) for m in rng.sample(by_user[user], 10)],
                      build_filter((user,), states=("generated",)),
                      ex.extract(f"when did {rng.choice(NAMES)} {rng.choice(ACTIVITIES)}?")))
    t0 = time.perf_counter()
    for seeds, flt, entities in calls:
        graph.expand(seeds, flt, query_entities=entities, neighbour_turns=2,
                     entity_seed_weight=0.1)
    expand_ms = (time.perf_counter() - t0) * 1000 / max(1, len(calls))
    print(markdown_machine(machine_info()))
    print(f"load average {os.getloadavg()[0]:.1f}; graph from "
          f"{'commit ' + args.from_commit if args.from_commit else 'this checkout'}\n")
    print("| memories | graph RSS MB | B/memory | build s | nodes | edges | entities "
          "| expand ms (mean) |")
    print("|---|---|---|---|---|---|---|---|")
    s = graph.stats()
    print(f"| {args.n} | {grown:.1f} | {grown * 1024**2 / args.n:.0f} | {build:.1f} | "
          f"{s['nodes']} | {s['edges']} | {s['entities']} | {expand_ms:.2f} |")


if __name__ == "__main__":
    main()
