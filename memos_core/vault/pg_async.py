"""Native async access to the PostgreSQL vault: a small pool of async connections per event loop.

:class:`AsyncPgVault` (``PostgresVault.native_async()``) runs the vault's statement programs
(:mod:`memos_core.vault.pg_sql`, :mod:`memos_core.vault.pg_integrations`) on async
connections, so an agent framework's async calls -- LangGraph's ``aget_tuple`` / ``aput`` /
``aput_writes`` on every step, its store's ``aget`` and key scans, LlamaIndex's async chat
store, ``MemOS.aget`` / ``alist`` / ``ahistory`` -- wait on the socket in the event loop
instead of occupying a worker thread each. The statements, their order, their transactions
and the row decoding are those of the sync path, by construction (the same programs):

* reads: ``get``, ``get_many``, ``list``, ``history``, ``change_head``, ``get_keyed``,
  ``list_keyed``, ``log_read`` / ``log_count`` / ``log_ids``, ``cp_get`` / ``cp_list`` /
  ``cp_blobs`` / ``cp_writes``;
* writes that change no memory: the checkpoint writes (a plain transaction, as the sync
  path) and the conversation-log writes (one transaction under the vault's advisory write
  lock, as :meth:`PostgresVault._tx`; they write no change-feed row, hence no NOTIFY).

Every write that changes a memory (adds, versions, keyed puts, forgets, grants: the audit
chain, the change feed, the index) stays on the sync path, run in a worker thread by the
callers (``asyncio.to_thread``).

Reads run in autocommit (each statement its own snapshot, as under the sync path's READ
COMMITTED transaction, without its COMMIT round trip); writes run in a transaction exactly as
on the sync path. Reads of memories lay this process's pending usage accesses over the stored
counters as the sync reads do; instead of the sync path's lock against a usage flush (which
would block the loop) they check the flush epoch around themselves and read again when a flush
moved a batch meanwhile (``PendingUsage.epoch``), so each batch is counted once.

Pools: one small pool per event loop that uses the vault (:class:`LoopPool`), made on its
first call, at most the sync pool's ``max_size`` connections, each opened on demand and kept
while idle. It runs no background task: psycopg_pool's ``AsyncConnectionPool`` keeps worker
tasks that swallow a cancellation while they run a pool task, so a loop that ended with such a
pool open (``asyncio.run(mos.aget(...))``) could hang in ``asyncio.run``'s shutdown. An idle
connection is checked (``SELECT 1``) before reuse when it sat idle for more than
``PostgresVault.CHECK_IDLE_S``; a call that lost its connection drops the pool's idle ones. A
pool whose loop was closed is dropped (its connections closed) when another loop makes one.
:meth:`AsyncPgVault.close` (called by ``PostgresVault.close``) closes every pool's idle
connections at once, from any thread; a connection in use is closed when its call returns it.
"""

from __future__ import annotations

import asyncio
import builtins
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

from memos_core.cube import MemCube
from memos_core.errors import InvalidInputError, ServerUnavailableError, first_line, pool_busy
from memos_core.vault import pg_sql
from memos_core.vault.base import (
    CheckpointRecord,
    ItemKey,
    ListQuery,
    LogRow,
    OnDamaged,
    Typed,
)
from memos_core.vault.pg_integrations import CheckpointSQL, KeyedSQL, Loaded, LogSQL
from memos_core.vault.pg_sql import Program, arun, lock_step

__all__ = ["AsyncPgVault", "PgAsyncMixin"]

T = TypeVar("T")
#: seconds a call waits for a free connection of its loop's pool, unless the sync pool says
DEFAULT_TIMEOUT = 10.0
_OVERLAY_TRIES = 5  # reads of one async call that may meet a usage flush before it reads in a thread
#: an idle connection used within this many seconds is reused without a check
CHECK_IDLE_S = 2.0


class PoolTimeout(Exception):
    """No connection of the loop's pool came free in time."""


