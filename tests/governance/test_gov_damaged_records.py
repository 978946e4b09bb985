"""One memory whose stored record is damaged (a byte that is not UTF-8, JSON cut short) no
longer makes its owner's whole store unusable.

Before, ``list``, ``search`` and ``export`` raised ``CorruptDataError`` for the one damaged
record, so no other memory could be listed, searched or exported -- while the error advised
restoring "from an export bundle" -- and ``forget`` of it raised too, so its bytes could
never be erased. Now the reads that show many memories leave it out (logged once, named,
with what to do; the export manifest lists it under ``damaged``), ``get`` of it still
raises naming it, and its owner can forget it: the owner comes from the columns the vault
keeps beside the record, and the forget leaves no byte of its text, tags or metadata in the
vault or its WAL. Each test damages a real closed store with sqlite3 and opens it again.
"""

from __future__ import annotations

import json
import logging
import time
import sqlite3
from pathlib import Path

import pytest
from test_gov_forgetting import files_holding  # tests/governance is on sys.path

from memos_core import MemOS, MemOSConfig
from memos_core.cube import utcnow
from memos_core.errors import AccessDeniedError, CorruptDataError, MemoryDeletedError
from memos_core.vault.damaged import TEXT_PARTIAL, TEXT_UNREADABLE, TEXT_WHOLE

TEXT = "the zebra crossed the river at dawn with Okonkwo"
TAG = "tag-okapi-3391"
SECRET = "MARMOT9920"  # a metadata value
#: what must be in the files before the forget and in none after it
NEEDLES = ("crossed the river", "Okonkwo", TAG, SECRET)

#: SQL that damages one memory's document: ``{table}`` is ``memories`` or ``versions``
DAMAGES = {
    # one byte of the text is no longer UTF-8 (the rest of the record stays)
    "not utf-8": "UPDATE {table} SET doc=CAST(replace(doc, 'zebra', X'FF') AS TEXT) WHERE id=?",
    # the document is cut short: no text, tags or metadata left in it
    "json cut short": "UPDATE {table} SET doc=substr(doc, 1, 40) WHERE id=?",
}


def _config() -> MemOSConfig:
    return MemOSConfig(show_progress=False, admin_users=("root",))


def _store(data: Path) -> tuple[str, str, str]:
    """ana's memory that gets damaged, ana's other one, and bob's."""
    with MemOS(data, config=_config()) as mos:
        bad = mos.add(TEXT, user_id="ana", tags=[TAG], metadata={"locker": SECRET}).id
        good = mos.add("Ana drinks green tea in the morning", user_id="ana").id
        bobs = mos.add("Bob keeps his kayak in the garage", user_id="bob").id
    return bad, good, bobs


def _damage(data: Path, memory_id: str, how: str, tables: tuple[str, ...]) -> None:
    """Damage the documents of ``memory_id`` in ``tables`` (secure_delete: no copy of the
    old bytes is left beside the damaged one, as a byte damaged on disk leaves none)."""
    db = sqlite3.connect(data / "vault.sqlite3")
    try:
        db.execute("PRAGMA secure_delete=ON")
        for table in tables:
            assert db.execute(DAMAGES[how].format(table=table), (memory_id,)).rowcount == 1
        db.commit()
    finally:
        db.close()


CASES = [("not utf-8", ("memories", "versions")), ("json cut short", ("memories", "versions")),
         ("json cut short", ("memories",))]
IDS = ["not-utf8", "json-cut-short", "json-cut-short-history-intact"]


