"""memos_core.integration: keyed memories, the vault's conversation logs (and their
redaction on forget), legacy side files moved into the vault, search exclusions,
model_info(load=False) and the shared tool specs. Real MemOS on the embedded defaults."""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from memos_core import InvalidInputError, MemOS
from memos_core.integration import (
    CHAT_FILE,
    FORGOTTEN,
    LOG_FORM,
    TOOL_NAMES,
    TOOL_SPECS,
    ConversationLog,
    DerivedForm,
    ItemKey,
    MessageRedactor,
    RecentForgets,
    delete_by_key,
    get_by_key,
    iter_by_prefix,
    migrate_keys,
    put_by_key,
    tool_spec,
)


def files_holding(root: Path, needle: str) -> list[str]:
    return sorted(str((Path(d) / n).relative_to(root)) for d, _, names in os.walk(root)
                  for n in names if needle.encode() in (Path(d) / n).read_bytes())


# -- keyed memories ---------------------------------------------------------------------------

def test_put_by_key_creates_then_versions_one_memory(mos: MemOS) -> None:
    item = ItemKey("alice", ("alice", "prefs"), "food")
    first = put_by_key(mos, item, "Alice likes tea.", metadata={"v": 1}, tags=["t"],
                       type="preference", sensitivity=["pii"])
    second = put_by_key(mos, item, "Alice likes coffee.", metadata={"v": 2}, tags=["t"])
    assert second.id == first.id and second.version == 2 and second.metadata == {"v": 2}
    assert second.type.value == "preference" and second.governance.sensitivity == ("pii",)
    assert get_by_key(mos, item).text == "Alice likes coffee."  # type: ignore[union-attr]
    assert [i.key for i, _ in iter_by_prefix(mos, "alice", ("alice",))] == ["food"]
    assert mos.search("coffee", user_id="alice", allow_sensitive="*")[0].id == first.id
    assert delete_by_key(mos, item) is True and delete_by_key(mos, item) is False
    assert get_by_key(mos, item) is None and list(iter_by_prefix(mos, "alice")) == []
    with pytest.raises(InvalidInputError):
        put_by_key(mos, item, "")


def test_a_put_keeps_the_forget_flag_as_every_new_version_does(mos: MemOS) -> None:
    """``metadata["source_forgotten"]`` is the forget cascade's to set and a re-derivation's
    to clear (see ops.writes.write_version): a put's metadata leaves it as it is, may pass
    it back as stored (a read-modify-write), and may neither set, change nor clear it. A
    put used to set it on a new memory, whose next text update then scrubbed its history."""
    from memos_core.governance import FLAG_KEY

    item = ItemKey("alice", ("alice", "notes"), "trip")
    with pytest.raises(InvalidInputError, match="'source_forgotten' is reserved"):
        put_by_key(mos, item, "Alice's trip notes.", metadata={FLAG_KEY: False})
    assert get_by_key(mos, item) is None and mos.list(user_id="alice") == []

    gone = mos.add("Alice's trip starts in Lyon.", user_id="alice")
    kept = mos.add("Alice's trip ends in Nice.", user_id="alice")
    summary = mos.compress([gone.id, kept.id], "Alice's trip: Lyon to Nice.", user_id="alice")
    mos.forget(gone.id, user_id="alice")
    mos.store.vault.bind_key(item, summary.id)
    flagged = get_by_key(mos, item)
    assert flagged is not None and flagged.metadata == {FLAG_KEY: [gone.id]}
    assert put_by_key(mos, item, "Alice's trip, v2.", metadata={"v": 2}).metadata == {
        "v": 2, FLAG_KEY: [gone.id]}
    assert put_by_key(mos, item, "Alice's trip, v3.", metadata={
        **get_by_key(mos, item).metadata, "v": 3}).metadata == {  # type: ignore[union-attr]
        "v": 3, FLAG_KEY: [gone.id]}
    for other in ([], [kept.id], None):
        with pytest.raises(InvalidInputError, match="pass it back as it is"):
            put_by_key(mos, item, "Alice's trip, v4.", metadata={FLAG_KEY: other})
    assert mos.get(summary.id, user_id="alice").version == flagged.version + 2
    assert mos.get(summary.id, user_id="alice").metadata == {"v": 3, FLAG_KEY: [gone.id]}


