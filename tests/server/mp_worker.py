"""One worker process of tests/server/test_multiprocess.py (run as a script).

    python mp_worker.py URL WORKER_ID LOG

Opens ``MemOS(URL)``, logs ``ready`` and waits for the test's ``go`` file (beside LOG; it holds
the common deadline, epoch seconds). Until then it adds, updates, searches, shares and forgets
as user ``u<WORKER_ID>``, sharing only with the next worker's user. Every *acknowledged*
operation (the call returned) is appended to LOG as one JSON line, flushed and fsynced before
the next call, so a SIGKILL loses at most the line of the call in flight. Calls that raise
(the server restarts under it) are logged as errors and not acknowledged. Then it logs
``stopped``, waits until every other worker has stopped too (its log says so, or the test
left a ``killed-w<N>`` file), catches up with the change feed until every change it saw from
the others has had its index check (the follower's repair of writes whose writer died
between its vault commit and its index write) and logs whether its index agrees with the
vault.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORKERS = 4
#: MemOSConfig.index_repair_after_s of the workers (default 10 s; shorter keeps the test short)
REPAIR_AFTER_S = 4.0
WORDS = ("kayak", "garden", "violin", "harbour", "lantern", "meadow", "pepper", "orbit")


def _wait_for(done: Callable[[], bool], timeout: float) -> None:
    end = time.time() + timeout
    while not done():
        if time.time() > end:
            raise TimeoutError("the test or another worker did not signal in time")
        time.sleep(0.1)


def main(url: str, wid: int, log_path: str) -> None:
    from memos_core import MemOS, MemOSConfig
    from memos_core.lifecycle import INDEXED_STATES

    me, partner = f"u{wid}", f"u{(wid + 1) % WORKERS}"
    log = open(log_path, "a", encoding="utf-8")

    def ack(**record: object) -> None:
        log.write(json.dumps(record) + "\n")
        log.flush()
        os.fsync(log.fileno())

    rng = random.Random(wid)
    mos = MemOS(url, config=MemOSConfig(show_progress=False, index_repair_after_s=REPAIR_AFTER_S))
    ack(op="ready", t=time.time())
    ctl = Path(log_path).parent
    _wait_for(lambda: (ctl / "go").exists(), 600)  # the test renames it into place: complete
    deadline = float((ctl / "go").read_text())
    live: dict[str, tuple[int, str]] = {}  # my memories: id -> (version, text)
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
    ack(op="stopped", t=time.time())
    # every other worker has stopped writing too (or was killed): nothing is in flight
    others = [i for i in range(WORKERS) if i != wid]
    _wait_for(lambda: all((ctl / f"killed-w{i}").exists()
                          or '"op": "stopped"' in (ctl / f"w{i}.jsonl").read_text()
                          for i in others), 300)
    # Let the system's own repair run: catch up with the feed until every change this
    # process saw from the others has had its index check (REPAIR_AFTER_S after it was
    # seen) -- that is how the killed worker's committed-but-unindexed write gets indexed.
    follower = mos.store.follower
    give_up = time.time() + REPAIR_AFTER_S + 90
    while True:
        try:
            mos.catch_up()
            if follower.unchecked == 0 or time.time() > give_up:
                wanted = {mid: v for mid, (v, state) in mos.vault.current_versions().items()
                          if state in INDEXED_STATES}
                have = mos.index.versions()
                bad = sorted(m for m in set(wanted) | set(have) if wanted.get(m) != have.get(m))
                ack(op="index_check", mismatched=bad, points=len(have), repaired=follower.repaired,
                    unchecked=follower.unchecked, t=time.time())
                break
        except Exception as exc:  # noqa: BLE001
            ack(op="error", kind=type(exc).__name__, msg=str(exc)[:200], t=time.time())
        time.sleep(0.5)
    mos.close()
    ack(op="done", t=time.time())


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