class LoopPool:
    """The async connections of one event loop: at most ``max_size``, opened on demand, the
    idle ones reused (newest first). No background task; :meth:`close_now` may be called
    from any thread."""

    def __init__(self, url: str, max_size: int, timeout: float) -> None:
        self.url, self.max_size, self.timeout = url, max_size, timeout
        self._idle: deque[tuple[Any, float]] = deque()  # (connection, when it was last used)
        self._slots = asyncio.Semaphore(max_size)
        self._open = 0  # connections made and not closed (idle or in use)
        self._requests = 0  # calls served (checkouts)
        self.closed = False

    def stats(self) -> dict[str, int]:
        return {"pool_max": self.max_size, "pool_size": self._open,
                "pool_available": len(self._idle), "requests_num": self._requests}

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """A connection of this pool, returned to it when the block ends: kept when it is
        idle and healthy, closed when a call failed in a transaction or lost it."""
        try:
            await asyncio.wait_for(self._slots.acquire(), self.timeout)
        except asyncio.TimeoutError:
            raise PoolTimeout(f"no connection came free within {self.timeout} s "
                              f"({self.max_size} in use)") from None
        conn = None
        self._requests += 1
        try:
            conn = await self._checkout()
            yield conn
        except BaseException as exc:
            import psycopg

            if isinstance(exc, psycopg.OperationalError):
                self._drop_idle()  # the server went away: the idle ones are gone too
            raise
        finally:
            if conn is not None:
                self._checkin(conn)
            self._slots.release()

    async def _checkout(self) -> Any:
        import psycopg

        while self._idle:
            conn, used = self._idle.pop()
            if time.monotonic() - used < CHECK_IDLE_S:
                return conn
            try:
                await conn.execute("SELECT 1")
                return conn
            except psycopg.Error:
                self._close(conn)
        conn = await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, application_name="memos-vault-async")
        self._open += 1
        return conn

    def _checkin(self, conn: Any) -> None:
        from psycopg.pq import TransactionStatus

        healthy = not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE
        if healthy and not self.closed:
            self._idle.append((conn, time.monotonic()))
        else:  # a call cancelled or failed mid-statement, or the pool closed meanwhile
            self._close(conn)

    def _close(self, conn: Any) -> None:
        self._open -= 1
        conn.pgconn.finish()  # no await: usable from any thread, and on a closed loop

    def _drop_idle(self) -> None:
        while self._idle:
            try:
                conn, _ = self._idle.popleft()
            except IndexError:  # taken meanwhile by another thread's close_now
                break
            self._close(conn)

    def close_now(self) -> None:
        """Refuse new calls and close the idle connections (those in use: when returned)."""
        self.closed = True
        self._drop_idle()


@asynccontextmanager
async def _transaction(conn: Any) -> AsyncIterator[None]:
    """A transaction as on the sync pool: the connection out of autocommit (the async pool's
    connections are in autocommit, so a read costs no COMMIT round trip), committed when
    the block ends, rolled back on any exception."""
    await conn.set_autocommit(False)
    try:
        async with conn.transaction():
            yield
    finally:
        if not conn.closed:
            await conn.set_autocommit(True)


