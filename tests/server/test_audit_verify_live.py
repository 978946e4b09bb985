"""``verify_audit`` while others write: it read the log and then the head record statement by
statement, so a write that committed in between looked like a cut tail ("the last 1 audit
record(s) were deleted"); a server-mode probe saw that false alarm after 32 of 50 crashes.
It now reads one snapshot (PostgreSQL: one read-only repeatable-read transaction; SQLite:
writes wait). Both vaults; the write lands deterministically between the first and the next
statement of the check."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from memos_core import MemOS, MemOSConfig
from memos_core.vault import audit_chain


def _write_during_verify(monkeypatch: pytest.MonkeyPatch, write: Any, module: Any) -> list[str]:
    """Make ``module.verify_chain`` run ``write`` in another thread right after its first
    statement (waiting up to 2 s for it); returns what the thread did."""
    done: list[str] = []
    real = audit_chain.verify_chain

    def verify_chain(query: Any) -> tuple[bool, str]:
        calls = [0]

        def query_then_write(sql: str, params: Any = ()) -> Any:
            rows = query(sql, params)
            calls[0] += 1
            if calls[0] == 1:
                writer = threading.Thread(target=lambda: done.append(write()))
                writer.start()
                writer.join(timeout=2.0)  # SQLite: it waits for the check (the lock)
            return rows
        return real(query_then_write)

    monkeypatch.setattr(module, "verify_chain", verify_chain)
    return done


def test_embedded_verify_is_not_fooled_by_a_write_meanwhile(tmp_path, monkeypatch):
    from memos_core.vault import sqlite as sqlite_vault

    with MemOS(tmp_path / "d", config=MemOSConfig(show_progress=False)) as mos:
        mos.add("first note", user_id="ada")
        done = _write_during_verify(
            monkeypatch, lambda: mos.add("written meanwhile", user_id="ada").text, sqlite_vault)
        assert mos.vault.verify_audit() == (True, "audit chain intact")
        monkeypatch.undo()
        for _ in range(100):
            if done:
                break
            threading.Event().wait(0.05)
        assert done == ["written meanwhile"]
        assert mos.vault.verify_audit() == (True, "audit chain intact")


def test_server_verify_is_not_fooled_by_another_process_writing(open_mos, monkeypatch):
    from memos_core.vault import postgres

    checker, writer = open_mos(), open_mos()
    checker.add("first note", user_id="ada")
    done = _write_during_verify(
        monkeypatch, lambda: writer.add("written meanwhile", user_id="ada").text, postgres)
    assert checker.vault.verify_audit() == (True, "audit chain intact")
    assert done == ["written meanwhile"]  # it committed while the check ran
    monkeypatch.undo()
    assert checker.vault.verify_audit() == (True, "audit chain intact")
