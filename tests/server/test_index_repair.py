"""The change feed's index repair (memos_core/store/feed.py): a memory whose writer committed
it to the vault but never wrote its index point (it died in between) is indexed again by the
other processes following the feed -- also when the check itself fails (the server restarts
under it: the check is retried, never dropped) and with a shared Qdrant index (the point
payloads carry the version). Real PostgreSQL, real pgvector and qdrant-client indexes; the
dead writer is simulated by skipping its index write."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from qdrant_client import QdrantClient

from memos_core import MemOS
from memos_core.errors import ServerUnavailableError
from memos_core.index.base import IndexFilter, IndexPoint, SparseVec
from memos_core.index.client import QdrantClientIndex


def _dies_before_indexing(mos: MemOS) -> None:
    """From now on ``mos`` commits to the vault but never writes the index (as a writer
    SIGKILLed between the two would)."""
    mos.store.index_cubes = lambda cubes: None


def test_a_repair_check_that_fails_is_kept_and_retried(pg_server, open_mos):
    _, server = pg_server
    if server is None:
        pytest.skip("an external server (MEMOS_TEST_PG_URL) is not ours to stop")
    writer, other = open_mos(), open_mos(index_repair_after_s=0, listen=False)
    _dies_before_indexing(writer)
    kayak = writer.add("The kayak is in the boathouse by the lake.", user_id="alice")
    follower = other.store.follower
    assert follower is not None
    other.catch_up()  # sees the change; its check is due at the next sync
    assert follower.unchecked == 1
    server.stop()
    try:
        # the check is the first thing the next sync does: with the server down it fails
        with pytest.raises((psycopg.OperationalError, ServerUnavailableError)):
            other.catch_up()
    finally:
        server.start()
    assert follower.unchecked == 1, "a failed check must be kept for the next sync"
    assert follower.repaired == 0
    # the pools reconnect; the check runs again and repairs. A pooled connection from before
    # the restart that no failed call has found yet fails one call (ServerUnavailableError,
    # docs/scale_out.md "Failures"), and the check is then still kept
    try:
        other.catch_up()
    except ServerUnavailableError:
        assert follower.unchecked == 1
        other.catch_up()
    assert follower.repaired == 1 and follower.unchecked == 0
    assert other.store.index.versions_of([kayak.id]) == {kayak.id: kayak.version}
    assert [h.id for h in other.search("where is the kayak?", user_id="alice", k=1)] == [kayak.id]


def test_an_update_whose_index_write_was_lost_is_repaired(open_mos):
    writer, other = open_mos(), open_mos(index_repair_after_s=0, listen=False)
    kayak = writer.add("The kayak is in the boathouse by the lake.", user_id="alice")
    other.catch_up()
    assert other.store.follower.unchecked == 1
    _dies_before_indexing(writer)
    moved = writer.update(kayak.id, "The kayak is in the garage now.", user_id="alice")
    assert other.store.index.versions_of([kayak.id]) == {kayak.id: kayak.version}
    # the due check of v1 finds the vault at v2 and the index at v1: repaired; the v2
    # change is applied after it and waits for its own check
    other.catch_up()
    assert other.store.follower.repaired == 1 and other.store.follower.unchecked == 1
    assert other.store.index.versions_of([kayak.id]) == {kayak.id: moved.version}
    other.catch_up()
    assert other.store.follower.repaired == 1 and other.store.follower.unchecked == 0
    assert [h.id for h in other.search("where is the kayak now?", user_id="alice", k=1)] == [kayak.id]


def test_a_version_committed_a_moment_ago_is_not_judged_by_an_older_versions_check(open_mos):
    """The check of a memory first seen repair_after_s ago compares the index with the
    version seen then, not with one committed a moment ago whose writer is still writing
    its index points (a namespace share updates hundreds, one by one): that one waits for
    its own check. Before, every grant change racing an older check was 'repaired', with a
    warning that its writer may have died (hundreds in a two-process run)."""
    import time

    writer, other = open_mos(), open_mos(index_repair_after_s=0.5, listen=False)
    kayak = writer.add("The kayak is in the boathouse by the lake.", user_id="alice")
    other.catch_up()
    follower = other.store.follower
    assert follower.unchecked == 1
    time.sleep(0.6)  # v1's check is due
    _dies_before_indexing(writer)  # v2 is committed; its writer has not indexed it *yet*
    moved = writer.update(kayak.id, "The kayak is in the garage now.", user_id="alice")
    other.catch_up()
    assert follower.repaired == 0 and follower.unchecked == 1  # v1 was indexed: no repair
    del writer.store.index_cubes  # the writer's index write lands
    writer.store.index_cubes([moved])
    time.sleep(0.6)
    other.catch_up()
    assert follower.repaired == 0 and follower.unchecked == 0
    assert other.store.index.versions_of([kayak.id]) == {kayak.id: moved.version}


def test_a_payload_change_after_a_lost_index_write_indexes_the_text_again(open_mos):
    """A text update whose writer died before its index write, then a share by another
    process: the share's payload change found the point at v1 and stamped v3 on it, the old
    text's vectors and all, and the repair check then saw index and vault agree. The point
    is now embedded again when it is more than one version behind."""
    writer, other = open_mos(), open_mos(listen=False)
    kayak = writer.add("The kayak is in the boathouse by the lake.", user_id="alice")
    _dies_before_indexing(writer)
    moved = writer.update(kayak.id, "The canoe replaced it; the kayak went to the garage.",
                          user_id="alice")
    other.catch_up()
    shared = other.share(kayak.id, with_user_id="bob", user_id="alice")
    assert shared.version == moved.version + 1
    assert other.store.index.versions_of([kayak.id]) == {kayak.id: shared.version}
    hits = other.search("canoe garage", user_id="bob", k=3)
    assert hits and hits[0].id == kayak.id and "bm25" in hits[0].signals  # the new text's terms


def _point(i: int, version: int) -> IndexPoint:
    vec = [0.0] * 8
    vec[i % 8] = 1.0
    return IndexPoint(str(uuid.UUID(int=i + 1)), vec, SparseVec([i], [1.0]),
                      {"user_id": "u", "version": version})


def test_qdrant_client_versions_of_reads_the_payload_versions():
    with QdrantClientIndex(":memory:", dim=8) as index:
        index.upsert([_point(i, i % 3 + 1) for i in range(300)])  # more than one request
        wanted = [str(uuid.UUID(int=i + 1)) for i in range(0, 300, 7)]
        missing = [str(uuid.UUID(int=10_000 + i)) for i in range(3)]
        assert index.versions_of(wanted + missing) == {
            w: uuid.UUID(w).int % 3 or 3 for w in wanted}
        assert index.versions_of([]) == {}
        assert index.versions_of(wanted) == {k: v for k, v in index.versions().items()
                                             if k in set(wanted)}
        index.delete(wanted[:2])
        assert set(index.versions_of(wanted[:3])) == {wanted[2]}
        with pytest.raises(ValueError, match="UUID"):
            index.versions_of(["not-a-uuid"])


@pytest.fixture
def qdrant_local():
    """One qdrant-client in local mode: the stand-in for a Qdrant server two hosts share."""
    client = QdrantClient(location=":memory:")
    yield client
    client.close()


def _share_index(mos: MemOS, client: QdrantClient) -> QdrantClientIndex:
    """Point ``mos`` at the shared Qdrant collection through ``client`` (not closed by it)."""
    own = mos.store.index
    shared = QdrantClientIndex(client, dim=own.dim, collection="memos")  # type: ignore[attr-defined]
    own.close()
    mos.store.index = mos.store.retriever.index = shared
    return shared


def test_a_shared_qdrant_index_is_repaired_from_the_feed(open_mos, qdrant_local):
    # Two instances on one database sharing one Qdrant collection (qdrant-client's local
    # mode stands in for the server: both use one client, as two hosts would use one server).
    writer = open_mos(index="qdrant", qdrant_url=":memory:")
    other = open_mos(index="qdrant", qdrant_url=":memory:", index_repair_after_s=0,
                     listen=False)
    shared = _share_index(writer, qdrant_local)
    _share_index(other, qdrant_local)
    assert other.store.follower is not None and other.store.follower.shared_index

    kept = writer.add("The violin lives in the hall cupboard.", user_id="alice")
    _dies_before_indexing(writer)
    kayak = writer.add("The kayak is in the boathouse by the lake.", user_id="alice")
    writer.forget(kept.id, user_id="alice")  # its point stays: the writer "died" again
    assert shared.versions_of([kayak.id, kept.id]) == {kept.id: kept.version}

    other.catch_up()  # sees both changes: the forgotten point leaves the index at once
    assert shared.versions_of([kayak.id, kept.id]) == {}
    other.catch_up()  # the add's check is due: indexed again
    assert other.store.follower.repaired == 1
    assert shared.versions_of([kayak.id, kept.id]) == {kayak.id: kayak.version}
    assert [h.id for h in other.search("where is the kayak?", user_id="alice", k=1)] == [kayak.id]
    other.catch_up()
    assert other.store.follower.repaired == 1  # an agreeing point is not indexed again


def _late_update(writer: MemOS, forgetter: MemOS, memory_id: str, how: str = "forget") -> None:
    """``writer`` updates ``memory_id``; before its index write lands, ``forgetter`` (which
    saw the update) forgets it (``how="expire"``: expires it), its index delete included;
    then the late write puts the update's point back."""
    held: list = []
    index_cubes = writer.store.index_cubes
    writer.store.index_cubes = held.extend  # the update commits; its index write waits
    moved = writer.update(memory_id, "The kayak is in the garage now.", user_id="alice")
    writer.store.index_cubes = index_cubes
    forgetter.catch_up()  # the update is the newest version the forgetter sees
    if how == "forget":
        forgetter.forget(memory_id, user_id="alice")
    else:
        forgetter.set_state(memory_id, "expired", user_id="alice")
    assert writer.store.index.versions_of([memory_id]) == {}
    index_cubes(held)  # the late index write of the update
    assert writer.store.index.versions_of([memory_id]) == {memory_id: moved.version}


