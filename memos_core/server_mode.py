"""Server mode: ``MemOS("postgresql://user:password@host:port/database")``.

The vault (and, by default, the pgvector index) live in one PostgreSQL database that any number
of processes on any number of hosts open at once; there is no data-directory lock. What stays
per process lives in a local *cache directory* (``MemOSConfig.cache_dir``): KV-cache files,
LoRA adapters, a per-process ``edge`` index if one is asked for. Each process's derived state
follows the vault's change feed (:mod:`memos_core.store.feed`). Runbook: docs/scale_out.md.

Without ``cache_dir`` a process gets a temporary directory (``memos-cache-*`` in the temp
directory), removed at close. One whose process was killed (SIGKILL, the OOM killer) would
keep the memory text of its KV files and adapters for good, out of reach of every later
forget: so the process holds a lock in it while open (:meth:`DataDirLock.acquire_new`), and
every server-mode open and every forget (this process's, or another's as the change feed
brings it) removes the directories whose lock nobody holds (:func:`remove_dead_caches`).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from memos_core.config import MemOSConfig
from memos_core.errors import InvalidInputError, MemOSError, ServerUnavailableError
from memos_core.lock import (
    TEMPORARY_LOCK,
    DataDirLock,
    make_private_dir,
    remove_if_abandoned,
    remove_lock_last,
)
from memos_core.results import DerivedForm
from memos_core.validation import bad_char
from memos_core.vault.pg_url import hide_secrets
from memos_core.vault.postgres import PostgresVault, is_postgres_url, redact_url

__all__ = ["ServerParts", "check_pgvector", "check_url", "dead_cache_purger", "is_postgres_url",
           "open_server", "remove_dead_caches"]

#: The name of a temporary cache directory starts with it (in ``tempfile.gettempdir()``).
TEMP_CACHE_PREFIX = "memos-cache-"

logger = logging.getLogger("memos_core")


def check_url(url: str) -> str:
    """``url`` if it is a usable PostgreSQL URL, else :class:`InvalidInputError` saying why."""
    if not is_postgres_url(url):
        raise InvalidInputError(
            f"Not a PostgreSQL URL: {redact_url(str(url))!r}. Server mode takes "
            "postgresql://user:password@host:port/database (a data directory path is the "
            "embedded mode).")
    bad = bad_char(url)
    if bad is not None:  # the driver could not encode it (a byte that is not UTF-8)
        raise InvalidInputError(f"The PostgreSQL URL holds {bad}; write it in UTF-8 "
                                "(percent-encode other bytes: %FF).")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidInputError(f"Bad PostgreSQL URL {redact_url(url)!r}: {exc}.") from exc
    _check_userinfo(parts.netloc, parts.path)
    try:
        port = parts.port
    except ValueError as exc:
        if "could not be cast" not in str(exc):  # out of range
            raise InvalidInputError(f"The PostgreSQL URL {redact_url(url)!r} has a bad port: "
                                    f"{exc}.") from exc
        # Python's message quotes the port's text: with a '/', '?' or '#' in the password,
        # the password's end (nor is the URL echoed: see _check_userinfo)
        raise InvalidInputError(
            "The PostgreSQL URL has a bad port: not a number. A '/', '?' or '#' in the "
            "password must be percent-encoded (%2F, %3F, %23), or give the password in "
            "$PGPASSWORD or ~/.pgpass instead.") from None
    _check_libpq_reads(url)
    if not parts.hostname and "host=" not in parts.query:
        raise InvalidInputError(
            f"The PostgreSQL URL {redact_url(url)!r} names no host; write "
            "postgresql://user:password@host:port/database.")
    if port is not None and not 0 < port < 65536:
        raise InvalidInputError(f"The PostgreSQL URL {redact_url(url)!r} has a bad port {port}.")
    if not parts.path.strip("/"):
        raise InvalidInputError(
            f"The PostgreSQL URL {redact_url(url)!r} names no database; add /database_name.")
    return url


def _check_userinfo(netloc: str, path: str) -> None:
    """Refuse an unencoded ``@`` in the user name or password, without echoing either: libpq
    ends them at the first ``@`` and Python's ``urlsplit`` (and :func:`redact_url`) at the
    last, so libpq would take the rest of the password for the host name and print it in its
    error. An ``@`` after the host's ``/`` with none before it is a password that holds a
    ``/`` (libpq then reads its start as the port)."""
    if netloc.count("@") > 1 or ("@" not in netloc and "@" in path):
        raise InvalidInputError(
            "The PostgreSQL URL holds an '@' that does not end the user name and password: "
            "percent-encode an '@' in the password as %40 and a '/' as %2F "
            "(postgresql://user:p%40ss@host:port/database), or give the password in "
            "$PGPASSWORD or ~/.pgpass instead.")


def _check_libpq_reads(url: str) -> None:
    """Refuse what libpq would refuse to read (an unknown ``?parameter``, a bad ``%``
    escape) as bad input; its message quotes what it could not read, with the passwords
    hidden. Skipped without the driver (opening then says to install it)."""
    try:
        from psycopg import ProgrammingError
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        return
    try:
        conninfo_to_dict(url)
    except ProgrammingError as exc:
        raise InvalidInputError(
            f"The PostgreSQL URL {redact_url(url)!r} is not one libpq reads: "
            f"{hide_secrets(str(exc).strip(), url)}. Its query parameters are libpq's "
            "connection keywords (postgresql://host/db?sslmode=require&connect_timeout=10).")  \
            from None


def check_pgvector(url: str) -> None:
    """Make sure the ``vector`` extension is usable in the database: create it if it is
    available and not created yet; else raise :class:`MemOSError` saying what to do.

    Safe to run from many processes at once on a fresh database (a fleet of workers
    starting): the check and the creation are one transaction under the index schema's
    advisory lock, so one process creates the extension and the others find it."""
    import psycopg

    from memos_core.index.pgvector import SCHEMA_LOCK_KEY

    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            if _has_vector(conn):  # the usual case: no lock, no transaction
                return
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
                if _has_vector(conn):  # another process created it while this one waited
                    return
                _create_vector(conn, url)
    except psycopg.OperationalError as exc:
        raise ServerUnavailableError(
            f"Cannot reach the PostgreSQL server at {redact_url(url)}: "
            f"{hide_secrets(str(exc).strip(), url)}.") from exc


def _has_vector(conn: Any) -> bool:
    """Whether the ``vector`` extension is created in ``conn``'s database."""
    return conn.execute("SELECT 1 FROM pg_extension WHERE extname='vector'").fetchone() is not None


