"""End-to-end ``MemOS.chat`` time to first token: the hot block as KV prefix vs as prompt text.

Unlike ``kv_ttft.py`` (the model alone), this goes through the whole chat path: hybrid search
over the store, the user's hot set from the vault, the block looked up in the KV tier, the
prompt composed, then the model. For each memory size it stores synthetic memories for one
user, marks them used, runs the scheduler (which promotes them all and builds the user's
block), then times ``mos.chat(query, kv_prefix=True)`` against ``mos.chat(query,
kv_prefix=False)`` (the same block sent as prompt text; the same tokens), interleaved, with a
short query. Reported: the median end-to-end TTFT (``trace.ttft_ms``: chat call to first
token), its parts (search, preparation, model), and the tokens prefilled.

    .venv/bin/python benchmarks/chat_ttft.py                      # 2048 memory tokens
    .venv/bin/python benchmarks/chat_ttft.py --sizes 256 512 1024 2048 --out results/chat.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see kv_ttft.py

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine_info, markdown_machine  # noqa: E402
from kv_ttft import synthetic_memories  # noqa: E402

from memos_core import MemOS, MemOSConfig  # noqa: E402
from memos_core.cube import utcnow  # noqa: E402
from memos_core.engine import engine_for  # noqa: E402
from memos_core.runtime import LocalModel  # noqa: E402
from memos_core.scheduler import SchedulerConfig  # noqa: E402
from memos_core.tiers.activation import KVBudget, MemoryRef  # noqa: E402

QUERY = "Who moved to Oslo?"
#: Promote every memory that was used once, however many fit (the block size is set by the
#: number of memories stored, not by the policy's budget).
PROMOTE_ALL = SchedulerConfig(
    min_heat_to_promote=0.5, demote_below_heat=0.25, promote_token_budget=1_000_000,
    max_hot_memories=100_000,
)


def memories_for(mos: MemOS, target: int) -> list[MemoryRef]:
    """The fewest synthetic memories whose block reaches ``target`` prefix tokens."""
    tier = engine_for(mos).tier
    model = tier.model
    pool = synthetic_memories(400)
    lo, hi = 1, len(pool)
    while lo < hi:
        mid = (lo + hi) // 2
        text = model.render(tier.messages_for(pool[:mid]), add_generation_prompt=False)
        if len(model.encode(text)) >= target:
            hi = mid
        else:
            lo = mid + 1
    return pool[:lo]


def median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def measure(mos: MemOS, user: str, repeats: int) -> dict[str, Any]:
    """Interleaved chats both ways; medians of the trace's timings."""
    samples: dict[bool, list[Any]] = {True: [], False: []}
    for _ in range(repeats):
        for kv in (False, True):
            answer = mos.chat(QUERY, user_id=user, max_new_tokens=1, kv_prefix=kv)
            samples[kv].append(answer.trace)
    row: dict[str, Any] = {}
    for kv, name in ((False, "text"), (True, "kv")):
        traces = samples[kv]
        row[f"ttft_{name}_ms"] = median([t.ttft_ms for t in traces])
        row[f"model_ttft_{name}_ms"] = median([t.generation_ttft_ms for t in traces])
        row[f"search_{name}_ms"] = median([t.retrieval_ms for t in traces])
        row[f"prepare_{name}_ms"] = median([t.prepare_ms for t in traces])
        row[f"prefill_{name}_tokens"] = traces[-1].prefill_tokens
        row[f"kv_prefix_{name}"] = traces[-1].kv_prefix
    row["prefix_tokens"] = samples[True][-1].prefix_tokens
    row["hot_memories"] = len(samples[True][-1].from_activation)
    row["reduction"] = round(1.0 - row["ttft_kv_ms"] / row["ttft_text_ms"], 4)
    return row


def run(sizes: list[int], repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="memos-chat-ttft-") as tmp:
        mos = MemOS(Path(tmp) / "data", config=MemOSConfig(show_progress=False))
        try:
            engine = engine_for(mos)
            engine.budget = KVBudget(max_tokens=None)  # every size's block is kept
            model = LocalModel.default()
            mos.attach_model(model)
            rows = []
            for size in sizes:
                user = f"user{size}"
                texts = [m.text for m in memories_for(mos, size)]
                cubes = mos.add_many(texts, user_id=user)
                mos.vault.record_usage([c.id for c in cubes], utcnow(), mos.config.heat_half_life_s)
                report = mos.schedule(user_id=user, config=PROMOTE_ALL)
                mos.chat(QUERY, user_id=user, max_new_tokens=1)  # warm-up (loads the block)
                row = {"memory_tokens": size, "memories": len(cubes),
                       "schedule_ms": round(report.duration_ms, 1), **measure(mos, user, repeats)}
                print(json.dumps(row), file=sys.stderr, flush=True)
                rows.append(row)
        finally:
            mos.close()
    return {"model": model.model_id, "dtype": str(model.model.dtype), "query": QUERY,
            "repeats": repeats, "machine": machine_info(),
            "load_average": list(os.getloadavg()), "runs": rows}


def markdown(report: dict[str, Any]) -> str:
    import torch

    lines = [
        markdown_machine(report["machine"]),
        f"model: {report['model']} ({report['dtype']}), torch threads {torch.get_num_threads()}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, load average at end "
        f"{[round(x, 2) for x in report['load_average']]}; query {report['query']!r}; "
        f"median of {report['repeats']} interleaved runs; max_new_tokens=1",
        "",
        "| memory tokens | hot memories | TTFT text (ms) | TTFT KV (ms) | reduction "
        "| model TTFT text / KV (ms) | search (ms) | prepare text / KV (ms) | prefilled text / KV |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["runs"]:
        lines.append(
            f"| {r['memory_tokens']} ({r['prefix_tokens']}) | {r['hot_memories']} "
            f"| {r['ttft_text_ms']:.1f} | {r['ttft_kv_ms']:.1f} | {100 * r['reduction']:.1f}% "
            f"| {r['model_ttft_text_ms']:.1f} / {r['model_ttft_kv_ms']:.1f} "
            f"| {r['search_kv_ms']:.1f} | {r['prepare_text_ms']:.1f} / {r['prepare_kv_ms']:.1f} "
            f"| {r['prefill_text_tokens']} / {r['prefill_kv_tokens']} |"
        )
    lines += ["", "(actual prefix tokens in parentheses; TTFT = chat call to first token, "
              "search and prompt included)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048],
                        help="memory block sizes in tokens (default: 2048)")
    parser.add_argument("--repeats", type=int, default=5, help="chats per path (median)")
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    args = parser.parse_args(argv)
    report = run(args.sizes, max(1, args.repeats))
    report["table_markdown"] = markdown(report)
    print(report["table_markdown"])
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
