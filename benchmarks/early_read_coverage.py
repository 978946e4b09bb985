"""Could a search read its final candidates' vault rows early? How often they are known early.

In server mode a search's last round trip is the vault read of the top ``rerank_depth``
candidates (30), after the entity hop and graph expansion have ranked them. A read sent
early -- with the entity hop, or right after the first results -- would save that round
trip only if it already covered those 30. This script ingests the LoCoMo dev conversations
into an embedded store, runs every question once and counts, for each "early set" (the top
``M`` candidates of the first dense + BM25 fusion, plus the turns within two of the first
``S`` of them), how often it holds all 30 final candidates, how many it misses on average and
how large it is. Prints a markdown table with the machine and versions.

    python benchmarks/early_read_coverage.py --data ../shared/data/locomo/locomo_dev.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine_info, markdown_machine  # noqa: E402
from locomo_retrieval import CATEGORIES, make_embedder, turns_of  # noqa: E402

SETS = [(30, 0), (30, 10), (50, 0), (50, 10), (100, 0), (100, 10)]


def run(data: Path, backend: str) -> dict[tuple[int, int], dict[str, float]]:
    import memos_core.retrieval.hybrid as hybrid
    from memos_core import MemOS, MemOSConfig
    from memos_core.retrieval.filters import SEARCHABLE_STATES, build_filter

    first: list[list[Any]] = []
    real_fuse = hybrid.fuse

    def fuse(*args: Any, **kw: Any) -> Any:  # the first fusion of a search is the first stage
        out = real_fuse(*args, **kw)
        first.append(sorted(out.values(), key=lambda c: (-c.score, c.id)))
        return out

    counts = {key: {"n": 0, "covered": 0, "missing": 0, "size": 0} for key in SETS}
    hybrid.fuse = fuse
    try:
        with tempfile.TemporaryDirectory() as tmp, MemOS(
                Path(tmp) / "d", embedder=make_embedder(backend),
                config=MemOSConfig(show_progress=False)) as mos:
            depth = mos.config.retrieval.rerank_depth
            for sample in json.loads(data.read_text()):
                user = sample["sample_id"]
                mos.add_many(turns_of(sample), user_id=user)
                flt = build_filter((user,), states=SEARCHABLE_STATES)
                graph = mos.retriever.graph.for_filter(flt)
                for qa in sample["qa"]:
                    if qa.get("category") not in CATEGORIES:
                        continue
                    first.clear()
                    final = [c.id for c in mos.retriever.retrieve(str(qa["question"]), flt, depth)]
                    for top, seeds in SETS:
                        early = {c.id for c in first[0][:top]}
                        for c in first[0][:seeds]:
                            early.update(_turns(graph, c.id))
                        missing = sum(1 for i in final if i not in early)
                        row = counts[(top, seeds)]
                        row["n"] += 1
                        row["covered"] += missing == 0
                        row["missing"] += missing
                        row["size"] += len(early)
    finally:
        hybrid.fuse = real_fuse
    return {key: {"covered": c["covered"] / c["n"], "missing": c["missing"] / c["n"],
                  "size": c["size"] / c["n"], "questions": c["n"]} for key, c in counts.items()}


def _turns(graph: Any, memory_id: str, width: int = 2) -> list[str]:
    """The turns within ``width`` of a memory in its session."""
    where = graph.session_of(memory_id)
    if where is None or where[1] is None:
        return []
    turns = graph.session_turns(*where)
    i = turns.index(memory_id)
    return turns[max(0, i - width): i + width + 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared/data/locomo/locomo_dev.json")
    parser.add_argument("--backend", default="onnx", help="embedder backend (onnx, torch)")
    args = parser.parse_args()
    result = run(args.data, args.backend)
    print(markdown_machine(machine_info()))
    print(f"\n{next(iter(result.values()))['questions']} questions; final set: the top rerank_depth "
          "candidates of the whole retrieval\n")
    print("| early set | holds all final candidates | final candidates missing (mean) | early set size (mean) |")
    print("|---|---|---|---|")
    for (top, seeds), row in result.items():
        around = f" + turns within 2 of the first {seeds}" if seeds else ""
        print(f"| first-stage top {top}{around} | {row['covered']:.3f} | {row['missing']:.2f} | {row['size']:.1f} |")


if __name__ == "__main__":
    main()