@pytest.mark.parametrize(("how", "tables"), CASES, ids=IDS)
def test_list_search_and_export_leave_a_damaged_memory_out(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str,
        tables: tuple[str, ...]) -> None:
    data = tmp_path / "d"
    bad, good, bobs = _store(data)
    _damage(data, bad, how, tables)
    with MemOS(data, config=_config()) as mos, caplog.at_level(logging.ERROR):
        assert [c.id for c in mos.list(user_id="ana")] == [good]
        assert [c.id for c in mos.list(user_id="ana", offset=1)] == [good]  # its slot stays
        assert [h.id for h in mos.search("zebra river dawn", user_id="ana")] == [good]
        assert [h.id for h in mos.search("green tea", user_id="ana", k=1)] == [good]
        assert [h.id for h in mos.search("kayak garage", user_id="bob", k=1)] == [bobs]
        bundle = mos.export(tmp_path / "bundle", user_id="ana")
        manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
        assert manifest["damaged"] == [bad] and manifest["memories"] == 1
        lines = (bundle / "memories.jsonl").read_text(encoding="utf-8").splitlines()
        assert [json.loads(line)["id"] for line in lines] == [good]
        bobs_bundle = mos.export(tmp_path / "bobs", user_id="bob")
        assert json.loads((bobs_bundle / "manifest.json").read_text())["damaged"] == []
        with pytest.raises(CorruptDataError, match=f"memory {bad}") as info:
            mos.get(bad, user_id="ana")
        assert info.value.memory_id == bad
        assert "forget" in str(info.value)
    named = [r for r in caplog.records if r.levelno == logging.ERROR and bad in r.getMessage()]
    assert len(named) == 1, "logged once per open store, not on every read"
    assert "forget" in named[0].getMessage() and "backup" in named[0].getMessage()


@pytest.mark.parametrize(("how", "tables", "note"),
                         [(*case, note) for case, note in
                          zip(CASES, (TEXT_PARTIAL, TEXT_UNREADABLE, TEXT_WHOLE))], ids=IDS)
def test_the_owner_forgets_a_damaged_memory_and_no_byte_of_it_is_left(
        tmp_path: Path, how: str, tables: tuple[str, ...], note: str) -> None:
    data = tmp_path / "d"
    bad, good, _ = _store(data)
    _damage(data, bad, how, tables)
    assert files_holding(data, NEEDLES), "the premise: the files hold the memory before"
    with MemOS(data, config=_config()) as mos:
        for stranger in ("bob", "eve"):
            with pytest.raises(AccessDeniedError):
                mos.forget(bad, user_id=stranger)
        receipt = mos.forget(bad, user_id="ana")
        assert receipt.memory_id == bad and "vault" in receipt.removed_from
        assert receipt.text_sha256 is None  # no digest of a text that may not be the memory's
        assert receipt.notes == (f"Memory {bad}: {note}.",)
        with pytest.raises(MemoryDeletedError):
            mos.get(bad, user_id="ana")
        assert all(not v.text for v in mos.history(bad, user_id="ana"))
        assert [c.id for c in mos.list(user_id="ana")] == [good]
        assert mos.forget(bad, user_id="ana").text_sha256 is None  # idempotent
        assert mos.verify_audit(user_id="root")[0]
    assert files_holding(data, NEEDLES) == {}


def test_forget_many_takes_a_damaged_memory_with_the_others(tmp_path: Path) -> None:
    data = tmp_path / "d"
    bad, good, _ = _store(data)
    _damage(data, bad, "not utf-8", ("memories", "versions"))
    with MemOS(data, config=_config()) as mos:
        with pytest.raises(AccessDeniedError):
            mos.forget_many([good, bad], user_id="bob")
        assert [c.id for c in mos.list(user_id="ana")] == [good]  # nothing was forgotten
        receipts = mos.forget_many([bad, good, bad], user_id="ana")
        assert [r.memory_id for r in receipts] == [bad, good, bad]
        assert receipts[0].notes and not receipts[1].notes
        assert receipts[1].text_sha256 is not None  # an intact memory: as before
        assert mos.list(user_id="ana") == []
    assert files_holding(data, NEEDLES) == {}


def test_the_export_command_counts_the_damaged_memories(tmp_path: Path, memos) -> None:
    data = tmp_path / "d"
    with MemOS(data, config=_config()) as mos:
        bad = mos.add(TEXT, user_id="alice").id
        mos.add("Alice rides a blue bicycle", user_id="alice")
    _damage(data, bad, "json cut short", ("memories",))
    code, out, _ = memos("export", str(tmp_path / "bundle"))
    assert code == 0 and "1 damaged memory left out" in out


def _forgettable_summary(data: Path) -> tuple[str, str]:
    """ana's source memory and a summary of it (with another source), whose record gets
    damaged."""
    with MemOS(data, config=_config()) as mos:
        source = mos.add("Ana likes figs", user_id="ana").id
        other = mos.add("Ana likes plums", user_id="ana").id
        summary = mos.compress([source, other], TEXT, user_id="ana").id
    _damage(data, summary, "not utf-8", ("memories", "versions"))
    return source, summary