def _create_vector(conn: Any, url: str) -> None:
    """``CREATE EXTENSION vector`` in ``conn``'s open transaction, or :class:`MemOSError`
    saying what to do if the server lacks pgvector or this user may not create it."""
    import psycopg

    available = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name='vector'").fetchone()
    if not available:
        version_row = conn.execute("SHOW server_version_num").fetchone()
        major = int(version_row[0] if version_row else "0") // 10000
        raise MemOSError(
            f"The PostgreSQL server at {redact_url(url)} has no pgvector extension, which "
            "the server-mode index needs. Install it on the server (e.g. apt install "
            f"postgresql-{major}-pgvector, or build it from github.com/pgvector/pgvector), "
            "then run CREATE EXTENSION vector; in the database. Or keep the index "
            "elsewhere: MemOSConfig(index='qdrant', qdrant_url=...).")
    # A savepoint: whoever does not take the lock (an older memos-core, an administrator)
    # may still create it at the same moment, which this one then finds.
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateObject):
        if not _has_vector(conn):
            raise
    except psycopg.errors.InsufficientPrivilege as exc:
        raise MemOSError(
            f"pgvector is installed on {redact_url(url)} but not enabled in this database, "
            "and this user may not enable it. Ask an administrator to run "
            "CREATE EXTENSION vector; in the database (once).") from exc


@dataclass
class ServerParts:
    """What :func:`open_server` set up: the vault, the effective config and the cache dir."""

    vault: PostgresVault
    config: MemOSConfig
    cache_dir: Path
    _lock: DataDirLock | None = None
    _temporary: bool = False
    _closed: bool = field(default=False)

    def release(self) -> None:
        """Release the cache directory (remove it if it was a temporary one: before its lock
        is released, so that no other process's sweep removes it under this one)."""
        if self._closed:
            return
        self._closed = True
        if self._temporary:
            try:
                remove_lock_last(self.cache_dir)
            except OSError:  # what is left keeps its lock file: the next sweep removes it
                if self.cache_dir.exists():  # (gone already: a temp cleaner, say, is fine)
                    logger.warning("removing the temporary cache directory %s failed",
                                   self.cache_dir, exc_info=True)
        if self._lock is not None:
            self._lock.release()


