"""The SQLite vault: versions, time travel, tombstones, audit chain. No index, no model."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from datetime import timedelta

import pytest

from memos_core.cube import MemCube, Namespace, State, utcnow
from memos_core.errors import (
    CorruptDataError, InvalidInputError, MemoryDeletedError, MemoryNotFoundError, MemOSError,
)
from memos_core.vault import Actor, Edge, ListQuery, SQLiteVault

ALICE = Actor("alice", reason="test")


@pytest.fixture
def vault(tmp_path):
    v = SQLiteVault(tmp_path / "vault.sqlite3")
    yield v
    v.close()


def cube(text: str, user: str = "alice", **kw) -> MemCube:
    return MemCube(namespace=Namespace(user_id=user, session_id=kw.pop("session", None)), text=text, **kw)


def next_version(c: MemCube, **changes) -> MemCube:
    return c.model_copy(update={**changes, "version": c.version + 1, "updated_at": utcnow()})


def test_versions_are_kept_and_history_is_oldest_first(vault):
    c1 = cube("Alice likes tea.")
    vault.insert([c1], ALICE)
    c2 = next_version(c1, text="Alice likes green tea.")
    vault.put_version(c2, 1, ALICE, "update")
    c3 = next_version(c2, text="Alice likes oolong.")
    vault.put_version(c3, 2, ALICE, "update")
    assert [c.text for c in vault.history(c1.id)] == [
        "Alice likes tea.", "Alice likes green tea.", "Alice likes oolong."]
    assert vault.get(c1.id).version == 3
    assert vault.get_version(c1.id, 1).text == "Alice likes tea."
    assert vault.get_version(c1.id, 9) is None


def test_read_as_of_a_past_time(vault):
    c1 = cube("v1")
    vault.insert([c1], ALICE)
    time.sleep(0.01)
    between = utcnow()
    time.sleep(0.01)
    vault.put_version(next_version(c1, text="v2"), 1, ALICE, "update")
    assert vault.get_as_of(c1.id, between).text == "v1"
    assert vault.get_as_of(c1.id, utcnow()).text == "v2"
    assert vault.get_as_of(c1.id, c1.created_at - timedelta(days=1)) is None


def test_stale_expected_version_is_refused_and_changes_nothing(vault):
    c1 = cube("one")
    vault.insert([c1], ALICE)
    vault.put_version(next_version(c1, text="two"), 1, ALICE, "update")
    with pytest.raises(MemOSError, match="changed concurrently"):
        vault.put_version(next_version(c1, text="lost update"), 1, ALICE, "update")
    assert vault.get(c1.id).text == "two"
    assert len(vault.history(c1.id)) == 2


def test_duplicate_insert_rolls_back_the_whole_batch(vault):
    c1 = cube("first")
    vault.insert([c1], ALICE)
    with pytest.raises(MemOSError, match="already exists"):
        vault.insert([cube("new one"), c1], ALICE)
    assert vault.count() == 1


def test_tombstone_scrubs_every_version_and_keeps_no_hash(vault, tmp_path):
    secret = "Alice's locker code is 4711-zebra"
    c1 = cube(secret)
    vault.insert([c1], ALICE)
    vault.put_version(next_version(c1, text=secret + " (updated)"), 1, ALICE, "update")
    tomb = vault.tombstone(c1.id, ALICE)
    assert tomb.state is State.DELETED and tomb.version == 3
    assert all(v.text == "" for v in vault.history(c1.id))
    assert vault.tombstone(c1.id, ALICE).version == 3  # idempotent
    with pytest.raises(MemoryDeletedError):
        vault.put_version(next_version(tomb, text="back"), 3, ALICE, "update")
    vault.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert b"4711-zebra" not in raw
    for text in (secret, secret + " (updated)"):  # nor a digest a guess could be checked against
        assert hashlib.sha256(text.encode()).hexdigest().encode() not in raw


def test_audit_chain_verifies_and_detects_tampering(vault):
    c1 = cube("audited")
    vault.insert([c1], ALICE)
    vault.put_version(next_version(c1, text="audited twice"), 1, ALICE, "update")
    vault.tombstone(c1.id, ALICE)
    log = vault.audit_log(memory_id=c1.id)
    assert [r.action for r in log] == ["add", "update", "forget"]
    # forget removed the reasons (they may repeat the memory); the chain still verifies
    assert all(r.user_id == "alice" and r.reason is None for r in log)
    assert vault.verify_audit() == (True, "audit chain intact")
    with vault._tx() as db:
        db.execute("UPDATE audit SET action='nothing' WHERE seq=2")
    ok, message = vault.verify_audit()
    assert not ok and "record 2" in message


def test_deleting_an_audit_record_is_detected(vault):
    c1 = cube("x")
    vault.insert([c1, cube("y"), cube("z")], ALICE)
    with vault._tx() as db:
        db.execute("DELETE FROM audit WHERE seq=2")
    assert vault.verify_audit()[0] is False


@pytest.mark.parametrize(
    "query, expected",
    [
        (ListQuery(user_ids=("alice",)), {"a1", "a2", "a3"}),
        (ListQuery(user_ids=("bob",)), {"b1"}),
        (ListQuery(user_ids=("alice",), session_id="s1"), {"a1", "a2"}),
        (ListQuery(user_ids=("alice",), tags=("food",)), {"a2"}),
        (ListQuery(user_ids=("alice",), types=("fact",)), {"a3"}),
        (ListQuery(user_ids=("alice",), include_superseded=False), {"a1", "a2"}),
        (ListQuery(states=("archived",)), {"b1"}),
    ],
)
def test_list_filters(vault, query, expected):
    rows = [
        cube("a1", session="s1"),
        cube("a2", session="s1", tags=("food",)),
        cube("a3", type="fact", valid_to=utcnow()),
        cube("b1", user="bob", state=State.ARCHIVED),
    ]
    vault.insert(rows, ALICE)
    assert {c.text for c in vault.list(query)} == expected


def test_usage_counts_and_heat_decay(vault):
    c1 = cube("hot")
    vault.insert([c1], ALICE)
    now = utcnow()
    vault.record_usage([c1.id, c1.id], now, half_life_s=3600)  # duplicates count once
    vault.record_usage([c1.id], now + timedelta(hours=1), half_life_s=3600)
    usage = vault.get(c1.id).usage
    assert usage.access_count == 2
    assert usage.heat == pytest.approx(1.5)  # 1 decayed by one half-life, plus 1


def test_edges_persist_and_disappear_with_a_forgotten_memory(vault):
    a, b = cube("old"), cube("new")
    vault.insert([a, b], ALICE, edges=[Edge(b.id, a.id, "supersedes")])
    assert vault.edges() == [Edge(b.id, a.id, "supersedes")]
    vault.tombstone(a.id, ALICE)
    assert vault.edges() == []


def test_corrupt_vault_file_gives_a_clear_error(tmp_path):
    path = tmp_path / "vault.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CorruptDataError, match="not a readable SQLite database"):
        SQLiteVault(path)


def test_unknown_ids(vault):
    assert vault.get("nope") is None
    with pytest.raises(MemoryNotFoundError):
        vault.tombstone("nope", ALICE)


def test_a_crash_while_creating_the_vault_leaves_no_truncated_file(tmp_path) -> None:
    # A process killed during its first open once left a zero-byte vault.sqlite3, which the
    # next open (rightly) refuses as truncated. The new file is now linked in whole or not at all.
    import subprocess
    import sys

    path = tmp_path / "vault.sqlite3"
    child = (
        "import os, signal, sys\n"
        "from memos_core.vault import SQLiteVault\n"
        "def die(self):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "SQLiteVault._check_schema = die\n"
        "SQLiteVault(sys.argv[1])\n"
    )
    result = subprocess.run([sys.executable, "-c", child, str(path)], timeout=120)
    assert result.returncode == -9
    assert not path.exists()
    vault = SQLiteVault(path)  # the next open starts a vault, not a CorruptDataError
    try:
        kept = cube("kept after the crash")
        vault.insert([kept], Actor("alice"))
        assert vault.get(kept.id).text == "kept after the crash"
    finally:
        vault.close()
    assert not [p.name for p in tmp_path.iterdir() if ".new-" in p.name]  # no temp file left


def test_a_users_list_merges_own_and_shared_memories_in_order_without_reading_the_store(vault):
    """A user's list is their own memories and those shared with them, in insertion order,
    paged and counted across both; each part is read through an index (no SQLite ``SCAN
    memories``: a page used to cost a read of every user's memories)."""
    def shared(text: str, owner: str, *readers: str) -> MemCube:
        made = cube(text, user=owner)
        return made.model_copy(update={"governance": made.governance.model_copy(
            update={"readers": readers})})

    vault.insert([cube("a1"), shared("b1", "bob", "alice"), cube("c1", user="carol"),
                  cube("a2"), shared("b2", "bob", "carol", "alice"), shared("b3", "bob", "dan"),
                  cube("a3")], ALICE)
    mine = ListQuery(user_ids=("alice",))
    assert [c.text for c in vault.list(mine)] == ["a1", "b1", "a2", "b2", "a3"]
    newest = ListQuery(user_ids=("alice",), newest_first=True, limit=2, offset=1)
    assert [c.text for c in vault.list(newest)] == ["b2", "a2"]
    assert vault.count(mine) == 5 and vault.count() == 7
    both = ListQuery(user_ids=("alice", "carol"))  # b2 is shared with both: listed once
    assert [c.text for c in vault.list(both)] == ["a1", "b1", "c1", "a2", "b2", "a3"]
    assert vault.count(both) == 6
    assert vault.user_stats("alice")["shared_with_me"] == 2

    statements: list[str] = []
    vault._db.set_trace_callback(statements.append)
    try:
        vault.list(mine)
        vault.list(newest)
        vault.count(mine)
        vault.audit_log(user_id="alice", action="add")
        vault.insert([cube("a4")], ALICE)
    finally:
        vault._db.set_trace_callback(None)
    reads = [s for s in statements if s.lstrip().startswith("SELECT")]
    assert sum("FROM memories" in s for s in reads) >= 4  # the lists, the count, MAX(seq)
    for sql in reads:
        plan = " | ".join(r[3] for r in vault._db.execute("EXPLAIN QUERY PLAN " + sql))
        assert "SCAN memories" not in plan, (sql, plan)
        if "FROM audit WHERE" in sql:  # not the chain's head (the last row by seq)
            assert "SCAN audit" not in plan, (sql, plan)


def _shared_with(owner: str, reader: str, n: int, start: int = 0) -> list[MemCube]:
    return [cube(f"{owner} {i}", user=owner, governance={"readers": (reader,)})
            for i in range(start, start + n)]


def _steps(vault: SQLiteVault, call: Callable[[], object]) -> int:
    """SQLite virtual-machine steps (in hundreds) that ``call()`` takes on ``vault``."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0  # go on

    vault._db.set_progress_handler(count, 100)
    try:
        call()
    finally:
        vault._db.set_progress_handler(None, 100)
    return steps[0]


def _page_steps(vault: SQLiteVault, query: ListQuery) -> int:
    """SQLite virtual-machine steps (in hundreds) that ``vault.list(query)`` takes."""
    return _steps(vault, lambda: vault.list(query))


def test_a_page_of_a_users_list_walks_the_shared_memories_in_order_and_stops(vault):
    """A page of "mine and shared with me" reads the shared memories through
    ``memory_readers``' ``(reader, seq)`` key, in order, and stops after the page: its plan
    sorts nothing (before, every memory shared with the user was read and sorted on every
    page), and it takes about as many steps with 1,000 shared as with 20."""
    vault.insert([cube(f"mine {i}") for i in range(30)], ALICE)
    vault.insert(_shared_with("bob", "alice", 20), Actor("bob"))
    pages = [ListQuery(user_ids=("alice",), limit=10, newest_first=newest, offset=offset)
             for newest in (True, False) for offset in (0, 25)]
    statements: list[str] = []
    vault._db.set_trace_callback(statements.append)
    try:
        for query in pages:
            vault.list(query)
    finally:
        vault._db.set_trace_callback(None)
    reads = [s for s in statements if s.lstrip().startswith("SELECT") and "UNION ALL" in s]
    assert len(reads) == len(pages)
    for sql in reads:
        plan = " | ".join(r[3] for r in vault._db.execute("EXPLAIN QUERY PLAN " + sql))
        assert "TEMP B-TREE" not in plan and "SCAN" not in plan, plan
        assert "USING PRIMARY KEY (reader=?)" in plan, plan
    few = [_page_steps(vault, q) for q in pages]
    vault.insert(_shared_with("bob", "alice", 980, start=20), Actor("bob"))
    many = [_page_steps(vault, q) for q in pages]
    assert all(m <= 2 * f + 5 for f, m in zip(few, many)), (few, many)


def test_a_users_stats_grow_with_their_memories_not_with_their_square(vault):
    """``user_stats`` counted the user's edges as ``src IN (own) AND dst IN (own)``, which
    SQLite ran as a probe of every pair of the user's ids once any edge existed (one summary
    made it take 1.1 s at 4,000 memories); it now takes about 4x the steps for 4x the
    memories."""
    def grow_to(n: int) -> None:
        have = vault.user_stats("alice")["memories"]
        vault.insert([cube(f"mine {i}") for i in range(have, n)], ALICE)

    grow_to(300)
    summary = cube("a summary")
    vault.insert([summary], ALICE)
    mine = vault.list(ListQuery(user_ids=("alice",), limit=300))
    vault.add_edges([Edge(summary.id, c.id, "derived_from") for c in mine[:2]])
    few = _steps(vault, lambda: vault.user_stats("alice"))
    grow_to(1200)
    many = _steps(vault, lambda: vault.user_stats("alice"))
    assert vault.user_stats("alice")["edges"] == 2
    assert many <= 6 * few, (few, many)


def _readers_rows(vault: SQLiteVault) -> set[tuple[str, int, str]]:
    return set(vault._query("SELECT reader, seq, id FROM memory_readers"))


def _expected_readers(vault: SQLiteVault) -> set[tuple[str, int, str]]:
    return set(vault._query("SELECT DISTINCT j.value, m.seq, m.id FROM memories m, "
                            "json_each(m.readers) j"))


def test_the_readers_table_follows_every_write(vault):
    """``memory_readers`` holds (reader, seq, id) of every reader of every memory after an
    insert, a new version (``INSERT OR REPLACE``), an update of the readers or of ``seq``
    and a delete (the triggers; the last ones no writer of the vault makes today)."""
    shared = _shared_with("bob", "alice", 3)
    vault.insert([cube("mine"), *shared], Actor("bob"))
    assert _readers_rows(vault) == _expected_readers(vault) and len(_expected_readers(vault)) == 3
    c = shared[1]
    vault.put_version(next_version(c, governance=c.governance.model_copy(
        update={"readers": ("carol", "dan", "carol")})), 1, Actor("bob"), "share:read")
    assert ("alice", 3, c.id) not in _readers_rows(vault)
    assert _readers_rows(vault) == _expected_readers(vault) and len(_expected_readers(vault)) == 4
    with vault._tx() as db:
        db.execute("UPDATE memories SET readers='[\"erin\"]' WHERE id=?", (shared[0].id,))
        db.execute("UPDATE memories SET seq=99 WHERE id=?", (shared[2].id,))
    assert ("erin", 2, shared[0].id) in _readers_rows(vault)
    assert ("alice", 99, shared[2].id) in _readers_rows(vault)
    assert _readers_rows(vault) == _expected_readers(vault)
    with vault._tx() as db:
        db.execute("DELETE FROM memories WHERE id=?", (c.id,))
    assert _readers_rows(vault) == _expected_readers(vault) and len(_expected_readers(vault)) == 2
    vault.tombstone(shared[2].id, Actor("bob"))
    assert _readers_rows(vault) == _expected_readers(vault)


#: ``memory_readers`` and its triggers as memos-core made them until 2026-12-07
_OLD_READERS = """
DROP TRIGGER memories_readers_insert; DROP TRIGGER memories_readers_update;
DROP TRIGGER memories_readers_delete; DROP TABLE memory_readers;
CREATE TABLE memory_readers (
    reader TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY (reader, id)
) WITHOUT ROWID;
CREATE INDEX memory_readers_id ON memory_readers(id);
CREATE TRIGGER memories_readers_insert AFTER INSERT ON memories BEGIN
    DELETE FROM memory_readers WHERE id = NEW.id;
    INSERT OR IGNORE INTO memory_readers(reader, id) SELECT value, NEW.id FROM json_each(NEW.readers);
