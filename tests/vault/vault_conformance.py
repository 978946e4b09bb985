"""The vault conformance suite: the :class:`memos_core.vault.Vault` contracts, for any backend.

Subclass :class:`VaultConformance` and give it a ``vault`` fixture that yields an empty,
open vault (and closes it afterwards); every test then runs against that backend::

    class TestSQLiteVault(VaultConformance):
        @pytest.fixture
        def vault(self, tmp_path):
            v = SQLiteVault(tmp_path / "vault.sqlite3")
            yield v
            v.close()

The class name does not start with ``Test``, so pytest collects it only through subclasses.
Nothing is mocked: each test drives the real backend through the protocol's methods only.
"""

from __future__ import annotations

import random
import re
import time
from datetime import timedelta
from typing import Any

import pytest

from memos_core.cube import MemCube, Namespace, State, Tier, utcnow
from memos_core.errors import (
    ConflictError,
    InvalidInputError,
    MemoryNotFoundError,
    MemOSError,
    NamespaceChangedError,
)
from memos_core.vault import (
    Actor,
    CheckpointRecord,
    Edge,
    ItemKey,
    ListQuery,
    NamespaceGrant,
    Typed,
    Vault,
)

ALICE = Actor("alice", "agent-1", "conformance")


def cube(text: str, user: str = "alice", **kw: Any) -> MemCube:
    ns = Namespace(user_id=user, agent_id=kw.pop("agent", None), session_id=kw.pop("session", None))
    return MemCube(namespace=ns, text=text, **kw)


def bump(c: MemCube, **changes: Any) -> MemCube:
    """The next version of ``c`` with ``changes``."""
    return c.model_copy(update={**changes, "version": c.version + 1, "updated_at": utcnow()})


