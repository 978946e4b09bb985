"""Per-call cost of everyday store operations as the store grows (embedded or server mode).

A store of N memories is filled for one user, or spread over many users (the measured user
then owns N / users of them); then each operation is timed on it, median of ``--repeat``
calls: ``add``, a page of ``list`` (oldest and newest first), ``stats``, ``audit_log`` with
an action filter, a warm ``search``, and a ``search`` right after an ``add`` (what an agent
that remembers and recalls in turns pays). An operation that should not depend on the size
of the store (or of other users' data) shows up as a column that grows.

Vectors come from a seeded hash of each text (no model): these operations' cost is the
vault's and the graph's, and a model would only add the same embedding time to every size.
Search still runs dense + BM25 + graph expansion + fusion over real Qdrant (embedded).

    python benchmarks/store_ops.py --sizes 1000,20000 --users 1,50
    python benchmarks/store_ops.py --server --sizes 1000,10000 --users 1,50

``--server`` runs the same on server mode: a PostgreSQL the script starts
(``LocalPostgres``, a database per row) and stops.

To compare with an older commit, run it with that commit's ``memos_core`` first on the
path (``git worktree add /tmp/old REV; PYTHONPATH=/tmp/old python benchmarks/store_ops.py``);
the table names the ``memos_core`` it imported.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, markdown_machine, markdown_server, server_versions  # noqa: E402

NAMES = ["Ana", "Bruno", "Chen", "Dara", "Elif", "Farid", "Grace", "Hugo", "Ines", "Jonas",
         "Porto", "Braga", "Lisbon", "Berlin", "Tokyo", "Nairobi"]
WORDS = ("likes visited moved works studies cooked bought painted read wrote sold played hiking "
         "coffee jazz chess guitar novel garden bicycle museum concert dinner budget meeting "
         "weekend summer winter morning evening").split()


class SeededEmbedder:
    """A unit vector per text from a hash of it: deterministic, no model (see the module)."""

    dim = 384
    name = "seeded-hash"
    backend = "hash"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
            v = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            out[i] = v / np.linalg.norm(v)
        return out


def sentence(rng: random.Random) -> str:
    a, b = rng.sample(NAMES, 2)
    return f"{a} {' '.join(rng.choices(WORDS, k=rng.randint(6, 14)))} with {b} on day {rng.randint(1, 10**6)}."


def median_ms(call: Callable[[], Any], repeat: int,
              before: Callable[[], Any] = lambda: None) -> float:
    """The median ms of ``call`` over ``repeat`` calls (after one untimed), each after an
    untimed ``before``."""
    before()
    call()  # warm
    times = []
    for _ in range(repeat):
        before()
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 2)


def run(size: int, users: int, repeat: int, seed: int, server: Any = None) -> dict[str, Any]:
    from memos_core import MemOS, MemOSConfig

    rng = random.Random(seed)
    me = "u0"
    with tempfile.TemporaryDirectory(prefix="memos-ops-") as tmp:
        config = MemOSConfig(show_progress=False)
        where = (server.create_database(f"ops_{size}_{users}") if server is not None
                 else Path(tmp) / "data")
        with MemOS(where, embedder=SeededEmbedder(), config=config) as mos:
            t0 = time.perf_counter()
            for start in range(0, size, 200):
                owner = f"u{(start // 200) % users}"
                mos.add_many([{"text": sentence(rng), "session_id": f"s{rng.randrange(50)}"}
                              for _ in range(min(200, size - start))], user_id=owner)
            fill_s = time.perf_counter() - t0
            mos.search("warm up", user_id=me)  # the user's graph view is loaded
            own = mos.stats(user_id=me)["vault"]["memories"]

            def search() -> None:
                mos.search(sentence(rng), user_id=me, k=10)

            def add() -> None:
                mos.add(sentence(rng), user_id=me, session_id="s1")

            add_ms = median_ms(add, repeat)
            row = {
                "memories": size, "users": users, "own": own, "fill_s": round(fill_s, 1),
                "add": add_ms,
                "list 10": median_ms(lambda: mos.list(user_id=me, limit=10), repeat),
                "list 10 newest": median_ms(
                    lambda: mos.list(user_id=me, limit=10, newest_first=True), repeat),
                "stats": median_ms(lambda: mos.stats(user_id=me), repeat),
                "audit_log(action)": median_ms(
                    lambda: mos.audit_log(user_id=me, action="forget"), repeat),
                "search": median_ms(search, repeat),
                "search after add": median_ms(search, repeat, before=add),
            }
    return row


COLUMNS = ("add", "list 10", "list 10 newest", "stats", "audit_log(action)", "search",
           "search after add")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,20000", help="store sizes, comma-separated")
    p.add_argument("--users", default="1,50", help="users the memories are spread over")
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--server", action="store_true", help="server mode (starts a PostgreSQL)")
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    os.environ.setdefault("MEMOS_PROGRESS", "0")
    import memos_core

    with contextlib.ExitStack() as stack:
        server = None
        versions: dict[str, str] = {}
        if a.server:
            from memos_core.testing.postgres import LocalPostgres

            server = stack.enter_context(LocalPostgres())
            versions = server_versions(server.create_database("versions"))
        rows = [run(int(n), int(u), a.repeat, a.seed, server)
                for u in a.users.split(",") for n in a.sizes.split(",")]
    print(markdown_machine(machine_info()))
    if versions:
        print(markdown_server(versions))
    print(f"{'server mode (PostgreSQL, loopback)' if a.server else 'embedded mode'}; memos_core "
          f"from {Path(memos_core.__file__).parent}; load average {os.getloadavg()[0]:.1f}; "
          f"median of {a.repeat} calls, ms")
    print()
    print("| memories | users | the user's | " + " | ".join(COLUMNS) + " |")
    print("|---|---|---|" + "---|" * len(COLUMNS))
    for r in rows:
        print(f"| {r['memories']} | {r['users']} | {r['own']} | "
              + " | ".join(str(r[c]) for c in COLUMNS) + " |")
    if a.out:
        a.out.write_text(json.dumps({"machine": machine_info(), "server_versions": versions,
                                     "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