END;
CREATE TRIGGER memories_readers_update AFTER UPDATE OF id, readers ON memories BEGIN
    DELETE FROM memory_readers WHERE id = OLD.id;
    INSERT OR IGNORE INTO memory_readers(reader, id) SELECT value, NEW.id FROM json_each(NEW.readers);
END;
CREATE TRIGGER memories_readers_delete AFTER DELETE ON memories BEGIN
    DELETE FROM memory_readers WHERE id = OLD.id;
END;
INSERT INTO memory_readers(reader, id) SELECT j.value, m.id FROM memories m, json_each(m.readers) j;
INSERT INTO memory_readers VALUES ('ghost-reader-5150', 'ghost-memory');
DELETE FROM meta WHERE key = 'readers_table';
INSERT OR REPLACE INTO meta(key, value) VALUES ('graph_tables', '1');
"""


def test_a_vault_with_the_old_readers_table_gets_the_new_one_on_open(tmp_path):
    """A vault whose ``memory_readers`` is ``(reader, id)`` (memos-core until 2026-12-07)
    gets ``(reader, seq, id)`` and its triggers when opened, once: lists, counts and the
    graph's shared reads are as before, later writes keep the table in step, and the old
    table's pages are zeroed (``secure_delete``)."""
    import sqlite3

    path = tmp_path / "vault.sqlite3"
    vault = SQLiteVault(path)
    vault.insert([cube("mine 0"), *_shared_with("bob", "alice", 3), cube("mine 1")], ALICE)
    mine = ListQuery(user_ids=("alice",), newest_first=True)
    before = [c.id for c in vault.list(mine)]
    vault.close()
    with sqlite3.connect(path) as db:
        db.executescript(_OLD_READERS)
    db.close()
    vault = SQLiteVault(path)
    try:
        columns = [r[1] for r in vault._query("PRAGMA table_info(memory_readers)")]
        assert columns == ["reader", "seq", "id"] and vault.get_meta("readers_table") == "2"
        assert vault.get_meta("graph_tables") == "1"  # an older memos-core leaves it alone
        assert _readers_rows(vault) == _expected_readers(vault)  # the ghost row is gone
        assert [c.id for c in vault.list(mine)] == before and vault.count(mine) == 5
        assert [c.id for c in vault.list(ListQuery(user_ids=("alice",), limit=2, offset=1))] \
            == before[::-1][1:3]
        assert len(vault.graph_view_rows(["alice"], ("generated",))) == 5
        assert vault.user_stats("alice")["shared_with_me"] == 3
        later = _shared_with("carol", "alice", 1)
        vault.insert(later, Actor("carol"))
        assert [c.id for c in vault.list(mine)] == [later[0].id, *before]
        assert _readers_rows(vault) == _expected_readers(vault)
    finally:
        vault.close()
    assert b"ghost-reader-5150" not in path.read_bytes()
    vault = SQLiteVault(path)  # once: a second open keeps the table as it is
    try:
        assert _readers_rows(vault) == _expected_readers(vault)
        assert len(vault.list(mine)) == 6
    finally:
        vault.close()


def test_contains_any_takes_groups_and_refuses_plain_strings():
    with pytest.raises(InvalidInputError, match="groups of strings"):
        ListQuery(contains_any=("locker",))  # type: ignore[arg-type]
    assert ListQuery(contains_any=(("locker", "4417"),)).contains_any == (("locker", "4417"),)
