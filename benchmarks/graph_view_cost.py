"""What the per-user graph views cost in memory, per memory and per view.

The graph views (``memos_core/graph/views.py``) are kept in an LRU bounded by
``MemOSConfig.graph_max_memories``: each view counts its memories plus ``VIEW_COST`` for its
own structures. This script loads, on one store, three kinds of views and measures the
Python memory they take (``tracemalloc``, after a garbage collection):

* one view of ``--n`` memories (one user who owns them all);
* ``--n`` views of one memory each (many users with one memory);
* ``--n`` views of no memory (users who search before they store anything).

and prints, for each, the bytes per view, per memory and per unit of the bound, and what the
views would hold at the default bound if all were of that kind.

    python benchmarks/graph_view_cost.py --n 1500 [--out FILE.json]

Vectors come from a seeded hash of each text (``store_ops.SeededEmbedder``, no model): the
views hold no vectors, and a model would only add ingest time.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, markdown_machine  # noqa: E402
from store_ops import SeededEmbedder  # noqa: E402


def traced(views: Any, keys: list[list[str]]) -> int:
    """Bytes that loading the views of ``keys`` (none loaded before) leaves allocated."""
    views.clear()
    gc.collect()
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    for key in keys:
        views.view(key)
    gc.collect()
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return after - before


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1500, help="memories of the big view, and views")
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    os.environ.setdefault("MEMOS_PROGRESS", "0")
    import memos_core
    from memos_core import MemOS, MemOSConfig
    from memos_core.graph.views import VIEW_COST

    text = "Note {i}: Alice met Bob in Paris and talked about hiking, tea and the Alps."
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="memos-views-") as tmp:
        # a bound no load reaches: nothing is evicted while a kind is measured
        config = MemOSConfig(show_progress=False, graph_max_memories=10 * a.n * (VIEW_COST + 1))
        with MemOS(Path(tmp) / "data", embedder=SeededEmbedder(), config=config) as mos:
            mos.add_many([text.format(i=i) for i in range(a.n)], user_id="big")
            for i in range(a.n):
                mos.add(text.format(i=i), user_id=f"small{i}")
            views = mos.store.graph
            kinds = [(f"1 view of {a.n} memories", [["big"]], a.n),
                     (f"{a.n} views of 1 memory", [[f"small{i}"] for i in range(a.n)], a.n),
                     (f"{a.n} views of no memory", [[f"nobody{i}"] for i in range(a.n)], 0)]
            bound = MemOSConfig().graph_max_memories
            for name, keys, memories in kinds:
                size = traced(views, keys)
                units = memories + VIEW_COST * len(keys)
                # before 2026-12-07 a view counted max(1, its memories)
                old_units = max(memories, len(keys)) if len(keys) > 1 else max(1, memories)
                rows.append({"views": name, "bytes": size, "per_view": size / len(keys),
                             "per_memory": size / memories if memories else None,
                             "per_unit": size / units,
                             "mb_at_default_bound": size / units * bound / 1e6,
                             "mb_at_default_bound_counted_as_before":
                                 size / old_units * bound / 1e6})
    print(markdown_machine(machine_info()))
    print(f"memos_core from {Path(memos_core.__file__).parent}; load average "
          f"{os.getloadavg()[0]:.1f}; VIEW_COST {VIEW_COST}; default graph_max_memories "
          f"{bound:,}; tracemalloc after gc")
    print()
    print("| views loaded | traced MB | B per view | B per memory | B per unit of the bound "
          "| MB at the default bound | the same, a view counted max(1, memories) as before |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        per_memory = "-" if r["per_memory"] is None else f"{r['per_memory']:.0f}"
        print(f"| {r['views']} | {r['bytes'] / 1e6:.2f} | {r['per_view']:.0f} | {per_memory} "
              f"| {r['per_unit']:.0f} | {r['mb_at_default_bound']:.0f} "
              f"| {r['mb_at_default_bound_counted_as_before']:.0f} |")
    if a.out:
        a.out.write_text(json.dumps({"machine": machine_info(), "n": a.n,
                                     "view_cost": VIEW_COST, "bound": bound, "rows": rows},
                                    indent=2))


if __name__ == "__main__":
    main()
