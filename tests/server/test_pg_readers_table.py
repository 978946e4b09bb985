"""``memory_readers`` in the PostgreSQL vault (real PostgreSQL; schema migration 9): the
memories shared with each reader, keyed ``(reader, seq, id)``, kept by triggers on
``memories``, walked by a page of a reader's list (``pg_sql.list_page``).

What is checked: the plan of a page of a user's list, custom (``EXPLAIN ANALYZE``) and
generic (a prepared statement's), walks the ``(reader, seq)`` key in order, sorts none of
the memories shared with the user and (custom) reads about a page of them, with 400 shared;
the table holds exactly the ``(reader, seq, id)`` of every reader of every memory after an
insert, a new version that shares, revokes or keeps the readers, a forget, and the writes no
vault method makes (an update of ``seq``, a delete, a ``TRUNCATE``); a vault made at schema 8
(no table) gets it filled when opened -- by two processes at once too -- with the same lists,
and its later writes keep it right.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from memos_core.cube import MemCube, Namespace, utcnow
from memos_core.vault import Actor, ListQuery
from memos_core.vault import pg_sql
from memos_core.vault.pg_schema import SCHEMA_VERSION
from memos_core.vault.postgres import PostgresVault


def _cube(user: str, text: str, readers: tuple[str, ...] = ()) -> MemCube:
    c = MemCube(namespace=Namespace(user_id=user), text=text)
    if readers:
        c = c.model_copy(update={"governance": c.governance.model_copy(update={"readers": readers})})
    return c


def _shared(cube: MemCube, readers: tuple[str, ...]) -> MemCube:
    """The next version of ``cube`` with ``readers``."""
    return cube.model_copy(update={
        "version": cube.version + 1, "updated_at": utcnow(),
        "governance": cube.governance.model_copy(update={"readers": readers})})


@pytest.fixture
def vault(pg_url: str) -> Iterator[PostgresVault]:
    v = PostgresVault(pg_url)
    yield v
    v.close()


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def _reads_readers(node: dict[str, Any], *, through_limit: bool = True) -> bool:
    """``node`` reads ``memory_readers`` (unless ``through_limit``: other than under a
    ``Limit``)."""
    if node.get("Relation Name") == "memory_readers":
        return True
    if node["Node Type"] == "Limit" and not through_limit:
        return False
    return any(_reads_readers(c, through_limit=through_limit) for c in node.get("Plans", ()))


def _json_plan(conn: psycopg.Connection, sql: str, params: list[Any],
               generic: bool) -> dict[str, Any]:
    if not generic:
        return conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params).fetchone()[0][0]["Plan"]
    numbered = iter(range(1, len(params) + 1))
    text = re.sub("%s", lambda _: f"${next(numbered)}", sql)
    return conn.execute("EXPLAIN (GENERIC_PLAN, FORMAT JSON) " + text).fetchone()[0][0]["Plan"]


def test_a_page_walks_the_memories_shared_with_the_user_in_order(vault, pg_url):
    """Before: the memories shared with the user were found through the GIN index on
    ``readers`` (a Bitmap Heap Scan of all of them) and sorted, on every page."""
    vault.insert([_cube("alice", f"mine {i}") for i in range(30)], Actor("alice"))
    for start in range(0, 400, 100):
        vault.insert([_cube("bob", f"shared {i}", ("alice", "carol"))
                      for i in range(start, start + 100)], Actor("bob"))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE memories")
        conn.execute("VACUUM ANALYZE memory_readers")
        for users in (("alice",), ("alice", "carol")):
            for newest in (False, True):
                for offset in (0, 25):
                    q = ListQuery(user_ids=users, limit=10, offset=offset, newest_first=newest)
                    sql, params = pg_sql.list_page(q)
                    for generic in (False, True):
                        plan = _json_plan(conn, sql, params, generic)
                        where = f"{users} newest={newest} offset={offset} generic={generic}"
                        nodes = list(_nodes(plan))
                        # what a Sort sorts comes through a Limit (the page's), not straight
                        # from the walk of the memories shared with the user
                        assert not [n for n in nodes if n["Node Type"] == "Sort"
                                    and _reads_readers(n, through_limit=False)], where
                        branches = [n for n in nodes if n["Node Type"] == "Limit"
                                    and _reads_readers(n["Plans"][0], through_limit=False)]
                        assert len(branches) == len(users), where
                        for branch in branches:  # the walk stops after the page's rows
                            assert not [m for m in _nodes(branch)
                                        if m["Node Type"] in ("Sort", "Seq Scan")], where
                        assert not [n for n in nodes if n.get("Index Name") == "memories_readers"], \
                            where  # the GIN index is not how they are found
                        walks = [n for n in nodes if n.get("Relation Name") == "memory_readers"]
                        assert len(walks) == len(users), where
                        for walk in walks:
                            assert walk["Index Name"] == "memory_readers_pkey", where
                            assert walk["Scan Direction"] == ("Backward" if newest else "Forward")
                            if not generic:  # a page's worth, not the 400 shared
                                assert walk["Actual Rows"] <= q.limit + q.offset, (where, walk)
    expected = [c.id for c in vault.list(ListQuery(limit=1000))
                if c.namespace.user_id == "alice" or "alice" in c.governance.readers]
    assert len(expected) == 430
    assert [c.id for c in vault.list(ListQuery(user_ids=("alice",), limit=10, offset=25))] == \
        expected[25:35]
    assert [c.id for c in vault.list(ListQuery(user_ids=("alice", "carol"), limit=10,
                                               offset=25, newest_first=True))] == \
        expected[::-1][25:35]


def _rows(url: str) -> set[tuple[str, int, str]]:
    with psycopg.connect(url) as conn:
        return set(conn.execute("SELECT reader, seq, id FROM memory_readers").fetchall())


def _expected(url: str) -> set[tuple[str, int, str]]:
    """``(reader, seq, id)`` of every reader of every memory, from ``memories.readers``."""
    with psycopg.connect(url) as conn:
        return set(conn.execute(
            "SELECT DISTINCT r, m.seq, m.id FROM memories m, "
            "jsonb_array_elements_text(m.readers) r").fetchall())


def _count_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute("SELECT count(*) FROM memory_readers").fetchone()[0])


def test_the_readers_table_follows_every_write(vault, pg_url):
    mine, *shared = [_cube("bob", "mine"), *(_cube("bob", f"s{i}", ("alice",)) for i in range(3))]
    vault.insert([mine, *shared], Actor("bob"))
    assert _rows(pg_url) == _expected(pg_url) and len(_expected(pg_url)) == 3
    c = shared[1]
    vault.put_version(_shared(c, ("carol", "dan", "carol")), 1, Actor("bob"), "share:read")
    assert _rows(pg_url) == _expected(pg_url) and len(_expected(pg_url)) == 4
    assert _count_rows(pg_url) == 4  # carol once
    assert not {r for r in _rows(pg_url) if r[0] == "alice" and r[2] == c.id}
    vault.put_version(_shared(shared[0], ()), 1, Actor("bob"), "revoke")
    assert _rows(pg_url) == _expected(pg_url) and len(_expected(pg_url)) == 3
    kept = shared[2].model_copy(update={"version": 2, "text": "s2 again", "updated_at": utcnow()})
    vault.put_version(kept, 1, Actor("bob"), "update")
    assert _rows(pg_url) == _expected(pg_url) and len(_expected(pg_url)) == 3
    vault.tombstone(shared[2].id, Actor("bob"))  # rights kept; the list leaves it out
    assert _rows(pg_url) == _expected(pg_url)
    assert [m.id for m in vault.list(ListQuery(user_ids=("alice",)))] == []
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE memories SET seq = 99 WHERE id = %s", (c.id,))
        conn.execute("UPDATE memories SET readers = '[\"erin\"]' WHERE id = %s", (mine.id,))
    assert ("carol", 99, c.id) in _rows(pg_url) and ("erin", 1, mine.id) in _rows(pg_url)
    assert _rows(pg_url) == _expected(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DELETE FROM memories WHERE id = %s", (c.id,))
    assert _rows(pg_url) == _expected(pg_url) and len(_expected(pg_url)) == 2
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("TRUNCATE memories")
    assert _rows(pg_url) == set()


#: what migration 9 made, taken away again: the database as memos-core left it at schema 8
_BACK_TO_8 = (
    "DROP FUNCTION memos_memory_readers() CASCADE",  # and its triggers
    "DROP TABLE memory_readers",
    "UPDATE meta SET value = '8' WHERE key = 'schema_version'",
)


_GROUPS = (("alice",), ("carol",), ("dan",), ("alice", "carol"), ("bob",))


def _lists(vault: PostgresVault) -> dict[tuple[Any, ...], list[str]]:
    """The ids of a few lists of users, both orders, paged and whole."""
    got = {}
    for users in _GROUPS:
        for newest in (False, True):
            for limit, offset in ((100, 0), (3, 2)):
                q = ListQuery(user_ids=users, limit=limit, offset=offset, newest_first=newest)
                got[users, newest, limit, offset] = [c.id for c in vault.list(q)]
    return got


def _reference(vault: PostgresVault) -> dict[tuple[Any, ...], list[str]]:
    """What :func:`_lists` must give, from the list of every memory (which reads no
    ``memory_readers``): the users' own and, not forgotten, those shared with them."""
    every = vault.list(ListQuery(limit=1000))
    want = {}
    for users in _GROUPS:
        ids = [c.id for c in every if c.namespace.user_id in users or (
            set(c.governance.readers) & set(users) and c.state.value != "deleted")]
        for newest in (False, True):
            ordered = ids[::-1] if newest else ids
            for limit, offset in ((100, 0), (3, 2)):
                want[users, newest, limit, offset] = ordered[offset:offset + limit]
    return want