def test_a_point_put_back_after_a_forget_leaves_at_the_writers_next_catch_up(open_mos):
    """Process A commits an update, then process B forgets the memory (its tombstone and its
    index delete) before A's index write lands: A's late write puts the older version's point
    back. A applies B's forget after its own write and deletes the point then, without waiting
    for the repair check."""
    writer, forgetter = open_mos(index_repair_after_s=3600, listen=False), open_mos(listen=False)
    kayak = writer.add("The kayak is in the boathouse by the lake.", user_id="alice")
    _late_update(writer, forgetter, kayak.id)
    writer.catch_up()
    assert writer.store.index.versions_of([kayak.id]) == {}
    index, bm25 = writer.store.index, writer.store.bm25
    assert index.search_sparse(bm25.encode_query("kayak garage"), IndexFilter(), 5) == []
    assert writer.search("where is the kayak?", user_id="alice") == []


@pytest.mark.parametrize("how", ["forget", "expire"])
def test_a_point_put_back_after_a_forget_leaves_at_the_forgetters_check(open_mos, how):
    """As above, but the late writer makes no further call (listen=False, idle or gone):
    the forgetter's index check of the update it saw finds the tombstone, newer than that
    update, and the point of the older version: it deletes the point, whatever its
    version. Before, a tombstone newer than the checked version counted as 'judged at its
    own check', which a process's own forget never gets, and the point stayed. An expiry
    (a state without an index point, not final) the same."""
    import time

    writer = open_mos(index_repair_after_s=3600, listen=False)
    forgetter = open_mos(index_repair_after_s=0.5, listen=False)
    kayak = writer.add("The kayak is in the boathouse by the lake.", user_id="alice")
    _late_update(writer, forgetter, kayak.id, how)
    follower = forgetter.store.follower
    assert follower.unchecked == 1
    time.sleep(0.6)  # the update's check is due
    forgetter.catch_up()
    assert follower.unchecked == 0
    index, bm25 = forgetter.store.index, forgetter.store.bm25
    assert index.versions_of([kayak.id]) == {}
    assert index.search_sparse(bm25.encode_query("kayak garage"), IndexFilter(), 5) == []


