"""Scale: ingest N synthetic memories across 100 users, then time filtered end-to-end search.

Each memory is a generated sentence about a person, place, activity and date (so entities,
BM25 terms and embeddings vary like real notes). ``search`` is the full path: query embedding,
dense + BM25 in Qdrant with the user filter, graph expansion, fusion, vault read.

    python benchmarks/scale.py --n 10000 --out scale_10k.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, markdown_machine  # noqa: E402

NAMES = ["Ana", "Bruno", "Chen", "Dara", "Elif", "Farid", "Grace", "Hugo", "Ines", "Jonas",
         "Kemal", "Lena", "Mateo", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tove"]
PLACES = ["Lisbon", "Porto", "Berlin", "Nairobi", "Osaka", "Lima", "Oslo", "Quito", "Accra",
          "Hanoi", "Denver", "Tunis", "Krakow", "Perth", "Seville", "Tallinn"]
ACTIVITIES = ["went hiking", "started a pottery class", "adopted a dog", "ran a half marathon",
              "visited a museum", "cooked a curry", "fixed a bicycle", "read a novel",
              "joined a choir", "planted tomatoes", "learned to sail", "painted a mural",
              "wrote a poem", "bought a telescope", "watched a play", "baked sourdough"]
FEELINGS = ["loved it", "found it hard", "wants to do it again", "felt proud", "was tired after",
            "laughed a lot", "met new friends", "took many photos"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]


def sentence(rng: random.Random) -> str:
    return (f"{rng.choice(NAMES)} {rng.choice(ACTIVITIES)} in {rng.choice(PLACES)} on "
            f"{rng.randint(1, 28)} {rng.choice(MONTHS)} {rng.randint(2019, 2025)} and "
            f"{rng.choice(FEELINGS)}.")


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def disk_mb(path: Path) -> float:
    """Allocated disk space (the index preallocates sparse mmap files: size != usage)."""
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file()) / 1024**2


def run(n: int, users: int, queries: int, seed: int) -> dict[str, Any]:
    from memos_core import MemOS, MemOSConfig

    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "d"
        mos = MemOS(data, config=MemOSConfig(show_progress=True))
        mos.embedder.embed(["warm up"])
        per_user = n // users
        t0 = time.perf_counter()
        for u in range(users):
            items = [{"text": sentence(rng), "session_id": f"s{i // 20}"} for i in range(per_user)]
            mos.add_many(items, user_id=f"user{u}", batch_size=512)
        ingest_s = time.perf_counter() - t0
        mos.index.flush()
        lat, emb = [], []
        for _ in range(queries):
            q = f"when did {rng.choice(NAMES)} {rng.choice(ACTIVITIES)}?"
            user = f"user{rng.randrange(users)}"
            t0 = time.perf_counter()
            mos.search(q, user_id=user, k=10, record_usage=False)
            lat.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            mos.embedder.embed([q])  # the query embedding alone, to separate model from store
            emb.append((time.perf_counter() - t0) * 1000)
        lat.sort()
        emb.sort()
        mos.close()  # flush the vault WAL and the index before measuring the disk
        result = {
            "n": per_user * users,
            "users": users,
            "ingest_per_s": round(per_user * users / ingest_s, 1),
            "search_ms_p50": round(lat[len(lat) // 2], 2),
            "search_ms_p95": round(lat[int(len(lat) * 0.95)], 2),
            "embed_ms_p50": round(emb[len(emb) // 2], 2),
            "embed_ms_p95": round(emb[int(len(emb) * 0.95)], 2),
            "load_avg": os.getloadavg()[0],
            "rss_mb": round(rss_mb(), 1),
            "disk_mb": round(disk_mb(data), 1),
            "graph": mos.graph.stats(),
            "queries": queries,
            "machine": machine_info(),
        }
        return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--users", type=int, default=100)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    r = run(args.n, args.users, args.queries, args.seed)
    print(markdown_machine(r["machine"]))
    print(f"load average during the run: {r['load_avg']:.1f} (the machine has {os.cpu_count()} cores)")
    print("\n| n | users | ingest/s | search p50 ms | search p95 ms | of which query embedding p50 / p95 ms | RSS MB | disk MB |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {r['n']} | {r['users']} | {r['ingest_per_s']} | {r['search_ms_p50']} | "
          f"{r['search_ms_p95']} | {r['embed_ms_p50']} / {r['embed_ms_p95']} | {r['rss_mb']} | {r['disk_mb']} |")
    if args.out:
        args.out.write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
