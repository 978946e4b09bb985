"""A zygote for the crash tests: loads the embedder once, then for each trial forks a child
that ingests into a data directory until the zygote SIGKILLs it after a random delay.

Protocol (one JSON object per line): the test writes ``{"dir", "seed", "delay"}`` to stdin;
the zygote answers ``{"trial": seed, "killed": bool, "status": int}`` on stdout once the
child is dead. ``"ready"`` is printed first. EOF on stdin ends the zygote.

The child appends to ``<dir>.log`` (beside the data directory, so it is not part of it), one
line per step, written with ``os.write`` on an ``O_APPEND`` descriptor (no buffering a kill
could lose): ``intent <op> <id or ->`` *before* a call, and after the call returned
``ack add <id> <version> <text>`` / ``ack update <id> <version> <text>`` /
``ack forget <id>``. An ack line is written only after the facade returned, i.e. after the
vault committed: every ack must survive the kill.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

USER = "crash-user"


def _log(fd: int, *parts: object) -> None:
    os.write(fd, (" ".join(str(p) for p in parts) + "\n").encode())


def _ingest(mos: object, rng: random.Random, fd: int, seed: int) -> None:
    """Random adds, bulk adds, updates and forgets until killed (at most 400 steps)."""
    live = [c.id for c in mos.list(user_id=USER, limit=10_000)]  # type: ignore[attr-defined]
    for step in range(400):
        op = rng.choices(["add", "add_many", "update", "forget"], [4, 3, 3, 1])[0]
        if op in ("update", "forget") and not live:
            op = "add"
        if op == "add":
            _log(fd, "intent add -")
            text = f"trial {seed} step {step} single note"
            cube = mos.add(text, user_id=USER, session_id=f"s{seed}")  # type: ignore[attr-defined]
            _log(fd, "ack add", cube.id, cube.version, text)
            live.append(cube.id)
        elif op == "add_many":
            _log(fd, "intent add_many -")
            texts = [f"trial {seed} step {step} bulk {i}" for i in range(rng.randint(2, 6))]
            for cube in mos.add_many(texts, user_id=USER):  # type: ignore[attr-defined]
                _log(fd, "ack add", cube.id, cube.version, cube.text)
                live.append(cube.id)
        elif op == "update":
            target = rng.choice(live)
            _log(fd, "intent update", target)
            text = f"trial {seed} step {step} revised"
            cube = mos.update(target, text, user_id=USER)  # type: ignore[attr-defined]
            _log(fd, "ack update", cube.id, cube.version, text)
        else:
            target = live.pop(rng.randrange(len(live)))
            _log(fd, "intent forget", target)
            mos.forget(target, user_id=USER)  # type: ignore[attr-defined]
            _log(fd, "ack forget", target)


def _child(embedder: object, job: dict) -> None:
    from memos_core import MemOS, MemOSConfig

    fd = os.open(job["dir"] + ".log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    rng = random.Random(job["seed"])
    mos = MemOS(job["dir"], config=MemOSConfig(show_progress=False), embedder=embedder)  # type: ignore[arg-type]
    _ingest(mos, rng, fd, job["seed"])
    mos.close()


def main() -> None:
    import torch

    torch.set_num_threads(1)
    from memos_core.embedding import default_embedder

    embedder = default_embedder()
    embedder.embed(["warm up the model before forking"])
    print("ready", flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the child: never returns into the zygote's loop
            code = 0
            try:
                _child(embedder, job)
            except BaseException as exc:  # noqa: BLE001 - reported through the exit status
                print(f"child error: {exc!r}", file=sys.stderr, flush=True)
                code = 1
            os._exit(code)
        time.sleep(job["delay"])
        killed = True
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            killed = False
        _, status = os.waitpid(pid, 0)
        killed = killed and os.WIFSIGNALED(status)
        code = 0 if killed else os.waitstatus_to_exitcode(status)
        print(json.dumps({"trial": job["seed"], "killed": killed, "status": code}), flush=True)


if __name__ == "__main__":
    main()