def test_a_put_refuses_metadata_past_the_size_limit(mos: MemOS) -> None:
    """Every version stores the metadata again: it is capped as ``add`` caps it."""
    from memos_core.validation import MAX_METADATA_BYTES

    item = ItemKey("alice", ("alice", "notes"), "big")
    put_by_key(mos, item, "Alice's note.", metadata={"v": 1})
    with pytest.raises(InvalidInputError, match=r"metadata is [\d,]+ bytes .* limit is"):
        put_by_key(mos, item, "Alice's note, v2.", metadata={"blob": "x" * MAX_METADATA_BYTES})
    assert get_by_key(mos, item).version == 1  # type: ignore[union-attr]


def test_a_puts_state_is_chosen_from_the_version_it_replaces(
        mos: MemOS, monkeypatch: pytest.MonkeyPatch) -> None:
    """``put_by_key(state=)``: the state is written with the put (one version, audited as
    the put), chosen again from the newer version when another put came in between."""
    from memos_core.cube import State

    item = ItemKey("alice", ("alice", "prefs"), "drink")
    new = put_by_key(mos, item, "Alice drinks tea.", state=lambda current: State.ARCHIVED)
    assert (new.version, new.state) == (1, State.ARCHIVED)
    put_by_key(mos, item, "Alice drinks coffee.", state=lambda current: State.GENERATED)

    vault = mos.store.vault
    get_keyed = vault.get_keyed
    raced: list[int] = []

    def another_put_after_the_read(key: ItemKey) -> Any:
        current = get_keyed(key)
        if not raced:
            raced.append(1)
            put_by_key(mos, item, "Alice drinks water.")  # version 3: this put must retry
        return current

    monkeypatch.setattr(vault, "get_keyed", another_put_after_the_read)
    seen: list[int] = []

    def archived(current: Any) -> State:
        seen.append(current.version)
        return State.ARCHIVED

    last = put_by_key(mos, item, "Alice drinks juice.", state=archived)
    assert seen == [2, 3] and (last.version, last.state) == (4, State.ARCHIVED)
    assert [v.state.value for v in mos.history(new.id, user_id="alice")] == [
        "archived", "generated", "generated", "archived"]
    assert [r.action for r in mos.audit_log(user_id="alice", memory_id=new.id)] == [
        "add", "update", "update", "update"]

    with pytest.raises(InvalidInputError, match="expired"):
        put_by_key(mos, item, "gone?", state=lambda current: State.EXPIRED)
    assert get_by_key(mos, item).version == 4  # type: ignore[union-attr]
    # a state's value works as the State (it was a raw AttributeError for a new key)
    fresh = put_by_key(mos, ItemKey("alice", ("prefs",), "tea"), "Alice drinks green tea.",
                       state=lambda current: "archived")  # type: ignore[arg-type,return-value]
    assert (fresh.version, fresh.state) == (1, State.ARCHIVED)
    with pytest.raises(InvalidInputError, match="state"):
        put_by_key(mos, ItemKey("alice", ("prefs",), "milk"), "Alice drinks no milk.",
                   state=lambda current: "asleep")  # type: ignore[arg-type,return-value]
    assert get_by_key(mos, ItemKey("alice", ("prefs",), "milk")) is None


def test_concurrent_puts_of_a_new_key_make_one_memory(mos: MemOS) -> None:
    item = ItemKey("alice", ("race",), "k")
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def put(n: int) -> None:
        try:
            start.wait()
            put_by_key(mos, item, f"value {n}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    cube = get_by_key(mos, item)
    assert cube is not None and cube.version == 6  # one memory, six versions
    assert mos.vault.count() == 1


def test_separate_vault_connections_cannot_bind_one_key_twice(tmp_path: Path) -> None:
    """Two connections to one database (as two processes would have) race a new key: the
    UNIQUE binding lets exactly one win; the loser writes nothing."""
    from memos_core.cube import MemCube, Namespace
    from memos_core.errors import ConflictError
    from memos_core.vault import Actor, SQLiteVault

    path = tmp_path / "v.sqlite3"
    vaults = [SQLiteVault(path) for _ in range(4)]
    item = ItemKey("alice", ("p",), "k")
    start = threading.Barrier(len(vaults))
    outcomes: list[str] = []

    def put(vault: SQLiteVault) -> None:
        cube = MemCube(namespace=Namespace(user_id="alice"), text="x")
        start.wait()
        try:
            vault.put_keyed(item, cube, None, Actor("alice"), "add")
            outcomes.append("bound")
        except ConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=put, args=(v,)) for v in vaults]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["bound", "conflict", "conflict", "conflict"]
    assert vaults[0].count() == 1
    for v in vaults:
        v.close()


