"""The vault conformance suite (tests/vault/vault_conformance.py) against every vault backend:
the embedded SQLite vault and the PostgreSQL vault (server mode, a real server: the
``pg_url`` fixture)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from memos_core.vault import SQLiteVault, Vault
from vault_conformance import VaultConformance  # tests/vault is on sys.path (rootdir)


class TestSQLiteVault(VaultConformance):
    @pytest.fixture
    def vault(self, tmp_path: Path) -> Iterator[Vault]:
        v = SQLiteVault(tmp_path / "vault.sqlite3")
        yield v
        v.close()

    def drop_checkpoint_rows(self, vault: Vault, thread_id: str) -> None:
        with vault._tx() as db:  # type: ignore[attr-defined]
            db.execute("DELETE FROM cp_checkpoints WHERE thread_id=?", (thread_id,))


#: each way a conversation log deletes messages, after "alice"/"s1" got one holding SECRET
LOG_DELETES: dict[str, Callable[[Vault], object]] = {
    "log_delete": lambda v: v.log_delete("alice", "s1", None),
    "log_delete_at": lambda v: v.log_delete_at("alice", "s1", -1, "active"),
    "log_replace": lambda v: v.log_replace("alice", "s1", [("m2", '"fine"')], "active", None),
    "log_take_oldest": lambda v: v.log_take_oldest("alice", "s1", 1, archive=False),
}
SECRET = b"ZQXPASS123"


@pytest.mark.parametrize("delete", LOG_DELETES.values(), ids=list(LOG_DELETES))
def test_a_conversation_log_delete_leaves_no_copy_in_the_wal(
        tmp_path: Path, delete: Callable[[Vault], object]) -> None:
    """A deleted message's text leaves the disk when the call returns (the WAL is truncated,
    as after a forget), not at the next checkpoint or close; archiving keeps the text (and
    pays no checkpoint)."""
    path = tmp_path / "vault.sqlite3"
    wal = Path(f"{path}-wal")
    vault = SQLiteVault(path)
    try:
        vault.log_append("alice", "s1", [("m1", '"Your password is ZQXPASS123."')], "active")
        assert SECRET in wal.read_bytes()
        delete(vault)
        assert vault.log_read("alice", "s1", None) in ([], [("m2", '"fine"')])
        for name in (path, wal):
            assert not name.exists() or SECRET not in name.read_bytes(), name.name
        vault.log_append("alice", "s2", [("m3", '"Your password is ZQXPASS123."')], "active")
        vault.log_take_oldest("alice", "s2", 1, archive=True)
        assert SECRET in wal.read_bytes()  # archived, not deleted: still in the log
    finally:
        vault.close()


def test_a_delete_does_not_wait_for_another_connections_reader(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """With another connection reading the file, the WAL truncation after a delete is tried
    without waiting out the busy timeout (which would hold every call of the vault for 5 s):
    the delete is committed, a warning says the truncation was put off, and the connection
    keeps its busy timeout for the calls after."""
    import sqlite3

    path = tmp_path / "vault.sqlite3"
    vault = SQLiteVault(path)
    reader = sqlite3.connect(path, isolation_level=None)
    statements: list[str] = []
    try:
        vault.log_append("alice", "s1", [("m1", '"Your password is ZQXPASS123."')], "active")
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM conversation_log").fetchone()  # holds the WAL
        vault._db.set_trace_callback(statements.append)
        vault.log_delete("alice", "s1", None)
        vault._db.set_trace_callback(None)
        assert vault.log_read("alice", "s1", None) == []
        checkpoint = statements.index("PRAGMA wal_checkpoint(TRUNCATE)")
        assert statements[checkpoint - 1] == "PRAGMA busy_timeout=0"
        assert vault._db.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
        assert "Could not truncate the WAL" in caplog.text
    finally:
        reader.close()
        vault.close()


#: each way thread checkpoints are deleted, after thread "t1" (run "r1") got one holding
#: SECRET (a run's channel values go with the thread's last checkpoint, here r1's)
CHECKPOINT_DELETES: dict[str, Callable[[Vault], object]] = {
    "cp_delete_thread": lambda v: v.cp_delete_thread("t1"),
    "cp_delete_runs": lambda v: v.cp_delete_runs(["r1"]),
}


@pytest.mark.parametrize("delete", CHECKPOINT_DELETES.values(), ids=list(CHECKPOINT_DELETES))
def test_a_checkpoint_delete_leaves_no_copy_in_the_wal(
        tmp_path: Path, delete: Callable[[Vault], object]) -> None:
    """A deleted thread's or run's checkpoint, its pending writes and its channel values
    leave the disk when the call returns, as a conversation-log delete does."""
    from memos_core.vault.base import CheckpointRecord

    path = tmp_path / "vault.sqlite3"
    wal = Path(f"{path}-wal")
    vault = SQLiteVault(path)
    try:
        value = ("json", b'"Your password is ZQXPASS123."')
        vault.cp_put(CheckpointRecord("t1", "", "001", None, "r1", value, ("json", b"{}")),
                     [("messages", "1", value)])
        vault.cp_put_writes("t1", "", "001", "task", "", [(0, "messages", value)])
        assert SECRET in wal.read_bytes()
        delete(vault)
        assert vault.cp_get("t1", "", "001") is None and vault.cp_writes("t1", "", "001") == []
        assert vault.cp_blobs("t1", "", {"messages": "1"}) == {}
        for name in (path, wal):
            assert not name.exists() or SECRET not in name.read_bytes(), name.name
    finally:
        vault.close()


class TestPostgresVault(VaultConformance):
    @pytest.fixture
    def vault(self, pg_url: str) -> Iterator[Vault]:
        from memos_core.vault.postgres import PostgresVault

        v = PostgresVault(pg_url)
        yield v
        v.close()

    def drop_checkpoint_rows(self, vault: Vault, thread_id: str) -> None:
        with vault._cp_tx() as conn:  # type: ignore[attr-defined]
            conn.execute("DELETE FROM cp_checkpoints WHERE thread_id=%s", (thread_id,))
