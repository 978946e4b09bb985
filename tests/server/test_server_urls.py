"""PostgreSQL URLs on the way in and in messages (real PostgreSQL; the CLI as a child
process): every form of password libpq takes stays out of errors and ``stats``; what libpq
would misread or refuse is bad input (exit status 2) before a connection is tried; an
unreachable pgvector index of an embedded store fails at once in one line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from memos_core import MemOS, MemOSConfig
from memos_core.errors import InvalidInputError, ServerUnavailableError
from memos_core.server_mode import check_url
from memos_core.vault.pg_url import hide_secrets
from memos_core.vault.postgres import PostgresVault, redact_url

SECRET = "s3cretPW"


def _memos(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    env.pop("MEMOS_DB_URL", None)
    return subprocess.run([sys.executable, "-m", "memos_core.cli", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def _free_port() -> int:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _with(url: str, *, netloc: str | None = None, query: str | None = None) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=netloc if netloc is not None else parts.netloc,
                                     query=query if query is not None else parts.query))


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://memos:s3cretPW@db:5432/memos", "postgresql://memos:***@db:5432/memos"),
    ("postgresql://memos@db:5432/memos?password=s3cretPW",
     "postgresql://memos@db:5432/memos?password=***"),
    ("postgresql://db/memos?user=memos&password=s3cretPW&sslpassword=s3cretPW&sslmode=require",
     "postgresql://db/memos?user=memos&password=***&sslpassword=***&sslmode=require"),
    ("postgres://db/memos?%70assword=s3cretPW", "postgres://db/memos?%70assword=***"),
    ("postgresql://memos:p@s3cretPW@db/memos", "postgresql://memos:***@db/memos"),
    ("postgresql://memos:pa/s3cretPW@db/memos", "postgresql://memos:***@db/memos"),
    ("host=db password=s3cretPW dbname=memos", "host=db password=*** dbname=memos"),
    ("host=db password='s3cret PW' dbname=memos", "host=db password=*** dbname=memos"),
    ("postgresql://memos@db/memos", "postgresql://memos@db/memos"),
])
def test_redact_url_hides_every_password_libpq_takes(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "s3cret" not in hide_secrets(f'invalid token: "{url}"', url)


def test_a_password_in_the_query_stays_out_of_errors_and_stats(pg_url: str) -> None:
    url = _with(pg_url, query=f"password={SECRET}")
    got = _memos("stats", "--json", "--user", "alice", "--db", url)
    assert got.returncode == 0, got.stderr
    stats = json.loads(got.stdout)
    assert SECRET not in got.stdout and stats["database"].endswith("?password=***")
    assert stats["vault"]["server"] == stats["database"]
    for bad in (_with(url, netloc=f"postgres@127.0.0.1:{_free_port()}"),  # nobody listens
                _with(url, query=f"password={SECRET}&sslpassword={SECRET}&bogusparam=1")):
        got = _memos("list", "--user", "alice", "--db", bad)
        assert got.returncode in (1, 2) and got.stderr.startswith("memos: error:"), got.stderr
        assert SECRET not in got.stderr and "Traceback" not in got.stderr, got.stderr


def test_an_unencoded_at_in_the_password_is_refused_without_echoing_it(pg_url: str) -> None:
    """libpq ends the password at the first '@' and took the rest for the host, which its
    error then named: the password's tail in the message."""
    host = urlsplit(pg_url).netloc.rsplit("@", 1)[-1]
    for netloc in (f"postgres:p@{SECRET}@{host}", f"postgres:pa/{SECRET}@{host}"):
        url = _with(pg_url, netloc=netloc)
        with pytest.raises(InvalidInputError, match="percent-encode") as caught:
            check_url(url)
        assert SECRET not in str(caught.value)
        got = _memos("list", "--user", "alice", "--db", url)
        assert got.returncode == 2, got.stderr
        assert SECRET not in got.stderr and "%40" in got.stderr, got.stderr


def test_what_libpq_cannot_read_is_bad_input(pg_url: str) -> None:
    """An unknown query parameter was "Could not set up the vault schema", exit status 1."""
    bogus = _with(pg_url, query="bogusparam=1")
    got = _memos("list", "--user", "alice", "--db", bogus)
    assert got.returncode == 2, got.stderr
    assert 'invalid URI query parameter: "bogusparam"' in got.stderr, got.stderr
    assert "vault schema" not in got.stderr
    with pytest.raises(InvalidInputError, match="bogusparam"):
        PostgresVault(bogus)  # the vault itself, without check_url
    host = urlsplit(pg_url).netloc.rsplit("@", 1)[-1]
    broken = _with(pg_url, netloc=f"postgres:{SECRET}%zz@{host}")  # libpq quotes the token
    for call in (check_url, PostgresVault):
        with pytest.raises(InvalidInputError, match="percent-encoded") as caught:
            call(broken)
        assert SECRET not in str(caught.value)


def test_an_embedded_store_with_an_unreachable_pgvector_index_fails_at_once(
        tmp_path: Path) -> None:
    """It waited 30 s for the pool, then printed psycopg_pool's PoolTimeout traceback."""
    index_url = f"postgresql://memos:{SECRET}@127.0.0.1:{_free_port()}/db"
    config = MemOSConfig(show_progress=False, index="pgvector", index_url=index_url)
    start = time.monotonic()
    with pytest.raises(ServerUnavailableError, match="pgvector index") as caught:
        MemOS(tmp_path / "d", config=config)
    assert time.monotonic() - start < 20  # not the pool's 30 s
    assert SECRET not in str(caught.value) and "memos:***@" in str(caught.value)
    got = _memos("list", "--data-dir", str(tmp_path / "d"), "--user", "alice",
                 "--index", "pgvector", "--index-url", index_url)
    assert got.returncode == 1, got.stderr
    assert got.stderr.startswith("memos: error: Cannot reach the PostgreSQL server of the "
                                 "pgvector index at postgresql://memos:***@"), got.stderr
    assert "Traceback" not in got.stderr and SECRET not in got.stderr, got.stderr
    bad = _memos("list", "--data-dir", str(tmp_path / "d"), "--user", "alice",
                 "--index", "pgvector", "--index-url", index_url + "?bogusparam=1")
    assert bad.returncode == 2 and "bogusparam" in bad.stderr, bad.stderr


def test_an_embedded_store_opens_its_pgvector_index(tmp_path: Path, pg_url: str) -> None:
    """The check before the pool leaves the working case working."""
    config = MemOSConfig(show_progress=False, index="pgvector", index_url=pg_url)
    with MemOS(tmp_path / "d", config=config) as mos:
        kayak = mos.add("The kayak is in the boathouse.", user_id="alice")
        assert mos.search("where is the kayak", user_id="alice")[0].id == kayak.id


def test_a_config_shows_no_password_in_its_repr_or_its_errors() -> None:
    """A config is printed in logs and tracebacks; pydantic quoted the whole input of a
    refused one (index_url included) and repr showed index_url as given."""
    url = f"postgresql://memos:{SECRET}@db.example/memos?sslpassword={SECRET}2"
    config = MemOSConfig(index="pgvector", index_url=url)
    assert config.index_url == url  # the value itself is kept
    assert SECRET not in repr(config) and SECRET not in str(config)
    with pytest.raises(ValueError) as refused:
        MemOSConfig(index="edge", index_url=url)
    assert "only index='pgvector' uses index_url" in str(refused.value)
    assert SECRET not in str(refused.value)