class AsyncPgVault:
    """The native async view of one :class:`~memos_core.vault.postgres.PostgresVault`.

    Its methods are the vault's methods of the same names, awaitable, with the same
    arguments, results and errors (see the module docstring for which). Safe to use from
    many tasks at once and from several event loops (a pool each).
    """

    def __init__(self, vault: Any) -> None:
        self._vault = vault
        self.url: str = vault.url
        self.where: str = vault.where
        sync_pool = getattr(vault, "_pool", None)
        #: most connections of each loop's pool (the sync pool's size)
        self.max_size: int = int(getattr(sync_pool, "max_size", 4) or 4)
        #: seconds a call waits for a connection
        self.timeout: float = float(getattr(sync_pool, "timeout", DEFAULT_TIMEOUT) or DEFAULT_TIMEOUT)
        self._pools: dict[asyncio.AbstractEventLoop, LoopPool] = {}
        self._lock = threading.Lock()
        self._closed = False

    # -- pools ------------------------------------------------------------------------------

    @property
    def pools(self) -> int:
        """How many async pools are open (one per event loop that used the vault)."""
        with self._lock:
            return len(self._pools)

    def pool_stats(self) -> dict[str, int]:
        """The running loop's pool: ``pool_max``, ``pool_size`` (open connections),
        ``pool_available`` (idle ones) and ``requests_num`` (calls served); {} if none."""
        with self._lock:
            pool = self._pools.get(asyncio.get_running_loop())
        return pool.stats() if pool is not None else {}

    def _pool(self) -> LoopPool:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._closed:
                raise ServerUnavailableError(
                    f"The vault at {self.where} is closed; open the MemOS again.")
            pool = self._pools.get(loop)
            if pool is not None:
                return pool
            for old in [old for old in self._pools if old.is_closed()]:
                self._pools.pop(old).close_now()  # loops that ended without closing their pool
            pool = self._pools[loop] = LoopPool(self.url, self.max_size, self.timeout)
            return pool

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[Any]:
        """A pooled async connection; a transaction on it commits when the block ends.
        Connection failures raise :class:`ServerUnavailableError` (as the sync path)."""
        import psycopg

        pool = self._pool()
        try:
            async with pool.connection() as conn:
                yield conn
        except psycopg.DataError as exc:  # e.g. a NUL character: nothing was written
            raise InvalidInputError(f"PostgreSQL refused a value: {first_line(exc)}") from exc
        except PoolTimeout as exc:
            raise pool_busy(self.where, exc) from exc
        except psycopg.OperationalError as exc:
            raise ServerUnavailableError(
                f"Lost the connection to the PostgreSQL server at {self.where} "
                f"({str(exc).strip()}); the call was not acknowledged. Retry once the server "
                "is back (the pool reconnects by itself)."
            ) from exc

    async def _run(self, program: Program[T]) -> T:
        """A read."""
        async with self._conn() as conn:
            return await arun(conn, program)

    async def _run_plain(self, program: Program[T]) -> T:
        """A write in a plain transaction (checkpoints)."""
        async with self._conn() as conn, _transaction(conn):
            return await arun(conn, program)

    async def _run_locked(self, program: Program[T]) -> T:
        """A write under the vault's write lock, as ``PostgresVault._tx`` (for writes that
        record no change-feed row: conversation logs)."""
        step = lock_step()
        async with self._conn() as conn, _transaction(conn):
            await conn.execute(step.sql, step.params)
            return await arun(conn, program)

    def close(self) -> None:
        """Close every pool (see the module docstring), from any thread; later calls raise
        :class:`ServerUnavailableError`. Idempotent."""
        with self._lock:
            self._closed = True
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close_now()

    async def aclose(self) -> None:
        """:meth:`close`, from async code. Idempotent."""
        self.close()

    # -- the vault's reads ----------------------------------------------------------------

    def _overlay(self, cube: MemCube, stored: bool) -> MemCube:
        # this process's pending usage counts, as the sync reads lay them over
        overlaid: MemCube = self._vault._usage.overlay(cube, stored)
        return overlaid

    async def _read_with_usage(self, program: Callable[[], Program[T]],
                               sync_read: Callable[[], T]) -> T:
        """A read whose usage counters get this process's pending accesses laid over, each
        batch seen exactly once. The sync reads hold off a flush while they read
        (``PendingUsage.reading``); that lock would block the loop, so this read checks the
        flush epoch around itself instead and reads again if a flush began or was under way
        (``PendingUsage.epoch``). A read that keeps meeting flushes is made by the sync path
        in a worker thread."""
        usage = self._vault._usage
        for attempt in range(_OVERLAY_TRIES):
            before = usage.epoch()
            if before[1]:  # a flush is writing: wait for it to end
                await asyncio.sleep(0.001 * (attempt + 1))
                continue
            result = await self._run(program())
            if usage.epoch() == before:
                return result
        return await asyncio.to_thread(sync_read)

    async def get(self, memory_id: str) -> MemCube | None:
        return await self._read_with_usage(lambda: pg_sql.get(memory_id, self._overlay, self._vault._cubes),
                                           lambda: self._vault.get(memory_id))

    async def get_many(self, memory_ids: Sequence[str], *,
                       on_damaged: OnDamaged | None = None) -> dict[str, MemCube]:
        return await self._read_with_usage(lambda: pg_sql.get_many(memory_ids, self._overlay, self._vault._cubes),
                                           lambda: self._vault.get_many(memory_ids))

    async def list(self, query: ListQuery, *,
                   on_damaged: OnDamaged | None = None) -> builtins.list[MemCube]:
        return await self._read_with_usage(lambda: pg_sql.list_memories(query, self._overlay),
                                           lambda: self._vault.list(query))

    async def history(self, memory_id: str) -> builtins.list[MemCube]:
        return await self._run(pg_sql.history(memory_id))

    async def get_version(self, memory_id: str, version: int) -> MemCube | None:
        return await self._run(pg_sql.get_version(memory_id, version))

    async def get_as_of(self, memory_id: str, when: datetime) -> MemCube | None:
        return await self._run(pg_sql.get_as_of(memory_id, when))

    async def change_head(self) -> int:
        return await self._run(pg_sql.change_head())

    # -- keyed items (reads) ------------------------------------------------------------------

    async def get_keyed(self, item: ItemKey) -> MemCube | None:
        return await self._run(KeyedSQL.get(item))

    async def list_keyed(self, user_id: str, prefix: Sequence[str] = (), *, limit: int = 1000,
                         offset: int = 0) -> builtins.list[tuple[ItemKey, str]]:
        return await self._run(KeyedSQL.list(user_id, prefix, limit=limit, offset=offset))

    # -- conversation logs ----------------------------------------------------------------------

    async def log_append(self, user_id: str, log_id: str, rows: Sequence[LogRow],
                         status: str) -> None:
        await self._run_locked(LogSQL.append(user_id, log_id, rows, status))

    async def log_read(self, user_id: str, log_id: str, status: str | None,
                       limit: int | None = None, offset: int = 0) -> builtins.list[LogRow]:
        return await self._run(LogSQL.read(user_id, log_id, status, limit, offset))

    async def log_count(self, user_id: str, log_id: str, status: str | None) -> int:
        return await self._run(LogSQL.count(user_id, log_id, status))

    async def log_ids(self, user_id: str) -> builtins.list[str]:
        return await self._run(LogSQL.ids(user_id))

    async def log_replace(self, user_id: str, log_id: str, rows: Sequence[LogRow], status: str,
                          clear: str | None) -> None:
        await self._run_locked(LogSQL.replace(user_id, log_id, rows, status, clear))

    async def log_delete(self, user_id: str, log_id: str,
                         status: str | None) -> builtins.list[LogRow]:
        return await self._run_locked(LogSQL.delete(user_id, log_id, status))

    async def log_delete_at(self, user_id: str, log_id: str, idx: int,
                            status: str | None) -> LogRow | None:
        return await self._run_locked(LogSQL.delete_at(user_id, log_id, idx, status))

    async def log_take_oldest(self, user_id: str, log_id: str, n: int, *,
                              archive: bool) -> builtins.list[LogRow]:
        return await self._run_locked(LogSQL.take_oldest(user_id, log_id, n, archive=archive))

    # -- thread checkpoints ---------------------------------------------------------------------

    async def cp_put(self, record: CheckpointRecord,
                     blobs: Sequence[tuple[str, str, Typed]]) -> None:
        await self._run_plain(CheckpointSQL.put(record, blobs))

    async def cp_get(self, thread_id: str, checkpoint_ns: str,
                     checkpoint_id: str | None) -> CheckpointRecord | None:
        return await self._run(CheckpointSQL.get(thread_id, checkpoint_ns, checkpoint_id))

    async def cp_list(self, thread_id: str | None = None, checkpoint_ns: str | None = None,
                      checkpoint_id: str | None = None, before: str | None = None,
                      limit: int | None = None) -> builtins.list[CheckpointRecord]:
        return await self._run(CheckpointSQL.list(thread_id, checkpoint_ns, checkpoint_id,
                                                  before, limit))

    async def cp_blobs(self, thread_id: str, checkpoint_ns: str,
                       versions: Mapping[str, str]) -> dict[str, Typed]:
        return await self._run(CheckpointSQL.blobs(thread_id, checkpoint_ns, versions))

    async def cp_parts(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str,
                       versions: Mapping[str, str]
                       ) -> tuple[dict[str, Typed], builtins.list[tuple[str, str, Typed]]]:
        """``(cp_blobs(...), cp_writes(...))`` of one checkpoint, on one connection."""
        return await self._run(CheckpointSQL.parts(thread_id, checkpoint_ns, checkpoint_id,
                                                   versions))

    async def cp_load(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str | None,
                      versions_of: Callable[[CheckpointRecord], Mapping[str, str]]
                      ) -> Loaded | None:
        """``cp_get`` and then :meth:`cp_parts` of the record found (``versions_of(record)``
        names its channel versions), on one connection: ``(record, blobs, writes)`` or None."""
        return await self._run(CheckpointSQL.load(thread_id, checkpoint_ns, checkpoint_id,
                                                  versions_of))

    async def cp_put_writes(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str,
                            task_id: str, task_path: str,
                            writes: Sequence[tuple[int, str, Typed]]) -> None:
        await self._run_plain(CheckpointSQL.put_writes(thread_id, checkpoint_ns, checkpoint_id,
                                                       task_id, task_path, writes))

    async def cp_writes(self, thread_id: str, checkpoint_ns: str,
                        checkpoint_id: str) -> builtins.list[tuple[str, str, Typed]]:
        return await self._run(CheckpointSQL.writes(thread_id, checkpoint_ns, checkpoint_id))

    async def cp_delete_thread(self, thread_id: str) -> None:
        await self._run_plain(CheckpointSQL.delete_thread(thread_id))

    async def cp_delete_runs(self, run_ids: Sequence[str]) -> None:
        await self._run_plain(CheckpointSQL.delete_runs(run_ids))

    async def cp_copy_thread(self, source: str, target: str) -> None:
        await self._run_plain(CheckpointSQL.copy_thread(source, target))


_CREATE = threading.Lock()


class PgAsyncMixin:
    """``native_async()`` of :class:`~memos_core.vault.postgres.PostgresVault`."""

    _async_view: AsyncPgVault | None = None

    def native_async(self) -> AsyncPgVault:
        """The native async view of this vault (created on first use; its pools open on
        their first call). Closed by the vault's ``close``."""
        if self._async_view is None:
            with _CREATE:
                if self._async_view is None:
                    self._async_view = AsyncPgVault(self)
        return self._async_view

    def _close_async(self) -> None:
        if self._async_view is not None:
            self._async_view.close()

    async def aclose(self) -> None:
        """Close the vault from async code: the async pools, then the sync pool and the LISTEN
        thread in a worker thread. Idempotent."""
        if self._async_view is not None:
            await self._async_view.aclose()
        await asyncio.to_thread(self.close)  # type: ignore[attr-defined]
