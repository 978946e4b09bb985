"""What one ``forget`` costs as the embedded store grows, and how much of it is the vault's
rebuild (``VACUUM``, which every forget ends with: SQLite's page rebalancing leaves old
copies of rows that ``secure_delete`` does not zero; docs/governance.md).

A store of N memories (one user; vectors from a seeded hash of each text, no model, as in
``store_ops.py``) is filled, then ``--repeat`` memories are forgotten one by one: the median
and largest ms of a whole ``forget``, the vault file's size, and the median ms of the rebuild
alone (``VACUUM`` then ``wal_checkpoint(TRUNCATE)``, what ``SQLiteVault.checkpoint`` runs)
against the WAL truncation alone (what it ran before).

    python benchmarks/forget_cost.py --sizes 1000,10000,50000 --repeat 10
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, markdown_machine  # noqa: E402
from store_ops import SeededEmbedder, sentence  # noqa: E402


def timed_ms(call: Any) -> float:
    t0 = time.perf_counter()
    call()
    return (time.perf_counter() - t0) * 1000


def run(size: int, repeat: int, seed: int) -> dict[str, Any]:
    from memos_core import MemOS, MemOSConfig

    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="memos-forget-") as tmp:
        where = Path(tmp) / "data"
        with MemOS(where, embedder=SeededEmbedder(),
                   config=MemOSConfig(show_progress=False)) as mos:
            ids: list[str] = []
            for start in range(0, size, 500):
                ids += [c.id for c in mos.add_many(
                    [sentence(rng) for _ in range(min(500, size - start))], user_id="u")]
            victims = rng.sample(ids, repeat)
            forgets = [timed_ms(lambda v=v: mos.forget(v, user_id="u")) for v in victims]
            db = mos.vault._db  # type: ignore[attr-defined]
            rebuilds = [timed_ms(lambda: (db.execute("VACUUM"),
                                          db.execute("PRAGMA wal_checkpoint(TRUNCATE)")))
                        for _ in range(repeat)]
            truncations = [timed_ms(lambda: db.execute("PRAGMA wal_checkpoint(TRUNCATE)"))
                           for _ in range(repeat)]
            vault_mb = (where / "vault.sqlite3").stat().st_size / 1e6
    return {"memories": size, "vault_mb": round(vault_mb, 1),
            "forget_median_ms": round(statistics.median(forgets), 1),
            "forget_max_ms": round(max(forgets), 1),
            "rebuild_median_ms": round(statistics.median(rebuilds), 1),
            "truncate_median_ms": round(statistics.median(truncations), 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,10000,50000", help="store sizes, comma-separated")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    os.environ.setdefault("MEMOS_PROGRESS", "0")
    rows = [run(int(n), a.repeat, a.seed) for n in a.sizes.split(",")]
    print(markdown_machine(machine_info()))
    print(f"embedded mode; load average {os.getloadavg()[0]:.1f}; {a.repeat} forgets per size")
    print()
    print("| memories | vault MB | forget median / max ms | VACUUM + truncate median ms "
          "| truncate alone median ms |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['memories']} | {r['vault_mb']} | {r['forget_median_ms']} / "
              f"{r['forget_max_ms']} | {r['rebuild_median_ms']} | {r['truncate_median_ms']} |")
    if a.out:
        a.out.write_text(json.dumps({"machine": machine_info(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