class VaultConformance:
    """Contract tests of :class:`Vault`; subclasses provide the ``vault`` fixture."""

    @pytest.fixture
    def vault(self) -> Vault:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError("a conformance subclass must provide a `vault` fixture")

    def drop_checkpoint_rows(self, vault: Vault, thread_id: str) -> None:
        """Delete the checkpoint rows of ``thread_id`` behind the vault's back, keeping its
        blobs and writes, as earlier versions' ``cp_delete_runs`` left a thread. A backend's
        subclass overrides it; without one, the tests that need it are skipped."""
        pytest.skip("this backend's subclass cannot reach its database behind its back")

    # -- shape --------------------------------------------------------------------------------

    def test_is_a_vault_and_starts_empty(self, vault: Vault) -> None:
        assert isinstance(vault, Vault)
        assert vault.count() == 0 and vault.list(ListQuery()) == []
        assert list(vault.iter_current()) == [] and vault.current_versions() == {}
        assert vault.edges() == [] and vault.grants() == [] and vault.graph_rows() == []
        assert vault.verify_audit()[0]
        stats = vault.stats()
        assert {"memories", "versions", "audit_records"} <= set(stats)

    def test_meta_round_trip(self, vault: Vault) -> None:
        assert vault.get_meta("k") is None
        vault.set_meta("k", "1")
        vault.set_meta("k", "2")
        assert vault.get_meta("k") == "2"

    def test_meta_items_by_prefix(self, vault: Vault) -> None:
        for key in ("tok:b", "tok:a", "tok%x", "toka", "other"):
            vault.set_meta(key, key.upper())
        assert vault.meta_items("tok:") == [("tok:a", "TOK:A"), ("tok:b", "TOK:B")]
        assert vault.meta_items("tok%") == [("tok%x", "TOK%X")]  # no pattern characters
        assert vault.meta_items("none:") == []

    # -- writes and versions ------------------------------------------------------------------

    def test_insert_get_and_history(self, vault: Vault) -> None:
        a, b = cube("Alice likes tea.", session="s1"), cube("Alice has a dog.")
        vault.insert([a, b], ALICE)
        got = vault.get(a.id)
        assert got is not None and got.text == a.text and got.version == 1
        assert got.namespace == a.namespace
        assert set(vault.get_many([a.id, b.id, "missing"])) == {a.id, b.id}
        assert [c.version for c in vault.history(a.id)] == [1]
        assert vault.count() == 2
        adds = vault.audit_log(user_id="alice", action="add")
        assert [r.memory_id for r in adds] == [a.id, b.id]
        assert adds[0].agent_id == "agent-1" and adds[0].reason == "conformance"

    def test_unknown_ids_read_as_none_or_empty(self, vault: Vault) -> None:
        assert vault.get("nope") is None
        assert vault.get_version("nope", 1) is None
        assert vault.get_as_of("nope", utcnow()) is None
        assert vault.history("nope") == [] and vault.derived_from("nope") == []
        assert vault.get_many(["nope"]) == {}
        with pytest.raises(MemoryNotFoundError):
            vault.tombstone("nope", ALICE)

    def test_versions_are_gapless_and_old_ones_stay(self, vault: Vault) -> None:
        c1 = cube("v1")
        vault.insert([c1], ALICE)
        c2 = bump(c1, text="v2")
        vault.put_version(c2, 1, ALICE, "update", {"why": "test"})
        vault.put_version(bump(c2, text="v3"), 2, ALICE, "update")
        assert [c.text for c in vault.history(c1.id)] == ["v1", "v2", "v3"]
        assert vault.get_version(c1.id, 1).text == "v1"  # type: ignore[union-attr]
        assert vault.get_version(c1.id, 4) is None
        assert vault.current_versions() == {c1.id: (3, "generated")}
        assert [r.version for r in vault.audit_log(memory_id=c1.id)] == [1, 2, 3]

    def test_stale_expected_version_raises_and_writes_nothing(self, vault: Vault) -> None:
        c1 = cube("one")
        vault.insert([c1], ALICE)
        vault.put_version(bump(c1, text="two"), 1, ALICE, "update")
        before = len(vault.audit_log(limit=1000))
        with pytest.raises(MemOSError):
            vault.put_version(bump(c1, text="lost update"), 1, ALICE, "update")
        assert vault.get(c1.id).text == "two"  # type: ignore[union-attr]
        assert len(vault.audit_log(limit=1000)) == before

    def test_put_versions_is_all_or_nothing(self, vault: Vault) -> None:
        a, b = cube("a"), cube("b")
        vault.insert([a, b], ALICE)
        with pytest.raises(MemOSError):
            vault.put_versions([(bump(a, text="a2"), 1), (bump(b, text="b2"), 7)], ALICE, "update")
        assert vault.get(a.id).version == 1  # type: ignore[union-attr]
        vault.put_versions([(bump(a, text="a2"), 1), (bump(b, text="b2"), 1)], ALICE, "update")
        assert [vault.get(x.id).text for x in (a, b)] == ["a2", "b2"]  # type: ignore[union-attr]

    def test_a_failing_insert_writes_nothing(self, vault: Vault) -> None:
        a = cube("first")
        vault.insert([a], ALICE)
        with pytest.raises(MemOSError):  # a's id exists: the whole batch fails
            vault.insert([cube("new one"), a], ALICE)
        assert vault.count() == 1

    def test_insert_with_replacement_and_edges(self, vault: Vault) -> None:
        old = cube("Alice lives in Porto.")
        vault.insert([old], ALICE)
        new = cube("Alice lives in Lisbon.")
        replaced = bump(old, valid_to=utcnow(), superseded_by=new.id)
        vault.insert([new], ALICE, replacements=[(replaced, 1)],
                     edges=[Edge(new.id, old.id, "supersedes")])
        assert vault.get(old.id).superseded_by == new.id  # type: ignore[union-attr]
        assert vault.get(old.id).version == 2  # type: ignore[union-attr]
        assert Edge(new.id, old.id, "supersedes") in vault.edges()
        assert vault.audit_log(memory_id=old.id, action="supersede")

    def test_derived_from_lists_summaries(self, vault: Vault) -> None:
        a, b, summary = cube("a"), cube("b"), cube("a and b")
        vault.insert([a, b], ALICE)
        vault.insert([summary], ALICE, edges=[Edge(summary.id, a.id, "derived_from"),
                                              Edge(summary.id, b.id, "derived_from")])
        assert vault.derived_from(a.id) == [summary.id]
        assert vault.derived_from(summary.id) == []

    def test_add_edges_is_idempotent(self, vault: Vault) -> None:
        a, b = cube("a"), cube("b")
        vault.insert([a, b], ALICE)
        edge = Edge(a.id, b.id, "derived_from")
        vault.add_edges([edge])
        vault.add_edges([edge])
        assert vault.edges() == [edge]

    def test_import_histories_keeps_every_version(self, vault: Vault) -> None:
        v1 = cube("imported v1")
        v2 = bump(v1, text="imported v2")
        other = cube("other")
        vault.import_histories([[v1, v2], [other]], [Edge(other.id, v1.id, "derived_from")],
                               Actor("bob"))
        assert [c.text for c in vault.history(v1.id)] == ["imported v1", "imported v2"]
        assert vault.get(v1.id).version == 2  # type: ignore[union-attr]
        assert vault.derived_from(v1.id) == [other.id]
        # an id stored since the importer looked (another process): nothing is imported
        fresh = cube("fresh")
        with pytest.raises(ConflictError, match="exists already"):
            vault.import_histories([[fresh], [other]], [], Actor("bob"))
        assert vault.get(fresh.id) is None and vault.get(other.id).text == "other"  # type: ignore[union-attr]

    def test_import_histories_binds_keys_in_its_transaction(self, vault: Vault) -> None:
        """A bundle's item keys are bound with their memories; a key bound already keeps
        its memory; a key for a memory the import does not write (or another user's, or a
        forgotten one) fails the whole import."""
        taken = ItemKey("alice", ("prefs",), "city")
        held = cube("Lives in Porto.")
        vault.put_keyed(taken, held, None, ALICE, "add")
        colour, city = cube("Likes blue."), cube("Lives in Lisbon.")
        free = ItemKey("alice", ("prefs",), "colour")
        assert vault.import_histories([[colour], [city]], [], ALICE,
                                      [(free, colour.id), (taken, city.id)]) == 1
        assert vault.get_keyed(free).id == colour.id  # type: ignore[union-attr]
        assert vault.get_keyed(taken).id == held.id  # type: ignore[union-attr]
        key = ItemKey("alice", ("x",), "k")
        for bind in ("held", "bob's key", "forgotten"):
            fresh, gone = cube("fresh"), cube("Forgotten.", state=State.DELETED)
            keys = {"held": [(key, held.id)], "bob's key": [(ItemKey("bob", ("x",), "k"), fresh.id)],
                    "forgotten": [(key, gone.id)]}[bind]
            with pytest.raises(InvalidInputError):
                vault.import_histories([[fresh], [gone]], [], ALICE, keys)
            assert vault.get(fresh.id) is None and vault.get_keyed(key) is None

    # -- tombstones ---------------------------------------------------------------------------

    def test_texts_are_the_current_versions_texts(self, vault: Vault) -> None:
        odd = cube('Zoë said "hi" \\ then left\nfor 名前 \u2014 twice')
        moved, gone = cube("The kayak is in the boathouse."), cube("Alice's PIN is 4711.")
        vault.insert([odd, moved, gone], ALICE)
        vault.put_version(bump(moved, text="The kayak is in the garage."), 1, ALICE, "update")
        vault.tombstone(gone.id, ALICE)
        ids = [odd.id, moved.id, gone.id, "unknown", odd.id]
        got = vault.texts(ids)
        assert got == {i: c.text for i, c in vault.get_many(ids).items()}
        assert got[moved.id] == "The kayak is in the garage." and got[odd.id] == odd.text
        assert "4711" not in got[gone.id]
        assert vault.texts([]) == {}

    def test_lenient_reads_of_intact_memories_are_the_strict_reads(self, vault: Vault) -> None:
        """``on_damaged`` (list, get_many, texts) changes nothing where no record is
        damaged, and is never called; an unknown id gets no stand-in."""
        a, b = cube("Alice rides a blue bicycle."), cube("Alice drinks green tea.")
        vault.insert([a, b], ALICE)
        told: list[Exception] = []
        ids, q = [a.id, b.id, "unknown"], ListQuery(user_ids=("alice",))
        assert vault.get_many(ids, on_damaged=told.append) == vault.get_many(ids)
        assert vault.texts(ids, on_damaged=told.append) == vault.texts(ids)
        assert vault.list(q, on_damaged=told.append) == vault.list(q)
        assert told == [] and vault.damaged_stand_in("unknown") is None

    def test_tombstone_scrubs_every_version_and_is_idempotent(self, vault: Vault) -> None:
        c1 = cube("Alice's PIN is 4711.")
        other, newer, older = cube("unrelated"), cube("newer"), cube("older")
        vault.insert([c1, other, newer, older], ALICE, edges=[
            Edge(other.id, c1.id, "derived_from"), Edge(newer.id, c1.id, "supersedes"),
            Edge(c1.id, older.id, "supersedes")])
        vault.put_version(bump(c1, text="Alice's PIN is 4712."), 1, ALICE, "update")
        vault.record_usage([c1.id], utcnow(), 3600.0)
        tomb = vault.tombstone(c1.id, ALICE)
        assert tomb.state is State.DELETED and tomb.version == 3
        assert all(v.text == "" and v.scrubbed for v in vault.history(c1.id))  # no digest either
        # relations go with it, but for its summaries': the cascade reads them, then drops them
        assert vault.edges() == [Edge(other.id, c1.id, "derived_from")]
        assert vault.derived_from(c1.id) == [other.id]
        assert vault.unfinished_forgets() == [c1.id]
        vault.drop_relations(c1.id)
        assert vault.edges() == [] and vault.unfinished_forgets() == []
        assert vault.get(c1.id).usage.access_count == 0  # type: ignore[union-attr]
        again = vault.tombstone(c1.id, ALICE)
        assert again.version == 3 and len(vault.history(c1.id)) == 3
        vault.checkpoint()
        assert vault.verify_audit()[0]

    def test_new_memories_with_stale_grants_are_refused(self, vault: Vault) -> None:
        """Another process shared or revoked between a caller's read of the grants and its
        insert: the insert's transaction sees it and refuses, writing nothing."""
        grant = NamespaceGrant("alice", "bob", "read", None, "s1")
        stale = cube("stale", session="s1")
        with pytest.raises(NamespaceChangedError):  # it inherited a grant no longer there
            vault.insert([stale], ALICE, grants=[grant])
        vault.insert([stale], ALICE, grants=[])  # the grants it saw are the vault's: stored
        vault.change_grants(add=[grant], actor=ALICE, action="share:read", details={})
        assert vault.grants("alice") == [grant]
        keyed = cube("keyed", session="s1")
        with pytest.raises(NamespaceChangedError):
            vault.put_keyed(ItemKey("alice", ("notes",), "k"), keyed, None, ALICE, "add",
                            grants=[])
        assert vault.get(keyed.id) is None

    def test_tombstone_removes_the_reasons_of_its_audit_records(self, vault: Vault) -> None:
        """A reason is free text that may repeat the memory: forget removes it from every
        record of the memory (the forget's own too) and from the records its writing
        operation made (here the supersede record of the fact it replaced); the chain still
        verifies, and every other record keeps its reason."""
        told = Actor("alice", "agent-1", "user said: my PIN is 4711")
        old, other = cube("Alice's PIN was 1234."), cube("unrelated")
        vault.insert([old, other], ALICE)
        new = cube("Alice's PIN is 4711.")
        vault.insert([new], told, replacements=[(bump(old, valid_to=utcnow()), 1)])
        vault.put_version(bump(new, text="Alice's PIN is 4711 still."), 1, told, "update")
        assert [r.reason for r in vault.audit_log(memory_id=old.id)] == [
            "conformance", "user said: my PIN is 4711"]
        vault.tombstone(new.id, Actor("alice", None, "forget the PIN 4711"))
        assert [(r.action, r.reason) for r in vault.audit_log(memory_id=new.id)] == [
            ("add", None), ("update", None), ("forget", None)]
        assert [(r.action, r.reason) for r in vault.audit_log(memory_id=old.id)] == [
            ("add", "conformance"), ("supersede", None)]
        assert [r.reason for r in vault.audit_log(memory_id=other.id)] == ["conformance"]
        # hashes and memory ids are hex, where "4711" turns up by chance: look past them
        shown = re.sub(r"[0-9a-f-]{16,}", "#", repr(vault.audit_log(limit=1000)))
        assert "4711" not in shown
        assert vault.verify_audit() == (True, "audit chain intact")
        vault.tombstone(new.id, ALICE)  # again: nothing changes, the chain still verifies
        assert vault.scrub_tombstone(new.id) == 0
        assert vault.verify_audit() == (True, "audit chain intact")

    def test_redact_versions_rewrites_the_earlier_versions_in_place(self, vault: Vault) -> None:
        """A forget redacting a message memory that quoted the forgotten text writes a new
        version, then takes the text out of the earlier ones (history kept them)."""
        said = cube("user: my locker code is 4471, remember it")
        vault.insert([said], ALICE)
        second = bump(said, text="user: my locker code is 4471, remember it!")
        vault.put_version(second, 1, ALICE, "update")
        vault.put_version(bump(second, text="user: [forgotten]"), 2, ALICE, "update")

        def rewrite(old: MemCube) -> MemCube | None:
            if "4471" not in old.text:
                return None
            return old.model_copy(update={"text": old.text.replace("4471", "[forgotten]")})

        assert vault.redact_versions(said.id, rewrite, below=3) == 2
        assert [v.text for v in vault.history(said.id)] == [
            "user: my locker code is [forgotten], remember it",
            "user: my locker code is [forgotten], remember it!", "user: [forgotten]"]
        assert vault.redact_versions(said.id, rewrite, below=3) == 0  # nothing left to do
        assert vault.verify_audit() == (True, "audit chain intact")
        with pytest.raises(InvalidInputError, match="keep its id and number"):
            vault.redact_versions(said.id, lambda old: old.model_copy(update={"version": 9}),
                                  below=3)
        assert vault.get_version(said.id, 1).text.endswith("[forgotten], remember it")

    def test_put_version_rewrites_the_earlier_versions_in_its_transaction(
            self, vault: Vault) -> None:
        """``rewrite_earlier``: the new version and the in-place rewrite of the earlier ones
        are one transaction, so a retried forget never meets a message whose current
        version is redacted and an earlier one is not."""
        said = cube("user: my locker code is 4471, remember it")
        vault.insert([said], ALICE)
        second = bump(said, text="user: my locker code is 4471, remember it!")
        vault.put_version(second, 1, ALICE, "update")
        seen: list[int] = []

        def rewrite(old: MemCube) -> MemCube | None:
            seen.append(old.version)
            if "4471" not in old.text:
                return None
            return old.model_copy(update={"text": old.text.replace("4471", "[forgotten]")})

        def failing(old: MemCube) -> MemCube | None:
            if old.version == 2:  # after version 1 was rewritten, if the order is 1, 2
                raise MemOSError("the rewrite failed")
            return rewrite(old)

        records = len(vault.audit_log(said.id, limit=1000))
        for bad, error in ((failing, MemOSError),
                           (lambda old: old.model_copy(update={"version": 9}), InvalidInputError)):
            with pytest.raises(error):
                vault.put_version(bump(second, text="user: [forgotten]"), 2, ALICE, "update",
                                  rewrite_earlier=bad)
            # all or nothing: neither the new version, nor its audit record, nor a rewrite
            assert vault.get(said.id).version == 2  # type: ignore[union-attr]
            assert [v.text for v in vault.history(said.id)] == [said.text, second.text]
            assert len(vault.audit_log(said.id, limit=1000)) == records
        vault.put_version(bump(second, text="user: [forgotten]"), 2, ALICE, "update",
                          rewrite_earlier=rewrite)
        assert sorted(seen[-2:]) == [1, 2]  # the earlier versions only, not the new one
        assert [v.text for v in vault.history(said.id)] == [
            "user: my locker code is [forgotten], remember it",
            "user: my locker code is [forgotten], remember it!", "user: [forgotten]"]
        assert vault.get(said.id).version == 3  # type: ignore[union-attr]
        assert vault.verify_audit() == (True, "audit chain intact")

    def test_scrub_tombstone_repairs_only_tombstones(self, vault: Vault) -> None:
        live, gone = cube("still here"), cube("Alice's PIN is 4711.")
        vault.insert([live, gone], ALICE)
        vault.tombstone(gone.id, ALICE)
        assert vault.scrub_tombstone(live.id) == 0 and vault.get(live.id).text == "still here"  # type: ignore[union-attr]
        assert vault.scrub_tombstone(gone.id) == 0  # a proper tombstone has nothing left
        assert vault.scrub_tombstone("nope") == 0
        assert all(v.scrubbed for v in vault.history(gone.id))

    # -- reads --------------------------------------------------------------------------------

    def test_get_as_of(self, vault: Vault) -> None:
        c1 = cube("v1")
        vault.insert([c1], ALICE)
        time.sleep(0.01)
        between = utcnow()
        time.sleep(0.01)
        vault.put_version(bump(c1, text="v2"), 1, ALICE, "update")
        assert vault.get_as_of(c1.id, between).text == "v1"  # type: ignore[union-attr]
        assert vault.get_as_of(c1.id, utcnow()).text == "v2"  # type: ignore[union-attr]
        assert vault.get_as_of(c1.id, c1.created_at - timedelta(days=1)) is None
        # the first version is there as of the memory's creation (it was recorded a few
        # microseconds later, when updated_at took its own clock reading)
        assert vault.get_as_of(c1.id, c1.created_at).text == "v1"  # type: ignore[union-attr]

    def test_list_filters_order_and_paging(self, vault: Vault) -> None:
        cubes = [cube(f"note {i}", session="s1" if i % 2 else "s2", tags=("t",) if i < 3 else ())
                 for i in range(6)]
        for c in cubes:  # one by one: insertion order is the order of the calls
            vault.insert([c], ALICE)
        vault.insert([cube("bob's", user="bob")], Actor("bob"))
        ids = [c.id for c in cubes]
        assert [c.id for c in vault.list(ListQuery(user_ids=("alice",)))] == ids
        assert [c.id for c in vault.list(ListQuery(user_ids=("alice",), newest_first=True))] \
            == ids[::-1]
        assert [c.id for c in vault.list(ListQuery(user_ids=("alice",), limit=2, offset=2))] \
            == ids[2:4]
        assert [c.id for c in vault.list(ListQuery(user_ids=("alice",), session_id="s1"))] \
            == ids[1::2]
        assert [c.id for c in vault.list(ListQuery(user_ids=("alice",), tags=("t",)))] == ids[:3]
        assert vault.count(ListQuery(user_ids=("alice",), limit=1)) == 6
        assert vault.count() == 7

    def test_list_by_state_and_metadata(self, vault: Vault) -> None:
        a, b = cube("a", metadata={"k": "x"}), cube("b", metadata={"k": "y", "n": 1})
        vault.insert([a, b], ALICE)
        vault.put_version(bump(b, state=State.ARCHIVED), 1, ALICE, "state:archived")
        assert [c.id for c in vault.list(ListQuery(states=("generated",)))] == [a.id]
        assert [c.id for c in vault.list(ListQuery(states=("archived",)))] == [b.id]
        assert [c.id for c in vault.list(ListQuery(metadata_equals={"k": "x"}))] == [a.id]
        assert [c.id for c in vault.list(ListQuery(metadata_equals={"n": 1}))] == [b.id]

    def test_metadata_filters_on_keys_in_any_script(self, vault: Vault) -> None:
        """Any key the facade's filter takes (no quote, backslash or control character)
        finds its memory: scripts with combining vowel signs (Devanagari, Thai) were
        refused by the filter though add stored them, and JSON path syntax is no key's."""
        keys = ["नाम", "ชื่อ", "città", "北京", "my key", "a.b", "a[0]", "$", "a'b", "", "–"]
        memories = [cube(f"m{i}", metadata={key: f"v{i}"}) for i, key in enumerate(keys)]
        vault.insert(memories, ALICE)
        for i, key in enumerate(keys):
            assert [c.text for c in vault.list(ListQuery(metadata_equals={key: f"v{i}"}))] \
                == [f"m{i}"], key

    def test_metadata_filters_keep_json_types_apart(self, vault: Vault) -> None:
        """``true`` is not ``1`` and ``false`` is not ``0`` (SQLite's ``json_extract`` made
        them equal); ``1`` and ``1.0`` are one number in both backends."""
        flag, one, real, text = (cube("flag", metadata={"n": True}), cube("one", metadata={"n": 1}),
                                 cube("real", metadata={"n": 1.0}), cube("text", metadata={"n": "1"}))
        off, zero = cube("off", metadata={"n": False}), cube("zero", metadata={"n": 0})
        vault.insert([flag, one, real, text, off, zero], ALICE)

        def found(value: Any) -> set[str]:
            return {c.text for c in vault.list(ListQuery(metadata_equals={"n": value}))}

        assert found(True) == {"flag"} and found(False) == {"off"}
        assert found(1) == found(1.0) == {"one", "real"} and found(0) == {"zero"}
        assert found("1") == {"text"}
        assert vault.count(ListQuery(metadata_equals={"n": True})) == 1

    def test_metadata_numbers_read_back_as_written(self, vault: Vault) -> None:
        """A float is read back a float, whatever its size, from every read (PostgreSQL's
        JSONB wrote ``1e20`` back as the integer 100000000000000000000, which no longer
        passed the metadata checks of an update or an import)."""
        values = {"big": 1e20, "mid": 1.7e18, "small": 1.5e-7, "whole": 3.0, "int": 2**62,
                  "nested": [1e300, {"x": -2.5e17}]}
        a = cube("numbers", metadata=values)
        vault.insert([a], ALICE)
        vault.put_version(bump(a, text="numbers, again"), 1, ALICE, "update")
        reads = [vault.get(a.id), vault.get_version(a.id, 1), *vault.history(a.id),
                 *vault.list(ListQuery())]
        for read in reads:
            assert read is not None
            assert read.metadata == values
            assert [type(read.metadata[k]) for k in values] == [type(v) for v in values.values()]
            assert type(read.metadata["nested"][0]) is float

    def test_list_by_strings_the_record_holds(self, vault: Vault) -> None:
        a = cube("Zoë's locker code is 4417", metadata={"note": {"said": 'she said "B12"'}})
        b = cube("plain note", tags=("Kayak9",))
        vault.insert([a, b], ALICE)

        def found(*needles: str | tuple[str, ...]) -> list[str]:
            groups = tuple((n,) if isinstance(n, str) else n for n in needles)
            return [c.id for c in vault.list(ListQuery(contains_any=groups))]

        assert found("locker") == [a.id]
        assert found("B12") == [a.id]  # in metadata
        assert found("Kayak9") == [b.id]  # in tags
        assert found("4417", "plain") == [a.id, b.id]
        assert found("LOCKER") == []  # case-sensitive
        assert found() == [] and found(()) == []
        assert found("4%1") == []  # a literal string, not a LIKE pattern
        assert found(("locker", "4417")) == [a.id]  # every string of a group
        assert found(("locker", "plain")) == []
        assert found(("locker", "plain"), ("note", "Kayak9")) == [b.id]

    def test_list_includes_memories_shared_with_the_user(self, vault: Vault) -> None:
        mine = cube("bob's note", user="bob")
        vault.insert([mine], Actor("bob"))
        shared = bump(mine, governance=mine.governance.model_copy(update={"readers": ("carol",)}))
        vault.put_version(shared, 1, Actor("bob"), "share:read")
        assert [c.id for c in vault.list(ListQuery(user_ids=("carol",)))] == [mine.id]
        assert vault.list(ListQuery(user_ids=("dave",))) == []

    def test_list_without_shared_selects_only_owned_memories(self, vault: Vault) -> None:
        """``shared=False``: the memories the users own, in order, paged, counted alike;
        none of those shared with them (however many)."""
        carol = [cube(f"carol {i}", user="carol") for i in range(3)]
        bobs = [cube(f"bob {i}", user="bob") for i in range(4)]
        vault.insert([bobs[0], carol[0], bobs[1], carol[1], bobs[2], carol[2], bobs[3]],
                     Actor("carol"))
        for b in bobs:
            vault.put_version(bump(b, governance=b.governance.model_copy(
                update={"readers": ("carol",)})), 1, Actor("bob"), "share:read")
        own = [c.id for c in carol]

        def ids(**kw: Any) -> list[str]:
            return [c.id for c in vault.list(ListQuery(**kw))]

        assert len(ids(user_ids=("carol",))) == 7  # shared ones too, by default
        assert ids(user_ids=("carol",), shared=False) == own
        assert ids(user_ids=("carol",), shared=False, newest_first=True) == own[::-1]
        assert [ids(user_ids=("carol",), shared=False, limit=1, offset=i)
                for i in range(4)] == [[own[0]], [own[1]], [own[2]], []]
        assert vault.count(ListQuery(user_ids=("carol",))) == 7
        assert vault.count(ListQuery(user_ids=("carol",), shared=False)) == 3
        both = ListQuery(user_ids=("carol", "bob"), shared=False)
        assert [c.id for c in vault.list(both)] == [c.id for c in vault.list(ListQuery())]
        assert vault.count(both) == 7
        assert ids(user_ids=("dave",), shared=False) == []
        assert ids(user_ids=(), shared=False) == []
        assert vault.count(ListQuery(user_ids=(), shared=False)) == 0
        assert ids(shared=False) == ids()  # no users: every memory, as without it

    def test_a_users_list_is_their_own_and_shared_memories_for_every_query(
            self, vault: Vault) -> None:
        """A list with ``user_ids`` holds, in insertion order (either way), paged and counted
        alike: what the users own, and (``shared``) what others shared with one of them and
        did not forget, once each -- under every filter, for one user, several (more than
        the vaults' branch per user too) or none. The expected list is the vault's own list
        without users, filtered here by owner and readers."""
        rng = random.Random(11)
        people = ("alice", "bob", "carol", "dave")
        made = []
        for i in range(60):
            owner = rng.choice(people)
            readers = tuple(p for p in people if p != owner and rng.random() < 0.35)
            made.append(cube(f"m{i}", user=owner, session=rng.choice(("s1", "s2", None)),
                             tags=("x",) if i % 3 == 0 else (), type=rng.choice(("fact", "note")),
                             valid_to=utcnow() if i % 7 == 0 else None,
                             governance={"readers": readers}))
        for start in range(0, 60, 20):
            vault.insert(made[start:start + 20], ALICE)
        for c in made[5::6]:  # shared later: a new version keeps its place in the order
            readers = tuple(p for p in people if p != c.namespace.user_id)[:2]
            vault.put_version(bump(c, governance=c.governance.model_copy(
                update={"readers": readers})), c.version, ALICE, "share:read")
        for c in made[2::9]:
            vault.tombstone(c.id, Actor(c.namespace.user_id))
        filters: list[dict[str, Any]] = [
            {}, {"session_id": "s1"}, {"tags": ("x",)}, {"types": ("fact",)},
            {"states": ("generated", "deleted")}, {"include_superseded": False}]
        groups = [("alice",), ("bob", "carol"), ("dave", "alice", "bob"), ("carol", "carol"),
                  (), tuple(people) + tuple(f"nobody{i}" for i in range(16))]
        for extra in filters:
            every = vault.list(ListQuery(limit=1000, **extra))
            for users in groups:
                for shared in (True, False):
                    expected = [c.id for c in every if c.namespace.user_id in users or (
                        shared and set(c.governance.readers) & set(users)
                        and c.state != State.DELETED)]
                    for newest_first in (False, True):
                        order = expected[::-1] if newest_first else expected
                        for limit, offset in ((1000, 0), (3, 0), (4, 5), (7, 30)):
                            q = ListQuery(user_ids=users, shared=shared, limit=limit,
                                          offset=offset, newest_first=newest_first, **extra)
                            got = [c.id for c in vault.list(q)]
                            assert got == order[offset:offset + limit], (q, got)
                    assert vault.count(ListQuery(user_ids=users, shared=shared, **extra)) == len(
                        expected), (users, shared, extra)

    def test_a_forgotten_memory_is_listed_and_counted_for_its_owner_only(self, vault: Vault) -> None:
        """Not even as a gap: a page of a former reader that asks for tombstones has no
        slot where the forgotten memory was (a revoked one leaves none either)."""
        own = [cube(f"carol {i}", user="carol") for i in range(3)]
        gone = cube("bob's secret", user="bob")
        vault.insert([own[0], gone, own[1]], Actor("carol"))
        vault.put_version(bump(gone, governance=gone.governance.model_copy(
            update={"readers": ("carol",)})), 1, Actor("bob"), "share:read")
        vault.insert([own[2]], Actor("carol"))
        vault.tombstone(gone.id, Actor("bob"))
        states = ("generated", "deleted")
        pages = [[c.id for c in vault.list(ListQuery(user_ids=("carol",), states=states,
                                                      limit=1, offset=i))] for i in range(3)]
        assert pages == [[c.id] for c in own]
        assert vault.count(ListQuery(user_ids=("carol",), states=states)) == 3
        owner = ListQuery(user_ids=("bob",), states=states)
        assert [c.id for c in vault.list(owner)] == [gone.id] and vault.count(owner) == 1

    def test_iter_current_batches_in_insertion_order(self, vault: Vault) -> None:
        cubes = [cube(f"n{i}") for i in range(5)]
        for c in cubes:
            vault.insert([c], ALICE)
        vault.tombstone(cubes[0].id, ALICE)
        batches = list(vault.iter_current(2))
        assert [len(b) for b in batches] == [2, 2, 1]
        assert [c.id for b in batches for c in b] == [c.id for c in cubes]  # tombstones too

    def test_graph_rows_carry_the_graph_fields_without_text(self, vault: Vault) -> None:
        c = cube("Alice met Bob in Paris.", session="s", tags=("trip",), entities=("Bob", "Paris"))
        vault.insert([c], ALICE)
        (row,) = vault.graph_rows()
        assert {"id", "seq", "user_id", "agent_id", "session_id", "version", "state", "type",
                "tags", "readers", "occurred_at", "superseded", "entities"} <= set(row)
        assert "text" not in row and row["id"] == c.id and row["tags"] == ["trip"]
        assert row["entities"] == ["Bob", "Paris"] and row["superseded"] is False

    def test_graph_view_rows_hold_a_users_part_of_the_graph(self, vault: Vault) -> None:
        states = ("generated", "activated", "archived")
        a1, a2 = cube("a1", session="s"), cube("a2", session="s")
        b1, b2, b3 = (cube(t, user="bob", session="t") for t in ("b1", "b2", "b3"))
        b4, c1 = cube("b4", user="bob", session="u"), cube("c1", user="carol", session="t")
        vault.insert([a1, a2], ALICE)
        vault.insert([b1, b2, b3, b4], Actor("bob"))
        vault.insert([c1], Actor("carol"))
        shared = bump(b2, governance=b2.governance.model_copy(update={"readers": ("alice",)}))
        vault.put_version(shared, 1, Actor("bob"), "share:read")
        vault.tombstone(a2.id, ALICE)
        vault.tombstone(b3.id, Actor("bob"))
        rows = vault.graph_view_rows(["alice"], states)
        # her own live memory, the one shared with her and the other live turn of its session
        assert [r["id"] for r in rows] == [a1.id, b1.id, b2.id]
        assert rows[2]["readers"] == ["alice"] and rows[2]["version"] == 2
        assert [r["id"] for r in vault.graph_view_rows(["bob"], states)] == [b1.id, b2.id, b4.id]
        assert [r["id"] for r in vault.graph_view_rows(["alice", "carol"], states)] == \
            [a1.id, b1.id, b2.id, c1.id]
        assert vault.graph_view_rows(["nobody"], states) == []
        assert vault.graph_view_rows([], states) == []

    def test_graph_edges_touching_memories(self, vault: Vault) -> None:
        a, b, c, d = (cube(t) for t in "abcd")
        vault.insert([a, b, c, d], ALICE)
        vault.add_edges([Edge(a.id, b.id, "supersedes"), Edge(c.id, a.id, "derived_from"),
                         Edge(c.id, d.id, "derived_from")])
        assert vault.graph_edges([a.id]) == [Edge(a.id, b.id, "supersedes"),
                                             Edge(c.id, a.id, "derived_from")]
        assert vault.graph_edges([d.id, d.id]) == [Edge(c.id, d.id, "derived_from")]
        assert len(vault.graph_edges([a.id, b.id, c.id, d.id])) == 3
        assert vault.graph_edges([]) == [] and vault.graph_edges(["unknown"]) == []

    def test_user_stats_count_only_the_users_own(self, vault: Vault) -> None:
        a1, a2, b1 = cube("a1"), cube("a2"), cube("b1", user="bob")
        vault.insert([a1, a2], ALICE)
        vault.insert([b1], Actor("bob"))
        shared = bump(b1, governance=b1.governance.model_copy(update={"readers": ("alice",)}))
        vault.put_version(shared, 1, Actor("bob"), "share:read")
        vault.tombstone(a2.id, ALICE)
        mine = vault.user_stats("alice")
        assert mine["memories"] == 2 and mine["by_state"] == {"generated": 1, "deleted": 1}
        assert mine["versions"] == 3 and mine["shared_with_me"] == 1
        assert mine["audit_records"] == len(vault.audit_log(user_id="alice", limit=1000))
        assert vault.user_stats("nobody")["memories"] == 0

    def test_user_stats_count_the_edges_between_the_users_own_memories(self, vault: Vault) -> None:
        a1, a2, a3, b1 = cube("a1"), cube("a2"), cube("a3"), cube("b1", user="bob")
        vault.insert([a1, a2, a3], ALICE)
        vault.insert([b1], Actor("bob"))
        vault.add_edges([Edge(a3.id, a1.id, "derived_from"), Edge(a3.id, a2.id, "derived_from"),
                         Edge(a3.id, b1.id, "derived_from"), Edge(b1.id, a1.id, "supersedes")])
        assert vault.user_stats("alice")["edges"] == 2
        assert vault.user_stats("bob")["edges"] == 0

    # -- usage and tiers ----------------------------------------------------------------------

    def test_usage_and_tier_are_not_versions(self, vault: Vault) -> None:
        c = cube("hot")
        vault.insert([c], ALICE)
        records = len(vault.audit_log(limit=1000))
        now = utcnow()
        vault.record_usage([c.id, "unknown"], now, 3600.0)
        vault.record_usage([c.id], now, 3600.0)
        vault.set_tier(c.id, Tier.ACTIVATION.value)
        got = vault.get(c.id)
        assert got is not None and got.version == 1
        assert got.usage.access_count == 2 and got.usage.heat == pytest.approx(2.0, rel=1e-3)
        assert got.usage.tier is Tier.ACTIVATION
        assert len(vault.audit_log(limit=1000)) == records

    def test_set_tier_with_expected_is_a_compare_and_set(self, vault: Vault) -> None:
        c = cube("hot")
        vault.insert([c], ALICE)
        assert vault.set_tier(c.id, Tier.ACTIVATION.value, expected=Tier.PLAINTEXT.value)
        # a second scheduler that read "plaintext" too: not written
        assert not vault.set_tier(c.id, Tier.ACTIVATION.value, expected=Tier.PLAINTEXT.value)
        assert not vault.set_tier(c.id, Tier.PARAMETRIC.value, expected=Tier.PLAINTEXT.value)
        got = vault.get(c.id)
        assert got is not None and got.usage.tier is Tier.ACTIVATION
        assert not vault.set_tier("unknown", Tier.ACTIVATION.value)
        assert vault.set_tier(c.id, Tier.PLAINTEXT.value)  # unconditional
        got = vault.get(c.id)
        assert got is not None and got.usage.tier is Tier.PLAINTEXT

    # -- audit --------------------------------------------------------------------------------

    def test_audit_log_filters_limits_and_verifies(self, vault: Vault) -> None:
        c = cube("x")
        vault.insert([c], ALICE)
        for i in range(3):
            vault.audit(Actor("alice"), "export", details={"n": i})
        vault.audit(Actor("bob"), "export")
        exports = vault.audit_log(user_id="alice", action="export", limit=2)
        assert [r.details["n"] for r in exports] == [1, 2]  # newest two, oldest first
        seqs = [r.seq for r in vault.audit_log(limit=1000)]
        assert seqs == sorted(seqs)
        records = vault.audit_log(limit=1000)
        assert all(r.prev_hash == p.hash for p, r in zip(records, records[1:]))
        assert vault.verify_audit()[0]

    # -- grants -------------------------------------------------------------------------------

    def test_change_grants_stores_grants_with_their_versions(self, vault: Vault) -> None:
        c = cube("shared later")
        vault.insert([c], ALICE)
        grant = NamespaceGrant(owner="alice", grantee="bob", scope="read", session_id="s")
        new = bump(c, governance=c.governance.model_copy(update={"readers": ("bob",)}))
        vault.change_grants(add=[grant], changes=[(new, 1)], actor=ALICE, action="share:read",
                            details={"with_user_id": "bob"})
        assert vault.grants("alice") == [grant] and vault.grants("bob") == []
        assert vault.get(c.id).governance.readers == ("bob",)  # type: ignore[union-attr]
        with pytest.raises(MemOSError):  # stale: nothing of it is stored
            vault.change_grants(remove=[grant], changes=[(new, 1)], actor=ALICE,
                                action="revoke", details={})
        assert vault.grants() == [grant]
        vault.change_grants(remove=[grant], actor=ALICE, action="revoke", details={})
        assert vault.grants() == []

    # -- keyed items --------------------------------------------------------------------------

    def test_put_keyed_binds_a_new_memory_and_writes_versions(self, vault: Vault) -> None:
        item = ItemKey("alice", ("alice", "prefs"), "food")
        first = cube("Alice likes tea.")
        vault.put_keyed(item, first, None, ALICE, "put")
        got = vault.get_keyed(item)
        assert got is not None and got.id == first.id and got.version == 1
        vault.put_keyed(item, bump(first, text="Alice likes coffee."), 1, ALICE, "put")
        assert vault.get_keyed(item).text == "Alice likes coffee."  # type: ignore[union-attr]
        assert [c.text for c in vault.history(first.id)] == ["Alice likes tea.",
                                                            "Alice likes coffee."]
        assert [r.action for r in vault.audit_log(memory_id=first.id)] == ["put", "put"]
        assert vault.get_keyed(ItemKey("alice", ("alice", "prefs"), "other")) is None
        assert vault.get_keyed(ItemKey("bob", ("alice", "prefs"), "food")) is None

    def test_put_keyed_conflicts_write_nothing(self, vault: Vault) -> None:
        item = ItemKey("alice", ("alice",), "k")
        first = cube("one")
        vault.put_keyed(item, first, None, ALICE, "put")
        count = vault.count()
        with pytest.raises(ConflictError):  # bound already: a second new memory is refused
            vault.put_keyed(item, cube("two"), None, ALICE, "put")
        with pytest.raises(ConflictError):  # stale version
            vault.put_keyed(item, bump(first, text="x", version=5), 4, ALICE, "put")
        other = cube("unbound")
        vault.insert([other], ALICE)
        with pytest.raises(ConflictError):  # the key names another memory
            vault.put_keyed(item, bump(other, text="y"), 1, ALICE, "put")
        with pytest.raises(InvalidInputError):  # a keyed memory belongs to the key's user
            vault.put_keyed(ItemKey("bob", ("bob",), "k"), cube("b"), None, Actor("bob"), "put")
        assert vault.count() == count + 1 and vault.get_keyed(item).text == "one"  # type: ignore[union-attr]

    def test_list_keyed_matches_label_prefixes_in_bind_order(self, vault: Vault) -> None:
        spaces = [("a", "b"), ("a",), ("ab",), ("a", "b", "c"), ("a", "bc")]
        for i, ns in enumerate(spaces):
            vault.put_keyed(ItemKey("alice", ns, f"k{i}"), cube(f"n{i}"), None, ALICE, "put")
        vault.put_keyed(ItemKey("bob", ("a", "b"), "kb"), cube("b", user="bob"), None,
                        Actor("bob"), "put")

        def names(prefix: tuple[str, ...], **kw: Any) -> list[str]:
            return [item.key for item, _ in vault.list_keyed("alice", prefix, **kw)]

        assert names(()) == ["k0", "k1", "k2", "k3", "k4"]
        assert names(("a",)) == ["k0", "k1", "k3", "k4"]
        assert names(("a", "b")) == ["k0", "k3"]
        assert names(("a",), limit=2, offset=1) == ["k1", "k3"]
        (item, mid), = vault.list_keyed("bob", ("a",))
        assert item == ItemKey("bob", ("a", "b"), "kb") and vault.get(mid).text == "b"  # type: ignore[union-attr]

    def test_unbind_key_compares_the_memory(self, vault: Vault) -> None:
        item = ItemKey("alice", ("s",), "k")
        first = cube("first")
        vault.put_keyed(item, first, None, ALICE, "put")
        assert vault.unbind_key(item, "another id") is False
        assert vault.unbind_key(item, first.id) is True
        assert vault.get_keyed(item) is None and vault.get(first.id) is not None
        second = cube("second")
        vault.put_keyed(item, second, None, ALICE, "put")  # the key is free again
        assert vault.get_keyed(item).id == second.id  # type: ignore[union-attr]

    def test_bind_key_adopts_an_existing_memory_once(self, vault: Vault) -> None:
        old, other = cube("written before keys"), cube("another")
        vault.insert([old, other], ALICE)
        item = ItemKey("alice", ("lg",), "k")
        assert vault.bind_key(item, old.id) is True
        assert vault.get_keyed(item).id == old.id and vault.get(old.id).version == 1  # type: ignore[union-attr]
        assert vault.bind_key(item, other.id) is False  # the key is taken
        assert vault.bind_key(ItemKey("alice", ("lg",), "k2"), old.id) is False  # so is the memory
        with pytest.raises(MemoryNotFoundError):
            vault.bind_key(ItemKey("bob", ("lg",), "k"), other.id)  # not bob's
        with pytest.raises(MemoryNotFoundError):
            vault.bind_key(item, "missing")

    def test_tombstone_drops_key_bindings(self, vault: Vault) -> None:
        item = ItemKey("alice", ("secret-project",), "pin")
        c = cube("PIN 4711")
        vault.put_keyed(item, c, None, ALICE, "put")
        vault.tombstone(c.id, ALICE)
        assert vault.get_keyed(item) is None and vault.list_keyed("alice") == []
        vault.put_keyed(item, cube("new"), None, ALICE, "put")  # the key can be used again

    # -- conversation logs --------------------------------------------------------------------

    def test_log_append_read_count_and_ids(self, vault: Vault) -> None:
        vault.log_append("alice", "s1", [("m1", '{"content": "hi"}'), ("m2", '{"content": "yo"}')],
                         "active")
        vault.log_append("alice", "s0", [("m3", "{}")], "archived")
        vault.log_append("bob", "s1", [("m4", "{}")], "active")
        assert vault.log_read("alice", "s1", "active") == [("m1", '{"content": "hi"}'),
                                                           ("m2", '{"content": "yo"}')]
        assert vault.log_read("alice", "s1", None, limit=1, offset=1) == [("m2", '{"content": "yo"}')]
        assert vault.log_read("alice", "nope", None) == []
        assert vault.log_count("alice", "s1", "archived") == 0
        assert vault.log_count("alice", "s1", None) == 2
        assert vault.log_ids("alice") == ["s1", "s0"] and vault.log_ids("carol") == []

    def test_log_replace_delete_and_take(self, vault: Vault) -> None:
        rows = [(f"m{i}", f'{{"i": {i}}}') for i in range(5)]
        vault.log_append("alice", "s", rows, "active")
        assert vault.log_take_oldest("alice", "s", 2, archive=True) == rows[:2]
        assert vault.log_count("alice", "s", "archived") == 2
        assert vault.log_read("alice", "s", None) == rows  # order kept across statuses
        assert vault.log_delete_at("alice", "s", -1, "active") == rows[4]
        assert vault.log_delete_at("alice", "s", 9, "active") is None
        assert vault.log_take_oldest("alice", "s", 1, archive=False) == [rows[2]]
        vault.log_replace("alice", "s", [("n", "{}")], "active", clear="active")
        assert vault.log_read("alice", "s", None) == [*rows[:2], ("n", "{}")]
        assert vault.log_delete("alice", "s", "archived") == rows[:2]
        vault.log_replace("alice", "s", [("z", "{}")], "archived", clear=None)
        assert vault.log_read("alice", "s", None) == [("z", "{}")]
        with pytest.raises(InvalidInputError):
            vault.log_append("alice", "s", [("q", "{}")], "weird")

    def test_log_redact_rewrites_matching_rows_of_the_given_users(self, vault: Vault) -> None:
        vault.log_append("alice", "s", [("m1", '{"content": "my PIN is 4711"}'),
                                        ("m2", '{"content": "hello"}'),
                                        ("m3", '{"content": "source"}')], "active")
        vault.log_append("", "shared", [("m4", '{"content": "PIN 4711 again"}')], "active")
        vault.log_append("bob", "s", [("m5", '{"content": "bob 4711"}')], "active")
        seen: list[str] = []

        def rewrite(message_id: str, message: str) -> str | None:
            seen.append(message_id)
            return message.replace("4711", "[forgotten]") if "4711" in message else '{"x": 1}'

        changed = vault.log_redact(["alice", ""], ["4711"], ["m3"], rewrite)
        assert changed == [("", "shared"), ("alice", "s")]
        assert sorted(seen) == ["m1", "m3", "m4"]  # m2 and bob's rows are not touched
        assert vault.log_read("alice", "s", None)[0][1] == '{"content": "my PIN is [forgotten]"}'
        assert vault.log_read("bob", "s", None) == [("m5", '{"content": "bob 4711"}')]
        assert vault.log_redact(["alice"], [], [], rewrite) == []

    # -- thread checkpoints -------------------------------------------------------------------

    def test_checkpoints_put_get_list(self, vault: Vault) -> None:
        def rec(thread: str, cid: str, parent: str | None = None, run: str | None = None,
                ns: str = "") -> CheckpointRecord:
            return CheckpointRecord(thread, ns, cid, parent, run, ("json", cid.encode()),
                                    ("json", b"{}"))

        vault.cp_put(rec("t1", "001"), [("messages", "1", ("json", b"[1]"))])
        vault.cp_put(rec("t1", "002", "001", "r1"), [("messages", "2", ("empty", None))])
        vault.cp_put(rec("t1", "001", ns="sub"), [])
        vault.cp_put(rec("t2", "005"), [])
        assert vault.cp_get("t1", "", None) == rec("t1", "002", "001", "r1")
        assert vault.cp_get("t1", "", "001") == rec("t1", "001")
        assert vault.cp_get("t1", "", "999") is None and vault.cp_get("t9", "", None) is None
        assert [r.checkpoint_id for r in vault.cp_list()] == ["005", "002", "001", "001"]
        assert [r.checkpoint_id for r in vault.cp_list("t1", "")] == ["002", "001"]
        assert [r.checkpoint_id for r in vault.cp_list("t1", before="002")] == ["001", "001"]
        assert len(vault.cp_list(limit=1)) == 1
        assert vault.cp_blobs("t1", "", {"messages": "2", "other": "1"}) == {
            "messages": ("empty", None)}
        assert vault.cp_blobs("t1", "", {"messages": "1"}) == {"messages": ("json", b"[1]")}

    def test_checkpoint_writes_delete_copy_and_runs(self, vault: Vault) -> None:
        record = CheckpointRecord("t1", "", "c1", None, "run-1", ("j", b"c"), ("j", b"m"))
        vault.cp_put(record, [("ch", "1", ("j", b"v"))])
        vault.cp_put_writes("t1", "", "c1", "task-b", "", [(0, "a", ("j", b"1")),
                                                           (1, "b", ("j", b"2"))])
        vault.cp_put_writes("t1", "", "c1", "task-a", "", [(0, "a", ("j", b"3"))])
        vault.cp_put_writes("t1", "", "c1", "task-a", "", [(0, "a", ("j", b"kept?"))])
        vault.cp_put_writes("t1", "", "c1", "task-a", "", [(-1, "__error__", ("j", b"e1"))])
        vault.cp_put_writes("t1", "", "c1", "task-a", "", [(-1, "__error__", ("j", b"e2"))])
        assert vault.cp_writes("t1", "", "c1") == [
            ("task-a", "__error__", ("j", b"e2")), ("task-a", "a", ("j", b"3")),
            ("task-b", "a", ("j", b"1")), ("task-b", "b", ("j", b"2"))]
        vault.cp_copy_thread("t1", "t2")
        assert vault.cp_get("t2", "", "c1") is not None
        assert len(vault.cp_writes("t2", "", "c1")) == 4
        assert vault.cp_blobs("t2", "", {"ch": "1"}) == {"ch": ("j", b"v")}
        vault.cp_delete_runs(["run-1"])
        assert vault.cp_list() == [] and vault.cp_writes("t1", "", "c1") == []
        vault.cp_put(record, [])
        vault.cp_delete_thread("t1")
        vault.cp_delete_thread("missing")
        assert vault.cp_list("t1") == [] and vault.cp_blobs("t1", "", {"ch": "1"}) == {}

    def test_cp_delete_runs_drops_what_no_checkpoint_can_load(self, vault: Vault) -> None:
        """A (thread, namespace) whose last checkpoint goes loses its blobs (owner marks
        too) and writes in the same call: nothing can load them, and nothing would say
        whose they are. One that keeps a checkpoint keeps them all."""
        def put(thread: str, ns: str, cid: str, run: str, version: str) -> None:
            vault.cp_put(CheckpointRecord(thread, ns, cid, None, run, ("j", b"c"), ("j", b"m")),
                         [("messages", version, ("j", f"text {cid}".encode())),
                          ("__memos_user__", "bob", ("empty", None))])
            vault.cp_put_writes(thread, ns, cid, "task", "", [(0, "messages", ("j", b"w"))])

        put("t1", "", "c1", "run-1", "1")
        put("t1", "", "c2", "run-2", "2")
        put("t1", "sub", "c1", "run-1", "1")
        put("t2", "", "c1", "run-3", "1")
        vault.cp_put_writes("t1", "", "c3", "task", "", [(0, "messages", ("j", b"early"))])
        both = {"messages": "1", "__memos_user__": "bob"}

        vault.cp_delete_runs(["run-1"])
        assert vault.cp_blobs("t1", "", both) == {"messages": ("j", b"text c1"),
                                                  "__memos_user__": ("empty", None)}
        assert vault.cp_writes("t1", "", "c1") == [] and len(vault.cp_writes("t1", "", "c2")) == 1
        assert vault.cp_writes("t1", "", "c3") == [("task", "messages", ("j", b"early"))]
        assert vault.cp_blobs("t1", "sub", both) == {}
        assert vault.cp_writes("t1", "sub", "c1") == []

        vault.cp_delete_runs(["run-2"])
        assert vault.cp_blobs("t1", "", {"messages": "1"}) == {}
        assert vault.cp_blobs("t1", "", {"messages": "2", "__memos_user__": "bob"}) == {}
        assert vault.cp_writes("t1", "", "c3") == []
        assert len(vault.cp_blobs("t2", "", both)) == 2 and vault.cp_any()

        vault.cp_delete_runs(["run-3"])
        assert vault.cp_list() == [] and not vault.cp_any()

    def test_cp_any_sees_every_kind_of_row(self, vault: Vault) -> None:
        assert not vault.cp_any()
        vault.cp_put_writes("t1", "", "c1", "task", "", [(0, "ch", ("j", b"w"))])
        assert vault.cp_any()
        vault.cp_delete_thread("t1")
        assert not vault.cp_any()
        vault.cp_put(CheckpointRecord("t1", "", "c1", None, None, ("j", b"c"), ("j", b"m")), [])
        assert vault.cp_any()

    def test_cp_redact_drops_blobs_no_checkpoint_can_load(self, vault: Vault) -> None:
        """Blobs an earlier version's cp_delete_runs left without a checkpoint are deleted
        before a redaction searches: never rewritten, reported or decoded. Writes stay (a
        run may store them before their checkpoint); other threads keep everything."""
        secret = b"PIN 4711"
        for thread in ("t1", "t2"):
            vault.cp_put(CheckpointRecord(thread, "", "c1", None, None, ("j", b"c"),
                                          ("j", b"m")),
                         [("ch", "1", ("j", secret)), ("__memos_user__", "bob", ("empty", None))])
        vault.cp_put_writes("t1", "", "c2", "task", "", [(0, "ch", ("j", b"w " + secret))])
        self.drop_checkpoint_rows(vault, "t1")
        assert vault.cp_blobs("t1", "", {"ch": "1"}) == {"ch": ("j", secret)}  # left behind
        seen: list[Typed] = []

        def rewrite(value: Typed) -> Typed | None:
            seen.append(value)
            return None

        assert vault.cp_redact([b"4711"], rewrite, skip_threads={"t2"}) == []
        assert seen == [("j", b"w " + secret)]  # the write only
        assert vault.cp_blobs("t1", "", {"ch": "1", "__memos_user__": "bob"}) == {}
        assert vault.cp_writes("t1", "", "c2") == [("task", "ch", ("j", b"w " + secret))]
        assert len(vault.cp_blobs("t2", "", {"ch": "1", "__memos_user__": "bob"})) == 2

    def test_cp_redact_rewrites_every_kind_of_value(self, vault: Vault) -> None:
        secret = b"PIN 4711"
        vault.cp_put(CheckpointRecord("t1", "", "c1", None, None, ("j", b"ck " + secret),
                                      ("j", b"meta " + secret)), [("ch", "1", ("j", secret))])
        vault.cp_put_writes("t1", "", "c1", "task", "", [(0, "ch", ("j", b"w " + secret))])
        vault.cp_put(CheckpointRecord("t2", "", "c1", None, None, ("j", b"clean"),
                                      ("j", b"{}")), [("ch", "1", ("empty", None))])

        def rewrite(value: Typed) -> Typed | None:
            assert value[1] is not None
            return (value[0], value[1].replace(b"4711", b"[forgotten]"))

        # a skipped thread (another user's conversation) keeps every byte
        assert vault.cp_redact([b"4711"], rewrite, skip_threads={"t1"}) == []
        assert vault.cp_blobs("t1", "", {"ch": "1"}) == {"ch": ("j", secret)}
        assert vault.cp_redact([b"4711"], rewrite) == ["t1"]
        record = vault.cp_get("t1", "", "c1")
        assert record is not None and b"4711" not in (record.checkpoint[1] or b"")
        assert b"4711" not in (record.metadata[1] or b"")
        assert vault.cp_blobs("t1", "", {"ch": "1"}) == {"ch": ("j", b"PIN [forgotten]")}
        assert vault.cp_writes("t1", "", "c1")[0][2] == ("j", b"w PIN [forgotten]")
        assert vault.cp_redact([b"4711"], rewrite) == [] and vault.cp_redact([], rewrite) == []
        # the empty needle is in every value: an adapter whose serde compresses or encrypts
        # (its bytes do not show the text) visits each stored value that has bytes
        seen: list[Typed] = []
        assert vault.cp_redact([b""], lambda v: seen.append(v)) == []
        assert sorted(v[1] or b"" for v in seen) == sorted(
            [b"ck PIN [forgotten]", b"meta PIN [forgotten]", b"PIN [forgotten]",
             b"w PIN [forgotten]", b"clean", b"{}"])
