"""The PostgreSQL vault's cache of decoded memories (``pg_sql.CubeCache``), on a real server.

Two vault objects on one database stand for two processes. What is checked: a memory read
again unchanged is not decoded again; whatever another process changed -- text, rights,
state, a forget's scrub -- is read at once, before this process has seen the change feed;
each caller gets its own copy; the cache is bounded, can be turned off, and lets go of a
forgotten memory's text (its own forgets at once, another process's once the feed names it).
"""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from memos_core import MemOSConfig
from memos_core.cube import Governance, MemCube, Namespace, State, utcnow
from memos_core.errors import InvalidInputError
from memos_core.vault import Actor
from memos_core.vault import pg_sql
from memos_core.vault.postgres import PostgresVault

ALICE = Actor("alice", "agent-1", "cache test")


def _cube(text: str, **fields) -> MemCube:
    return MemCube(namespace=Namespace(user_id="alice"), text=text, **fields)


@pytest.fixture
def vaults(pg_url):
    """(this process's vault, another process's vault)."""
    opened = [PostgresVault(pg_url), PostgresVault(pg_url)]
    yield opened
    for v in opened:
        v.close()


@pytest.fixture
def decoded(monkeypatch):
    """The texts of the documents the vault's reads decode, in order."""
    seen: list[str] = []
    original = pg_sql.MemCube.model_validate_json

    def counting(doc, *args, **kwargs):
        cube = original(doc, *args, **kwargs)
        seen.append(cube.text)
        return cube

    monkeypatch.setattr(pg_sql.MemCube, "model_validate_json", counting)
    return seen


def _next(cube: MemCube, **changes) -> MemCube:
    return cube.model_copy(update={**changes, "version": cube.version + 1, "updated_at": utcnow()})


def test_an_unchanged_memory_is_not_decoded_again(vaults, decoded):
    mine, _ = vaults
    cubes = [_cube(f"note {i}") for i in range(3)]
    mine.insert(cubes, ALICE)
    first = mine.get_many([c.id for c in cubes])
    assert sorted(decoded) == ["note 0", "note 1", "note 2"]
    decoded.clear()
    again = mine.get_many([c.id for c in cubes])
    assert decoded == []
    assert again == first
    assert mine.get(cubes[1].id) == first[cubes[1].id]
    assert decoded == []


def test_another_processes_changes_are_read_at_once(vaults, decoded):
    mine, other = vaults
    cube = _cube("the bike is red")
    mine.insert([cube], ALICE)
    assert mine.get(cube.id).text == "the bike is red"

    # a new text, written by the other process; this one has not read the change feed
    other.put_version(_next(cube, text="the bike is blue"), cube.version, ALICE, "update")
    decoded.clear()
    assert mine.get(cube.id).text == "the bike is blue"
    assert decoded == ["the bike is blue"]

    # rights: a share is a new row version too
    current = other.get(cube.id)
    other.put_version(_next(current, governance=Governance(readers=("bo",))), current.version,
                      ALICE, "share:read")
    assert mine.get(cube.id).governance.readers == ("bo",)

    # a forget: the tombstone, then its scrub, which rewrites the row without a new version
    other.tombstone(cube.id, ALICE)
    seen = mine.get(cube.id)
    assert seen.state == State.DELETED and "bike" not in seen.text
    other.scrub_tombstone(cube.id)
    scrubbed = mine.get_many([cube.id])[cube.id]
    assert scrubbed.state == State.DELETED and "bike" not in scrubbed.model_dump_json()


def test_each_caller_gets_its_own_copy(vaults):
    mine, _ = vaults
    cube = _cube("with metadata", metadata={"source": {"pages": [1, 2]}})
    mine.insert([cube], ALICE)
    first = mine.get(cube.id)
    first.metadata["source"]["pages"].append(3)
    first.metadata["added"] = True
    assert mine.get(cube.id).metadata == {"source": {"pages": [1, 2]}}
    assert mine.get_many([cube.id])[cube.id].metadata == {"source": {"pages": [1, 2]}}
    bare = _cube("without metadata")  # an empty dict is a dict too
    mine.insert([bare], ALICE)
    mine.get(bare.id).metadata["added"] = True
    assert mine.get(bare.id).metadata == {}


