"""One worker process of tests/server/test_multiprocess.py (run as a script).

    python mp_worker.py URL WORKER_ID SECONDS LOG

Opens ``MemOS(URL)`` and, for SECONDS, adds, updates, searches, shares and forgets as user
``u<WORKER_ID>``, sharing only with the next worker's user. Every *acknowledged* operation
(the call returned) is appended to LOG as one JSON line, flushed and fsynced before the next
call, so a SIGKILL loses at most the line of the call in flight. Calls that raise (the server
restarts under it) are logged as errors and not acknowledged. At the end it waits for the
others to stop writing, catches up with the change feed and logs whether its index agrees
with the vault.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORKERS = 4
WORDS = ("kayak", "garden", "violin", "harbour", "lantern", "meadow", "pepper", "orbit")


def main(url: str, wid: int, seconds: float, log_path: str) -> None:
    from memos_core import MemOS, MemOSConfig
    from memos_core.lifecycle import INDEXED_STATES

    me, partner = f"u{wid}", f"u{(wid + 1) % WORKERS}"
    log = open(log_path, "a", encoding="utf-8")

    def ack(**record: object) -> None:
        log.write(json.dumps(record) + "\n")
        log.flush()
        os.fsync(log.fileno())

    rng = random.Random(wid)
    mos = MemOS(url, config=MemOSConfig(show_progress=False))
    ack(op="ready", t=time.time())
    live: dict[str, tuple[int, str]] = {}  # my memories: id -> (version, text)
    deadline = time.time() + seconds
    n = 0
    while time.time() < deadline:
        n += 1
        roll = rng.random()
        try:
            if roll < 0.4 or len(live) < 3:
                text = f"w{wid} note {n}: the {rng.choice(WORDS)} token tok{wid}x{n}"
                cube = mos.add(text, user_id=me)
                live[cube.id] = (1, text)
                ack(op="add", id=cube.id, text=text, user=me, t=time.time())
            elif roll < 0.55:
                mid = rng.choice(list(live))
                text = f"w{wid} note {n}: updated {rng.choice(WORDS)} token tok{wid}x{n}"
                cube = mos.update(mid, text, user_id=me)
                live[mid] = (cube.version, text)
                ack(op="update", id=mid, version=cube.version, text=text, t=time.time())
            elif roll < 0.65:
                mid = rng.choice(list(live))
                cube = mos.share(mid, with_user_id=partner, user_id=me)
                live[mid] = (cube.version, live[mid][1])
                ack(op="share", id=mid, version=cube.version, to=partner, t=time.time())
            elif roll < 0.77:
                mid = rng.choice(list(live))
                mos.forget(mid, user_id=me)
                del live[mid]
                ack(op="forget", id=mid, t=time.time())
            else:
                source = rng.choice((wid, (wid - 1) % WORKERS))  # mine, or shared with me
                t0 = time.time()
                hits = mos.search(f"w{source} note {rng.choice(WORDS)}", user_id=me, k=8,
                                  record_usage=rng.random() < 0.5)
                ack(op="search", t0=t0, user=me,
                    hits=[[h.id, h.memory.namespace.user_id] for h in hits])
        except Exception as exc:  # noqa: BLE001 - the server restarted: not acknowledged
            ack(op="error", kind=type(exc).__name__, msg=str(exc)[:200], t=time.time())
            time.sleep(0.3)
    time.sleep(4.0)  # the others stop writing too (same deadline, give or take a call)
    for _ in range(20):
        try:
            mos.catch_up()
            wanted = {mid: v for mid, (v, state) in mos.vault.current_versions().items()
                      if state in INDEXED_STATES}
            have = mos.index.versions()
            bad = sorted(m for m in set(wanted) | set(have) if wanted.get(m) != have.get(m))
            ack(op="index_check", mismatched=bad, points=len(have), t=time.time())
            break
        except Exception as exc:  # noqa: BLE001
            ack(op="error", kind=type(exc).__name__, msg=str(exc)[:200], t=time.time())
            time.sleep(0.5)
    mos.close()
    ack(op="done", t=time.time())


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
