"""Server mode's change feed and write lock, measured on one PostgreSQL.

Prints (never asserts) three tables with the machine and versions:

1. **The check before every call**: ``MemOS.catch_up()`` when nothing changed (one indexed
   ``max`` query), p50/p95 in microseconds, next to a ``get`` of one memory.
2. **Propagation**: instance A acknowledges an ``add``; how long until instance B (a second
   ``MemOS`` with its own pools and LISTEN connection, in this process) has applied it to its
   derived state through its LISTEN wake-up, B making no call: p50/p95/max ms.
3. **Vault writes under the write lock**: 1, 2 and 4 processes each writing new versions of
   their own memories (``put_version``, no embedding: the vault alone), versions/s over all
   processes -- what the advisory lock that orders every mutation costs as writers are added.

Without ``--url`` the script starts its own PostgreSQL (``LocalPostgres``) and stops it after.

    python benchmarks/server_feed.py --quick
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, markdown_machine, markdown_server, server_versions  # noqa: E402


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _fresh_db(admin_url: str) -> str:
    import psycopg

    name = "bench_" + uuid.uuid4().hex[:10]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(admin_url.rsplit("/", 1)[0] + "/" + name, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return admin_url.rsplit("/", 1)[0] + "/" + name


def check_and_propagation(url: str, calls: int, adds: int) -> dict[str, Any]:
    from memos_core import MemOS, MemOSConfig

    quiet = MemOSConfig(show_progress=False)
    with MemOS(url, config=quiet) as a, MemOS(url, config=quiet) as b:
        first = a.add("The kayak is in the boathouse.", user_id="alice")
        b.catch_up()
        check, get = [], []
        for _ in range(calls):
            t0 = time.perf_counter()
            b.catch_up()
            check.append((time.perf_counter() - t0) * 1e6)
            t0 = time.perf_counter()
            b.get(first.id, user_id="alice")
            get.append((time.perf_counter() - t0) * 1e6)
        follower = b.store.follower
        assert follower is not None
        delays = []
        for i in range(adds):
            a.add(f"note {i}: the lantern is on shelf {i}.", user_id="alice")
            acked = time.perf_counter()
            head = a.vault.change_head()  # type: ignore[attr-defined]
            while follower.cursor < head:  # b's LISTEN thread applies it; b makes no call
                time.sleep(0.0005)
            delays.append((time.perf_counter() - acked) * 1e3)
        return {"check_us": (_pct(check, 0.5), _pct(check, 0.95)),
                "get_us": (_pct(get, 0.5), _pct(get, 0.95)),
                "propagation_ms": (_pct(delays, 0.5), _pct(delays, 0.95), max(delays)),
                "calls": calls, "adds": adds}


def _writer(url: str, worker: int, seconds: float, start: float, out: Any) -> None:
    from memos_core.cube import MemCube, Namespace, utcnow
    from memos_core.vault import Actor
    from memos_core.vault.postgres import PostgresVault

    vault = PostgresVault(url, pool_size=1)
    actor = Actor(f"w{worker}")
    cubes = [MemCube(namespace=Namespace(user_id=f"w{worker}"), text=f"w{worker} m{i}")
             for i in range(8)]
    vault.insert(cubes, actor)
    while time.time() < start:
        time.sleep(0.001)
    done, i = 0, 0
    end = start + seconds
    while time.time() < end:
        cube = cubes[i % len(cubes)]
        nxt = cube.model_copy(update={"version": cube.version + 1, "updated_at": utcnow(),
                                      "text": f"{cube.text}+"})
        vault.put_version(nxt, cube.version, actor, "update")
        cubes[i % len(cubes)] = nxt
        done += 1
        i += 1
    vault.close()
    out.put(done)


def writes(admin_url: str, processes: int, seconds: float) -> dict[str, Any]:
    url = _fresh_db(admin_url)
    from memos_core.vault.postgres import PostgresVault

    PostgresVault(url).close()  # schema once
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start = time.time() + 3.0 + processes  # every process connected and ready
    procs = [ctx.Process(target=_writer, args=(url, w, seconds, start, out)) for w in range(processes)]
    for p in procs:
        p.start()
    total = sum(out.get(timeout=seconds + 120) for _ in procs)
    for p in procs:
        p.join()
    vault = PostgresVault(url)
    ok, _ = vault.verify_audit()
    vault.close()
    return {"processes": processes, "versions": total, "per_s": total / seconds, "chain_ok": ok}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", help="an existing server (admin URL); default: start one")
    parser.add_argument("--quick", action="store_true", help="fewer calls, shorter runs")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    calls, adds, seconds = (300, 30, 5.0) if args.quick else (2000, 100, 15.0)

    server = None
    admin = args.url
    if admin is None:
        from memos_core.testing.postgres import LocalPostgres

        server = LocalPostgres().start()
        admin = server.url
    try:
        url = _fresh_db(admin)
        print(markdown_machine(machine_info()))
        print(markdown_server(server_versions(url)) + f"; load average {os.getloadavg()[0]:.2f}")
        feed = check_and_propagation(url, calls, adds)
        print(f"\n### The check before every call ({feed['calls']} calls, nothing new)\n")
        print("| call | p50 µs | p95 µs |\n|---|---|---|")
        print(f"| catch_up() (feed head query) | {feed['check_us'][0]:.0f} | {feed['check_us'][1]:.0f} |")
        print(f"| get(id) (check + read) | {feed['get_us'][0]:.0f} | {feed['get_us'][1]:.0f} |")
        p = feed["propagation_ms"]
        print(f"\n### Propagation to another instance via LISTEN ({feed['adds']} adds)\n")
        print("| p50 ms | p95 ms | max ms |\n|---|---|---|")
        print(f"| {p[0]:.1f} | {p[1]:.1f} | {p[2]:.1f} |")
        print(f"\n### Vault writes under the write lock ({seconds:.0f} s each)\n")
        print("| processes | versions written | versions/s | audit chain |\n|---|---|---|---|")
        for n in (1, 2, 4):
            r = writes(admin, n, seconds)
            print(f"| {n} | {r['versions']} | {r['per_s']:.0f} | "
                  f"{'verifies' if r['chain_ok'] else 'BROKEN'} |")
    finally:
        if server is not None:
            server.close()


if __name__ == "__main__":
    threading.current_thread().name = "main"
    main()
