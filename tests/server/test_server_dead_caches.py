"""The temporary cache directory of a server-mode process that was killed (real PostgreSQL,
real processes).

A process opened without ``cache_dir`` keeps its KV files and adapters, which hold memory
text, in ``memos-cache-*`` under the temp directory, removed at close. One SIGKILLed or
OOM-killed never closes: its directory stayed for good, and a later forget of a memory it
held left the text on disk (found by a probe). Now the process holds a lock there while
open; an open and every forget -- this process's, or another's as the change feed brings
it -- remove every such directory whose lock nobody holds, and never a live one's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("cache_worker.py")
MOS_DEFAULTS = {"listen": False}


@pytest.fixture
def tmp(tmp_path, monkeypatch) -> Path:
    """The temp directory of this test and of its worker processes (``TMPDIR``)."""
    path = tmp_path / "tmp"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


def _start(pg_url: str, tmp: Path, workdir: Path, text: str,
           kind: str) -> tuple[subprocess.Popen, dict[str, str]]:
    """A worker (cache_worker.py) that has added ``text`` and written a derived file holding
    it in its temporary cache directory under ``tmp``; returns it and its ``{"id", "cache"}``."""
    workdir.mkdir()
    info = workdir / "info.json"
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": os.pathsep.join(sys.path)}
    err = open(workdir / "stderr", "w")
    proc = subprocess.Popen([sys.executable, str(WORKER), pg_url, text, str(info), kind],
                            env=env, stdout=subprocess.DEVNULL, stderr=err)
    err.close()
    deadline = time.time() + 240
    while not info.exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError((workdir / "stderr").read_text()[-3000:])
        time.sleep(0.1)
    return proc, json.loads(info.read_text())


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)  # as the OOM killer does: no close, no atexit
    assert proc.wait(timeout=30) == -signal.SIGKILL


def _holding(root: Path, text: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


def test_a_killed_process_s_kv_blocks_go_when_another_host_forgets_the_memory(
        open_mos, pg_url, tmp, tmp_path, monkeypatch):
    """The reported case: a KV block holding the memory, its process killed; the forget comes
    from a process with another temp directory (another host), through the change feed."""
    pytest.importorskip("transformers")
    marker = "QUOKKA7Z9X31"
    a = open_mos()  # open before the kill: not its open's sweep, its follower removes it
    proc, info = _start(pg_url, tmp, tmp_path / "w", f"Dana's PIN is {marker}.", "kv")
    cache = Path(info["cache"])
    assert cache.parent == tmp and list((cache / "kv").glob("*.safetensors"))
    assert _holding(cache, marker)
    _kill(proc)
    assert cache.exists()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(elsewhere))
    b = open_mos()
    b.forget(info["id"], user_id="dana")
    assert cache.exists()  # b's sweeps look in its own temp directory
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))

    assert a.catch_up() >= 1
    assert not cache.exists()
    assert _holding(tmp, marker) == []
    assert a.data_dir.exists()  # a's own, live


def test_a_killed_process_s_cache_goes_at_a_forget_here_and_at_an_open(
        open_mos, pg_url, tmp, tmp_path):
    a = open_mos()
    proc, info = _start(pg_url, tmp, tmp_path / "w1", "Dana's locker code is LYNX4417.", "file")
    _kill(proc)
    assert _holding(tmp, "LYNX4417")
    receipt = a.forget(info["id"], user_id="dana")
    assert receipt.removed_from[0] == "vault"
    assert not Path(info["cache"]).exists() and _holding(tmp, "LYNX4417") == []
    assert a.data_dir.exists()

    proc, info = _start(pg_url, tmp, tmp_path / "w2", "Dana's bike lock is OTTER2290.", "file")
    _kill(proc)
    assert Path(info["cache"]).exists()
    open_mos()  # no forget: the open removes it
    assert not Path(info["cache"]).exists()


def test_a_live_process_s_cache_is_never_removed(open_mos, pg_url, tmp, tmp_path):
    from memos_core.server_mode import remove_dead_caches

    legacy = tmp / "memos-cache-legacy"  # no lock file: an older version's, or not ours
    legacy.mkdir()
    (legacy / "kv.bin").write_text("HERON5150")
    named = tmp / "memos-cache-named"  # a cache_dir a user chose: its LOCK is free once closed
    open_mos(cache_dir=named).close()
    a = open_mos()
    proc, info = _start(pg_url, tmp, tmp_path / "w", "Dana's alarm code is HERON5150.", "file")
    try:
        cache = Path(info["cache"])
        b = open_mos()  # an open sweeps
        note = a.add("Dana parks on level 3.", user_id="dana")
        a.forget(note.id, user_id="dana")  # a forget sweeps
        assert remove_dead_caches() == []
        assert cache.exists() and _holding(cache, "HERON5150")
        assert a.data_dir.exists() and b.data_dir.exists() and legacy.exists()
        assert (named / "LOCK").exists()
        (tmp_path / "w" / "stop").touch()
        assert proc.wait(timeout=120) == 0
        assert not cache.exists()  # its close removed it
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
