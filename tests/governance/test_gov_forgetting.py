"""Forgetting everywhere: after ``forget``, the text is found in no search, no export, no KV
cache, and in no byte of any file under the data directory (the SQLite vault and its WAL,
the Qdrant edge shard with its WAL and segments, KV files) -- with the store open and after
it is closed. The receipt lists each derived form it touched.

Before forgetting, the same scan must *find* the text (in the vault and in the hot block's
KV file), so the test cannot pass by looking in the wrong place.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memos_core import InvalidInputError, MemOS, MemOSConfig, State
from memos_core.cube import utcnow
from memos_core.engine import engine_for
from memos_core.governance import FLAG_KEY
from memos_core.scheduler import SchedulerConfig
from memos_core.validation import RESERVED_METADATA_KEYS

EAGER = SchedulerConfig.preset("eager", min_heat_to_promote=0.9, demote_below_heat=0.5)
SECRET = "The vault launch code is ZEBRA4417QUOKKA"
OLD_SECRET = "Dana's old locker combination is MARMOT9920"
TURN = "my therapist is Dr Okonkwo-Lindqvist"
SUMMARY = "Dana keeps codes: ZEBRA4417QUOKKA and the locker"
MARKERS = ("ZEBRA4417QUOKKA", "MARMOT9920", "Okonkwo-Lindqvist")
KEEP = "Dana's favourite colour is teal."


def files_holding(root: Path, needles: tuple[str, ...]) -> dict[str, list[str]]:
    """{relative file path: [needles found in its raw bytes]} over every file under root."""
    found: dict[str, list[str]] = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            data = path.read_bytes()
            hits = [n for n in needles if n.encode() in data]
            if hits:
                found[str(path.relative_to(root))] = hits
    return found


def all_text(mos: MemOS, user: str, tmp: Path) -> str:
    """Everything the API hands out for ``user``: searches, list, histories, an export."""
    parts = []
    for query in ("launch code", "locker combination", "therapist", "codes", "Dana"):
        parts += [h.memory.model_dump_json() for h in mos.search(
            query, user_id=user, k=50, include_archived=True, include_superseded=True,
            allow_sensitive="*")]
    for cube in mos.list(user_id=user, states=[s.value for s in State], limit=1000):
        parts += [v.model_dump_json() for v in mos.history(cube.id, user_id=user)]
    bundle = mos.export(tmp / f"export-{len(os.listdir(tmp))}", user_id=user, include_sensitive=True)
    parts += [p.read_text() for p in bundle.iterdir()]
    parts += [json.dumps(r.__dict__, default=str) for r in mos.audit_log(user_id=user, limit=10_000)]
    return "\n".join(parts)


@pytest.fixture
def store(tmp_path: Path, tiny_model: Any) -> Iterator[MemOS]:
    mos = MemOS(tmp_path / "data", config=MemOSConfig(show_progress=False))
    mos.attach_model(tiny_model)
    yield mos
    mos.close()


def populate(mos: MemOS) -> dict[str, Any]:
    """Every kind of copy: versions, a chat turn, a share, a summary, a hot KV block."""
    secret = mos.add(SECRET, user_id="dana", type="fact", tags=["codes"], sensitivity=["secret2"])
    locker = mos.add(OLD_SECRET, user_id="dana", type="fact")
    locker = mos.update(locker.id, "Dana's locker combination changed.", user_id="dana")
    turn = mos.add([{"role": "user", "content": TURN, "id": "m1"}], user_id="dana",
                   session_id="chat")[0]
    keep = mos.add(KEEP, user_id="dana")
    mos.share(secret.id, with_user_id="erin", user_id="dana")
    summary = mos.compress([secret.id, locker.id], SUMMARY, user_id="dana")
    mos.set_state(secret.id, "generated", user_id="dana")  # back from the archive: hot-able
    mos.vault.record_usage([secret.id, turn.id, keep.id], utcnow(), mos.config.heat_half_life_s)
    mos.schedule(config=EAGER)
    return {"secret": secret, "locker": locker, "turn": turn, "keep": keep, "summary": summary}


def test_forgotten_text_is_nowhere(store: MemOS, tmp_path: Path) -> None:
    made = populate(store)
    kv_files = list((store.data_dir / "kv").glob("*.safetensors"))
    assert kv_files, "the hot block was not built: the KV part of this test would be vacuous"
    before = files_holding(store.data_dir, MARKERS)
    assert any("vault.sqlite3" in f for f in before) and any(f.startswith("kv") for f in before)

    receipts = store.forget_many([made["secret"].id, made["locker"].id, made["turn"].id],
                                 user_id="dana", reason="user asked")
    receipts.append(store.forget(made["summary"].id, user_id="dana"))

    derived = {(d.kind, d.action) for r in receipts for d in r.derived}
    assert ("summary", "flagged") in derived and ("kv_block", "deleted") in derived
    assert any("kv" in r.removed_from for r in receipts)
    assert not files_holding(store.data_dir, MARKERS), "forgotten text on disk (store open)"
    for user in ("dana", "erin"):
        text = all_text(store, user, tmp_path)
        assert not [m for m in MARKERS if m in text], f"forgotten text handed to {user}"
    tier = engine_for(store).tier
    gone = {made[k].id for k in ("secret", "locker", "turn", "summary")}
    assert not any(gone & {mid for mid, _ in b.memories} for b in tier.blocks())
    assert store.search("teal colour", user_id="dana")[0].text == KEEP  # the rest is intact
    store.close()
    assert not files_holding(tmp_path / "data", MARKERS), "forgotten text on disk (closed)"
    with MemOS(tmp_path / "data", config=MemOSConfig(show_progress=False)) as again:
        assert again.vault.verify_audit() == (True, "audit chain intact")
        assert again.index.count() == 1


@pytest.mark.parametrize("mode, action, summary_state", [
    ("flag", "flagged", State.ARCHIVED), ("forget", "forgotten", State.DELETED)])
def test_summaries_of_a_forgotten_memory_are_flagged_or_forgotten(
        store: MemOS, mode: str, action: str, summary_state: State) -> None:
    a = store.add("Dana met Farid in Tunis.", user_id="dana")
    b = store.add("Dana and Farid cooked couscous.", user_id="dana")
    summary = store.compress([a.id, b.id], "Dana and Farid: Tunis and couscous.", user_id="dana")
    outer = store.compress([summary.id], "Dana's Tunis trip.", user_id="dana")

    receipt = store.forget(a.id, user_id="dana", derived=mode)

    assert [(d.kind, d.id, d.action) for d in receipt.derived][:1] == [("summary", summary.id, action)]
    now = store.history(summary.id, user_id="dana")[-1]  # archived by the outer summary
    assert now.state is summary_state
    if mode == "flag":
        assert now.metadata[FLAG_KEY] == [a.id] and now.text == summary.text
        # the summary of the summary may repeat the text too: flagged with the forgotten id
        assert ("summary", outer.id, "flagged") in [(d.kind, d.id, d.action) for d in receipt.derived]
        assert store.get(outer.id, user_id="dana").metadata[FLAG_KEY] == [a.id]
        again = store.forget(b.id, user_id="dana").derived
        assert [(d.id, d.action) for d in again] == [(summary.id, "flagged"), (outer.id, "flagged")]
        assert store.get(summary.id, user_id="dana").metadata[FLAG_KEY] == [a.id, b.id]
        outer_now = store.get(outer.id, user_id="dana")
        assert outer_now.metadata[FLAG_KEY] == [a.id, b.id] and outer_now.state is State.GENERATED
    else:  # forgotten recursively: the summary of the summary goes too
        assert ("summary", outer.id, "forgotten") in [(d.kind, d.id, d.action) for d in receipt.derived]
        assert "Tunis" not in store.history(outer.id, user_id="dana")[0].text
    actions = [r.action for r in store.audit_log(user_id="dana", memory_id=summary.id)]
    assert actions[-1] == ("flag:source_forgotten" if mode == "flag" else "forget")


def test_the_flag_reaches_every_depth_with_the_principals_write_right_on_each(
        store: MemOS) -> None:
    """dana may not change erin's summary of her memory and erin's own (it repeats it,
    and erin's note, which dana may not read), but erin let dana change the summary of that
    summary: it is flagged, the one between is reported ``not_permitted`` and left alone."""
    fact = store.add("Dana's gate code is 9071.", user_id="dana")
    store.share(fact.id, with_user_id="erin", user_id="dana", scope="write")
    note = store.add("Erin visits on Fridays.", user_id="erin")
    inner = store.compress([fact.id, note.id], "Gate 9071; Erin on Fridays.", user_id="erin")
    outer = store.compress([inner.id], "Gate 9071.", user_id="erin")
    store.share(outer.id, with_user_id="dana", user_id="erin", scope="write")

    receipt = store.forget(fact.id, user_id="dana")

    assert [(d.id, d.action) for d in receipt.derived] == [
        (inner.id, "not_permitted"), (outer.id, "flagged")]
    assert FLAG_KEY not in store.get(inner.id, user_id="erin").metadata
    assert store.get(outer.id, user_id="erin").metadata[FLAG_KEY] == [fact.id]


def test_a_receipt_claims_no_index_removal_for_an_expired_memory(store: MemOS) -> None:
    """Expiring a memory took its point out of the index: forgetting it then removes
    nothing from the index, and its receipt lists only what this call removed."""
    live = store.add("Dana's bike lock is 5512.", user_id="dana")
    gone = store.add("Dana's old bike lock was 4410.", user_id="dana", ttl_seconds=0.2)
    time.sleep(0.3)
    store.schedule(user_id="dana")
    assert store.get(gone.id, user_id="dana").state is State.EXPIRED
    assert store.index.count() == 1

    assert store.forget(gone.id, user_id="dana").removed_from == ("vault", "graph")
    assert store.forget(live.id, user_id="dana").removed_from == ("vault", "index", "graph")
    assert store.index.count() == 0


def test_re_deriving_a_flagged_summary_scrubs_its_earlier_versions(store: MemOS, tmp_path: Path) -> None:
    """The forget flags the summary and says to re-derive it with update: then no version of
    it keeps the forgotten text, for its owner, a reader or a rollback, nor any file."""
    pin = store.add(SECRET, user_id="dana")
    store.share(pin.id, with_user_id="erin", user_id="dana")
    summary = store.compress([pin.id], SUMMARY, user_id="dana")
    store.update(summary.id, SUMMARY + " (checked)", user_id="dana")
    store.forget(pin.id, user_id="dana")
    flagged = store.get(summary.id, user_id="dana")
    assert flagged.metadata[FLAG_KEY] == [pin.id] and "ZEBRA4417QUOKKA" in flagged.text

    new = store.update(summary.id, "Dana keeps a locker code.", user_id="dana")
    assert FLAG_KEY not in new.metadata and new.version == flagged.version + 1
    for user in ("dana", "erin"):
        versions = store.history(summary.id, user_id=user)
        assert [v.scrubbed for v in versions] == [True] * flagged.version + [False]
        assert "ZEBRA4417QUOKKA" not in all_text(store, user, tmp_path)
    with pytest.raises(InvalidInputError, match="was scrubbed"):
        store.rollback(summary.id, 1, user_id="dana")
    record = store.audit_log(user_id="dana", memory_id=summary.id)[-1]
    assert record.action == "update" and record.details["rederived"] == [pin.id]
    assert not files_holding(store.data_dir, MARKERS)
    again = store.update(summary.id, "Dana keeps a locker code at work.", user_id="dana")
    assert not store.history(summary.id, user_id="dana")[new.version - 1].scrubbed  # once
    assert again.version == new.version + 1


#: Writes of a new version of a flagged summary other than a re-derivation (new text), and
#: the metadata, less the flag, each leaves.
KEEPING_WRITES: dict[str, tuple[Any, dict[str, Any]]] = {
    # its text from before the forget, which repeats it: the flag matters most here
    "rollback": (lambda m, sid: m.rollback(sid, 1, user_id="dana"), {}),
    "metadata": (lambda m, sid: m.update(sid, metadata={"checked": True}, user_id="dana"),
                 {"checked": True}),
    # a read-modify-write passes the flag back as get gave it
    "metadata passing the flag back": (lambda m, sid: m.update(
        sid, metadata={**m.get(sid, user_id="dana").metadata, "checked": True}, user_id="dana"),
        {"checked": True}),
    "tags": (lambda m, sid: m.update(sid, tags=["travel"], user_id="dana"), {}),
    "state": (lambda m, sid: m.set_state(sid, "archived", user_id="dana"), {}),
    "share": (lambda m, sid: m.share(sid, with_user_id="erin", user_id="dana"), {}),
}


@pytest.mark.parametrize("write", list(KEEPING_WRITES))
def test_a_flagged_summary_keeps_its_flag_until_re_derived(store: MemOS, write: str) -> None:
    """Only a re-derivation (new text) clears the flag; any other new version keeps it, so
    the next new text still scrubs every earlier version. A rollback or a metadata update
    used to drop it: the later update was then a plain one, and the versions from before
    kept the forgotten text in the vault."""
    pin = store.add(SECRET, user_id="dana")
    other = store.add(KEEP, user_id="dana")
    summary = store.compress([pin.id, other.id], SUMMARY, user_id="dana")
    store.forget(pin.id, user_id="dana")
    call, rest = KEEPING_WRITES[write]

    written = call(store, summary.id)
    assert written.metadata == {**rest, FLAG_KEY: [pin.id]}
    assert store.get(summary.id, user_id="dana").metadata[FLAG_KEY] == [pin.id]
    new = store.update(summary.id, "Dana keeps a locker code.", user_id="dana")
    assert new.metadata == rest  # the re-derivation drops the flag, and only it
    history = store.history(summary.id, user_id="dana")
    assert [v.scrubbed for v in history] == [True] * (new.version - 1) + [False]
    assert not files_holding(store.data_dir, MARKERS)


#: Updates naming the flag otherwise than as stored. They were taken and the flag quietly
#: kept: the caller believed it cleared or changed.
FLAG_CHANGING_UPDATES: dict[str, Any] = {
    "clearing it": lambda m, sid, other: m.update(
        sid, metadata={FLAG_KEY: [], "checked": True}, user_id="dana"),
    "changing it": lambda m, sid, other: m.update(
        sid, metadata={FLAG_KEY: [other]}, user_id="dana"),
    "changing it with a new text": lambda m, sid, other: m.update(
        sid, "Dana keeps a locker code.", metadata={FLAG_KEY: [other]}, user_id="dana"),
    "naming it on a memory without it": lambda m, sid, other: m.update(
        other, metadata={FLAG_KEY: [sid]}, user_id="dana"),
}


@pytest.mark.parametrize("write", list(FLAG_CHANGING_UPDATES))
def test_a_caller_may_not_set_change_or_clear_the_flag(store: MemOS, write: str) -> None:
    """``source_forgotten`` is reserved: an update may pass it back exactly as stored, and
    any other value is refused with nothing written."""
    assert FLAG_KEY in RESERVED_METADATA_KEYS  # what add and the other writes refuse
    pin = store.add(SECRET, user_id="dana")
    other = store.add(KEEP, user_id="dana")
    summary = store.compress([pin.id, other.id], SUMMARY, user_id="dana")
    store.forget(pin.id, user_id="dana")
    before = {c.id: c for c in (store.get(summary.id, user_id="dana"),
                                store.get(other.id, user_id="dana"))}

    with pytest.raises(InvalidInputError, match="source_forgotten"):
        FLAG_CHANGING_UPDATES[write](store, summary.id, other.id)
    assert {i: store.get(i, user_id="dana") for i in before} == before


def test_a_value_stored_under_the_key_before_it_was_reserved_is_no_flag(store: MemOS) -> None:
    """An older version let a caller's metadata name ``source_forgotten``: any value there
    made the memory pass for a flagged summary, and its next text update scrubbed every
    earlier version (no rollback left). Only the cascade's shape, a list of memory ids, is
    the flag; another value is kept by a text update and dropped by a metadata update."""
    from memos_core.vault import Actor

    first = store.add("Dana's diary, v1: went hiking.", user_id="dana", metadata={"app": "diary"})
    legacy = first.model_copy(update={"version": 2, "metadata": {"app": "diary", FLAG_KEY: False}})
    store.vault.put_version(legacy, 1, Actor("dana"), "update")  # as an older version stored it

    new = store.update(first.id, "Dana's diary, v3: hiking and swimming.", user_id="dana")
    assert new.metadata == legacy.metadata
    assert not any(v.scrubbed for v in store.history(first.id, user_id="dana"))
    assert "rederived" not in store.audit_log(user_id="dana", memory_id=first.id)[-1].details
    passed_back = store.update(first.id, metadata={**new.metadata, "v": 4}, user_id="dana")
    assert passed_back.metadata == {"app": "diary", "v": 4}
    assert store.rollback(first.id, 1, user_id="dana").text == first.text


def test_forgetting_needs_no_running_kv_engine(tmp_path: Path, tiny_model: Any) -> None:
    """KV files made in an earlier session are deleted by the forget itself."""
    cfg = MemOSConfig(show_progress=False)
    with MemOS(tmp_path / "d", config=cfg) as mos:
        mos.attach_model(tiny_model)
        cube = mos.add(SECRET, user_id="dana")
        mos.vault.record_usage([cube.id], utcnow(), mos.config.heat_half_life_s)
        mos.schedule(config=EAGER)
    assert files_holding(tmp_path / "d" / "kv", MARKERS)
    with MemOS(tmp_path / "d", config=cfg) as mos:  # no engine made in this session
        receipt = mos.forget(cube.id, user_id="dana")
        assert [d.kind for d in receipt.derived] == ["kv_block"]
    assert not files_holding(tmp_path / "d", MARKERS)


@pytest.mark.parametrize("mode", ["", "all", None, 1])
def test_bad_derived_mode_is_refused_before_anything_changes(store: MemOS, mode: Any) -> None:
    from memos_core import InvalidInputError

    cube = store.add("Dana's note.", user_id="dana")
    with pytest.raises(InvalidInputError, match="derived must be 'flag'"):
        store.forget(cube.id, user_id="dana", derived=mode)
    assert store.get(cube.id, user_id="dana").state is State.GENERATED


def test_a_forget_that_stopped_before_its_cascade_is_finished(tmp_path: Path) -> None:
    """A process killed between the tombstone's commit and the cascade left the summary
    holding the forgotten text with nothing pointing at it (the tombstone had dropped the
    relations). The tombstone now keeps its summaries' relations until the cascade has run:
    the next open flags them, and so does forgetting the memory again."""
    from memos_core.vault import Actor

    config = MemOSConfig(show_progress=False)
    mos = MemOS(tmp_path / "data", config=config)
    pin = mos.add("Alice's gym locker code is 9931-zulu.", user_id="alice")
    chess = mos.add("Alice plays chess on Sundays.", user_id="alice")
    summary = mos.compress([pin.id, chess.id], "Alice: locker 9931-zulu; chess Sundays.",
                           user_id="alice")
    # what a killed forget leaves: the tombstone committed, nothing after it
    mos.store.write(lambda: [mos.vault.tombstone(pin.id, Actor("alice"))])
    mos.store.write(lambda: [mos.vault.tombstone(chess.id, Actor("alice"))])
    # one asked for derived="forget" (its tombstone's audit record says so)
    gym = mos.add("Alice's gym is FitLab on Rua Augusta.", user_id="alice")
    gym_summary = mos.compress([gym.id], "Alice trains at FitLab.", user_id="alice")
    mos.store.write(lambda: [mos.vault.tombstone(gym.id, Actor("alice"), {"derived": "forget"})])
    assert mos.vault.unfinished_forgets() == sorted([pin.id, chess.id, gym.id])
    receipt = mos.forget(chess.id, user_id="alice")  # forgetting it again finishes it
    assert [(d.kind, d.id, d.action) for d in receipt.derived] == [
        ("summary", summary.id, "flagged")]
    mos.close()
    with MemOS(tmp_path / "data", config=config) as again:  # and so does the next open
        assert again.vault.unfinished_forgets() == []
        flagged = again.get(summary.id, user_id="alice")
        assert flagged.metadata[FLAG_KEY] == [chess.id, pin.id]
        assert again.vault.get(gym_summary.id).state is State.DELETED  # type: ignore[union-attr]
        assert again.vault.edges() == []