def remove_dead_caches() -> list[Path]:
    """Remove the temporary cache directories of server-mode processes that died open: a
    ``memos-cache-*`` directory in ``tempfile.gettempdir()`` that this OS user owns and whose
    ``TEMPORARY.LOCK`` no process holds (:func:`memos_core.lock.remove_if_abandoned`). Their
    KV files and adapters may hold any memory's text, a forgotten one's too. Returns the
    directories removed. A live process's directory (its lock is held), one without that
    file (older versions kept no lock there; a ``cache_dir`` a user named; not memos-core's)
    and another user's are left alone; nothing waits for a lock. One that cannot be removed
    raises :class:`MemOSError` naming it, after the others were tried (its lock file stays:
    the next call tries again).

    Cheap when there is nothing to remove: one listing of the temp directory and one lock
    try per live process's directory."""
    removed: list[Path] = []
    failed: list[tuple[Path, OSError]] = []
    try:
        entries = list(os.scandir(tempfile.gettempdir()))
    except OSError:  # no temp directory to look in: no directory of ours there either
        return removed
    uid = os.getuid() if hasattr(os, "getuid") else None
    for entry in entries:
        if not entry.name.startswith(TEMP_CACHE_PREFIX):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or (
                    uid is not None and entry.stat(follow_symlinks=False).st_uid != uid):
                continue
            if remove_if_abandoned(Path(entry.path)):
                removed.append(Path(entry.path))
        except OSError as exc:
            failed.append((Path(entry.path), exc))
    if removed:
        logger.info("removed %d temporary cache directories of server-mode processes that "
                    "died without closing: %s", len(removed), ", ".join(map(str, removed)))
    if failed:
        path, error = failed[0]
        raise MemOSError(
            f"Could not remove {path}, the temporary cache directory of a server-mode process "
            f"that died without closing ({error.strerror or error}); its KV files and adapters "
            "may hold the text of forgotten memories. Remove it (rm -r), or fix its "
            "permissions: the next forget tries again.") from error
    return removed


def dead_cache_purger(memory_id: str) -> Callable[[], list[DerivedForm]]:
    """The forget purger (:data:`memos_core.store.DerivedPurger`) of server mode: after the
    tombstone, :func:`remove_dead_caches`. Which memories a dead process's files held is
    unknown, so whichever is forgotten removes them all; the receipt lists none of them."""
    def finish() -> list[DerivedForm]:
        remove_dead_caches()
        return []
    return finish


def _index_kinds() -> tuple[str, ...]:
    from memos_core import index

    return tuple(getattr(index, "KINDS", ("edge", "qdrant")))


def open_server(url: str, config: MemOSConfig) -> ServerParts:
    """Validate ``url`` and ``config`` for server mode, open the vault and the cache dir.

    The index: a config that leaves ``index`` at its default gets the pgvector index in the
    same database; ``index='qdrant'`` with ``qdrant_url`` a shared Qdrant server;
    ``index='edge'`` (explicitly) a per-process index in the cache directory, rebuilt from the
    vault at every open and kept in step by the change feed (for tests and single hosts).
    """
    check_url(url)
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        raise MemOSError(f"Server mode needs the PostgreSQL driver ({exc}); install it with "
                         "pip install 'memos-core[server]'.") from None
    updates: dict[str, Any] = {}
    kinds = _index_kinds()
    if "index" not in config.model_fields_set and "pgvector" in kinds:
        updates["index"] = "pgvector"
    if (updates.get("index") or config.index) == "pgvector" and getattr(config, "index_url", None) is None:
        updates["index_url"] = url
    if config.index == "qdrant" and config.qdrant_url is None:
        raise InvalidInputError(
            "Server mode with index='qdrant' needs qdrant_url (a Qdrant server every process "
            "shares); a local qdrant-client index would be one per process.")
    if updates:
        config = config.model_copy(update=updates)
    vault = PostgresVault(url, pool_size=config.pool_size, cube_cache=config.cube_cache)
    try:
        vault.prune_changes(config.feed_retention_s)
        if config.index == "pgvector":
            check_pgvector(check_url(getattr(config, "index_url", None) or url))
        lock: DataDirLock | None = None
        if config.cache_dir is not None:
            cache_dir = Path(config.cache_dir).expanduser()
            make_private_dir(cache_dir)
            lock = DataDirLock(cache_dir)
            lock.acquire()  # one process per cache directory (its files are per process)
            temporary = False
        else:
            cache_dir = Path(tempfile.mkdtemp(prefix=TEMP_CACHE_PREFIX))
            temporary = True
            lock = DataDirLock(cache_dir, TEMPORARY_LOCK)
            try:
                lock.acquire_new()  # held while open: sweeps tell it from a dead one's
            except BaseException:
                shutil.rmtree(cache_dir, ignore_errors=True)
                raise
    except BaseException:
        vault.close()
        raise
    try:
        remove_dead_caches()
    except MemOSError:  # not this open's business; every forget tries again
        logger.warning("removing the cache directories of dead processes failed",
                       exc_info=True)
    return ServerParts(vault, config, cache_dir, lock, temporary)

