"""Crash safety and concurrency.

* SIGKILL at random points of bulk ingestion (50 trials; a child forked from a zygote that
  holds the embedder, so a trial costs its own runtime, not an interpreter start). Each data
  directory takes 5 crashes in a row, so later kills also land in the recovery of the
  earlier ones. After each kill: ``PRAGMA integrity_check`` is ok, the audit chain verifies,
  every acknowledged write is there (adds with their text, updates at their version,
  forgets as tombstones), and the index agrees with the vault after reopening.
* Threads and asyncio tasks adding, updating and searching at once lose nothing and raise
  nothing.
* A second process opening the same data directory gets ``DataDirLockedError`` saying how
  to share.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memos_core import MemOS, MemOSConfig, State
from memos_core.retrieval.filters import INDEXED_STATES

WORKER = Path(__file__).with_name("crash_worker.py")
USER = "crash-user"
TRIALS, DIRS = 50, 10


@pytest.fixture(scope="module")
def zygote() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    yield proc
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=60)


def _crash(zygote: subprocess.Popen[str], data_dir: Path, seed: int, delay: float) -> dict[str, Any]:
    assert zygote.stdin is not None and zygote.stdout is not None
    zygote.stdin.write(json.dumps({"dir": str(data_dir), "seed": seed, "delay": delay}) + "\n")
    zygote.stdin.flush()
    return json.loads(zygote.stdout.readline())


def _expectations(log: Path) -> tuple[dict[tuple[str, int], str], set[str], set[str]]:
    """From the child's log: {(id, version): text} acknowledged, ids whose forget was
    acknowledged, ids a forget was attempted on (it may have committed before the kill)."""
    acked: dict[tuple[str, int], str] = {}
    forgot: set[str] = set()
    tried: set[str] = set()
    for line in (log.read_text() if log.exists() else "").splitlines():
        parts = line.split(" ", 4)
        if parts[:2] == ["intent", "forget"]:
            tried.add(parts[2])
        elif parts[0] == "ack" and parts[1] == "forget":
            forgot.add(parts[2])
        elif parts[0] == "ack" and len(parts) == 5:
            acked[(parts[2], int(parts[3]))] = parts[4]
    return acked, forgot, tried


def _check_after_crash(data_dir: Path, embedder: Any) -> list[str]:
    """Everything that is wrong with ``data_dir`` after a kill (empty if nothing)."""
    problems = []
    log = data_dir.with_name(data_dir.name + ".log")
    if not (data_dir / "vault.sqlite3").exists():  # killed before the vault was created
        return ["acknowledged writes but no vault"] if log.exists() and "ack" in log.read_text() else []
    with sqlite3.connect(data_dir / "vault.sqlite3") as db:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    db.close()
    if integrity != "ok":
        problems.append(f"integrity_check: {integrity}")
    acked, forgot, tried = _expectations(log)
    with MemOS(data_dir, config=MemOSConfig(show_progress=False), embedder=embedder) as mos:
        ok, message = mos.vault.verify_audit()
        if not ok:
            problems.append(message)
        for (mid, version), text in acked.items():
            history = mos.vault.history(mid)
            if len(history) < version:
                problems.append(f"lost: {mid} v{version}")
            elif history[-1].state is State.DELETED:
                if mid not in forgot | tried:
                    problems.append(f"{mid} deleted without a forget")
            elif history[version - 1].text != text:
                problems.append(f"{mid} v{version} text differs")
        for mid in forgot:
            cube = mos.vault.get(mid)
            if cube is None or cube.state is not State.DELETED:
                problems.append(f"forget of {mid} lost")
        wanted = {mid: v for mid, (v, state) in mos.vault.current_versions().items()
                  if state in INDEXED_STATES}
        if mos.index.versions() != wanted:
            problems.append("index disagrees with the vault after reopening")
    return problems


@pytest.mark.slow
def test_sigkill_during_ingestion_loses_no_acknowledged_write(zygote, tmp_path: Path) -> None:
    from memos_core.embedding import default_embedder

    embedder = default_embedder()
    rng = random.Random(20251121)
    failures: dict[int, list[str]] = {}
    killed = 0
    for trial in range(TRIALS):
        data_dir = tmp_path / f"d{trial % DIRS}"
        result = _crash(zygote, data_dir, trial, rng.uniform(0.05, 0.9))
        killed += result["killed"]
        if not result["killed"] and result["status"] != 0:
            failures[trial] = [f"child failed with status {result['status']}"]
            continue
        problems = _check_after_crash(data_dir, embedder)
        if problems:
            failures[trial] = problems
    assert not failures, failures
    assert killed >= TRIALS * 0.9, f"only {killed} of {TRIALS} children were killed mid-run"
    acked = sum(len(_expectations(tmp_path / f"d{i}.log")[0]) for i in range(DIRS))
    print(f"{TRIALS} trials, {killed} killed mid-run, {acked} acknowledged writes checked")
    assert acked > TRIALS, "the children acknowledged almost nothing: kills came too early"


def test_threads_and_tasks_at_once_lose_nothing(mos: MemOS) -> None:
    shared = mos.add("Shared counter note, version one.", user_id="u")
    errors: list[BaseException] = []
    added: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        try:
            mine = mos.add(f"worker {n} private note", user_id="u", session_id=f"w{n}")
            for i in range(8):
                mos.update(mine.id, f"worker {n} private note rev {i}", user_id="u")
                mos.update(shared.id, f"shared note touched by worker {n} ({i})", user_id="u")
                mos.search("private note", user_id="u", k=5)
                batch = mos.add_many([f"worker {n} bulk {i} {j}" for j in range(3)], user_id="u")
                with lock:
                    added.extend(c.id for c in batch)
            with lock:
                added.append(mine.id)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    async def tasks() -> list[Any]:
        async def one(n: int) -> str:
            cube = await mos.aadd(f"task {n} note", user_id="u")
            await mos.aupdate(cube.id, f"task {n} note, revised", user_id="u")
            await mos.asearch("task note", user_id="u", k=3)
            return cube.id
        return await asyncio.gather(*(one(n) for n in range(12)), return_exceptions=True)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    task_ids = asyncio.run(tasks())
    for t in threads:
        t.join()

    assert not errors and all(isinstance(x, str) for x in task_ids), (errors, task_ids)
    assert len(added) == 4 * (8 * 3 + 1)
    assert all(mos.get(mid, user_id="u").version >= 1 for mid in added + task_ids)
    assert all(mos.get(mid, user_id="u").version == 2 for mid in task_ids)
    assert mos.get(shared.id, user_id="u").version == 1 + 4 * 8
    assert [v.version for v in mos.history(shared.id, user_id="u")] == list(range(1, 34))
    wanted = {mid: v for mid, (v, state) in mos.vault.current_versions().items()}
    assert mos.index.versions() == wanted and mos.vault.verify_audit()[0]


def test_a_second_process_gets_a_clear_lock_error(mos: MemOS) -> None:
    code = (
        "import sys\n"
        "from memos_core import MemOS, DataDirLockedError\n"
        "try:\n"
        f"    MemOS({str(mos.data_dir)!r})\n"
        "except DataDirLockedError as exc:\n"
        "    print(exc); sys.exit(42)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 42, proc.stderr
    assert "already open" in proc.stdout and "one process at a time" in proc.stdout
    assert "postgresql://" in proc.stdout and "scale_out.md" in proc.stdout
    assert mos.add("still writable", user_id="u").version == 1


_KILLED_MID_FORGET = """
import os, signal, sys
from memos_core import MemOS, MemOSConfig
mos = MemOS(sys.argv[1], config=MemOSConfig(show_progress=False))
for i in range(20):
    mos.add(f"filler note {i} about the garden", user_id="dana")
