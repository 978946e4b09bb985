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
from _machine import machine_info, markdown_machine  # noqa: E402
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--from-commit", default=None)
    p.add_argument("--expansions", type=int, default=200)
    args = p.parse_args()
    from memos_core.extraction import RuleEntityExtractor

    cls = graph_class(args.from_commit)
    rng, ex = random.Random(7), RuleEntityExtractor()
    rows = []
    for i in range(args.n):
        text = sentence(rng)
        rows.append({"id": str(uuid.UUID(int=rng.getrandbits(128))), "seq": None,
                     "user_id": f"user{i % 100}", "agent_id": None,
                     "session_id": f"s{(i // 100) // 20}", "type": "episode", "tags": [],
                     "state": "generated", "occurred_at": float(i), "superseded": False,
                     "version": 1, "readers": [], "entities": ex.extract(text)})
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
