"""Server-mode search reads its hits' vault rows in the index's own statements (real
PostgreSQL, ``pg_url``): the prefetch path returns exactly what the vault read would, and the
search's checks (forgotten, revoked, expired, access rights) still decide on those rows, also
when the index lags the vault.
"""

from __future__ import annotations

import time

import pytest

from memos_core import MemOS
from memos_core.governance import access as rules
from memos_core.lifecycle import SEARCHABLE_STATES
from memos_core.retrieval.filters import build_filter
from memos_core.vault import Actor, pg_sql

MOS_DEFAULTS = {"listen": False}

TURNS = [
    "Alice keeps the spare key with the neighbour, Mrs Patel.",
    "The kayak is in the boathouse by the lake.",
    "Alice's sister Jo flies to Lisbon on Friday.",
    "The paddles hang next to the kayak in the boathouse.",
    "Mrs Patel waters the plants while Alice is away.",
    "Jo booked a hotel near the Lisbon old town.",
]


def _dumps(cubes: dict) -> dict:
    return {mid: cube.model_dump(mode="json") for mid, cube in cubes.items()}


def _ids_of(mos: MemOS, query: str, user_id: str, k: int = 10):
    """The candidates of one search (as ``MemOS.search`` asks) and the prefetch it used."""
    prefetch = mos.store.prefetch()
    assert prefetch is not None
    flt = build_filter((user_id,), states=SEARCHABLE_STATES)
    cands = mos.retriever.retrieve(query, flt, k, prefetch=prefetch)
    return [c.id for c in cands], prefetch


def _same_search(mos: MemOS, query: str, user_id: str) -> list[str]:
    """Search with and without the prefetch: the same hits, scores and cubes."""
    with_rows = mos.search(query, user_id=user_id, k=5, record_usage=False)
    mos.store.prefetch_rows = False
    try:
        without = mos.search(query, user_id=user_id, k=5, record_usage=False)
    finally:
        mos.store.prefetch_rows = True
    assert [(h.id, h.score, h.memory.model_dump(mode="json")) for h in with_rows] == \
        [(h.id, h.score, h.memory.model_dump(mode="json")) for h in without]
    return [h.id for h in with_rows]


def test_the_index_and_vault_in_one_database_prefetch(open_mos, pg_url):
    mos = open_mos()
    assert mos.store.prefetch_rows  # MemOS(url): the index's tables are in the vault's database
    other = open_mos(index_url=pg_url + "?application_name=other")  # same server, another URL
    assert not other.store.prefetch_rows and other.store.prefetch() is None


def test_prefetched_rows_decode_to_exactly_what_get_many_reads(open_mos):
    mos = open_mos()
    cubes = mos.add_many(TURNS, user_id="alice")
    mos.vault.record_usage([cubes[1].id], cubes[1].created_at, 3600.0)
    mos.vault.flush_usage()  # one memory with a usage row, the others without
    ids, prefetch = _ids_of(mos, "where is the kayak boathouse", "alice")
    assert ids and set(ids) <= set(prefetch.rows)  # all found by dense or BM25: all prefetched
    assert _dumps(mos.vault.get_many_prefetched(ids, prefetch)) == _dumps(mos.vault.get_many(ids))
    assert mos.vault.get_many_prefetched(ids, prefetch)[cubes[1].id].usage.access_count == 1
    # ids not among the hits are read; unknown ids are left out, as get_many does
    extra = [*ids, "00000000-0000-4000-8000-000000000000"]
    assert _dumps(mos.vault.get_many_prefetched(extra, prefetch)) == _dumps(mos.vault.get_many(extra))
    assert _same_search(mos, "where is the kayak", "alice")


def test_every_id_prefetched_means_no_statement():
    rows = {"a": (None, None, None, None, None)}  # a hit without a vault row (index orphan)
    program = pg_sql.get_many_prefetched(["a"], rows)
    with pytest.raises(StopIteration) as done:
        next(program)  # the program sends no statement
    assert done.value.value == {}
    program = pg_sql.get_many_prefetched(["a", "b"], rows)
    step = next(program)  # "b" was not prefetched: one read, of "b" only
    assert isinstance(step, pg_sql.Rows) and step.params == (["b"],)


