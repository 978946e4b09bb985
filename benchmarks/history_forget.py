"""What a forget costs a user with a long LangChain chat history.

``MemOSChatMessageHistory`` registers a forget hook that redacts the forgotten memory in
every history message of its owner that quotes it. This script fills one user's history
with ``--messages`` messages (``--per-session`` per session, short chat turns) and times
``MemOS.forget`` of a memory that ``--quoting`` of those messages quote, against the same
forget with no history hook on the store (the rest of forget's work). Each size is timed
``--repeat`` times (a fresh memory each time); the table gives the median. With
``--common`` the forgotten memory is said in the history's own words (its topics, "day",
"friend"): the vault's pre-filter then has to tell its quotes apart from messages that
share most of its words.

    .venv/bin/python benchmarks/history_forget.py
    .venv/bin/python benchmarks/history_forget.py --messages 1000,5000,20000 --repeat 5
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "integrations" / "langchain"))

from _machine import machine_info, markdown_machine  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage  # noqa: E402

from langchain_memos import MemOSChatMessageHistory  # noqa: E402
from memos_core import MemOS, MemOSConfig  # noqa: E402

TOPICS = ["hiking", "cooking", "chess", "sailing", "painting", "cycling", "jazz", "gardening"]


def fill(mos: MemOS, n: int, per_session: int) -> None:
    for start in range(0, n, per_session):
        history = MemOSChatMessageHistory(mos, user_id="ada", session_id=f"s{start // per_session}")
        batch = []
        for i in range(start, min(n, start + per_session)):
            topic = TOPICS[i % len(TOPICS)]
            batch.append(HumanMessage(f"On day {i} I went {topic} with friend {i % 37}.")
                         if i % 2 == 0 else AIMessage(f"Sounds great, {topic} on day {i - 1}!"))
        history.add_messages(batch)


def timed_forgets(mos: MemOS, repeat: int, quoting: int, common: bool = False) -> list[float]:
    out = []
    history = MemOSChatMessageHistory(mos, user_id="ada", session_id="quotes")
    for r in range(repeat):
        secret = (f"Ada went cooking and hiking with friend {r + 3} on day {900 + r}."
                  if common else
                  f"Ada's locker code is {4400 + r} and her bike lock is {7100 + r}.")
        memory = mos.add(secret, user_id="ada")
        if quoting:
            history.add_messages([AIMessage(f"Noted: {secret}") for _ in range(quoting)])
        start = time.perf_counter()
        mos.forget(memory.id, user_id="ada")
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", default="1000,5000,20000")
    parser.add_argument("--per-session", type=int, default=100)
    parser.add_argument("--quoting", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--common", action="store_true",
                        help="the forgotten memory uses the history's own words")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    sizes = [int(s) for s in args.messages.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        baseline_dir = Path(tmp) / "plain"
        with MemOS(baseline_dir, config=MemOSConfig(show_progress=False)) as mos:
            plain = timed_forgets(mos, args.repeat, 0, args.common)  # no history: no hook
        for n in sizes:
            with MemOS(Path(tmp) / f"h{n}", config=MemOSConfig(show_progress=False)) as mos:
                start = time.perf_counter()
                fill(mos, n, args.per_session)
                fill_s = time.perf_counter() - start
                times = timed_forgets(mos, args.repeat, args.quoting, args.common)
            rows.append({"messages": n, "fill_s": round(fill_s, 1),
                         "forget_ms_median": round(statistics.median(times) * 1000, 1),
                         "forget_ms_max": round(max(times) * 1000, 1)})
    print(markdown_machine(machine_info()))
    import memos_core

    print(f"memos_core from {Path(memos_core.__file__).parent}")
    words = "in the history's words" if args.common else "its own words"
    print(f"history of one user, {args.per_session} messages per session; each forget's memory "
          f"({words}) is quoted by {args.quoting} message(s); {args.repeat} forgets per size")
    print(f"forget without a history hook: median {statistics.median(plain) * 1000:.1f} ms\n")
    print("| history messages | forget ms (median) | forget ms (max) | fill s |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['messages']} | {row['forget_ms_median']} | {row['forget_ms_max']} | "
              f"{row['fill_s']} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_info(), "rows": rows,
                                         "plain_ms": [t * 1000 for t in plain]}, indent=1))


if __name__ == "__main__":
    main()
