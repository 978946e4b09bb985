"""Memory graph alone: RSS growth and build time for N synthetic memories.

Rows are what ``SQLiteVault.graph_rows`` gives the graph (payload, entities from the rule
extractor on benchmarks/scale.py sentences, 100 users, sessions of 20), built before the
measurement starts, so the figure is the graph's own structures (strings shared with the
rows, e.g. ids, are not counted: the real figure per memory is somewhat higher).
``--from-commit SHA`` measures the ``memory_graph.py`` of another commit (read with
``git show``) for a before/after comparison on the same rows.

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
    print(markdown_machine(machine_info()))
    print(f"load average {os.getloadavg()[0]:.1f}; graph from "
          f"{'commit ' + args.from_commit if args.from_commit else 'this checkout'}\n")
    print("| memories | graph RSS MB | B/memory | build s | nodes | edges | entities |")
    print("|---|---|---|---|---|---|---|")
    s = graph.stats()
    print(f"| {args.n} | {grown:.1f} | {grown * 1024**2 / args.n:.0f} | {build:.1f} | "
          f"{s['nodes']} | {s['edges']} | {s['entities']} |")


if __name__ == "__main__":
    main()
