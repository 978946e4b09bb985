"""A user's list in the PostgreSQL vault (real PostgreSQL): the memories the users own and
those shared with them are read apart and merged (``pg_sql.list_page``).

What is checked: the merged page is in ``seq`` order either way, pages cut across the merge
add up to the whole list, a memory shared with two of the listed users (or owned by one and
shared with another) comes once, the other filters hold in both parts, ``count`` agrees,
more users than ``USER_BRANCHES`` read the same; and on a store of 2,000 memories (after
``ANALYZE``, planner settings left as they are) the statement's plan, custom and generic (a
prepared statement's), reads no memory but through an index: no ``Seq Scan on memories``, and
the ``seq`` index only to fetch the page's rows (not walked to find a user's memories).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import psycopg
import pytest

from memos_core.cube import MemCube, Namespace, State, utcnow
from memos_core.vault import Actor, ListQuery
from memos_core.vault import pg_sql
from memos_core.vault.postgres import PostgresVault


def _cube(user: str, text: str, readers: tuple[str, ...] = (), **kw) -> MemCube:
    c = MemCube(namespace=Namespace(user_id=user), text=text, **kw)
    if readers:
        c = c.model_copy(update={"governance": c.governance.model_copy(update={"readers": readers})})
    return c


@pytest.fixture
def vault(pg_url: str) -> Iterator[PostgresVault]:
    v = PostgresVault(pg_url)
    yield v
    v.close()


def _ids(vault: PostgresVault, **kw) -> list[str]:
    return [c.id for c in vault.list(ListQuery(**kw))]


def test_own_and_shared_merge_in_seq_order_and_page_across_the_merge(vault, pg_url):
    # alice's own and those shared with her interleave in insertion order; one of carol's
    # is shared with both alice and dave, one of alice's with dave
    expected, everyone = [], []
    for i in range(12):
        if i % 3 == 1:
            c = _cube("bob", f"b{i}", readers=("alice",))
        elif i % 3 == 2:
            c = _cube("carol", f"c{i}", readers=("alice", "dave") if i == 5 else ())
        else:
            c = _cube("alice", f"a{i}", readers=("dave",) if i == 3 else ())
        vault.insert([c], Actor(c.namespace.user_id))
        everyone.append(c)
        if c.namespace.user_id == "alice" or "alice" in c.governance.readers:
            expected.append(c.id)
    assert len(expected) == 9
    assert _ids(vault, user_ids=("alice",)) == expected
    assert _ids(vault, user_ids=("alice",), newest_first=True) == expected[::-1]
    for newest in (False, True):
        want = expected[::-1] if newest else expected
        for size in (1, 2, 4):
            pages = [_ids(vault, user_ids=("alice",), limit=size, offset=off, newest_first=newest)
                     for off in range(0, 12, size)]
            assert [i for p in pages for i in p] == want
        assert _ids(vault, user_ids=("alice",), limit=3, offset=9, newest_first=newest) == []
    assert vault.count(ListQuery(user_ids=("alice",))) == 9

    # alice and dave: carol's c5 (shared with both) and alice's a3 (shared with dave) once
    both = _ids(vault, user_ids=("alice", "dave"))
    assert both == expected and len(set(both)) == len(both)
    assert _ids(vault, user_ids=("alice", "dave", "alice")) == expected
    assert _ids(vault, user_ids=("dave",)) == [everyone[3].id, everyone[5].id]
    assert vault.count(ListQuery(user_ids=("alice", "dave"))) == 9
    assert _ids(vault, user_ids=()) == [] and _ids(vault, user_ids=("nobody",)) == []
    # no users named: every memory, in order, as before
    assert _ids(vault) == [c.id for c in everyone]
    for users in (("alice",), ("dave",), ("alice", "dave"), ("bob", "carol"), ()):
        for newest in (False, True):
            for off in (0, 2, 7):
                q = ListQuery(user_ids=users, limit=3, offset=off, newest_first=newest)
                assert _ids(vault, user_ids=users, limit=3, offset=off, newest_first=newest) == \
                    _one_statement(pg_url, q)


def test_the_other_filters_hold_in_both_parts(vault, pg_url):
    a1 = _cube("alice", "a1", tags=("x",))
    b1 = _cube("bob", "b1", readers=("alice",), tags=("x",))
    a2 = _cube("alice", "a2 kiwi")
    b2 = _cube("bob", "b2 mango", readers=("alice",))
    b3 = _cube("bob", "b3", readers=("alice",), tags=("x",))
    for c in (a1, b1, a2, b2, b3):
        vault.insert([c], Actor(c.namespace.user_id))
    archived = b3.model_copy(update={"version": 2, "state": State.ARCHIVED, "updated_at": utcnow()})
    vault.put_version(archived, 1, Actor("bob"), "archive")
    assert _ids(vault, user_ids=("alice",), tags=("x",)) == [a1.id, b1.id, b3.id]
    live = ("generated", "activated")
    assert _ids(vault, user_ids=("alice",), tags=("x",), states=live) == [a1.id, b1.id]
    assert _ids(vault, user_ids=("alice",), states=live, newest_first=True) == \
        [b2.id, a2.id, b1.id, a1.id]
    assert _ids(vault, user_ids=("alice",), contains_any=(("mango",), ("kiwi",))) == [a2.id, b2.id]
    assert vault.count(ListQuery(user_ids=("alice",), states=live)) == 4
    # the same pages as the one statement of before (the OR of the two parts)
    for kw in ({}, {"tags": ("x",)}, {"states": live}, {"states": ("archived",)},
               {"contains_any": (("mango",), ("kiwi",))}, {"newest_first": True, "limit": 2, "offset": 1}):
        for users in (("alice",), ("bob",), ("alice", "bob"), ("carol",)):
            q = ListQuery(user_ids=users, **kw)
            assert [c.id for c in vault.list(q)] == _one_statement(pg_url, q), (users, kw)


def _one_statement(url: str, q: ListQuery) -> list[str]:
    """The page ``q`` asks for, read the way the vault read it before: one ``SELECT`` with
    ``pg_sql.list_where``'s condition (the ``OR`` of own and shared)."""
    where, params = pg_sql.list_where(q)
    order = "DESC" if q.newest_first else "ASC"
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(
            f"SELECT id FROM memories{where} ORDER BY seq {order} LIMIT %s OFFSET %s",
            [*params, q.limit, q.offset])]


