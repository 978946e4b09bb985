"""The vault conformance suite (tests/vault/vault_conformance.py) against every vault backend:
the embedded SQLite vault and the PostgreSQL vault (server mode, a real server: the
``pg_url`` fixture)."""

from __future__ import annotations

from collections.abc import Iterator
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


class TestPostgresVault(VaultConformance):
    @pytest.fixture
    def vault(self, pg_url: str) -> Iterator[Vault]:
        from memos_core.vault.postgres import PostgresVault

        v = PostgresVault(pg_url)
        yield v
        v.close()