def test_forget_many_of_a_source_and_its_damaged_summary(tmp_path: Path) -> None:
    """The source's cascade (flagging its summaries) cannot read the damaged summary: with
    both listed, the summary goes first, whatever the order asked; receipts keep that order."""
    data = tmp_path / "d"
    source, summary = _forgettable_summary(data)
    with MemOS(data, config=_config()) as mos:
        receipts = mos.forget_many([source, summary], user_id="ana")
        assert [r.memory_id for r in receipts] == [source, summary]
        assert receipts[1].notes and not receipts[0].notes
        assert mos.vault.get(source).state.value == "deleted"
        assert mos.vault.get(summary).state.value == "deleted"
        assert mos.vault.unfinished_forgets() == []
    assert files_holding(data, NEEDLES) == {}


def test_forget_of_a_source_whose_summary_is_damaged_says_what_to_do(tmp_path: Path) -> None:
    data = tmp_path / "d"
    source, summary = _forgettable_summary(data)
    with MemOS(data, config=_config()) as mos:
        with pytest.raises(CorruptDataError, match=f"forget {source} again") as info:
            mos.forget(source, user_id="ana")
        assert info.value.memory_id == summary
        assert mos.vault.unfinished_forgets() == [source]  # the tombstone is there
        mos.forget(summary, user_id="ana")
        mos.forget(source, user_id="ana")  # finishes the cascade
        assert mos.vault.unfinished_forgets() == []


def test_a_damaged_older_version_keeps_its_time_when_scrubbed(tmp_path: Path) -> None:
    """The forget replaces a damaged older version by the stand-in scrubbed: with that
    version's own time, not the current one's (an export of the history must import, and
    get(as_of=...) must not give a later version's shape for an earlier time)."""
    data = tmp_path / "d"
    with MemOS(data, config=_config()) as mos:
        mid = mos.add(TEXT, user_id="ana").id
        time.sleep(0.05)
        mos.update(mid, user_id="ana", text="the zebra crossed again")
        time.sleep(0.05)
        mos.update(mid, user_id="ana", text="the zebra crossed a third time")
        times = [v.updated_at for v in mos.history(mid, user_id="ana")]
    db = sqlite3.connect(data / "vault.sqlite3")
    db.execute("UPDATE versions SET doc=CAST(replace(doc, 'zebra', X'FF') AS TEXT) "
               "WHERE id=? AND version=1", (mid,))
    db.commit()
    db.close()
    with MemOS(data, config=_config()) as mos:
        mos.forget(mid, user_id="ana")
        history = mos.history(mid, user_id="ana")
        assert [abs((v.updated_at - t).total_seconds()) < 0.001
                for v, t in zip(history, times)] == [True, True, True]
        bundle = mos.export(tmp_path / "bundle", user_id="ana")
    with MemOS(tmp_path / "other", config=_config()) as other:
        assert other.import_(bundle, user_id="ana")["imported"] == 1


