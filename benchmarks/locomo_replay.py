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
- ``speaker-dense`` / ``speaker-sentences``: the dense cosine (of the turn, of its best
  sentence) of the turns of the one speaker the question names, nothing for the other
  turns; a question that names no speaker, or two, keeps the system's order. Its extra
  candidates are that speaker's best turns, whether or not the system found them.
- ``soft-words``: a memory scores, for each content word of the question (stop words and
  the speakers' names left out), the best MiniLM cosine between that word alone and a word
  of the memory's body (cosines below 0.4 count 0), summed over the question's words.
  MiniLM's word-level knowledge ("kickboxing" near "martial") without the rest of the turn.

Before the signals it prints the ceiling of re-ordering: recall if the system's top N were
put in the best order (its evidence first), for N = 10, 20, 30 and ``--depth``.

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

SIGNALS = ("sentences", "sentences+turn", "rocchio", "speaker-dense", "speaker-sentences",
           "soft-words")
#: a word's cosine to a question word below this counts 0 in ``soft-words``
SOFT_FLOOR = 0.4
_WORD = re.compile(r"[a-z]+")
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


def content_words(text: str, leave_out: set[str] = frozenset()) -> list[str]:
    """Lower-cased words of three letters or more, stop words and ``leave_out`` dropped,
    in order, each once."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return list(dict.fromkeys(w for w in _WORD.findall(text.lower()) if len(w) >= 3
                              and w not in ENGLISH_STOP_WORDS and w not in leave_out))


def normalised(values: list[float]) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


def collect(data: Path, backend: str, depth: int) -> dict[str, Any]:
    """Ingest every conversation once; per question the system's top ``depth`` (memory
    index, score) and the vectors the signals need."""
    from memos_core import MemOS, MemOSConfig
    from memos_core.retrieval.filters import SEARCHABLE_STATES, build_filter
    from memos_core.retrieval.rerank import named_speaker, speaker_of
    from memos_core.retrieval.voice import body_of

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
            speakers = [speaker_of(c.text) or "" for c in cubes]
            names = {w for s in speakers for w in s.lower().split()}
            convs[user] = {
                "dia": dia, "turn": mos.embedder.embed([c.text for c in cubes]),
                "sentence": mos.embedder.embed([s for p in split for s in p]), "owner": owner,
                "speaker": np.array(speakers), "names": names,
                "words": [content_words(body_of(c.text)) for c in cubes],
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
                    "named": named_speaker(q, set(speakers) - {""}),
                    "words": content_words(q, names),
                })
        vocab = sorted({w for c in convs.values() for ws in c["words"] for w in ws}
                       | {w for q in questions for w in q["words"]})
        word_vectors = mos.embedder.embed(vocab)
    return {"vocab": {w: i for i, w in enumerate(vocab)}, "word_vectors": word_vectors,"convs": convs, "questions": questions, "skipped": skipped,
            "memories": sum(len(c["dia"]) for c in convs.values()),
            "sentences": sum(len(c["owner"]) for c in convs.values())}


def signal(name: str, data: dict[str, Any], q: dict[str, Any]) -> np.ndarray | None:
    """One score per memory of the question's conversation; None keeps the system's order."""
    conv = data["convs"][q["user"]]
    if name == "soft-words":
        vocab, vectors = data["vocab"], data["word_vectors"]
        if not q["words"]:
            return None
        sim = vectors[[vocab[w] for w in q["words"]]] @ vectors.T
        sim[sim < SOFT_FLOOR] = 0.0
        return np.array([sim[:, [vocab[w] for w in ws]].max(axis=1).sum() if ws else 0.0
                         for ws in conv["words"]])
    if name.startswith("speaker-"):
        if q["named"] is None:
            return None
        if name == "speaker-dense":
            values = conv["turn"] @ q["query"]
        else:
            values = np.full(len(conv["dia"]), -1.0)
            np.maximum.at(values, conv["owner"], conv["sentence"] @ q["query"])
        return np.where(conv["speaker"] == q["named"], values, -1.0)
    if name == "rocchio":
        top = [i for i, _ in q["hits"][:3]]
        vec = q["query"] + conv["turn"][top].mean(axis=0)
        return np.asarray(conv["turn"] @ (vec / np.linalg.norm(vec)))
    best = np.full(len(conv["dia"]), -1.0)
    np.maximum.at(best, conv["owner"], conv["sentence"] @ q["query"])
    return best + conv["turn"] @ q["query"] if name == "sentences+turn" else best


def ceiling(data: dict[str, Any], top: int) -> dict[str, dict[str, float]]:
    """Recall if the system's ``top`` hits were put in the best order (evidence first): what
    any re-ordering of them can reach."""
    rows: list[tuple[int, dict[str, float]]] = []
    for q in data["questions"]:
        dia = data["convs"][q["user"]]["dia"]
        found = [dia[i] for i, _ in q["hits"][:top]]
        wanted = set(q["evidence"])
        ranked = [d for d in found if d in wanted] + [d for d in found if d not in wanted]
        rows.append((q["category"], score(ranked, q["evidence"])))
    return aggregate(rows)


def replay(data: dict[str, Any], signals: list[np.ndarray | None] | None, weight: float,
           rerank: int, extra: int) -> dict[str, dict[str, float]]:
    """Recall with ``signals`` (one array per question, :func:`signal`) mixed in at
    ``weight``; None replays the system alone."""
    rows: list[tuple[int, dict[str, float]]] = []
    for n, q in enumerate(data["questions"]):
        conv = data["convs"][q["user"]]
        ids = [i for i, _ in q["hits"][:rerank]]
        ranked = list(ids)
        values = None if signals is None else signals[n]
        if values is not None and weight and ids:
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
    for top in sorted({10, 20, 30, args.depth}):
        tables[f"ceiling: top {top} in the best order"] = ceiling(data, top)
    for name in args.signals.split(","):
        if name not in SIGNALS:
            raise SystemExit(f"unknown signal {name!r}: one of {', '.join(SIGNALS)}")
        values = [signal(name, data, q) for q in data["questions"]]
        for w in weights:
            tables[f"{name} {w}"] = replay(data, values, w, args.rerank, args.extra)
    cats = list(CATEGORIES.values())
    print(markdown_machine(machine_info()))
    print(f"\n{len(data['convs'])} conversations, {data['memories']} memories split into "
          f"{data['sentences']} sentences and captions, {len(data['questions'])} questions scored "
          f"({data['skipped']} without usable evidence), {len(data['vocab'])} distinct content "
          f"words, {sum(q['named'] is not None for q in data['questions'])} questions name one "
          f"speaker; backend {args.backend}; the system's top "
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