def test_a_memory_forgotten_in_the_vault_but_not_yet_in_the_index(open_mos):
    mos = open_mos()
    kayak, *_ = mos.add_many(TURNS[1:4], user_id="alice")
    mos.vault.tombstone(kayak.id, Actor("alice"))  # the vault only: the index still has it
    assert kayak.id in mos.index.versions()
    ids, prefetch = _ids_of(mos, "where is the kayak", "alice")
    assert kayak.id in ids and prefetch.rows[kayak.id][0] is not None
    got = mos.vault.get_many_prefetched(ids, prefetch)
    assert _dumps(got) == _dumps(mos.vault.get_many(ids))
    assert got[kayak.id].state.value == "deleted" and "kayak" not in got[kayak.id].text
    hits = _same_search(mos, "where is the kayak", "alice")
    assert hits and kayak.id not in hits


def test_a_revoke_the_index_has_not_seen(open_mos):
    mos = open_mos()
    mem = mos.add("Alice's spare key is with the neighbour.", user_id="alice")
    mos.add("Bob's bike is in the shed.", user_id="bob")
    shared = mos.share(mem.id, with_user_id="bob", user_id="alice")
    assert mem.id in _same_search(mos, "spare key neighbour", "bob")
    revoked = shared.model_copy(update={
        "governance": rules.revoked(shared.governance, "bob"), "version": shared.version + 1})
    mos.vault.put_version(revoked, shared.version, Actor("alice"), "revoke")  # vault only
    assert mos.index.versions()[mem.id] == shared.version  # the index still lists bob
    ids, prefetch = _ids_of(mos, "spare key neighbour", "bob")
    assert mem.id in ids and mem.id in prefetch.rows
    assert _dumps(mos.vault.get_many_prefetched(ids, prefetch)) == _dumps(mos.vault.get_many(ids))
    assert mem.id not in _same_search(mos, "spare key neighbour", "bob")
    assert mem.id in _same_search(mos, "spare key neighbour", "alice")


def test_an_expired_memory_and_a_principal_without_rights(open_mos):
    mos = open_mos()
    brief = mos.add("The gate code is 4711 until tonight.", user_id="alice")
    lasting = mos.add("The gate code for guests is 1234.", user_id="alice")
    assert brief.id in _same_search(mos, "gate code", "alice")
    # its time to live elapsed, in the vault's eyes; the index still lists it as active
    expiring = brief.model_copy(update={
        "governance": brief.governance.model_copy(update={"ttl_seconds": 0.001}),
        "version": brief.version + 1})
    mos.vault.put_version(expiring, brief.version, Actor("alice"), "update")  # vault only
    time.sleep(0.01)
    ids, prefetch = _ids_of(mos, "gate code", "alice")
    assert brief.id in ids and brief.id in prefetch.rows
    assert _dumps(mos.vault.get_many_prefetched(ids, prefetch)) == _dumps(mos.vault.get_many(ids))
    hits = _same_search(mos, "gate code", "alice")
    assert lasting.id in hits and brief.id not in hits
    assert _same_search(mos, "gate code", "mallory") == []  # no rights: nothing, either path
    ids, prefetch = _ids_of(mos, "gate code", "mallory")
    assert ids == [] and prefetch.rows == {}


def test_rows_read_across_a_usage_flush_are_read_again(open_mos):
    mos = open_mos()
    cubes = mos.add_many(TURNS, user_id="alice")
    ids, prefetch = _ids_of(mos, "where is the kayak", "alice")
    assert ids
    mos.vault.record_usage(ids[:1], cubes[0].created_at, 3600.0)
    mos.vault.flush_usage()  # written after the rows were read: they lack this access
    assert prefetch.epoch != mos.vault._usage.epoch
    got = mos.vault.get_many_prefetched(ids, prefetch)  # read again, all of them
    assert _dumps(got) == _dumps(mos.vault.get_many(ids))
    assert got[ids[0]].usage.access_count == 1
