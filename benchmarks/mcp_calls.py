"""Tool-call latency of ``memos mcp``: the same ``search`` through the facade, over stdio and
over streamable HTTP, and HTTP throughput with several concurrent clients.

A store of ``--memories`` synthetic memories for one user is made first. Then:

* **facade**: ``await mos.asearch(...)`` in-process (the floor: what the server calls);
* **stdio**: the SDK's ``ClientSession`` against ``memos mcp`` in a subprocess (as is, and
  with ``OMP_NUM_THREADS=1`` in the server's environment: one thread per embedding);
* **http**: the SDK's client against the HTTP server (a thread of this process, loopback);
* **http xN**: N sessions searching at once; reported: calls per second over all of them.

Each path runs ``--calls`` searches (after 3 warm-up calls); the table gives the median and
p90 per call. Everything stays on loopback.

    .venv/bin/python benchmarks/mcp_calls.py
    .venv/bin/python benchmarks/mcp_calls.py --memories 1000 --calls 50 --clients 8
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine_info, markdown_machine  # noqa: E402
from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402

from memos_core import MemOS, MemOSConfig  # noqa: E402
from memos_core.mcp_server import HttpServerThread, TokenStore, build_http_server  # noqa: E402

TOPICS = ["hiking", "cooking", "chess", "sailing", "painting", "cycling", "jazz", "gardening"]
QUERIES = ["which sport does the user like", "favourite kind of music", "hobbies at home"]


def fill(data_dir: Path, n: int) -> None:
    with MemOS(data_dir, config=MemOSConfig(show_progress=False)) as mos:
        mos.add_many([f"Memory {i}: the user spent day {i} {TOPICS[i % len(TOPICS)]} with "
                      f"friend number {i % 37}." for i in range(n)], user_id="alice")


async def timed(session: ClientSession, calls: int) -> list[float]:
    for q in QUERIES:  # warm-up
        await session.call_tool("search", {"query": q})
    out = []
    for i in range(calls):
        start = time.perf_counter()
        result = await session.call_tool("search", {"query": QUERIES[i % len(QUERIES)]})
        out.append((time.perf_counter() - start) * 1000)
        assert not result.isError, result.content
    return out


async def facade(mos: MemOS, calls: int) -> list[float]:
    for q in QUERIES:
        await mos.asearch(q, user_id="alice")
    out = []
    for i in range(calls):
        start = time.perf_counter()
        await mos.asearch(QUERIES[i % len(QUERIES)], user_id="alice")
        out.append((time.perf_counter() - start) * 1000)
    return out


async def stdio(data_dir: Path, calls: int, **env: str) -> list[float]:
    params = StdioServerParameters(command=sys.executable, env={**os.environ, **env}, args=[
        "-m", "memos_core.cli", "mcp", "--data-dir", str(data_dir), "--user", "alice"])
    async with stdio_client(params) as (r, w), ClientSession(r, w) as session:
        await session.initialize()
        return await timed(session, calls)


async def http_client(url: str, token: str, calls: int) -> list[float]:
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as client, \
            streamable_http_client(url, http_client=client) as (r, w, _), \
            ClientSession(r, w) as session:
        await session.initialize()
        return await timed(session, calls)


def row(name: str, ms: list[float], extra: str = "") -> str:
    p90 = statistics.quantiles(ms, n=10)[-1] if len(ms) >= 10 else max(ms)
    return f"| {name} | {len(ms)} | {statistics.median(ms):.1f} | {p90:.1f} | {extra} |"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--memories", type=int, default=500)
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="memos-mcp-bench-") as tmp:
        data = Path(tmp) / "data"
        fill(data, args.memories)
        rows = [row("stdio (subprocess)", await stdio(data, args.calls)),
                row("stdio, server with OMP_NUM_THREADS=1",
                    await stdio(data, args.calls, OMP_NUM_THREADS="1"))]
        with MemOS(data, config=MemOSConfig(show_progress=False)) as mos:
            rows.insert(0, row("facade asearch (in-process)", await facade(mos, args.calls)))
            token, _ = TokenStore.for_data_dir(data).add("alice")
            server = build_http_server(mos, tokens=TokenStore.for_data_dir(data))
            with HttpServerThread(server, port=0) as thread:
                rows.append(row("http, 1 client", await http_client(thread.url, token, args.calls)))
                start = time.perf_counter()
                many = await asyncio.wait_for(asyncio.gather(*(
                    http_client(thread.url, token, args.calls) for _ in range(args.clients))), 600)
                wall = time.perf_counter() - start
                flat = [ms for client in many for ms in client]
                rows.append(row(f"http, {args.clients} clients at once", flat,
                                f"{len(flat) / wall:.1f} calls/s over all clients (wall time "
                                "includes session set-up and warm-up)"))
    print(f"MCP search tool-call latency, {args.memories} memories, one user; ms per call\n")
    print("| path | calls | median ms | p90 ms | note |\n|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    print(markdown_machine(machine_info()))


if __name__ == "__main__":
    asyncio.run(main())
