"""Time to first token: memories as prompt text versus as a cached KV prefix (SmolLM2).

For memory blocks of 256/512/1024/2048 tokens and queries of 16/64/256 tokens it measures,
on the default local model (SmolLM2-135M-Instruct):

* TTFT with the memory block sent as prompt text (the whole prompt is prefilled) and with
  the block's precomputed KV cache (only the query is prefilled); ``reduction = 1 - kv/prompt``;
* the max abs difference between the query's logits computed both ways;
* the cache's size, and the time to load it from disk versus recomputing it.

Each timing is the median of ``--repeats`` runs, the two paths interleaved. Prints markdown
tables with the machine and versions; ``--out FILE.json`` also writes
``{"runs": [{"memory_tokens", "query_tokens", "ttft_prompt_ms", "ttft_kv_ms", "reduction",
"max_abs_logit_diff", ...}], "machine": ..., "versions": ...}``.

    .venv/bin/python benchmarks/kv_ttft.py --out results/kv_ttft.json      # full grid
    .venv/bin/python benchmarks/kv_ttft.py --quick                          # 2 cells, 1 repeat
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# OpenMP threads that spin while waiting turn a shared (loaded) machine into a 10-30x slowdown
# of small forwards; passive waiting costs little when the machine is idle. Set before torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info as shared_machine_info  # noqa: E402

from memos_core.runtime import LocalModel, PrefixCache  # noqa: E402
from memos_core.runtime.fingerprint import library_versions  # noqa: E402
from memos_core.tiers.activation import (  # noqa: E402
    KVBudget,
    KVCacheTier,
    MemoryRef,
    load_block,
    save_block,
)

MEMORY_TOKENS = (256, 512, 1024, 2048)
QUERY_TOKENS = (16, 64, 256)
NAMES = ["Alma", "Bruno", "Chen", "Dana", "Emeka", "Farah", "Goran", "Hana", "Ivo", "Jun"]
CITIES = ["Lisbon", "Oslo", "Quito", "Hanoi", "Accra", "Perth", "Tartu", "Cusco", "Kobe", "Bern"]
HOBBIES = ["chess", "rowing", "pottery", "jazz piano", "birdwatching", "climbing", "baking"]


def synthetic_memories(count: int) -> list[MemoryRef]:
    """Distinct, plausible memories (deterministic)."""
    out = []
    for i in range(count):
        name, city = NAMES[i % len(NAMES)], CITIES[(i * 3) % len(CITIES)]
        hobby = HOBBIES[(i * 5) % len(HOBBIES)]
        text = f"{name} (contact {i}) moved to {city} in {1990 + i % 30} and spends weekends on {hobby}."
        out.append(MemoryRef(id=f"mem-{i}", version=1, text=text))
    return out


def memories_for(model: LocalModel, tier: KVCacheTier, target: int) -> list[MemoryRef]:
    """The fewest synthetic memories whose block reaches ``target`` prefix tokens."""
    pool = synthetic_memories(400)
    lo, hi = 1, len(pool)
    while lo < hi:  # token count grows with the number of memories: bisect
        mid = (lo + hi) // 2
        text = model.render(tier.messages_for(pool[:mid]), add_generation_prompt=False)
        if len(model.encode(text)) >= target:
            hi = mid
        else:
            lo = mid + 1
    return pool[:lo]


def query_for(model: LocalModel, prefix: PrefixCache, target: int) -> list[dict[str, str]]:
    """A user message whose prefill (after the prefix) is as close to ``target`` tokens as can be."""
    question = " Who lives in Oslo?"
    filler = " ".join(f"Note {i}: I keep lists of friends and the cities they live in." for i in range(80))
    filler_ids = model.encode(filler)
    best: list[dict[str, str]] = [{"role": "user", "content": question.strip()}]
    for keep in range(len(filler_ids) + 1):
        content = (model.tokenizer.decode(filler_ids[:keep]) + question).strip()
        messages = [{"role": "user", "content": content}]
        if len(model.prompt_ids(prefix, messages)[1]) > target:
            break
        best = messages
    return best


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples), 2)


def measure_cell(model: LocalModel, prefix: PrefixCache, query: list[dict[str, str]], repeats: int) -> dict[str, Any]:
    """TTFT both ways (interleaved), logit difference and first-token agreement."""
    prompt_ms, kv_ms = [], []
    prompt_messages = prefix.messages + query
    for _ in range(repeats):
        prompt = model.generate(None, prompt_messages, max_new_tokens=1)
        kv = model.generate(prefix, query, max_new_tokens=1)
        prompt_ms.append(prompt.trace.ttft_ms)
        kv_ms.append(kv.trace.ttft_ms)
    cached = model.prefill_logits(prefix, query)  # (q, vocab)
    full = model.prefill_logits(prefix, query, recompute=True)  # (q, vocab)
    ttft_prompt, ttft_kv = median_ms(prompt_ms), median_ms(kv_ms)
    return {
        "query_prefill_tokens": kv.trace.prefill_tokens,
        "ttft_prompt_ms": ttft_prompt,
        "ttft_kv_ms": ttft_kv,
        "reduction": round(1.0 - ttft_kv / ttft_prompt, 4),
        "max_abs_logit_diff": float((cached - full).abs().max()),
        "same_first_token": prompt.token_ids == kv.token_ids,
    }


def measure_cache(model: LocalModel, tier: KVCacheTier, memories: list[MemoryRef], repeats: int) -> dict[str, Any]:
    """Build the block; time recomputing its KV versus loading it from a safetensors file."""
    block = tier.get_or_build(memories)
    recompute = []
    for _ in range(max(1, repeats - 1)):
        started = time.perf_counter()
        model.build_prefix(block.prefix.messages)
        recompute.append(1000 * (time.perf_counter() - started))
    with tempfile.TemporaryDirectory() as tmp:
        path = save_block(block, tmp)
        loads = []
        for _ in range(5):
            started = time.perf_counter()
            loaded = load_block(path, fingerprint_digest=model.fingerprint.digest, memories=block.memories)
            loads.append(1000 * (time.perf_counter() - started))
        assert loaded is not None
        file_bytes = path.stat().st_size
    return {
        "block": block,
        "prefix_tokens": block.num_tokens,
        "memories": len(memories),
        "cache_bytes": block.nbytes,
        "cache_file_bytes": file_bytes,
        "cache_recompute_ms": median_ms(recompute),
        "cache_load_ms": median_ms(loads),
    }


def machine_info() -> dict[str, Any]:
    """The shared machine description plus what matters for torch timings."""
    import torch

    return {
        **shared_machine_info(),
        "torch_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }


def markdown(report: dict[str, Any]) -> str:
    m, v = report["machine"], report["versions"]
    lines = [
        f"Model: {report['model']} ({report['dtype']}), greedy, batch 1. "
        f"Machine: {m['cpu']}, {m['cores']} cores, torch threads {m['torch_threads']} "
        f"(OMP_WAIT_POLICY={m['omp_wait_policy']}), "
        f"load average at start {m['load_average']}; python {m['python']}, torch {v['torch']}, "
        f"transformers {v['transformers']}. Median of {report['repeats']} runs.",
        "",
        "| memory tokens | query tokens | TTFT prompt (ms) | TTFT KV (ms) | reduction | max abs logit diff | same 1st token |",
        "|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in report["runs"]:
        lines.append(
            f"| {r['memory_tokens']} ({r['prefix_tokens']}) | {r['query_tokens']} ({r['query_prefill_tokens']}) "
            f"| {r['ttft_prompt_ms']:.1f} | {r['ttft_kv_ms']:.1f} | {100 * r['reduction']:.1f}% "
            f"| {r['max_abs_logit_diff']:.2e} | {'yes' if r['same_first_token'] else 'NO'} |"
        )
    lines += [
        "",
        "(actual prefix / query prefill tokens in parentheses)",
        "",
        "| memory tokens | KV cache | file | recompute (ms) | load from disk (ms) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for c in report["caches"]:
        lines.append(
            f"| {c['memory_tokens']} ({c['prefix_tokens']}) | {c['cache_bytes'] / 2**20:.1f} MiB "
            f"| {c['cache_file_bytes'] / 2**20:.1f} MiB | {c['cache_recompute_ms']:.1f} | {c['cache_load_ms']:.1f} |"
        )
    return "\n".join(lines)


def run(memory_sizes: tuple[int, ...], query_sizes: tuple[int, ...], repeats: int) -> dict[str, Any]:
    model = LocalModel.default()
    tier = KVCacheTier(model, budget=KVBudget(max_tokens=None))
    machine = machine_info()
    warm = model.build_prefix([{"role": "system", "content": "warm up"}])
    model.generate(warm, [{"role": "user", "content": "hello"}], max_new_tokens=2)
    runs, caches = [], []
    for size in memory_sizes:
        cache = measure_cache(model, tier, memories_for(model, tier, size), repeats)
        block = cache.pop("block")
        caches.append({"memory_tokens": size, **cache})
        for qsize in query_sizes:
            cell = measure_cell(model, block.prefix, query_for(model, block.prefix, qsize), repeats)
            row = {"memory_tokens": size, "query_tokens": qsize, "prefix_tokens": block.num_tokens, **cell}
            row.update({k: cache[k] for k in ("cache_bytes", "cache_load_ms", "cache_recompute_ms")})
            runs.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        tier.clear()
    machine["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return {
        "model": model.model_id,
        "dtype": str(model.model.dtype),
        "fingerprint": model.fingerprint.digest,
        "machine": machine,
        "versions": library_versions(),
        "repeats": repeats,
        "runs": runs,
        "caches": caches,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    parser.add_argument("--quick", action="store_true", help="256 and 2048 memory tokens, 16-token query, 1 repeat")
    parser.add_argument("--repeats", type=int, default=3, help="runs per timing (median reported)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.quick:
        report = run((256, 2048), (16,), 1)
    else:
        report = run(MEMORY_TOKENS, QUERY_TOKENS, max(1, args.repeats))
    table = markdown(report)
    report["table_markdown"] = table
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
