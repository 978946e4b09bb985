"""Round trips to PostgreSQL per server-mode search, counted by libpq's own trace.

Starts a PostgreSQL (``LocalPostgres``), ingests one LoCoMo conversation through
``MemOS("postgresql://...")``, then traces the vault's and the index's pooled connections
(``PGconn.trace``) during ``--searches`` searches of that conversation's questions and counts
the server's ``ReadyForQuery`` messages (one per round trip: a simple query, a ``Sync`` of the
extended protocol, or a pipeline's ``Sync``). The LISTEN connection is not traced (it only
receives). With ``--record-usage`` the searches count their hits as accesses (the default of
``MemOS.search``); the background usage flushes that fall inside the run are counted too.

    python benchmarks/server_round_trips.py --data ../shared/data/locomo/locomo_dev.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, markdown_machine, markdown_server, server_versions  # noqa: E402
from server_mode import load  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data/locomo/locomo_dev.json"))
    p.add_argument("--searches", type=int, default=30)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--record-usage", action="store_true")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import memos_core
    from memos_core import MemOS, MemOSConfig
    from memos_core.embedding.onnx import OnnxEmbedder
    from memos_core.testing.postgres import LocalPostgres

    data = load(args.data, 1, None)
    user = data["turns"][0]["user"]
    questions = [qa["q"] for qa in data["qas"]][: args.searches + 5]
    embedder = OnnxEmbedder("minilm")
    with LocalPostgres() as server, tempfile.TemporaryDirectory() as tmp:
        url = server.create_database("round_trips")
        versions = server_versions(url)
        with MemOS(url, embedder=embedder, config=MemOSConfig(show_progress=False)) as mos:
            mos.add_many([t["item"] for t in data["turns"]], user_id=user)
            time.sleep(1.0)  # the LISTEN wake-ups of the ingest are over
            for q in questions[:5]:  # warm: statistics cached as in a running service
                mos.search(q, user_id=user, k=args.k, record_usage=args.record_usage)
            conns = [*mos.vault._pool._pool, *mos.index._pool._pool]  # the idle pooled ones
            trace = Path(tmp) / "libpq.trace"
            with trace.open("w") as f:
                for conn in conns:
                    conn.pgconn.trace(f.fileno())
                t0 = time.perf_counter()
                for q in questions[5:]:
                    mos.search(q, user_id=user, k=args.k, record_usage=args.record_usage)
                elapsed = time.perf_counter() - t0
                for conn in conns:
                    conn.pgconn.untrace()
            lines = trace.read_text().splitlines()
    n = len(questions) - 5
    ready = sum(1 for line in lines if "\tB\t" in line and "ReadyForQuery" in line)
    print(markdown_machine(machine_info()))
    print(markdown_server(versions))
    print(f"memos_core from {Path(memos_core.__file__).parent}; load average "
          f"{os.getloadavg()[0]:.2f}; {len(data['turns'])} memories of one conversation; "
          f"{n} searches, k={args.k}, record_usage={args.record_usage}; "
          f"{len(conns)} pooled connections traced")
    print(f"round trips per search: {ready / n:.2f} (search {elapsed / n * 1000:.1f} ms mean)")


if __name__ == "__main__":
    main()
