"""Native async access to the PostgreSQL vault: psycopg ``AsyncConnectionPool`` per event loop.

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
on the sync path.

Pools: one ``AsyncConnectionPool`` per event loop that uses the vault, opened lazily on its
first call (an asyncio pool is bound to the loop it was opened in), at most the sync pool's
``max_size`` connections each. A pool whose loop was closed is dropped (its connections
closed) when another loop opens one. :meth:`AsyncPgVault.close` (called by
``PostgresVault.close``) closes every pool: through its own loop when that loop runs in
another thread (``MemOS.aclose`` runs ``close`` in a worker thread, so this is the usual
case), at once for a closed or idle loop; when ``close`` is called synchronously *inside* the
pool's own loop, the idle connections are closed at once and the pool's tasks stop when the
loop next runs (prefer ``await mos.aclose()`` in async code). :meth:`aclose` awaits it all.
"""

from __future__ import annotations

import asyncio
import builtins
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from memos_core.cube import MemCube
from memos_core.errors import ServerUnavailableError
from memos_core.vault import pg_sql
from memos_core.vault.base import CheckpointRecord, ItemKey, ListQuery, LogRow, Typed
from memos_core.vault.pg_integrations import CheckpointSQL, KeyedSQL, Loaded, LogSQL
from memos_core.vault.pg_sql import Program, arun, lock_step

__all__ = ["AsyncPgVault", "PgAsyncMixin"]

T = TypeVar("T")
#: pool.close() tasks scheduled from inside their own loop (kept referenced until done)
_CLOSING: set[asyncio.Task[None]] = set()


def _finish(pool: Any, *, refuse: bool = True) -> None:
    """Close a pool's idle connections now, without its loop (psycopg_pool keeps them in
    ``_pool``); with ``refuse`` the pool accepts no client afterwards."""
    if refuse:
        pool._closed = True  # no public way without the pool's loop
    idle = list(getattr(pool, "_pool", ()))
    getattr(pool, "_pool", []).clear()
    for conn in idle:
        conn.pgconn.finish()


def _close_pool(loop: asyncio.AbstractEventLoop, pool: Any, timeout: float = 5.0) -> None:
    """Close ``pool`` (opened in ``loop``) from synchronous code, whatever the loop's state."""
    try:
        current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        current = None
    if loop.is_closed():
        _finish(pool)
    elif loop.is_running():
        if current is loop:  # sync close() inside the pool's own loop: it cannot be awaited
            _finish(pool, refuse=False)  # pool.close() below stops its tasks
            task = loop.create_task(pool.close(timeout))
            _CLOSING.add(task)
            task.add_done_callback(_CLOSING.discard)
            return
        future = asyncio.run_coroutine_threadsafe(pool.close(timeout), loop)
        try:
            future.result(timeout + 1.0)
        except Exception:  # noqa: BLE001 - a stuck or dying loop: close what we can
            future.cancel()
            _finish(pool)
    elif current is None:
        loop.run_until_complete(pool.close(timeout))
    else:
        _finish(pool)


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
        self.timeout: float = float(getattr(sync_pool, "timeout", 10.0) or 10.0)
        self._pools: dict[asyncio.AbstractEventLoop, Any] = {}
        self._lock = threading.Lock()
        self._closed = False

    # -- pools ------------------------------------------------------------------------------

    @property
    def pools(self) -> int:
        """How many async pools are open (one per event loop that used the vault)."""
        with self._lock:
            return len(self._pools)

    def pool_stats(self) -> dict[str, int]:
        """psycopg_pool's counters of the running loop's pool ({} if it has none)."""
        with self._lock:
            pool = self._pools.get(asyncio.get_running_loop())
        return dict(pool.get_stats()) if pool is not None else {}

    def _pool(self) -> Any:
        from psycopg_pool import AsyncConnectionPool

        loop = asyncio.get_running_loop()
        with self._lock:
            if self._closed:
                raise ServerUnavailableError(
                    f"The vault at {self.where} is closed; open the MemOS again.")
            pool = self._pools.get(loop)
            if pool is not None:
                return pool
            dead = [old for old in self._pools if old.is_closed()]
            for old in dead:  # loops that ended without closing their pool
                _finish(self._pools.pop(old))
            pool = AsyncConnectionPool(
                self.url, min_size=1, max_size=self.max_size, open=False, timeout=self.timeout,
                check=AsyncConnectionPool.check_connection,
                kwargs={"autocommit": True, "application_name": "memos-vault-async"},
                name="memos-vault-async")
            self._pools[loop] = pool
            return pool

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[Any]:
        """A pooled async connection; a transaction on it commits when the block ends.
        Connection failures raise :class:`ServerUnavailableError` (as the sync path)."""
        import psycopg
        from psycopg_pool import PoolTimeout

        pool = self._pool()
        try:
            if pool.closed:
                await pool.open()
            async with pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as exc:
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
        """Close every pool (see the module docstring); later calls raise
        :class:`ServerUnavailableError`. Idempotent."""
        with self._lock:
            self._closed = True
            pools, self._pools = dict(self._pools), {}
        for loop, pool in pools.items():
            _close_pool(loop, pool)

    async def aclose(self) -> None:
        """Close every pool, awaiting the running loop's own. Idempotent."""
        loop = asyncio.get_running_loop()
        with self._lock:
            self._closed = True
            pools, self._pools = dict(self._pools), {}
        for owner, pool in pools.items():
            if owner is loop:
                await pool.close()
            else:
                await asyncio.to_thread(_close_pool, owner, pool)

    # -- the vault's reads ----------------------------------------------------------------

    def _overlay(self, cube: MemCube, stored: bool) -> MemCube:
        # this process's pending usage counts, as the sync reads lay them over; without the
        # sync path's flush exclusion (it would block the loop), so a read that races a
        # flush may count that batch twice or not at all: statistics only
        overlaid: MemCube = self._vault._usage.overlay(cube, stored)
        return overlaid

    async def get(self, memory_id: str) -> MemCube | None:
        return await self._run(pg_sql.get(memory_id, self._overlay))

    async def get_many(self, memory_ids: Sequence[str]) -> dict[str, MemCube]:
        return await self._run(pg_sql.get_many(memory_ids, self._overlay))

    async def list(self, query: ListQuery) -> builtins.list[MemCube]:
        where, params = self._vault._where(query)
        return await self._run(pg_sql.list_memories(query, where, params, self._overlay))

    async def history(self, memory_id: str) -> builtins.list[MemCube]:
        return await self._run(pg_sql.history(memory_id))

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
        """Close the vault from async code: the async pools awaited in their loops, then the
        sync pool and the LISTEN thread in a worker thread. Idempotent."""
        if self._async_view is not None:
            await self._async_view.aclose()
        await asyncio.to_thread(self.close)  # type: ignore[attr-defined]
