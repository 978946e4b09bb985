"""LoCoMo evidence retrieval: MemOS hybrid search against BM25 alone and dense MiniLM alone.

For each conversation in the data file, every turn is ingested as one memory
("[date] speaker: text", plus the image caption when a turn shares a photo), owned by a user
named after the conversation, with the session date as occurred_at. Then for each question of
categories 1-4 the top 20 memories are retrieved and scored against the question's evidence
turns: recall@5/@10/@20 (share of evidence turns retrieved, averaged over questions), MRR
(reciprocal rank of the first evidence turn) and "all@10" (every evidence turn in the top 10).
The two baselines run on the same index: its BM25 sparse vectors alone and its dense vectors
alone ("dense[focus]": alone, on the text the system embeds, common names left out).

Data: LoCoMo (Maharana et al., ACL 2024), CC BY-NC 4.0; read by path, never bundled.

    python benchmarks/locomo_retrieval.py --data ../shared/data/locomo/locomo_dev.json --out results.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, markdown_machine, time_calls  # noqa: E402
from memos_core.embedding import new_embedder  # noqa: E402

CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
KS = (5, 10, 20)
#: stages of issue 16's fourth and fifth passes timed in-process per system: (object name,
#: attribute, label)
STAGES = (("retriever", "dense_text", "dense query text"), ("search", "own_voice", "own voice"),
          ("search", "mmr", "mmr"), ("retriever", "_list_speaker", "list speaker"),
          ("retriever", "_retrieve", "retrieve (per query)"))


def parse_session_date(text: str) -> datetime | None:
    """'1:56 pm on 8 May, 2023' -> an aware datetime (UTC); None if the format is unknown."""
    for fmt in ("%I:%M %p on %d %B, %Y", "%I:%M %p on %d %b, %Y"):
        try:
            return datetime.strptime(text.strip(), fmt).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
    return None


def normalise_evidence(raw: list[str]) -> list[str]:
    """Evidence ids as 'D<session>:<turn>'; repairs 'D:11:26', 'D30:05', 'D8:6; D9:17'."""
    out: list[str] = []
    for item in raw:
        for part in re.split(r"[;,\s]+", item):
            m = re.fullmatch(r"D:?(\d+):0*(\d+)", part.strip())
            if m:
                out.append(f"D{int(m.group(1))}:{int(m.group(2))}")
    return list(dict.fromkeys(out))


def turns_of(sample: dict[str, Any], dated: bool = True) -> list[dict[str, Any]]:
    """Every turn of one conversation as add_many items, in order. ``dated=False`` leaves
    the "[session date]" out of the text (the date is still the memory's occurred_at)."""
    conv = sample["conversation"]
    items = []
    n = 1
    while f"session_{n}" in conv:
        date_text = conv.get(f"session_{n}_date_time", "")
        when = parse_session_date(date_text)
        for turn in conv[f"session_{n}"]:
            text = f"{turn['speaker']}: {turn['text']}"
            if dated:
                text = f"[{date_text}] {text}"
            if turn.get("blip_caption"):
                text += f" [shares a photo: {turn['blip_caption']}]"
            items.append({
                "text": text, "session_id": f"session_{n}", "occurred_at": when,
                "type": "episode", "metadata": {"dia_id": turn["dia_id"]},
            })
        n += 1
    return items


def score(ranked: list[str], evidence: list[str]) -> dict[str, float]:
    found = set(evidence)
    out = {f"recall@{k}": len(found & set(ranked[:k])) / len(found) for k in KS}
    out["all@10"] = float(found <= set(ranked[:10]))
    out["mrr"] = next((1.0 / i for i, d in enumerate(ranked, start=1) if d in found), 0.0)
    return out


def aggregate(rows: list[tuple[int, dict[str, float]]]) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    groups = {"overall": [r for _, r in rows]}
    for cat, name in CATEGORIES.items():
        groups[name] = [r for c, r in rows if c == cat]
    for name, group in groups.items():
        if group:
            table[name] = {key: round(statistics.fmean(r[key] for r in group), 4) for key in group[0]}
            table[name]["n"] = len(group)
    return table


class CachedReranker:
    """A reranker that remembers its (query, text) scores, so variants that differ only in
    ``reranker_weight`` score each pair once (their latency then excludes the model: the
    first variant using a reranker is the one whose latency counts)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.cache: dict[tuple[str, str], float] = {}

    def score(self, query: str, texts: list[str]) -> list[float]:
        todo = [t for t in dict.fromkeys(texts) if (query, t) not in self.cache]
        for t, v in zip(todo, self.inner.score(query, todo) if todo else []):
            self.cache[(query, t)] = v
        return [self.cache[(query, t)] for t in texts]


def run(data_path: Path, limit_conversations: int | None, backend: str = "onnx",
        retrieval: dict[str, Any] | None = None,
        variants: dict[str, dict[str, Any]] | None = None,
        questions: int | None = None, dated: bool = True,
        bm25: dict[str, float] | None = None) -> dict[str, Any]:
    """Ingest once; score the default system, BM25 alone, dense alone, and each variant
    (name -> RetrievalConfig changes, plus ``reranker="smollm"`` for the local LM reranker)
    on the same store. ``questions``: only the first N scored questions per conversation;
    ``dated``: memory texts begin with "[session date]"; ``bm25``: Bm25Encoder settings
    (k, b, avg_len) for this store instead of the defaults."""
    from memos_core import MemOS, MemOSConfig
    from memos_core.config import RetrievalConfig
    from memos_core.retrieval.filters import SEARCHABLE_STATES, build_filter

    samples = json.loads(data_path.read_text())[:limit_conversations]
    results: dict[str, list[tuple[int, dict[str, float]]]] = {"memos": [], "bm25": [], "dense": [],
                                                              "dense[focus]": []}
    variants = {name: dict(changes) for name, changes in (variants or {}).items()}
    # "reranker=smollm" in a variant is not a RetrievalConfig field: that variant searches
    # with MemOS(reranker=LocalModelReranker()) (the packaged SmolLM2-135M, loaded once)
    rerankers = {name: changes.pop("reranker") for name, changes in variants.items()
                 if "reranker" in changes}
    lm_rerankers: dict[str, Any] = {}
    if rerankers:
        methods = {"smollm": "query_likelihood", "smollm-yesno": "yes_no"}
        if not set(rerankers.values()) <= set(methods):
            raise SystemExit(f"unknown reranker in {rerankers}: one of {sorted(methods)}")
        from memos_core.runtime.reranker import LocalModelReranker
        from memos_core.runtime import LocalModel

        model = LocalModel.default()
        for kind in set(rerankers.values()):
            lm_rerankers[kind] = CachedReranker(LocalModelReranker(model, method=methods[kind]))
    for name in variants:
        results[f"memos[{name}]"] = []
    latencies: list[float] = []
    variant_ms: dict[str, list[float]] = {name: [] for name in variants}
    stage_ms: dict[str, dict[str, float]] = {}
    import memos_core.ops.search as search_module  # the second stage's steps

    def timed(mos: Any, system: str) -> contextlib.ExitStack:
        """Time the STAGES of one search into stage_ms[system] (ms, summed)."""
        sink = stage_ms.setdefault(system, {label: 0.0 for _, _, label in STAGES})
        owners = {"retriever": mos.retriever, "search": search_module}
        stack = contextlib.ExitStack()
        for owner, attr, label in STAGES:
            stack.enter_context(time_calls(owners[owner], attr, sink, label, scale=1000))
        return stack
    ingested, ingest_s, skipped = 0, 0.0, 0
    with tempfile.TemporaryDirectory() as tmp, MemOS(
        Path(tmp) / "d", embedder=new_embedder("minilm", backend),
        config=MemOSConfig(show_progress=False, retrieval=RetrievalConfig(**(retrieval or {}))),
    ) as mos:
        mos.embedder.embed(["warm up"])
        if bm25:  # a fresh store: nothing is encoded yet, so the encoder can be swapped
            from memos_core.index.sparse import SETTINGS_META, Bm25Encoder

            mos.store.bm25 = mos.retriever.bm25 = Bm25Encoder(**bm25)
            mos.store.vault.set_meta(SETTINGS_META, json.dumps(mos.store.bm25.settings))
        for sample in samples:
            user = sample["sample_id"]
            items = turns_of(sample, dated)
            t0 = time.perf_counter()
            cubes = mos.add_many(items, user_id=user)
            ingest_s += time.perf_counter() - t0
            ingested += len(cubes)
            dia = {c.id: c.metadata["dia_id"] for c in cubes}
            # relative query dates ("last week") count back from the conversation's last day
            last = max((i["occurred_at"] for i in items if i["occurred_at"]), default=None)
            if last is not None:
                mos.retriever.now = lambda last=last: last
            flt = build_filter((user,), states=SEARCHABLE_STATES)
            asked = 0
            for qa in sample["qa"]:
                if qa.get("category") not in CATEGORIES:
                    continue
                if questions is not None and asked >= questions:
                    break
                evidence = [e for e in normalise_evidence(qa.get("evidence", [])) if e in dia.values()]
                if not evidence:
                    skipped += 1
                    continue
                q = str(qa["question"])
                asked += 1
                t0 = time.perf_counter()
                with timed(mos, "memos"):
                    hits = mos.search(q, user_id=user, k=max(KS), record_usage=False)
                latencies.append((time.perf_counter() - t0) * 1000)
                results["memos"].append((qa["category"], score([dia[h.id] for h in hits], evidence)))
                base = mos.config
                for name, changes in variants.items():
                    rc = base.retrieval.model_copy(update=changes)
                    mos.config, mos.retriever.config = base.model_copy(update={"retrieval": rc}), rc
                    mos.reranker = lm_rerankers.get(rerankers.get(name, ""))
                    try:
                        t0 = time.perf_counter()
                        with timed(mos, f"memos[{name}]"):
                            vh = mos.search(q, user_id=user, k=max(KS), record_usage=False)
                        variant_ms[name].append((time.perf_counter() - t0) * 1000)
                    finally:
                        mos.config, mos.retriever.config = base, base.retrieval
                        mos.reranker = None
                    results[f"memos[{name}]"].append(
                        (qa["category"], score([dia[h.id] for h in vh], evidence)))
                vec = mos.embedder.embed([q])[0]
                dense = mos.index.search_dense(vec, flt, max(KS))
                sparse = mos.index.search_sparse(mos.store.bm25.encode_query(q), flt, max(KS))
                results["dense"].append((qa["category"], score([dia[h.id] for h in dense], evidence)))
                # the dense signal alone on the text the system embeds (common names left out)
                focus_text = mos.retriever.dense_text(q, flt)
                focus = dense if focus_text == q else mos.index.search_dense(
                    mos.embedder.embed([focus_text])[0], flt, max(KS))
                results["dense[focus]"].append(
                    (qa["category"], score([dia[h.id] for h in focus], evidence)))
                results["bm25"].append((qa["category"], score([dia[h.id] for h in sparse], evidence)))
    latencies.sort()
    return {
        **{name: aggregate(rows) for name, rows in results.items()},
        "ingest_per_s": round(ingested / ingest_s, 1),
        "query_ms_p50": round(latencies[len(latencies) // 2], 2),
        "query_ms_p95": round(latencies[int(len(latencies) * 0.95)], 2),
        "memories": ingested,
        "conversations": len(samples),
        "qa_scored": len(results["memos"]),
        "qa_skipped_no_evidence": skipped,
        "backend": backend,
        "turn_format": "dated" if dated else "plain",
        "bm25_settings": mos.store.bm25.fingerprint,
        "variants": {name: {**changes, **({"reranker": rerankers[name]} if name in rerankers else {})}
                     for name, changes in variants.items()},
        "variant_ms_p50": {name: round(statistics.median(v), 2) for name, v in variant_ms.items() if v},
        "stage_ms_per_query": {system: {label: round(ms / max(1, len(latencies)), 3)
                                        for label, ms in stages.items()}
                               for system, stages in stage_ms.items()},
        "retrieval": mos.config.retrieval.model_dump(),
        "load_avg": round(os.getloadavg()[0], 2),
        "machine": machine_info(),
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [markdown_machine(result["machine"]), "",
             f"{result['conversations']} conversations, {result['memories']} memories, "
             f"{result['qa_scored']} QA scored ({result['qa_skipped_no_evidence']} without usable evidence)", "",
             "| system | slice | n | recall@5 | recall@10 | recall@20 | all@10 | MRR |",
             "|---|---|---|---|---|---|---|---|"]
    systems = ["memos", "bm25", "dense"] + (["dense[focus]"] if "dense[focus]" in result else []) \
        + [f"memos[{v}]" for v in result.get("variants", {})]
    for system in systems:
        for slice_name, row in result[system].items():
            lines.append(f"| {system} | {slice_name} | {row['n']} | {row['recall@5']:.3f} | "
                         f"{row['recall@10']:.3f} | {row['recall@20']:.3f} | {row['all@10']:.3f} | "
                         f"{row['mrr']:.3f} |")
    lines += ["", f"turns {result.get('turn_format', 'dated')}; bm25 {result.get('bm25_settings', 'default')}",
              "", f"embedder backend {result['backend']}; ingest: {result['ingest_per_s']} "
              f"memories/s; memos query latency p50 {result['query_ms_p50']} ms, p95 "
              f"{result['query_ms_p95']} ms (query embedding included); load average "
              f"{result['load_avg']} at the end"]
    if result.get("variant_ms_p50"):
        lines.append("variant query latency p50 (ms): " + ", ".join(
            f"{name} {ms}" for name, ms in result["variant_ms_p50"].items()))
    for system, stages in result.get("stage_ms_per_query", {}).items():
        lines.append(f"{system} in-process stage ms/query: " + ", ".join(
            f"{label} {ms}" for label, ms in stages.items()))
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="LoCoMo JSON (locomo10.json format)")
    p.add_argument("--out", type=Path, help="write the JSON result here")
    p.add_argument("--conversations", type=int, default=None, help="only the first N")
    p.add_argument("--backend", choices=("torch", "onnx", "onnx+bf16", "bf16", "onnx-int8"), default="onnx",
                   help="embedder backend (same vectors; onnx-int8 is the quantised variant)")
    p.add_argument("--questions", type=int, default=None,
                   help="only the first N scored questions of each conversation (for slow variants)")
    p.add_argument("--plain-turns", action="store_true",
                   help="memory text 'speaker: text' without the '[session date]' prefix "
                   "(the date stays in occurred_at)")
    p.add_argument("--bm25", default="", metavar="k=1.2,b=0.75,avg_len=20",
                   help="Bm25Encoder settings for this run (the store is ingested with them)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a RetrievalConfig field for this run (repeatable), e.g. question_weight=1")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                   help="also score a RetrievalConfig variant on the same store (repeatable)")
    args = p.parse_args()

    def parse(pairs: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for item in pairs:
            key, _, value = item.partition("=")
            try:  # numbers, true/false, lists; anything else ("terms") is a string
                out[key] = json.loads(value)
            except json.JSONDecodeError:
                out[key] = value
        return out

    variants = {}
    for spec in args.variant:
        name, _, pairs = spec.partition(":")
        variants[name] = parse([x for x in pairs.split(",") if x])
    result = run(args.data, args.conversations, args.backend, parse(args.set), variants,
                 questions=args.questions, dated=not args.plain_turns,
                 bm25={k: float(v) for k, v in parse([x for x in args.bm25.split(",") if x]).items()})
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    print(markdown(result))


if __name__ == "__main__":
    main()