def test_migrate_keys_binds_memories_written_before_keys_once(mos: MemOS) -> None:
    old = mos.add("legacy item", user_id="alice", metadata={"k": "a"})
    newer = mos.add("legacy item, newer copy", user_id="alice", metadata={"k": "a"})
    mos.add("not an item", user_id="alice")

    def key_of(cube):  # noqa: ANN001, ANN202
        return ItemKey(cube.user_id, ("lg",), cube.metadata["k"]) if "k" in cube.metadata else None

    assert migrate_keys(mos, "test", key_of) == 1
    assert get_by_key(mos, ItemKey("alice", ("lg",), "a")).id == newer.id  # type: ignore[union-attr]
    assert migrate_keys(mos, "test", key_of) == 0  # once per data directory
    assert old.id != newer.id


# -- conversation logs --------------------------------------------------------------------------

def _msg(text: str) -> str:
    return json.dumps({"role": "user", "blocks": [{"block_type": "text", "text": text}],
                       "additional_kwargs": {}})


def test_the_core_redacts_its_conversation_log_on_forget(mos: MemOS) -> None:
    log = ConversationLog(mos)
    log.append("dana", "s1", [("m1", _msg("my locker code is MARMOT9920")),
                              ("m2", _msg("and the bike code is 1234"))], "active")
    log.append("erin", "s1", [("m3", _msg("my locker code is MARMOT9920"))], "active")
    memory = mos.add([{"role": "user", "content": "my locker code is MARMOT9920", "id": "m1"}],
                     user_id="dana")[0]
    receipt = mos.forget(memory.id, user_id="dana")
    assert DerivedForm(kind="conversation_log", id=f"{LOG_FORM}:dana/s1",
                       action="redacted") in receipt.derived
    rows = log.read("dana", "s1", None)
    assert json.loads(rows[0][1])["blocks"][0]["text"] == FORGOTTEN  # its source message
    assert json.loads(rows[1][1])["blocks"][0]["text"] == "and the bike code is 1234"
    # another user's conversation is theirs: it is not touched
    assert "MARMOT9920" in log.read("erin", "s1", None)[0][1]


def test_an_old_chat_history_file_moves_into_the_vault(mos: MemOS) -> None:
    legacy = sqlite3.connect(mos.data_dir / CHAT_FILE)
    legacy.executescript("""
        CREATE TABLE chat_messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL,
            key TEXT NOT NULL, message_id TEXT NOT NULL, status TEXT NOT NULL,
            message TEXT NOT NULL, created_at TEXT NOT NULL);""")
    rows = [("u", "k", "a", "archived", _msg("one")), ("u", "k", "b", "active", _msg("two")),
            ("", "k", "c", "active", _msg("three")), ("u", "k", "d", "active", _msg("four"))]
    legacy.executemany("INSERT INTO chat_messages (user_id, key, message_id, status, message, "
                       "created_at) VALUES (?,?,?,?,?,'now')", rows)
    legacy.commit()
    legacy.close()
    log = ConversationLog(mos)
    assert not (mos.data_dir / CHAT_FILE).exists()
    assert [r[0] for r in log.read("u", "k", None)] == ["a", "b", "d"]
    assert [r[0] for r in log.read("u", "k", "active")] == ["b", "d"]
    assert log.read("", "k", None) == [("c", _msg("three"))]
    ConversationLog(mos)  # nothing left to move: nothing changes
    assert log.count("u", "k", None) == 3


# -- search exclusions and model info --------------------------------------------------------------

