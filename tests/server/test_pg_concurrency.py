"""Concurrent writers from several processes on one PostgresVault: no lost update, a valid
audit chain, a gapless change feed. The vault alone (no embedder), real processes."""

from __future__ import annotations

import asyncio
import multiprocessing

import pytest

from memos_core.cube import MemCube, Namespace, utcnow
from memos_core.errors import ConflictError, ServerUnavailableError
from memos_core.vault import Actor
from memos_core.vault.postgres import PostgresVault

PROCESSES = 4
INCREMENTS = 25


def _increment(url: str, memory_id: str, worker: int) -> int:
    """Add 1 to the counter memory INCREMENTS times (read, write the next version, retry on
    conflict); returns how many conflicts it met."""
    vault = PostgresVault(url, pool_size=1)
    conflicts = 0
    try:
        done = 0
        while done < INCREMENTS:
            cube = vault.get(memory_id)
            assert cube is not None
            nxt = cube.model_copy(update={"text": str(int(cube.text) + 1),
                                          "version": cube.version + 1, "updated_at": utcnow()})
            try:
                vault.put_version(nxt, cube.version, Actor(f"w{worker}"), "update")
                done += 1
            except ConflictError:
                conflicts += 1
        vault.audit(Actor(f"w{worker}"), "export", details={"worker": worker})
    finally:
        vault.close()
    return conflicts


def test_no_lost_update_and_one_chain_across_processes(pg_url):
    vault = PostgresVault(pg_url)
    try:
        counter = MemCube(namespace=Namespace(user_id="alice"), text="0")
        vault.insert([counter], Actor("alice"))
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(PROCESSES) as pool:
            conflicts = pool.starmap(_increment, [(pg_url, counter.id, w) for w in range(PROCESSES)])
        final = vault.get(counter.id)
        assert final is not None and final.text == str(PROCESSES * INCREMENTS)  # none lost
        assert final.version == PROCESSES * INCREMENTS + 1
        assert [int(v.text) for v in vault.history(counter.id)] == list(range(final.version))
        records = vault.audit_log(limit=10_000)
        assert len(records) == 1 + PROCESSES * INCREMENTS + PROCESSES
        assert [r.seq for r in records] == list(range(1, len(records) + 1))
        assert vault.verify_audit() == (True, "audit chain intact")
        changes = vault.changes_since(0)
        assert [c.seq for c in changes] == list(range(1, len(changes) + 1))  # gapless
        assert len(changes) == final.version  # one per version written
        print(f"\n{PROCESSES} processes x {INCREMENTS} increments: {sum(conflicts)} conflicts retried")
    finally:
        vault.close()


def test_a_full_pool_is_not_reported_as_a_lost_server(pg_url):
    """Every pooled connection in use: the error says so (the server is fine), sync and
    async, instead of "Lost the connection to the PostgreSQL server"."""
    vault = PostgresVault(pg_url, pool_size=1, connect_timeout=1)
    view = vault.native_async()
    try:
        with vault._conn():  # the pool's one connection is taken
            with pytest.raises(ServerUnavailableError, match="No pooled connection") as busy:
                vault.get("0" * 32)
        assert "Lost the connection" not in str(busy.value)

        async def held() -> str:
            async with view._conn():  # the loop's pool's one connection is taken
                with pytest.raises(ServerUnavailableError, match="No pooled connection") as info:
                    await view.get("0" * 32)
            return str(info.value)

        assert "Lost the connection" not in asyncio.run(held())
    finally:
        vault.close()


def test_a_server_that_went_down_is_not_reported_as_a_full_pool():
    """The pool's wait for a connection also times out while the server is down: that is
    "Lost the connection", not advice to raise pool_size (none of its connections is in use
    by this process)."""
    from memos_core.testing.postgres import LocalPostgres
    from memos_core.vault.base import ListQuery

    with LocalPostgres() as server:
        vault = PostgresVault(server.url, pool_size=2, connect_timeout=1)
        try:
            assert vault.list(ListQuery(user_ids=("u",))) == []
            server.stop(mode="immediate")
            for _ in range(3):  # the first meets the dead connection, the next wait for one
                with pytest.raises(ServerUnavailableError, match="Lost the connection"):
                    vault.list(ListQuery(user_ids=("u",)))
        finally:
            vault.close()