@pytest.mark.parametrize("how", ["forget", "expire"])
def test_a_point_put_back_after_a_forget_leaves_when_the_late_writer_closes(open_mos, how):
    """The late writer closes right after its call (a CLI command, a worker shutting down;
    listen=False, so no catch-up ran): its close reads the changes after its own and deletes
    the point it put back of a memory forgotten meanwhile, before any other process's check."""
    writer = open_mos(index_repair_after_s=3600, listen=False)
    forgetter = open_mos(index_repair_after_s=3600, listen=False)
    kayak = writer.add("The kayak is in the boathouse by the lake.", user_id="alice")
    _late_update(writer, forgetter, kayak.id, how)
    writer.close()
    assert forgetter.store.index.versions_of([kayak.id]) == {}
    assert forgetter.store.follower.repaired == 0  # the writer's close did it


def test_an_update_whose_index_write_lands_after_a_revoke_keeps_the_revoke(open_mos):
    """The symmetric case with a payload change: the revoke finds the point two versions
    behind and embeds it again from the vault (the update's text, the new readers); the
    update's late write of an older version is then refused by the index itself."""
    writer, other = open_mos(listen=False), open_mos(index_repair_after_s=3600, listen=False)
    kayak = writer.add("The kayak is in the boathouse by the lake.", user_id="alice")
    writer.share(kayak.id, with_user_id="bob", user_id="alice")
    held: list = []
    index_cubes = writer.store.index_cubes
    writer.store.index_cubes = held.extend
    writer.update(kayak.id, "The kayak is in the garage now.", user_id="alice")
    writer.store.index_cubes = index_cubes
    other.catch_up()
    revoked = other.revoke(kayak.id, with_user_id="bob", user_id="alice")
    index_cubes(held)
    index = other.store.index
    assert index.versions_of([kayak.id]) == {kayak.id: revoked.version}
    assert other.search("kayak garage", user_id="bob") == []
    assert [h.id for h in other.search("kayak garage", user_id="alice", k=1)] == [kayak.id]
    writer.close()
    assert index.versions_of([kayak.id]) == {kayak.id: revoked.version}


def test_an_index_update_that_fails_after_the_commit_is_retried_by_the_writer(
        open_mos, caplog: pytest.LogCaptureFixture):
    """The writer's own failed index update (the index server dropped after the vault's
    commit) is acknowledged, logged, and indexed again by the writer's next call -- the same
    mechanism as in the embedded mode (MemoryStore.retry_index)."""
    mos = open_mos(listen=False)
    store = mos.store
    real, fails = store.index.upsert, [1]

    def drops_once(points):
        if fails[0]:
            fails[0] -= 1
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return real(points)

    store.index.upsert = drops_once
    kayak = mos.add("The kayak is in the boathouse by the lake.", user_id="alice")
    assert "updating the index after a commit failed" in caplog.text
    assert store.deferred == {kayak.id} and kayak.id not in store.index.versions()
    hits = mos.search("where is the kayak?", user_id="alice", k=1)  # retried first
    assert [h.id for h in hits] == [kayak.id]
    assert store.deferred == frozenset()
    assert store.index.versions_of([kayak.id]) == {kayak.id: kayak.version}
