"""PostgreSQL checkpoints under concurrency: the orphan sweeps (``cp_redact``'s, and
``cp_delete_runs``' of the (thread, namespace)s it leaves with no checkpoint) against a put
committing meanwhile on another connection. Deterministic: connection ``a`` holds the put's
transaction open, the sweep runs in a thread until the server shows it waiting on a lock, then
``a`` commits. SQLite serialises its writes and has no such interleaving."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from memos_core.vault.base import CheckpointRecord
from memos_core.vault.pg_integrations import CheckpointSQL
from memos_core.vault.pg_sql import run
from memos_core.vault.postgres import PostgresVault

OLD, NEW = ("msgpack", b"old value"), ("msgpack", b"NEW VALUE")


@pytest.fixture
def vault(pg_url: str) -> Iterator[PostgresVault]:
    v = PostgresVault(pg_url)
    yield v
    v.close()


def _record(checkpoint_id: str, run_id: str) -> CheckpointRecord:
    return CheckpointRecord("t", "", checkpoint_id, None, run_id, ("msgpack", b"ckpt"),
                            ("msgpack", b"meta"))


def _waiting_on_a_lock(url: str, timeout: float = 10.0) -> None:
    """Return once a backend of this database waits on a lock (the sweep, on ``a``)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE "
                               "datname=current_database() AND wait_event_type='Lock'").fetchone()
            if row and row[0]:
                return
            time.sleep(0.02)
    raise AssertionError("the sweep never waited on the open put's transaction")


def _in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """``call()`` in a thread; the list gets its result or the exception it raised."""
    out: list[Any] = []

    def target() -> None:
        try:
            out.append(call())
        except Exception as exc:  # noqa: BLE001 - reported by the test
            out.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


#: each sweep, on thread "t" where a put of run "r1" (checkpoint "cp1", blob ("messages",
#: "1")) is in flight, and the blob ("messages", "1") is stored with no checkpoint left to
#: load it (cp_redact: left by earlier versions; cp_delete_runs: its own run's, deleted now)
SWEEPS: dict[str, Callable[[PostgresVault], Any]] = {
    "cp_redact": lambda v: v.cp_redact([b"no such text"], lambda value: None),
    "cp_delete_runs": lambda v: v.cp_delete_runs(["r0"]),
}


@pytest.mark.parametrize("sweep", SWEEPS.values(), ids=list(SWEEPS))
def test_a_sweep_keeps_the_blob_of_a_checkpoint_committed_meanwhile(
        vault: PostgresVault, pg_url: str, sweep: Callable[[PostgresVault], Any]) -> None:
    """The put upserts a blob whose key an orphan already has (a run on a thread with no
    checkpoint restarts its channel versions at "1"): the sweep waits for the put, then sees
    its checkpoint, so the committed checkpoint keeps its channel value. (Before, the sweep's
    DELETE waited on the blob's row lock and re-checked ``NOT EXISTS (a checkpoint)`` with
    its snapshot from before the put committed: it deleted the blob just written.)"""
    vault.cp_put(_record("cp0", "r0"), [("messages", "1", OLD)])
    if sweep is SWEEPS["cp_redact"]:  # an orphan as earlier versions' delete_runs left it
        with vault._cp_tx() as conn:
            conn.execute("DELETE FROM cp_checkpoints WHERE thread_id='t'")
    a = psycopg.connect(pg_url)  # a transaction, committed below
    try:
        run(a, CheckpointSQL.put(_record("cp1", "r1"), [("messages", "1", NEW)]))
        thread, out = _in_thread(lambda: sweep(vault))
        _waiting_on_a_lock(pg_url)
        a.commit()
        thread.join(30)
        assert not thread.is_alive() and not isinstance(out[0], Exception), out
    finally:
        a.close()
    assert [r.checkpoint_id for r in vault.cp_list("t")] == ["cp1"]
    assert vault.cp_blobs("t", "", {"messages": "1"}) == {"messages": NEW}


#: the two put paths (sync pool, native async view)
PUTS: dict[str, Callable[[PostgresVault, CheckpointRecord, list[Any]], None]] = {
    "sync": lambda v, record, blobs: v.cp_put(record, blobs),
    "async": lambda v, record, blobs: asyncio.run(v.native_async().cp_put(record, blobs)),
}