def test_a_vault_of_schema_8_gets_the_table_when_opened(vault, pg_url):
    old = [_cube("bob", f"b{i}", ("alice",) if i % 2 else ("alice", "carol")) for i in range(6)]
    vault.insert(old, Actor("bob"))
    vault.insert([_cube("alice", f"a{i}", ("carol",) if i == 1 else ()) for i in range(3)],
                 Actor("alice"))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for statement in _BACK_TO_8:
            conn.execute(statement)
    # an older memos-core writes on: a share, a revoke, a forget, a new shared memory
    vault.put_version(_shared(old[0], ("carol",)), 1, Actor("bob"), "share:read")
    vault.put_version(_shared(old[1], ()), 1, Actor("bob"), "revoke")
    vault.tombstone(old[2].id, Actor("bob"))
    vault.insert([_cube("bob", "late", ("alice",))], Actor("bob"))
    before = _reference(vault)
    assert before[("alice",), False, 100, 0] and before[("carol",), True, 3, 2]

    opened: list[PostgresVault] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            opened.append(PostgresVault(pg_url))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(2)]  # at once: one migrates
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors and len(opened) == 2
        assert sorted(v.schema_found for v in opened) == [8, SCHEMA_VERSION]
        new = opened[0]
        assert new.get_meta("schema_version") == str(SCHEMA_VERSION) == "9"
        assert _rows(pg_url) == _expected(pg_url) and len(_rows(pg_url)) == 9
        assert _lists(new) == before
        # later writes through the new code keep the table right
        new.put_version(_shared(old[3], ("carol", "dan")), 1, Actor("bob"), "share:read")
        new.put_version(_shared(old[4], ()), 1, Actor("bob"), "revoke")
        new.tombstone(old[5].id, Actor("bob"))
        assert _rows(pg_url) == _expected(pg_url)
        after = _reference(new)
        assert after != before and after[("dan",), False, 100, 0] == [old[3].id]
        assert _lists(new) == after
        for users in _GROUPS:
            assert new.count(ListQuery(user_ids=users)) == len(after[users, False, 100, 0])
    finally:
        for v in opened:
            v.close()