def test_usage_counters_are_read_fresh_with_a_cached_document(vaults):
    mine, other = vaults
    cube = _cube("counted")
    mine.insert([cube], ALICE)
    assert mine.get(cube.id).usage.access_count == 0
    other.record_usage([cube.id], utcnow(), 600.0)
    other.flush_usage()
    assert mine.get(cube.id).usage.access_count == 1


def test_a_forgotten_memorys_text_leaves_the_cache(vaults):
    mine, other = vaults
    kept, forgotten = _cube("kept"), _cube("a secret")
    mine.insert([kept, forgotten], ALICE)
    mine.get_many([kept.id, forgotten.id])
    other.get_many([kept.id, forgotten.id])
    assert len(mine._cubes) == len(other._cubes) == 2

    mine.tombstone(forgotten.id, ALICE)
    mine.scrub_tombstone(forgotten.id)
    assert set(mine._cubes.known([kept.id, forgotten.id])) == {kept.id}
    # the other process lets go of it when its follower reads the change feed
    other.changes_since(0)
    assert other._cubes.known([kept.id, forgotten.id]) == {}
    assert "secret" not in other.get(forgotten.id).text


def test_a_read_in_flight_does_not_bring_back_what_a_write_dropped(vaults, pg_url):
    mine, other = vaults
    cube = _cube("a secret")
    mine.insert([cube], ALICE)
    for forget in (mine, other):  # this process's own forget, then another process's
        victim = _cube("another secret") if forget is other else cube
        if forget is other:
            mine.insert([victim], ALICE)
        program = pg_sql.read_current([victim.id], None, mine._cubes)
        step = next(program)  # the read began ...
        with psycopg.connect(pg_url) as conn:  # ... and read the row before the forget
            rows = conn.execute(step.sql, step.params).fetchall()
        forget.tombstone(victim.id, ALICE)
        forget.scrub_tombstone(victim.id)
        if forget is other:
            mine.changes_since(0)  # this process's follower reads the feed
        with pytest.raises(StopIteration) as done:
            program.send(rows)
        assert "secret" in done.value.value[0].text  # what it read, from before the forget
        assert mine._cubes.known([victim.id]) == {}  # but it did not keep it
        assert "secret" not in mine.get(victim.id).text


def test_the_cache_is_bounded_and_can_be_turned_off(pg_url, decoded):
    with pytest.raises(InvalidInputError, match="cube_cache"):
        PostgresVault(pg_url, cube_cache=-1)
    with pytest.raises(InvalidInputError, match="cube_cache"):
        PostgresVault(pg_url, cube_cache=True)
    small, off = PostgresVault(pg_url, cube_cache=2), PostgresVault(pg_url, cube_cache=0)
    try:
        cubes = [_cube(f"note {i}") for i in range(5)]
        small.insert(cubes, ALICE)
        ids = [c.id for c in cubes]
        assert len(small.get_many(ids)) == 5
        assert len(small._cubes) == 2
        decoded.clear()
        assert off.get_many(ids) == off.get_many(ids)
        assert len(decoded) == 10 and len(off._cubes) == 0
    finally:
        small.close()
        off.close()


def test_memos_sizes_its_vaults_cache_from_the_config(open_mos):
    assert open_mos().vault._cubes.size == MemOSConfig().cube_cache == 4096
    off = open_mos(cube_cache=0)
    memory = off.add("no cache here", user_id="alice")
    assert off.get(memory.id, user_id="alice").text == "no cache here"
    assert off.vault._cubes.size == 0 and len(off.vault._cubes) == 0


def test_the_native_async_reads_share_the_cache(vaults, decoded):
    mine, other = vaults
    cube = _cube("read from a loop")
    mine.insert([cube], ALICE)

    async def read() -> MemCube:
        return (await mine.native_async().get_many([cube.id]))[cube.id]

    first = asyncio.run(read())
    decoded.clear()
    assert mine.get(cube.id) == first and decoded == []
    other.put_version(_next(cube, text="changed"), cube.version, ALICE, "update")
    assert asyncio.run(read()).text == "changed"