def test_more_users_than_branches_list_the_same(vault):
    users = [f"u{i:02d}" for i in range(pg_sql.USER_BRANCHES + 3)]
    cubes = []
    for i in range(40):
        owner = users[i % len(users)] if i % 4 else "zed"
        readers = (users[0], users[-1]) if i % 4 == 0 and i % 8 == 0 else ()
        c = _cube(owner, f"m{i}", readers=readers)
        vault.insert([c], Actor(owner))
        cubes.append(c)
    want = [c.id for c in cubes if c.namespace.user_id in users or c.governance.readers]
    assert _ids(vault, user_ids=tuple(users)) == want
    assert _ids(vault, user_ids=tuple(users), newest_first=True, limit=5, offset=3) == \
        want[::-1][3:8]
    assert vault.count(ListQuery(user_ids=tuple(users))) == len(want)
    few = tuple(users[:2])
    assert _ids(vault, user_ids=few) == \
        [c.id for c in cubes if c.namespace.user_id in few or set(few) & set(c.governance.readers)]


def _plan(conn: psycopg.Connection, sql: str, params: list, generic: bool) -> list[str]:
    if not generic:
        return [r[0] for r in conn.execute("EXPLAIN (ANALYZE, COSTS OFF) " + sql, params)]
    numbered = iter(range(1, len(params) + 1))
    text = re.sub("%s", lambda _: f"${next(numbered)}", sql)
    return [r[0] for r in conn.execute("EXPLAIN (GENERIC_PLAN, COSTS OFF) " + text)]


def test_a_users_list_reads_memories_through_indexes_only(vault, pg_url):
    # 2,000 memories: alice owns half; 20 others the rest, 15 of theirs shared with alice, 2
    # with dana (who owns 10): a page must not walk the store for either of them
    batch: list[MemCube] = []
    for i in range(2000):
        if i % 2 == 0:
            c = _cube("alice", f"alice {i}")
        elif i % 200 == 1:
            c = _cube("dana", f"dana {i}")
        else:
            readers = ("alice",) if i % 67 == 3 else ("dana",) if i in (5, 1207) else ()
            c = _cube(f"user{i % 20}", f"note {i}", readers=readers)
        batch.append(c)
    for start in range(0, len(batch), 200):  # one owner per insert
        chunk = batch[start:start + 200]
        for owner in dict.fromkeys(c.namespace.user_id for c in chunk):
            vault.insert([c for c in chunk if c.namespace.user_id == owner], Actor(owner))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE memories")
        assert conn.execute("SELECT count(*) FROM memories").fetchone()[0] == 2000
        for user in ("alice", "dana"):
            for newest in (False, True):
                for offset in (0, 30):
                    q = ListQuery(user_ids=(user,), limit=10, offset=offset, newest_first=newest)
                    sql, params = pg_sql.list_page(q)
                    for generic in (False, True):
                        plan = "\n".join(_plan(conn, sql, params, generic))
                        where = f"{user} newest={newest} offset={offset} generic={generic}"
                        assert "Seq Scan on memories" not in plan, f"{where}:\n{plan}"
                        walks = [line for line in plan.splitlines()
                                 if "using memories_seq_key" in line
                                 and not line.split("(")[0].rstrip().endswith(" on memories m")]
                        assert not walks, f"{where}:\n{plan}"
    owned = [c.id for c in batch if c.namespace.user_id == "dana"]
    shared = [c.id for c in batch if "dana" in c.governance.readers]
    assert len(owned) == 10 and len(shared) == 2
    assert sorted(_ids(vault, user_ids=("dana",), limit=100)) == sorted(owned + shared)
    mine = [c.id for c in batch if c.namespace.user_id == "alice" or "alice" in c.governance.readers]
    assert vault.count(ListQuery(user_ids=("alice",))) == len(mine) == 1015
    for user in ("alice", "dana"):
        for offset in (0, 5, 500, 1010):
            q = ListQuery(user_ids=(user,), limit=10, offset=offset, newest_first=offset == 500)
            assert [c.id for c in vault.list(q)] == _one_statement(pg_url, q)