def test_the_scheduler_passes_over_a_damaged_memory(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """One damaged record stopped the scheduler's pass for its owner and, store-wide, for
    every user (TTL expiry, promotion, demotion)."""
    data = tmp_path / "d"
    bad, good, _ = _store(data)
    _damage(data, bad, "json cut short", ("memories",))
    with MemOS(data, config=_config()) as mos, caplog.at_level(logging.ERROR):
        expiring = mos.add("Ana parks on level 3 today", user_id="ana", ttl_seconds=0.001)
        time.sleep(0.01)
        mos.schedule(user_id="ana")
        assert mos.vault.get(expiring.id).state.value != "generated"  # expired by the pass
        mos.schedule()  # store-wide
        assert good in [c.id for c in mos.list(user_id="ana")]
    assert any(bad in r.getMessage() for r in caplog.records)


def test_damaged_usage_counters_leave_the_memory_readable(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Usage counters are no version, only a count of hits: damaged ones made an intact
    memory vanish from list, search and export, with the advice to forget it."""
    data = tmp_path / "d"
    bad, good, _ = _store(data)
    db = sqlite3.connect(data / "vault.sqlite3")
    assert db.execute("UPDATE usage SET tier='bogus' WHERE id=?", (bad,)).rowcount == 1
    db.commit()
    db.close()
    with MemOS(data, config=_config()) as mos, caplog.at_level(logging.WARNING):
        assert mos.get(bad, user_id="ana").text == TEXT
        assert {c.id for c in mos.list(user_id="ana")} == {bad, good}
        assert bad in [h.id for h in mos.search("zebra river dawn", user_id="ana")]
        bundle = mos.export(tmp_path / "bundle", user_id="ana")
        assert json.loads((bundle / "manifest.json").read_text())["damaged"] == []
    assert len([r for r in caplog.records if bad in r.getMessage()]) == 1


def test_a_forget_hook_reading_memories_passes_over_a_damaged_one(tmp_path: Path) -> None:
    """``owned_holding`` (how the adapters' forget hooks find the messages holding a
    forgotten text) read strictly, so a damaged message stopped the forget of any memory
    whose text it might hold -- its own included."""
    from memos_core.governance.redaction import MessageRedactor
    from memos_core.integration.forgets import owned_holding

    data = tmp_path / "d"
    bad, _, _ = _store(data)
    with MemOS(data, config=_config()) as mos:
        copy = mos.add(f"Quoting: {TEXT}", user_id="ana").id  # a copy of the text to redact
    _damage(data, bad, "not utf-8", ("memories", "versions"))
    with MemOS(data, config=_config()) as mos:
        stand_in, _ = mos.vault.damaged_stand_in(bad)
        held = owned_holding(mos, "ana", MessageRedactor(stand_in), tags=(),
                             states=("generated",))
        assert [c.id for c in held] == [copy]  # the damaged one itself is left out


def test_a_damaged_hot_memory_neither_stops_chat_nor_keeps_its_kv_block(tmp_path: Path) -> None:
    """The hot block's memories were read strictly: one damaged hot memory made every chat
    of its owner raise. And the scan at open that deletes stale KV files raised on it (logged;
    the store opened), so its block -- a copy of its text -- stayed on disk."""
    from memos_core.runtime import LocalModel
    from memos_core.scheduler import SchedulerConfig
    from memos_core.tiers.activation.storage import kv_files_holding

    small = LocalModel.tiny(seed=0, max_position_embeddings=512)
    eager = SchedulerConfig.preset("eager", min_heat_to_promote=0.9, demote_below_heat=0.5)
    data = tmp_path / "d"
    with MemOS(data, config=_config()) as mos:
        mos.attach_model(small)
        bad = mos.add(TEXT, user_id="ana", type="fact").id
        good = mos.add("Ana's cat is called Pastel.", user_id="ana", type="fact").id
        mos.vault.record_usage([bad, good], utcnow(), mos.config.heat_half_life_s)
        mos.schedule(config=eager)
        assert {c.id for c in mos.engine.executor.hot_memories("ana")} == {bad, good}
        mos.chat("What is Ana's cat called?", user_id="ana", max_new_tokens=2)
        assert kv_files_holding(data / "kv", [bad]), "the premise: a block holds it"
        _damage(data, bad, "json cut short", ("memories",))  # on disk, while it is open
        assert [c.id for c in mos.engine.executor.hot_memories("ana")] == [good]
        answer = mos.chat("What is Ana's cat called?", user_id="ana", max_new_tokens=2)
        assert bad not in {m.id for m in answer.trace.memories}
    with MemOS(data, config=_config()) as mos:
        assert kv_files_holding(data / "kv", [bad]) == []  # stale: deleted at open
        mos.attach_model(small)
        assert [c.id for c in mos.engine.executor.hot_memories("ana")] == [good]


def test_a_damaged_keyed_memory_leaves_the_others_listed(tmp_path: Path) -> None:
    """A listing by key prefix (the LangGraph store's search without a query) read its page's
    memories strictly: one damaged item made the whole namespace unreadable."""
    from memos_core.integration.keyed import iter_by_prefix, put_by_key
    from memos_core.vault import ItemKey

    data = tmp_path / "d"
    with MemOS(data, config=_config()) as mos:
        bad = put_by_key(mos, ItemKey("ana", ("prefs",), "a"), TEXT).id
        good = put_by_key(mos, ItemKey("ana", ("prefs",), "b"), "Ana prefers tea").id
    _damage(data, bad, "not utf-8", ("memories", "versions"))
    with MemOS(data, config=_config()) as mos:
        assert [c.id for _, c in iter_by_prefix(mos, "ana", ("prefs",))] == [good]
