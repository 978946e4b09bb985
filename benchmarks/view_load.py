"""Loading one user's graph view from the embedded (SQLite) vault, stage by stage.

A search by a principal whose view is not loaded reads the view's rows and edges from the
vault and packs each memory into the in-process graph. (Until 2026-12-05 a load also read
the whole store's degrees of the view's names; views now count degrees themselves, and the
vaults no longer have ``entity_degrees``.) This script fills one SQLite
vault with ``--n`` memories of one user (turns of 20-turn sessions, each naming three of
``--entities`` names plus the two speakers), then times, in one process and alternating:

* the vault read (``graph_view_rows``) and the whole load (rows, packing, edges);
* the packing alone, this checkout's ``MemoryGraph._pack`` against the generic form it
  replaced (one generator over the fields per memory), on the same rows;
* the whole load with Python's cyclic garbage collector paused during it (this checkout)
  and left running (before), while the process holds ``--held`` memories in other loaded
  views, as a process serving many users does (a full collection walks all of them).

    python benchmarks/view_load.py --n 10000 --entities 1500
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, markdown_machine  # noqa: E402

from memos_core.cube import MemCube, Namespace  # noqa: E402
from memos_core.graph import GraphViews, views as views_module  # noqa: E402
from memos_core.graph.memory_graph import _FIELDS, MemoryGraph, _freeze, _intern  # noqa: E402
from memos_core.lifecycle import INDEXED_STATES  # noqa: E402
from memos_core.vault import Actor, SQLiteVault  # noqa: E402

_INTERNED = {"user_id", "agent_id", "session_id", "type", "state"}


def generic_pack(row: dict[str, Any], seq: int) -> tuple[Any, ...]:
    """The packing before this change (a generator over the fields), for comparison."""
    return tuple(seq if f == "seq" else _intern(row.get(f)) if f in _INTERNED
                 else _freeze(row.get(f)) for f in _FIELDS)


def ms(samples: list[float]) -> str:
    return f"{statistics.median(samples):.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="memories of the one user")
    ap.add_argument("--entities", type=int, default=1_500,
                    help="distinct names the memories name")
    ap.add_argument("--repeat", type=int, default=5, help="timed rounds (medians printed)")
    ap.add_argument("--held", type=int, default=100_000,
                    help="memories held in other loaded views while the loads are timed")
    args = ap.parse_args()
    print(markdown_machine(machine_info()))
    rng = random.Random(0)
    names = [f"Name{i}" for i in range(args.entities)]
    states = tuple(INDEXED_STATES)
    with tempfile.TemporaryDirectory() as tmp:
        vault = SQLiteVault(Path(tmp) / "vault.db")
        cubes = [MemCube(namespace=Namespace(user_id="u0", session_id=f"s{i // 20}"),
                         text=f"turn {i}", entities=(*rng.sample(names, 3), "Alice", "Bob"))
                 for i in range(args.n)]
        t0 = time.perf_counter()
        for start in range(0, len(cubes), 500):
            vault.insert(cubes[start:start + 500], Actor("u0"))
        fill_s = time.perf_counter() - t0
        # other users' views the process holds: a copy of this user's view per 10k memories
        base_view = GraphViews(vault, lock=threading.RLock(), states=states,
                               max_memories=10**9).view(("u0",))
        held_views = [base_view]
        while sum(len(v) for v in held_views) < args.held:
            held_views.append(GraphViews(vault, lock=threading.RLock(), states=states,
                                         max_memories=10**9).view(("u0",)))
        load_before = os.getloadavg()[0]
        times: dict[str, list[float]] = {k: [] for k in (
            "rows", "load", "load_gc", "pack", "pack_generic")}
        paused = views_module._collector_paused
        for _ in range(args.repeat):
            t = time.perf_counter()
            rows = vault.graph_view_rows(("u0",), states)
            times["rows"].append(1000 * (time.perf_counter() - t))
            views = GraphViews(vault, lock=threading.RLock(), states=states, max_memories=10**9)
            t = time.perf_counter()
            view = views.view(("u0",))
            times["load"].append(1000 * (time.perf_counter() - t))
            views = GraphViews(vault, lock=threading.RLock(), states=states, max_memories=10**9)
            views_module._collector_paused = contextlib.nullcontext  # type: ignore[assignment]
            try:
                t = time.perf_counter()
                views.view(("u0",))
                times["load_gc"].append(1000 * (time.perf_counter() - t))
            finally:
                views_module._collector_paused = paused
            for name, pack in (("pack", MemoryGraph._pack), ("pack_generic", generic_pack)):
                t = time.perf_counter()
                packed = [pack(row, row["seq"]) for row in rows]
                times[name].append(1000 * (time.perf_counter() - t))
            assert packed == [MemoryGraph._pack(row, row["seq"]) for row in rows]
            held = [n for n in view._entity_names]
        vault.close()
    print(f"{args.n} memories of one user, {len(held)} names; vault filled in {fill_s:.1f} s; "
          f"{sum(len(v) for v in held_views)} memories held in other views; "
          f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after (1 min)\n")
    print("| stage (median of %d, ms) | this checkout | before |" % args.repeat)
    print("|---|---|---|")
    print(f"| vault read (graph_view_rows) | {ms(times['rows'])} | - |")
    print(f"| whole view load (rows, packing, edges); before: the garbage "
          f"collector left running "
          f"| {ms(times['load'])} | {ms(times['load_gc'])} |")
    print(f"| packing the rows | {ms(times['pack'])} | {ms(times['pack_generic'])} |")


if __name__ == "__main__":
    main()