def test_recent_forgets_by_user_mark_and_age(mos: MemOS, monkeypatch: pytest.MonkeyPatch) -> None:
    """What both adapters redact in late writes: a user's forgets (None: everyone's), those a
    mark says came after an id, for the window only."""
    ada = mos.add("Ada's locker code is 4417.", user_id="ada")
    bob = mos.add("Bob's locker code is 9902.", user_id="bob")
    recent = RecentForgets()
    recent.add(ada, mark="m5")
    recent.add(bob, mark="m7")
    text = "You said: Ada's locker code is 4417. Bob's locker code is 9902."

    def redacted(user: object, before: str | None = None) -> str:
        return functools.reduce(lambda t, r: r.text(t), recent.redactors(user, before=before),
                                text)

    assert redacted("ada") == f"You said: {FORGOTTEN} Bob's locker code is 9902."
    assert redacted(None) == f"You said: {FORGOTTEN} {FORGOTTEN}"
    assert redacted(None, before="m6") == \
        f"You said: Ada's locker code is 4417. {FORGOTTEN}"  # ada's mark m5 is older
    assert redacted("carol") == text
    monkeypatch.setattr(RecentForgets, "window_s", 0.0)
    assert recent.redactors(None) == []


def test_recent_forgets_are_kept_once_the_tombstone_is_committed(mos: MemOS) -> None:
    """A hook keeps its forget when the memory's tombstone is committed, inside the pass
    (before a write waiting for the pass goes on); a forget aborted after its hook ran (a
    later hook, another memory of a ``forget_many``) is not kept; ``since`` names the
    newer ones."""
    from memos_core.governance.forget_hooks import ForgetPasses

    passes, recent = ForgetPasses(), RecentForgets()
    ada = mos.add("Ada's locker code is 4417.", user_id="ada")
    bob = mos.add("Bob's locker code is 9902.", user_id="bob")
    with passes.running():
        with passes.running():  # its log pass, part of the forget
            recent.add(ada, mark=lambda: "m9")
        assert recent.added == 0  # not yet: a later hook may abort the forget
        passes.forgotten(ada.id)
        assert recent.added == 1
    assert passes.overlapped(0) and not passes.overlapped(passes.ended())
    with pytest.raises(RuntimeError), passes.running():
        recent.add(bob)
        raise RuntimeError("a later hook failed")
    assert recent.added == 1
    recent.add(bob)  # outside a forget: at once
    assert [r.user_id for r in recent.redactors(None, since=1)] == ["bob"]
    assert [r.user_id for r in recent.redactors(None, before="m5")] == ["ada"]


def test_a_forget_many_aborted_by_a_later_memory_keeps_no_forget(mos: MemOS) -> None:
    """``forget_many`` runs every memory's hooks before the first tombstone: a hook failing
    on the second memory leaves the first one live, and no adapter treats it as forgotten."""
    recent = RecentForgets()
    first = mos.add("Alice's locker code is 4711 at the gym.", user_id="alice")
    second = mos.add("Alice parks on level three.", user_id="alice")

    def hook(memory: object) -> list[Any]:
        recent.add(memory)  # type: ignore[arg-type]
        if memory.id == second.id:  # type: ignore[attr-defined]
            raise RuntimeError("this store cannot redact right now")
        return []

    mos.on_forget(hook)
    with pytest.raises(RuntimeError):
        mos.forget_many([first.id, second.id], user_id="alice")
    assert mos.get(first.id, user_id="alice").state.value == "generated"
    assert recent.redactors("alice") == []


def test_redactor_tokens_survive_any_json_escaping(mos: MemOS) -> None:
    """What a forget hook asks the vault for (``owned_holding``): for each text, its runs of
    ASCII letters and digits, which no JSON escaping changes, all of which a record holding
    it holds; none for a text without one."""
    fact = mos.add('Zoë\'s "safe word" is Tromsø-1187', user_id="ada")
    tokens = MessageRedactor(fact).tokens()
    assert tokens is not None
    assert ("1187", "Troms", "Zo", "s", "safe", "word") in tokens  # "is" is too common
    assert tuple(sorted(fact.id.split("-"))) in tokens
    for escaped in (json.dumps(fact.text), json.dumps(json.dumps(fact.text)),
                    json.dumps(fact.text, ensure_ascii=False)):
        assert any(all(t in escaped for t in group) for group in tokens)
    assert MessageRedactor(mos.add("我家保险箱的密码是山川和大海", user_id="ada")).tokens() is None
    gym = mos.add("I'm at the gym", user_id="ada")
    assert ("gym", "m") in MessageRedactor(gym).tokens()
    common = mos.add("Then it was there", user_id="ada")  # only common words: the longest
    assert ("there",) in MessageRedactor(common).tokens()


