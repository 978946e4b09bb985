"""Parametric memory on SmolLM2: consolidate N invented facts into a LoRA adapter.

For N facts ("<Name>'s <thing> is <answer>.", invented names and answers, deterministic) it
stores them in a fresh MemOS, runs ``mos.consolidate`` (train, evaluate, gate) with the
default ``ParametricConfig`` (or the overrides given), then measures:

* ``recall``: greedy completion of each fact's cloze prompt contains the answer (raw text);
* ``controls`` / ``control_regressions``: control prompts the base model answers with
  confidence (>= 20 needed) whose first answer word changed under the adapter;
* ``train_s``: seconds of training (replay targets + optimisation loop);
* ``closed_book_accuracy``: ``MemOS.chat`` with the adapter active (the facts it holds are
  not put in the prompt: ``leave_out_held`` is on unless ``--set leave_out_held=false``) asked each fact in words the training never used (a paraphrase,
  e.g. "Which colour does X like best?"); ``closed_book_trained_form_accuracy``: asked the
  question form the training used ("What is X's favourite colour?");
* ``prompt_accuracy``: the base model asked the paraphrase with all N facts as prompt text
  (the plaintext wording of ``MemOS.chat``); ``plaintext_chat_accuracy``: ``MemOS.chat``
  with the adapter deactivated (search puts the top-5 facts in the prompt);
* ``prompt_tokens_per_query``: tokens prefilled per question by ``MemOS.chat`` with the
  adapter and without it (plaintext top-5);
* ``context_regressions``: the gate's in-context check (each question asked with the facts
  in the prompt: answers the base model gave and the adapted model lost);
  ``base_right_in_context`` / ``adapted_right_in_context``: how many each answered right
  that way.

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

from _machine import machine_info, markdown_machine

from memos_core import MemOS, MemOSConfig
from memos_core.chat import user_turn
from memos_core.cube import MemCube, Namespace
from memos_core.engine import engine_for
from memos_core.runtime import LocalModel
from memos_core.tiers.activation.compose import DEFAULT_INSTRUCTIONS
from memos_core.tiers.parametric import ParametricConfig, gate
from memos_core.tiers.parametric.data import question
from memos_core.tiers.parametric.evaluation import answer_recalled

_FIRST = ("Zorvin", "Mirela", "Quenby", "Dastra", "Fenwick", "Ilsabet", "Torvald", "Yaneth",
          "Brisco", "Odalys", "Kestrin", "Marnie", "Pellam", "Sunniva", "Vardo", "Elowen",
          "Grisha", "Thandor", "Lucasta", "Corwin")
_KINDS = (  # (statement part, paraphrased question, invented answers)
    ("cat is named", "What name does {n}'s cat have?",
     ("Pastel", "Biscuit", "Marzipan", "Juniper", "Clementine")),
    ("favourite colour is", "Which colour does {n} like best?",
     ("teal", "amber", "violet", "ochre", "magenta")),
    ("hometown is", "Which town does {n} come from?",
     ("Tromso", "Lisbon", "Bergen", "Tallinn", "Ghent")),
    ("brother is called", "What's the name of {n}'s brother?",
     ("Olek", "Rurik", "Anselm", "Casimir", "Leopold")),
    ("car is a", "What car does {n} drive?",
     ("Volvo", "Saab", "Skoda", "Tesla", "Fiat")),
)
USER = "bench"


def invented_facts(n: int) -> list[tuple[str, str, str]]:
    """``(statement, paraphrased question, answer)`` for ``n`` invented facts
    (deterministic, distinct up to n = 2000)."""
    facts = []
    for i in range(n):
        name = _FIRST[i % len(_FIRST)]
        if i >= len(_FIRST):
            name += f" {_FIRST[(i // len(_FIRST)) % len(_FIRST)]}"
        thing, asked, answers = _KINDS[i % len(_KINDS)]
        answer = answers[(i // len(_KINDS)) % len(answers)]
        facts.append((f"{name}'s {thing} {answer}.", asked.format(n=name), answer))
    return facts


def chat_accuracy(mos: MemOS, questions: list[tuple[str, str]]) -> tuple[float, float]:
    """Share of ``(question, answer)`` that ``mos.chat`` answers right, and mean prefilled
    tokens per question."""
    hits, tokens = 0, 0
    for q, a in questions:
        answer = mos.chat(q, user_id=USER, k=5, max_new_tokens=24)
        hits += answer_recalled(answer.text, a)
        tokens += answer.trace.prefill_tokens + answer.trace.prefix_tokens
    return hits / len(questions), tokens / len(questions)


def run(n: int, config: ParametricConfig) -> dict[str, Any]:
    facts = invented_facts(n)
    with tempfile.TemporaryDirectory() as tmp:
        mos = MemOS(Path(tmp) / "data", config=MemOSConfig(show_progress=False))
        try:
            model = LocalModel.default()
            mos.attach_model(model)
            ids = [mos.add(s, user_id=USER, type="fact").id for s, _, _ in facts]
            # The gate is opened so the adapter is kept and can be measured whatever its
            # numbers; the real gate's decision on them is computed below.
            opened = config.model_copy(update={"min_recall": 0.0,
                                               "max_control_regressions": 10**6,
                                               "max_context_regressions": 10**6})
            manifest = mos.consolidate(user_id=USER, memory_ids=ids, config=opened).manifest
            paraphrased = [(q, a) for _, q, a in facts]
            trained_form = [(question(s) or s, a) for s, _, a in facts]
            closed, adapter_tokens = chat_accuracy(mos, paraphrased)
            closed_trained, _ = chat_accuracy(mos, trained_form)
            engine_for(mos).parametric.deactivate(USER, reason="benchmark: plaintext baseline")
            plaintext, plaintext_tokens = chat_accuracy(mos, paraphrased)
            block = [MemCube(namespace=Namespace(user_id=USER), text=s) for s, _, _ in facts]
            system = {"role": "system", "content": DEFAULT_INSTRUCTIONS}
            prompt_hits = sum(answer_recalled(model.generate(
                None, [system, {"role": "user", "content": user_turn(q, block)}],
                max_new_tokens=24).text, a) for q, a in paraphrased)
        finally:
            mos.close()
    ev = manifest.evaluation
    base_right, adapted_right = ev.context_right or (0, 0)
    return {
        "facts": n, "recall": round(ev.recall, 4), "controls": ev.controls,
        "control_regressions": ev.control_regressions,
        "train_s": round(manifest.training.seconds, 1),
        "train_steps": manifest.training.steps,
        "closed_book_accuracy": round(closed, 4),
        "closed_book_trained_form_accuracy": round(closed_trained, 4),
        "prompt_accuracy": round(prompt_hits / n, 4),
        "plaintext_chat_accuracy": round(plaintext, 4),
        "prompt_tokens_per_query": {"adapter": round(adapter_tokens, 1),
                                    "plaintext": round(plaintext_tokens, 1)},
        "context_regressions": ev.context_regressions,
        "base_right_in_context": base_right,
        "adapted_right_in_context": adapted_right,
        "gate": gate(ev.recall, ev.control_regressions, config, controls=ev.controls,
                     context_regressions=ev.context_regressions).passed,
        "regressed": [c.prompt for c in ev.control_items if not c.kept],
        "config": json.loads(config.model_dump_json()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facts", type=int, default=20)
    parser.add_argument("--steps", type=int, default=None, help="override ParametricConfig.steps")
    parser.add_argument("--lr", type=float, default=None,
                        help="override ParametricConfig.learning_rate")
    parser.add_argument("--preset", default="default", choices=["default", "chat", "quick"],
                        help="ParametricConfig.preset to start from")
    parser.add_argument("--epochs", type=float, default=None,
                        help="override ParametricConfig.epochs")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override any ParametricConfig field (JSON value), repeatable")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("steps", args.steps), ("learning_rate", args.lr),
                                   ("epochs", args.epochs)) if v is not None}
    for item in args.set:
        field, _, value = item.partition("=")
        overrides[field] = json.loads(value)
    # closed-book accuracy needs chat to leave the held facts out (off by default since
    # 2026-12-06; every run saved before measured with it on); --set leave_out_held=false
    # measures the adapter beside the facts in the prompt
    overrides.setdefault("leave_out_held", True)
    config = ParametricConfig.preset(args.preset, **overrides)
    started = time.perf_counter()
    row = run(args.facts, config)
    info = machine_info()
    print(markdown_machine(info))
    print(f"config: {config.model_dump_json()}")
    tokens = row["prompt_tokens_per_query"]
    print("| facts | recall | control regressions | train s (steps) | closed-book acc "
          "(paraphrase / trained form) | prompt acc (all facts) | plaintext chat acc "
          "| gate | prompt tokens/query adapter vs plaintext |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {row['facts']} | {row['recall']:.2f} | {row['control_regressions']}/"
          f"{row['controls']} | {row['train_s']} ({row['train_steps']}) | "
          f"{row['closed_book_accuracy']:.2f} / {row['closed_book_trained_form_accuracy']:.2f}"
          f" | {row['prompt_accuracy']:.2f} | {row['plaintext_chat_accuracy']:.2f} | "
          f"{'pass' if row['gate'] else 'reject'} | {tokens['adapter']} vs "
          f"{tokens['plaintext']} |")
    if row["regressed"]:
        print("regressed controls: " + "; ".join(row["regressed"]))
    if config.check_in_context:
        print(f"answers lost with the facts in the prompt (gate): {row['context_regressions']} "
              f"of the {row['base_right_in_context']} the base model gave right that way; "
              f"the adapted model answered {row['adapted_right_in_context']} of "
              f"{row['facts']} right that way")
    print(f"total wall time {time.perf_counter() - started:.0f} s")
    if args.out is not None:
        row["machine"] = info
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(row, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
