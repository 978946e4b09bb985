"""Could the vault read ride along with the entity hop's statement? How often the memories a
search finally reads are already among the first M candidates before the hop.

A server-mode search makes three round trips: dense + BM25, the entity hop's BM25, and the
vault read of the final candidates (``rerank_depth`` of them). Sending a vault read of the
likely candidates together with the hop statement would save the third only if the final
candidates were known by then. This ingests ``--conversations`` LoCoMo dev conversations into
an embedded store (the ranking is the same code in both modes), and for every question
records the fused ranking just before the hop joins (``fuse_added``) and the ids the search
then reads from the vault; it prints, for M first candidates, in how many searches all of
the read ids were among them and the mean share that was. With ``--seeds S`` each early set
also holds the turns within two of its first S candidates (graph expansion's neighbours),
and the table gives its mean size.

    python benchmarks/vault_prefetch_coverage.py --conversations 3
    python benchmarks/vault_prefetch_coverage.py --conversations 6 --seeds 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, markdown_machine  # noqa: E402
from server_mode import load  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data/locomo/locomo_dev.json"))
    p.add_argument("--conversations", type=int, default=3)
    p.add_argument("--seeds", type=int, default=0,
                   help="add the turns within two of the first SEEDS candidates to each set")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import memos_core.retrieval.hybrid as hybrid
    from memos_core import MemOS, MemOSConfig
    from memos_core.embedding.onnx import OnnxEmbedder

    data = load(args.data, args.conversations, None)
    users = list(dict.fromkeys(t["user"] for t in data["turns"]))
    firsts = (30, 40, 60, 80, 100)
    covered = dict.fromkeys(firsts, 0)
    shares: dict[int, list[float]] = {m: [] for m in firsts}
    sizes: dict[int, list[int]] = {m: [] for m in firsts}
    asking = [""]  # the user of the search running
    before_hop: list[list[str]] = []
    real_fuse_added = hybrid.fuse_added

    def fuse_added(cands: dict[str, Any], *a: Any, **kw: Any) -> None:
        before_hop.append([c.id for c in sorted(cands.values(), key=hybrid._rank_key)])
        real_fuse_added(cands, *a, **kw)

    hybrid.fuse_added = fuse_added
    searches = 0
    try:
        with tempfile.TemporaryDirectory() as tmp, \
                MemOS(tmp, embedder=OnnxEmbedder("minilm"), config=MemOSConfig(show_progress=False)) as mos:
            real_get_many = mos.vault.get_many

            def get_many(ids: Any) -> Any:
                nonlocal searches
                if before_hop:
                    ranking = before_hop.pop()
                    read = list(ids)
                    searches += 1
                    view = mos.retriever.graph.view((asking[0],))
                    around = {t for mid in ranking[:args.seeds] for t in _turns(view, mid)}
                    for m in firsts:
                        first = set(ranking[:m]) | around
                        share = sum(1 for i in read if i in first) / len(read)
                        shares[m].append(share)
                        sizes[m].append(len(first))
                        covered[m] += share == 1.0
                return real_get_many(ids)

            mos.vault.get_many = get_many
            for user in users:
                mos.add_many([t["item"] for t in data["turns"] if t["user"] == user], user_id=user)
            for qa in data["qas"]:
                before_hop.clear()
                asking[0] = qa["user"]
                mos.search(qa["q"], user_id=qa["user"], k=20, record_usage=False)
    finally:
        hybrid.fuse_added = real_fuse_added
    print(markdown_machine(machine_info()))
    print(f"\n{len(users)} conversations, {searches} searches with an entity hop, k=20\n")
    around = f" + turns within 2 of the first {args.seeds}" if args.seeds else ""
    print(f"| first M before the hop{around} | searches whose vault read they cover | "
          "mean share covered | mean set size |")
    print("|---|---|---|---|")
    for m in firsts:
        print(f"| {m} | {covered[m]} of {searches} | {statistics.fmean(shares[m]):.3f} | "
              f"{statistics.fmean(sizes[m]):.1f} |")


def _turns(view: Any, memory_id: str, width: int = 2) -> list[str]:
    """The turns within ``width`` of a memory in its session (itself included)."""
    where = view.session_of(memory_id)
    if where is None or where[1] is None:
        return []
    turns = view.session_turns(*where)
    i = turns.index(memory_id)
    return turns[max(0, i - width): i + width + 1]


if __name__ == "__main__":
    main()