def test_search_excludes_sources_and_the_current_session(mos: MemOS) -> None:
    mos.add([{"role": "user", "content": "I adopted a cat named Miso.", "id": "m-in-prompt"}],
            user_id="u", session_id="now")
    mos.add([{"role": "user", "content": "My cat Miso likes tuna.", "id": "m-other"}],
            user_id="u", session_id="earlier")
    fact = mos.add("The cat Miso is three years old.", user_id="u", session_id="now")
    texts = {h.text for h in mos.search("cat Miso", user_id="u", k=5)}
    assert len(texts) == 3
    left = {h.memory.provenance.source_message_ids for h in
            mos.search("cat Miso", user_id="u", k=5, exclude_sources=["m-in-prompt"])}
    assert ("m-in-prompt",) not in left and len(left) == 2
    kept = mos.search("cat Miso", user_id="u", k=5, exclude_session="now")
    assert {h.id for h in kept} >= {fact.id}  # only the session's episodes go
    assert all(h.memory.namespace.session_id != "now" or h.memory.type.value != "episode"
               for h in kept) and len(kept) == 2


def test_model_info_loads_nothing(mos: MemOS) -> None:
    info = mos.model_info()
    assert info.loaded is False and info.model_id is None and info.context_window is None
    assert mos.loaded_model() is None
    assert repr(info) == "ModelInfo(loaded=False, model_id=None, context_window=None)"


async def test_model_info_twin(mos: MemOS) -> None:
    assert (await mos.amodel_info()).loaded is False


# -- tool specs -------------------------------------------------------------------------------

def test_tool_specs_describe_every_argument() -> None:
    assert TOOL_NAMES == ("store_memory", "search_memories", "update_memory", "forget_memory",
                          "compress_memories")
    for spec in TOOL_SPECS:
        schema = spec.args_model().model_json_schema()
        assert len(spec.description) > 40 and "user_id" not in schema["properties"]
        assert all(p.get("description") for p in schema["properties"].values()), spec.name
    assert tool_spec("store_memory").args_model().model_json_schema()["required"] == ["text"]
    with pytest.raises(KeyError, match="known"):
        tool_spec("nope")


def test_a_long_texts_token_group_is_its_longest_runs_and_a_forget_finds_its_quote(
        mos: MemOS) -> None:
    """A group holds a text's eight longest runs: a long memory (thousands of distinct
    words) would otherwise be a statement of thousands of parameters."""
    from langchain_core.messages import AIMessage

    from langchain_memos import MemOSChatMessageHistory

    words = [f"w{i:05d}" for i in range(5000)]
    long = mos.add(" ".join(words) + " pneumonoultramicroscopic", user_id="ada")
    tokens = MessageRedactor(long).tokens()
    assert tokens is not None
    group = next(g for g in tokens if "pneumonoultramicroscopic" in g)
    assert len(group) == 8
    history = MemOSChatMessageHistory(mos, user_id="ada", session_id="s")
    history.add_messages([AIMessage(f"Noted: {long.text}"), AIMessage("w00001 alone")])
    mos.forget(long.id, user_id="ada")
    texts = [m.content for m in history.messages]
    assert "w04999" not in texts[0] and texts[1] == "w00001 alone"


@pytest.mark.parametrize(("text", "query"), [
    ("ERR\x00 code 7", "ERR code 7"),
    ("W\udcffren", "Wren"),
    ("\x00\x00", None),
    ("é" * 600_000, "é" * 500_000),  # 1.2 MB, cut at a character boundary to the limit
    ("plain text", "plain text"),
])
def test_the_recall_query_is_what_memos_searches_for(text: str, query: str | None,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """The adapters' recall is best effort: a message search would refuse (NUL, unpaired
    surrogate, over the text limit) is searched for what is searchable of it; the log says
    so, without the text."""
    from memos_core.integration import recall_query

    with caplog.at_level("WARNING"):
        assert recall_query(text) == query
    assert bool(caplog.records) == (text != "plain text")
    assert not any("ERR" in r.getMessage() or "ren" in r.getMessage() for r in caplog.records)
