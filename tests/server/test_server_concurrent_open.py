"""Processes opening a fresh database at once (the first deploy of a worker fleet): each
creates what is missing -- the ``vector`` extension, the vault's tables, the index's -- or
finds it made by another, and every one opens. Real server, real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

WORKER = Path(__file__).with_name("open_worker.py")
WORKERS = 4
ROUNDS = 6  # fresh databases, each opened by every worker at the same moment


def _wait(done, what: str, procs: list[subprocess.Popen], timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not done():
        failed = [p.args for p in procs if p.poll() not in (None, 0)]
        assert not failed, f"a worker failed while {what}: {failed}"
        assert time.time() < deadline, f"workers did not finish {what} in time"
        time.sleep(0.05)


def test_workers_opening_a_fresh_database_at_once_all_open(pg_server, tmp_path):
    admin_url, _ = pg_server
    names = [f"t_fresh_open_{uuid.uuid4().hex[:8]}" for _ in range(ROUNDS)]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for name in names:  # no vector extension: the workers create it
            conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(admin_url)
    urls = [urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
            for name in names]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(tmp_path), *urls], env=env,
                              stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"w{i}.err", "w"))
             for i in range(WORKERS)]
    try:
        _wait(lambda: len(list(tmp_path.glob("ready-*"))) == WORKERS, "starting", procs)
        for n in range(ROUNDS):
            (tmp_path / f"go-{n}").touch()

            def reported(n: int = n) -> bool:
                outs = list(tmp_path.glob("out-*"))
                return len(outs) == WORKERS and all(
                    len(p.read_text().splitlines()) > n for p in outs)

            _wait(reported, f"opening database {n}", procs)
        for i, p in enumerate(procs):
            assert p.wait(timeout=60) == 0, (tmp_path / f"w{i}.err").read_text()[-3000:]
        lines = [line for p in sorted(tmp_path.glob("out-*")) for line in p.read_text().splitlines()]
        assert lines == ["ok"] * (WORKERS * ROUNDS), lines
        for url in urls:
            with psycopg.connect(url) as conn:
                assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'vector'"
                                    ).fetchone() == (1,)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
