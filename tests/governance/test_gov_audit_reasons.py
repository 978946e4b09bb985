"""Forget removes the memory from the audit *reasons* too.

Every mutation takes a free-text ``reason``, and agents pass ones the model wrote, which often
repeat the fact ("user said: my passport is X99413"). After ``forget``, no record of the
memory keeps its reason -- the forget's own included, and the supersede record its add wrote
on the fact it replaced -- no byte of them is left in any file of the data directory (store
open and closed), ``verify_audit`` still says the chain is intact, and every other record
keeps its reason. Before the forget the same scan finds the reasons, so it cannot pass by
looking in the wrong place.
"""

from __future__ import annotations

import os
from pathlib import Path

from memos_core import MemOS, MemOSConfig

SECRET = "X99413"
OLD_SECRET = "X11111"


def files_holding(root: Path, needle: str) -> list[str]:
    """The files under ``root`` whose raw bytes hold ``needle``."""
    return [str(Path(d, n).relative_to(root)) for d, _, names in os.walk(root) for n in names
            if needle.encode() in Path(d, n).read_bytes()]


def test_forget_leaves_no_reason_of_the_memory_in_any_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = MemOSConfig(show_progress=False)
    with MemOS(data, config=config) as mos:
        old = mos.add("Alice's passport number is on file.", user_id="alice",
                      reason=f"user said: my old passport was {OLD_SECRET}")
        fact = mos.add("Alice has a new passport.", user_id="alice", supersedes=old.id,
                       reason=f"user said: my passport is {SECRET}")
        mos.update(fact.id, "Alice renewed her passport.", user_id="alice",
                   reason=f"renewed {SECRET}")
        mos.share(fact.id, with_user_id="bob", user_id="alice", reason=f"bob books {SECRET}")
        keep = mos.add("Alice likes tea.", user_id="alice", reason="unrelated: tea")
        assert files_holding(data, SECRET), "the scan would not find the reasons"

        mos.forget(fact.id, user_id="alice", reason=f"forget {SECRET} now")

        records = mos.audit_log(user_id="alice", memory_id=fact.id)
        assert {r.action for r in records} >= {"add", "update", "forget"}
        assert [r.reason for r in records] == [None] * len(records)
        # the fact it superseded keeps its own reason; the supersede record, written with
        # the forgotten memory's add (and its reason), loses it
        assert [(r.action, r.reason) for r in mos.audit_log(user_id="alice", memory_id=old.id)] \
            == [("add", f"user said: my old passport was {OLD_SECRET}"), ("supersede", None)]
        assert [r.reason for r in mos.audit_log(user_id="alice", memory_id=keep.id)] \
            == ["unrelated: tea"]
        assert mos.vault.verify_audit() == (True, "audit chain intact")
        assert not files_holding(data, SECRET), "a forgotten reason on disk (store open)"
    assert not files_holding(data, SECRET), "a forgotten reason on disk (closed)"
    with MemOS(data, config=config) as again:
        assert again.vault.verify_audit() == (True, "audit chain intact")


def test_the_audit_head_anchors_the_chain(tmp_path: Path, capsys) -> None:
    """``audit_head`` (admin only) and ``memos audit head`` give the head to copy elsewhere:
    record ``seq`` has that hash."""
    import json

    import pytest

    from memos_core import AccessDeniedError
    from memos_core.cli import main

    data = tmp_path / "data"
    with MemOS(data, config=MemOSConfig(show_progress=False, admin_users=("root",))) as mos:
        mos.add("The boiler was serviced in March.", user_id="alice")
        mos.add("The roof was fixed in May.", user_id="alice")
        head = mos.audit_head(user_id="root")
        newest = mos.audit_log(user_id="alice")[-1]
        assert (head["count"], head["seq"], head["hash"]) == (2, newest.seq, newest.hash)
        with pytest.raises(AccessDeniedError, match="admin only"):
            mos.audit_head(user_id="alice")
    assert main(["audit", "head", "--json", "--data-dir", str(data), "--user", "ops"]) == 0
    assert json.loads(capsys.readouterr().out) == head


def test_a_damaged_audit_record_does_not_stop_the_store_opening(tmp_path: Path) -> None:
    """An audit row whose details are not JSON (damaged or tampered): the store opens (the
    index on details['by'] reads it as NULL; it failed the open before, as 'not a readable
    SQLite database'), verify names the record, and reading it raises CorruptDataError."""
    import sqlite3

    import pytest

    from memos_core import CorruptDataError

    data = tmp_path / "data"
    config = MemOSConfig(show_progress=False, admin_users=("root",))
    with MemOS(data, config=config) as mos:
        mos.add("The boiler was serviced in March.", user_id="alice")
    db = sqlite3.connect(data / "vault.sqlite3")
    db.execute("DROP INDEX audit_by")  # as a vault from before the index has none
    db.execute("UPDATE audit SET details='{bad' WHERE seq=1")
    db.commit()
    db.close()
    with MemOS(data, config=config) as mos:
        ok, message = mos.verify_audit(user_id="root")
        assert not ok and "audit record 1" in message
        with pytest.raises(CorruptDataError, match="Audit record 1 is damaged"):
            mos.audit_log(user_id="alice")
