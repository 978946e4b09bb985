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


class TestPostgresVault(VaultConformance):
    @pytest.fixture
    def vault(self, pg_url: str) -> Iterator[Vault]:
        from memos_core.vault.postgres import PostgresVault

        v = PostgresVault(pg_url)
        yield v
        v.close()