@pytest.mark.parametrize("put", PUTS.values(), ids=list(PUTS))
def test_a_put_waiting_on_a_sweep_holds_no_blob_row_lock(
        vault: PostgresVault, pg_url: str,
        put: Callable[[PostgresVault, CheckpointRecord, list[Any]], None]) -> None:
    """A put that meets a sweep's table lock waits before its first blob upsert, so the
    sweep's DELETE never waits on the put (which waits on the sweep: a deadlock, one of them
    aborted): the put writes its checkpoint before its blobs, on both paths."""
    vault.cp_put(_record("cp0", "r0"), [("messages", "1", OLD)])
    with vault._cp_tx() as conn:
        conn.execute("DELETE FROM cp_checkpoints WHERE thread_id='t'")
    sweep = psycopg.connect(pg_url)
    try:
        sweep.execute("SET lock_timeout = '5s'")
        sweep.execute("LOCK TABLE cp_checkpoints IN SHARE MODE")  # as cp_redact's sweep
        thread, out = _in_thread(lambda: put(vault, _record("cp1", "r1"),
                                             [("messages", "1", NEW)]))
        _waiting_on_a_lock(pg_url)
        deleted = sweep.execute("DELETE FROM cp_blobs x WHERE NOT EXISTS (SELECT 1 FROM "
                                "cp_checkpoints c WHERE c.thread_id=x.thread_id AND "
                                "c.checkpoint_ns=x.checkpoint_ns)").rowcount
        sweep.commit()
        thread.join(30)
        assert not thread.is_alive() and out == [None], out
    finally:
        sweep.close()
    assert deleted == 1  # the orphan, without waiting on the put
    assert vault.cp_blobs("t", "", {"messages": "1"}) == {"messages": NEW}


def test_concurrent_puts_sweeps_and_run_deletes_do_not_deadlock(vault: PostgresVault) -> None:
    """Every transaction writing checkpoints takes cp_checkpoints' table lock before a row
    lock, so puts, redactions and run deletes on several threads all finish (a deadlock
    would abort one with an error)."""
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for n in range(15):
                vault.cp_put(_record(f"{i}-{n:02}", f"r{i}"), [("messages", str(n), NEW)])
                if n % 5 == 4:
                    vault.cp_delete_runs([f"r{(i + 1) % 4}"])
                if n % 7 == 6:
                    vault.cp_redact([b"VALUE"], lambda value: None)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors


def test_a_run_delete_during_a_redaction_waits_for_it(vault: PostgresVault, pg_url: str) -> None:
    """A run delete that starts while a redaction holds a checkpoint's row lock (between
    selecting it and storing its rewrite) waits for the redaction, which then commits: the
    redaction takes cp_checkpoints' table lock before its row locks. (Otherwise the delete
    takes its table lock, waits on the row, and the redaction's UPDATE waits on the table
    lock: a deadlock, one of them aborted.)"""
    secret = ("msgpack", b"ckpt SECRET")
    vault.cp_put(CheckpointRecord("t", "", "cp0", None, "r0", secret, ("msgpack", b"meta")),
                 [("messages", "1", OLD)])
    started: list[tuple[threading.Thread, list[Any]]] = []

    def rewrite(value: tuple[str, bytes]) -> tuple[str, bytes]:
        if not started:
            started.append(_in_thread(lambda: vault.cp_delete_runs(["r0"])))
            _waiting_on_a_lock(pg_url)
        return value[0], value[1].replace(b"SECRET", b"[gone]")

    assert vault.cp_redact([b"SECRET"], rewrite) == ["t"]
    thread, out = started[0]
    thread.join(30)
    assert not thread.is_alive() and out == [None], out
    assert vault.cp_list("t") == [] and vault.cp_blobs("t", "", {"messages": "1"}) == {}


def test_a_redaction_with_no_orphan_to_sweep_does_not_hold_puts_off(
        vault: PostgresVault, pg_url: str) -> None:
    """The sweep's table lock holds every put off while it runs: it is taken only when an
    orphan exists, so a forget on a store without one neither waits for puts in flight nor
    stops new ones (it took the lock on every forget)."""
    vault.cp_put(_record("cp0", "r0"), [("messages", "1", OLD)])  # a checkpoint: no orphan
    a = psycopg.connect(pg_url)  # a put in flight, kept open while the redaction runs
    try:
        run(a, CheckpointSQL.put(_record("cp1", "r1"), [("messages", "2", NEW)]))
        thread, out = _in_thread(lambda: vault.cp_redact([b"no such text"], lambda v: None))
        thread.join(30)  # a guard: with the lock it waits until the put commits, below
        assert not thread.is_alive() and out == [[]], out
        a.commit()
    finally:
        a.close()
    assert [r.checkpoint_id for r in vault.cp_list("t")] == ["cp1", "cp0"]