memories = [mos.add(f"Dana's locker code is {code}", user_id="dana", tags=[f"tag-{code}"],
                    metadata={"note": f"meta-{code}"}) for code in sys.argv[2:]]
print(" ".join(m.id for m in memories), flush=True)
# the step right after the tombstones: the kill lands between the commit and the truncation
mos.vault.checkpoint = lambda: os.kill(os.getpid(), signal.SIGKILL)
mos.forget_many([m.id for m in memories], user_id="dana") if len(memories) > 1 \\
    else mos.forget(memories[0].id, user_id="dana")
"""


@pytest.mark.parametrize("codes", [["MARMOT9920"], ["OKAPI3141", "QUOKKA2718", "TAPIR1618"]])
def test_a_kill_between_the_tombstone_and_the_wal_truncation_leaves_no_text(
        tmp_path: Path, codes: list[str]) -> None:
    """forget and forget_many commit the tombstones, then truncate the vault's WAL, which
    still holds the pages with the text. A process killed in between left the text in
    vault.sqlite3-wal while the reopened store ran (until the next forget or close): the
    open now folds a WAL it finds into the file and truncates it."""
    data = tmp_path / "data"
    child = subprocess.run([sys.executable, "-c", _KILLED_MID_FORGET, str(data), *codes],
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == -9, child.stderr
    ids = child.stdout.split()
    markers = [m for code in codes for m in (code, f"tag-{code}", f"meta-{code}")]
    assert _files_holding(data, markers)  # the kill left them on disk (the WAL)

    mos = MemOS(data, config=MemOSConfig(show_progress=False))
    try:
        assert all(mos.vault.get(i).state is State.DELETED for i in ids)  # forgotten
        assert _files_holding(data, markers) == {}  # and gone while the store runs
        hits = mos.search("Dana's locker code", user_id="dana", k=50)
        assert hits and not {h.memory.id for h in hits} & set(ids)
    finally:
        mos.close()


def _files_holding(root: Path, needles: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in root.rglob("*"):
        if path.is_file():
            hits = [n for n in needles if n.encode() in path.read_bytes()]
            if hits:
                found[str(path.relative_to(root))] = hits
    return found
