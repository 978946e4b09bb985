"""Parametric memory on SmolLM2: consolidate N invented facts into a LoRA adapter.

For N facts ("<Name>'s <thing> is <answer>.", invented names and answers, deterministic) it
stores them in a fresh MemOS, runs ``mos.consolidate`` (train, evaluate, gate) with the
default ``ParametricConfig`` (LoRA r=8 on q/v, replay of the base model's own completions),
then measures:

* ``recall``: greedy completion of each fact's cloze prompt contains the answer (raw text);
* ``controls`` / ``control_regressions``: control prompts (>= 20) whose first answer word
  changed under the adapter;
* ``train_s``: seconds of the optimisation loop;
* ``closed_book_accuracy``: the adapted model asked each question in chat form, with no fact
  in the prompt (answer contains the fact's answer);
* ``prompt_accuracy``: the base model asked the same questions with all N facts as prompt
  text (the plaintext wording of ``MemOS.chat``);
* prompt tokens saved per query: the tokens of that facts block (printed, not in the JSON).

    .venv/bin/python benchmarks/lora_consolidation.py --facts 20 --out results/lora_20.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine_info, markdown_machine  # noqa: E402

from memos_core import MemOS, MemOSConfig  # noqa: E402
from memos_core.chat import user_turn  # noqa: E402
from memos_core.cube import MemCube, Namespace  # noqa: E402
from memos_core.engine import engine_for  # noqa: E402
from memos_core.runtime import LocalModel  # noqa: E402
from memos_core.tiers.parametric import ParametricConfig, gate  # noqa: E402
from memos_core.tiers.parametric.evaluation import answer_recalled  # noqa: E402

_FIRST = ("Zorvin", "Mirela", "Quenby", "Dastra", "Fenwick", "Ilsabet", "Torvald", "Yaneth",
          "Brisco", "Odalys", "Kestrin", "Marnie", "Pellam", "Sunniva", "Vardo", "Elowen",
          "Grisha", "Thandor", "Lucasta", "Corwin")
_KINDS = (  # (statement part, question, invented answers)
    ("cat is named", "What is {n}'s cat named?",
     ("Pastel", "Biscuit", "Marzipan", "Juniper", "Clementine")),
    ("favourite colour is", "What is {n}'s favourite colour?",
     ("teal", "amber", "violet", "ochre", "magenta")),
    ("hometown is", "What is {n}'s hometown?",
     ("Tromso", "Lisbon", "Bergen", "Tallinn", "Ghent")),
    ("brother is called", "What is {n}'s brother called?",
     ("Olek", "Rurik", "Anselm", "Casimir", "Leopold")),
    ("car is a", "What car does {n} drive?",
     ("Volvo", "Saab", "Skoda", "Tesla", "Fiat")),
)


def invented_facts(n: int) -> list[tuple[str, str, str]]:
    """``(statement, question, answer)`` for ``n`` invented facts (deterministic, distinct
    up to n = 2000)."""
    facts = []
    for i in range(n):
        name = _FIRST[i % len(_FIRST)]
        if i >= len(_FIRST):
            name += f" {_FIRST[(i // len(_FIRST)) % len(_FIRST)]}"
        thing, question, answers = _KINDS[i % len(_KINDS)]
        answer = answers[(i // len(_KINDS)) % len(answers)]
        facts.append((f"{name}'s {thing} {answer}.", question.format(n=name), answer))
    return facts


def ask(model: LocalModel, content: str) -> str:
    return model.generate(None, [{"role": "user", "content": content}], max_new_tokens=16).text


def run(n: int, config: ParametricConfig) -> dict[str, Any]:
    facts = invented_facts(n)
    with tempfile.TemporaryDirectory() as tmp:
        mos = MemOS(Path(tmp) / "data", config=MemOSConfig(show_progress=False))
        try:
            model = LocalModel.default()
            mos.attach_model(model)
            ids = [mos.add(s, user_id="bench", type="fact").id for s, _, _ in facts]
            # The gate is opened so the adapter is kept and can be measured whatever its
            # numbers; the real gate's decision on them is computed below.
            opened = config.model_copy(update={"min_recall": 0.0,
                                               "max_control_regressions": 10**6})
            manifest = mos.consolidate(user_id="bench", memory_ids=ids, config=opened).manifest
            closed = engine_for(mos).parametric.model_for("bench")
            if closed is None:  # pragma: no cover - the open gate always passes
                raise RuntimeError("the adapter was not activated")
            block = [MemCube(namespace=Namespace(user_id="bench"), text=s) for s, _, _ in facts]
            closed_hits = sum(answer_recalled(ask(closed, q), a) for _, q, a in facts)
            prompt_hits = sum(answer_recalled(ask(model, user_turn(q, block)), a)
                              for _, q, a in facts)
            saved = (len(model.encode(user_turn(facts[0][1], block)))
                     - len(model.encode(facts[0][1])))
        finally:
            mos.close()
    ev = manifest.evaluation
    return {
        "facts": n, "recall": round(ev.recall, 4), "controls": ev.controls,
        "control_regressions": ev.control_regressions,
        "train_s": round(manifest.training.seconds, 1),
        "closed_book_accuracy": round(closed_hits / n, 4),
        "prompt_accuracy": round(prompt_hits / n, 4),
        "_gate": gate(ev.recall, ev.control_regressions, config).passed,
        "_tokens_saved": saved,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facts", type=int, default=20)
    parser.add_argument("--steps", type=int, default=None, help="override ParametricConfig.steps")
    parser.add_argument("--lr", type=float, default=None,
                        help="override ParametricConfig.learning_rate")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("steps", args.steps), ("learning_rate", args.lr))
                 if v is not None}
    config = ParametricConfig(**overrides)
    started = time.perf_counter()
    row = run(args.facts, config)
    info = machine_info()
    print(markdown_machine(info))
    print(f"config: {config.model_dump_json()}")
    print("| facts | recall | control regressions | train s | closed-book acc | prompt acc "
          "| gate | prompt tokens saved/query |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {row['facts']} | {row['recall']:.2f} | {row['control_regressions']}/"
          f"{row['controls']} | {row['train_s']} | {row['closed_book_accuracy']:.2f} | "
          f"{row['prompt_accuracy']:.2f} | {'pass' if row['_gate'] else 'reject'} | "
          f"{row['_tokens_saved']} |")
    print(f"total wall time {time.perf_counter() - started:.0f} s")
    if args.out is not None:
        result = {k: v for k, v in row.items() if not k.startswith("_")}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
