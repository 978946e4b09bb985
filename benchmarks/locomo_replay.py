"""Second-stage ideas replayed over the system's own candidates (LoCoMo, issue 16).

``locomo_retrieval.py --variant`` scores a ``RetrievalConfig`` change through the whole
search. An idea that needs a new signal the system does not have yet can be measured more
cheaply first: ingest once, keep the system's top ``--depth`` hits and their fused scores per
question, then mix one more score into the top ``--rerank`` of them (both min-max
normalised; ``final = system + weight x signal``), optionally after adding the signal's own
best ``--extra`` memories as candidates (scored with the lowest system score of the list).
Recall is then scored as in ``locomo_retrieval.py``. The replay of weight 0 reproduces the
system's own recall; the system is the code as it is, so a kept idea must still be built and
re-measured with ``locomo_retrieval.py``.

Signals (all on the embedder the store uses; the query is the system's dense query text,
the conversation's speakers left out, ``HybridRetriever.dense_text``):

- ``sentences``: each memory's body is split into sentences (and the caption of a shared
  photo), each embedded as "speaker: sentence"; a memory scores the cosine of its best
  sentence. A memory's one vector mixes every topic of a long turn; a sentence has one.
- ``sentences+turn``: that, plus the memory's own dense cosine.
- ``rocchio``: the dense cosine to the query vector plus the mean vector of the system's
  first three hits (pseudo-relevance feedback on the dense side).

    python benchmarks/locomo_replay.py --data ../shared/data/locomo/locomo_dev.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, markdown_machine  # noqa: E402
from memos_core.embedding import new_embedder  # noqa: E402
from locomo_retrieval import (  # noqa: E402
    CATEGORIES, aggregate, normalise_evidence, score, turns_of,
)

SIGNALS = ("sentences", "sentences+turn", "rocchio")
_TURN = re.compile(r"^(?:\[[^\]]*\]\s*)?([^:]+):\s*(.*)$", re.S)
_PHOTO = re.compile(r"\[shares a photo: ([^\]]*)\]")


def pieces(text: str) -> list[str]:
    """'[date] Speaker: body [shares a photo: caption]' -> "Speaker: sentence" for each
    sentence of the body of three words or more (all of them if none is), and the caption."""
    m = _TURN.match(text)
    speaker, body = (m.group(1), m.group(2)) if m else ("", text)
    captions = _PHOTO.findall(body)
    body = _PHOTO.sub("", body)
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", body) if s.strip()]
    sentences = [s for s in sentences if len(s.split()) >= 3] or sentences or [body.strip()]
    return [f"{speaker}: {s}" if speaker else s for s in [*sentences, *captions]]


def normalised(values: list[float]) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


def collect(data: Path, backend: str, depth: int) -> dict[str, Any]:
    """Ingest every conversation once; per question the system's top ``depth`` (memory
    index, score) and the vectors the signals need."""
    from memos_core import MemOS, MemOSConfig
    from memos_core.retrieval.filters import SEARCHABLE_STATES, build_filter

    samples = json.loads(data.read_text())
    convs: dict[str, dict[str, Any]] = {}
    questions: list[dict[str, Any]] = []
    skipped = 0
    with tempfile.TemporaryDirectory() as tmp, MemOS(
        Path(tmp) / "d", embedder=new_embedder("minilm", backend), config=MemOSConfig(show_progress=False),
    ) as mos:
        for sample in samples:
            user = sample["sample_id"]
            items = turns_of(sample)
            cubes = mos.add_many(items, user_id=user)
            last = max((i["occurred_at"] for i in items if i["occurred_at"]), default=None)
            if last is not None:  # relative query dates count back from the last session
                mos.retriever.now = lambda last=last: last
            row = {c.id: i for i, c in enumerate(cubes)}
            dia = [c.metadata["dia_id"] for c in cubes]
            split = [pieces(c.text) for c in cubes]
            owner = np.array([i for i, p in enumerate(split) for _ in p])
            convs[user] = {
                "dia": dia, "turn": mos.embedder.embed([c.text for c in cubes]),
                "sentence": mos.embedder.embed([s for p in split for s in p]), "owner": owner,
            }
            flt = build_filter((user,), states=SEARCHABLE_STATES)
            for qa in sample["qa"]:
                if qa.get("category") not in CATEGORIES:
                    continue
                evidence = [e for e in normalise_evidence(qa.get("evidence", [])) if e in dia]
                if not evidence:
                    skipped += 1
                    continue
                q = str(qa["question"])
                hits = mos.search(q, user_id=user, k=depth, record_usage=False)
                questions.append({
                    "user": user, "category": qa["category"], "evidence": evidence,
                    "hits": [(row[h.id], h.score) for h in hits],
                    "query": mos.embedder.embed([mos.retriever.dense_text(q, flt)])[0],
                })
    return {"convs": convs, "questions": questions, "skipped": skipped,
            "memories": sum(len(c["dia"]) for c in convs.values()),
            "sentences": sum(len(c["owner"]) for c in convs.values())}


def signal(name: str, conv: dict[str, Any], q: dict[str, Any]) -> np.ndarray:
    """One score per memory of the conversation."""
    if name == "rocchio":
        top = [i for i, _ in q["hits"][:3]]
        vec = q["query"] + conv["turn"][top].mean(axis=0)
        return np.asarray(conv["turn"] @ (vec / np.linalg.norm(vec)))
    best = np.full(len(conv["dia"]), -1.0)
    np.maximum.at(best, conv["owner"], conv["sentence"] @ q["query"])
    return best + conv["turn"] @ q["query"] if name == "sentences+turn" else best


def replay(data: dict[str, Any], signals: list[np.ndarray] | None, weight: float, rerank: int,
           extra: int) -> dict[str, dict[str, float]]:
    """Recall with ``signals`` (one array per question, :func:`signal`) mixed in at
    ``weight``; None replays the system alone."""
    rows: list[tuple[int, dict[str, float]]] = []
    for n, q in enumerate(data["questions"]):
        conv = data["convs"][q["user"]]
        ids = [i for i, _ in q["hits"][:rerank]]
        ranked = list(ids)
        if signals is not None and weight and ids:
            values = signals[n]
            system = [s for _, s in q["hits"][:rerank]]
            for i in np.argsort(-values)[:extra]:
                if int(i) not in ids:
                    ids.append(int(i))
                    system.append(min(system))
            mixed = normalised(system) + weight * normalised([values[i] for i in ids])
            ranked = [ids[j] for j in np.argsort(-mixed, kind="stable")]
        ranked += [i for i, _ in q["hits"][rerank:] if i not in ranked]
        rows.append((q["category"], score([conv["dia"][i] for i in ranked], q["evidence"])))
    return aggregate(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="LoCoMo JSON")
    p.add_argument("--backend", default="onnx", help="torch, onnx, onnx+bf16, bf16 or onnx-int8")
    p.add_argument("--depth", type=int, default=40, help="system hits kept per question")
    p.add_argument("--rerank", type=int, default=30, help="of which the replay re-orders")
    p.add_argument("--extra", type=int, default=10, help="signal's own top memories added")
    p.add_argument("--weights", default="0.1,0.2,0.3,0.5")
    p.add_argument("--signals", default=",".join(SIGNALS))
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    data = collect(args.data, args.backend, args.depth)
    weights = [float(w) for w in args.weights.split(",")]
    tables = {"system (replayed)": replay(data, None, 0.0, args.rerank, args.extra)}
    for name in args.signals.split(","):
        if name not in SIGNALS:
            raise SystemExit(f"unknown signal {name!r}: one of {', '.join(SIGNALS)}")
        values = [signal(name, data["convs"][q["user"]], q) for q in data["questions"]]
        for w in weights:
            tables[f"{name} {w}"] = replay(data, values, w, args.rerank, args.extra)
    cats = list(CATEGORIES.values())
    print(markdown_machine(machine_info()))
    print(f"\n{len(data['convs'])} conversations, {data['memories']} memories split into "
          f"{data['sentences']} sentences and captions, {len(data['questions'])} questions scored "
          f"({data['skipped']} without usable evidence); backend {args.backend}; the system's top "
          f"{args.depth}, top {args.rerank} re-ordered, {args.extra} extra candidates per signal\n")
    print("| replay | r@5 | r@10 | r@20 | all@10 | MRR | " + " | ".join(f"{c} r@10" for c in cats)
          + " |\n|" + "---|" * (6 + len(cats)))
    for label, t in tables.items():
        o = t["overall"]
        print(f"| {label} | {o['recall@5']:.3f} | {o['recall@10']:.3f} | {o['recall@20']:.3f} | "
              f"{o['all@10']:.3f} | {o['mrr']:.3f} | "
              + " | ".join(f"{t[c]['recall@10']:.3f}" for c in cats) + " |")
    if args.out:
        args.out.write_text(json.dumps({"machine": machine_info(), "args": {
            k: str(v) for k, v in vars(args).items()}, "memories": data["memories"],
            "sentences": data["sentences"], "tables": tables}, indent=2))


if __name__ == "__main__":
    main()
