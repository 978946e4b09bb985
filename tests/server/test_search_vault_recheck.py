"""Server-mode search decides on the vault, not on the index (real PostgreSQL, ``pg_url``).

The shared pgvector index can lag the vault (a writer killed between its vault commit and its
index update; the repair comes later). Every hit is checked on its current version (read
from the vault, or from the cache of decoded memories when the change feed shows it
current), so a memory forgotten, revoked or expired in the vault only is not returned,
although the index still lists it as live and readable; a principal without rights gets
nothing. Each case is set up with a vault-only write and checked to have left the index
behind.
"""

from __future__ import annotations

import time

from memos_core import MemOS
from memos_core.governance import access as rules
from memos_core.lifecycle import SEARCHABLE_STATES
from memos_core.retrieval.filters import build_filter
from memos_core.vault import Actor

MOS_DEFAULTS = {"listen": False}

TURNS = [
    "The kayak is in the boathouse by the lake.",
    "Alice's sister Jo flies to Lisbon on Friday.",
    "The paddles hang next to the kayak in the boathouse.",
]


def _candidates(mos: MemOS, query: str, user_id: str) -> list[str]:
    """What the index side of a search finds (before the vault's checks)."""
    flt = build_filter((user_id,), states=SEARCHABLE_STATES)
    return [c.id for c in mos.retriever.retrieve(query, flt, 10)]


def _hits(mos: MemOS, query: str, user_id: str) -> list[str]:
    return [h.id for h in mos.search(query, user_id=user_id, k=5, record_usage=False)]


def test_a_memory_forgotten_in_the_vault_but_not_yet_in_the_index(open_mos):
    mos = open_mos()
    kayak, *_ = mos.add_many(TURNS, user_id="alice")
    assert kayak.id in _hits(mos, "where is the kayak", "alice")
    mos.vault.tombstone(kayak.id, Actor("alice"))  # the vault only: the index still has it
    assert kayak.id in mos.index.versions()
    assert kayak.id in _candidates(mos, "where is the kayak", "alice")
    hits = mos.search("where is the kayak", user_id="alice", k=5, record_usage=False)
    assert hits and kayak.id not in [h.id for h in hits]
    assert all("kayak is in the boathouse" not in h.memory.text for h in hits)


def test_a_revoke_the_index_has_not_seen(open_mos):
    mos = open_mos()
    mem = mos.add("Alice's spare key is with the neighbour.", user_id="alice")
    mos.add("Bob's bike is in the shed.", user_id="bob")
    shared = mos.share(mem.id, with_user_id="bob", user_id="alice")
    assert mem.id in _hits(mos, "spare key neighbour", "bob")
    revoked = shared.model_copy(update={
        "governance": rules.revoked(shared.governance, "bob"), "version": shared.version + 1})
    mos.vault.put_version(revoked, shared.version, Actor("alice"), "revoke")  # vault only
    assert mos.index.versions()[mem.id] == shared.version  # the index still lists bob
    assert mem.id in _candidates(mos, "spare key neighbour", "bob")
    assert mem.id not in _hits(mos, "spare key neighbour", "bob")
    assert mem.id in _hits(mos, "spare key neighbour", "alice")


def test_an_expired_memory_and_a_principal_without_rights(open_mos):
    mos = open_mos()
    brief = mos.add("The gate code is 4711 until tonight.", user_id="alice")
    lasting = mos.add("The gate code for guests is 1234.", user_id="alice")
    assert brief.id in _hits(mos, "gate code", "alice")
    # its time to live elapsed, in the vault's eyes; the index still lists it as active
    expiring = brief.model_copy(update={
        "governance": brief.governance.model_copy(update={"ttl_seconds": 0.001}),
        "version": brief.version + 1})
    mos.vault.put_version(expiring, brief.version, Actor("alice"), "update")  # vault only
    time.sleep(0.01)
    assert mos.index.versions()[brief.id] == brief.version
    assert brief.id in _candidates(mos, "gate code", "alice")
    hits = _hits(mos, "gate code", "alice")
    assert lasting.id in hits and brief.id not in hits
    assert _hits(mos, "gate code", "mallory") == []  # no rights: nothing
    assert _candidates(mos, "gate code", "mallory") == []
