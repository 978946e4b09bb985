"""Regression tests of issue 11, cases 1-3 and 6: what adversarial testing broke.

1. A bundle's relations may only join memories the importer owns after the import, and every
   cascade of a forget checks the principal's rights on each memory it touches.
2. Forget leaves no text, metadata or tag behind: scrubbed versions carry a real flag (a text
   that starts with ``sha256:`` is scrubbed like any other), no byte of any of them stays in any
   file under the data directory (vault, Qdrant WAL / payload storage / payload index), and
   imported tombstones carry no text; receipts list only what was removed.
3. A redacted hit reveals nothing of its content: no tags, no graph reasons naming entities, no
   entity in ``explain()`` or the command line's ``why:`` line.
6. ``stats`` and ``verify_audit`` are store-wide only for admin principals.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from memos_core import MemOS, MemOSConfig, State
from memos_core.cli import main
from memos_core.errors import AccessDeniedError, BundleError, InvalidInputError, MemoryDeletedError
from memos_core.governance import FLAG_KEY
from memos_core.vault import Actor

FILES = ("memories.jsonl", "edges.jsonl")


def _config(**extra: Any) -> MemOSConfig:
    return MemOSConfig(show_progress=False, **extra)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MemOS]:
    mos = MemOS(tmp_path / "data", config=_config(admin_users=("root",)))
    yield mos
    mos.close()


def resign(bundle: Path) -> None:
    """Recompute the manifest's hashes, as a hostile bundle maker would."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    for name in FILES:
        data = (bundle / name).read_bytes()
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def rows(bundle: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (bundle / "memories.jsonl").read_text().splitlines()]


def write_rows(bundle: Path, lines: list[dict[str, Any]], edges: list[dict[str, str]] | None = None) -> None:
    (bundle / "memories.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    if edges is not None:
        (bundle / "edges.jsonl").write_text("".join(json.dumps(e) + "\n" for e in edges))
    resign(bundle)


def counts(mos: MemOS) -> tuple[int, ...]:
    s = mos.vault.stats()
    return (s["memories"], s["versions"], s["audit_records"], s["edges"], mos.index.count())


# -- 1. forged import edges, cascades across users ------------------------------------------


@pytest.mark.parametrize("derived", ["flag", "forget"])
def test_a_forged_edge_to_another_users_memory_is_refused(store: MemOS, tmp_path: Path,
                                                          derived: str) -> None:
    victim = store.add("Alice's private plan for the merger.", user_id="alice")
    mine = store.add("Mallory's own note.", user_id="mallory")
    bundle = store.export(tmp_path / "b", user_id="mallory")
    forged = json.loads(victim.model_dump_json())  # the victim's id, in mallory's bundle
    write_rows(bundle, rows(bundle) + [{"id": victim.id, "versions": [forged]}],
               [{"src": victim.id, "dst": mine.id, "kind": "derived_from"}])
    before = counts(store)
    with pytest.raises(BundleError, match="not one of 'mallory'"):
        store.import_(bundle, user_id="mallory")
    assert counts(store) == before
    store.forget(mine.id, user_id="mallory", derived=derived)
    after = store.get(victim.id, user_id="alice")
    assert (after.version, after.text, after.state) == (1, victim.text, State.GENERATED)
    assert FLAG_KEY not in after.metadata


def test_bundle_edges_between_the_importers_own_memories_still_import(store: MemOS, tmp_path: Path) -> None:
    a = store.add("Ana's basil grows well.", user_id="ana")
    b = store.add("Ana's basil had aphids.", user_id="ana")
    summary = store.compress([a.id, b.id], "Ana's basil story.", user_id="ana")
    bundle = store.export(tmp_path / "b", user_id="ana")
    with MemOS(tmp_path / "other", config=_config()) as other:
        assert other.import_(bundle, user_id="ana")["edges"] == 2
        # importing the same bundle again: every id is ana's own, the edges are accepted
        assert other.import_(bundle, user_id="ana")["skipped"] == 3
        receipt = other.forget(a.id, user_id="ana")
        assert [(f.id, f.action) for f in receipt.derived] == [(summary.id, "flagged")]


def test_an_edge_to_a_forgotten_memory_is_refused(store: MemOS, tmp_path: Path) -> None:
    mine = store.add("Mallory's note.", user_id="mallory")
    gone = store.add("Mallory's old note.", user_id="mallory")
    store.forget(gone.id, user_id="mallory")
    bundle = store.export(tmp_path / "b", user_id="mallory")
    write_rows(bundle, rows(bundle), [{"src": gone.id, "dst": mine.id, "kind": "derived_from"}])
    with pytest.raises(BundleError, match="forgotten"):
        store.import_(bundle, user_id="mallory")


def test_a_cascade_leaves_summaries_the_principal_may_not_change(store: MemOS) -> None:
    """bob, a writer of alice's memory, compresses it with a note of his own into his
    summary (alice may not read the note, so she gets no right on the summary): alice's
    forget must not write bob's summary (flag) and must refuse to forget it
    (derived='forget')."""
    source = store.add("Alice's shared travel notes for Lisbon.", user_id="alice")
    store.share(source.id, with_user_id="bob", user_id="alice", scope="write")
    note = store.add("Bob's own Lisbon note.", user_id="bob")
    summary = store.compress([source.id, note.id], "Bob's summary of the Lisbon notes.",
                             user_id="bob")
    with pytest.raises(AccessDeniedError, match="belongs to 'bob'"):
        store.forget(source.id, user_id="alice", derived="forget")
    assert store.get(source.id, user_id="alice", version=None).state is State.ARCHIVED  # untouched
    receipt = store.forget(source.id, user_id="alice")
    assert [(f.id, f.action) for f in receipt.derived] == [(summary.id, "not_permitted")]
    kept = store.get(summary.id, user_id="bob")
    assert kept.version == 1 and FLAG_KEY not in kept.metadata


def test_the_owner_cascade_still_flags_and_forgets(store: MemOS) -> None:
    a = store.add("Ana likes hiking in the Alps.", user_id="ana")
    s1 = store.compress([a.id], "Ana hikes.", user_id="ana")
    s2 = store.compress([s1.id], "Ana is outdoorsy.", user_id="ana")
    receipt = store.forget(a.id, user_id="ana", derived="forget")
    assert {(f.id, f.action) for f in receipt.derived} == {(s1.id, "forgotten"), (s2.id, "forgotten")}
    with pytest.raises(MemoryDeletedError):
        store.get(s2.id, user_id="ana")


# -- 2. forget leaves nothing ------------------------------------------------------------------


def files_holding(root: Path, needles: tuple[str, ...]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            data = path.read_bytes()
            hits = [n for n in needles if n.encode() in data]
            if hits:
                found[str(path.relative_to(root))] = hits
    return found


def test_a_text_starting_with_sha256_is_scrubbed(store: MemOS) -> None:
    cube = store.add("sha256: my diary says the safe code is PELICAN8812", user_id="eve",
                     metadata={"where": "FLAMINGO-DESK"}, tags=["diary-TAPIR"])
    store.update(cube.id, "sha256: v2 of the diary, code PELICAN8812", user_id="eve")
    store.forget(cube.id, user_id="eve")
    versions = store.history(cube.id, user_id="eve")
    assert all(v.scrubbed for v in versions)
    dumped = "".join(v.model_dump_json() for v in versions)
    for needle in ("PELICAN8812", "FLAMINGO-DESK", "diary-TAPIR"):
        assert needle not in dumped


def test_forget_leaves_no_text_metadata_or_tag_in_any_file(tmp_path: Path) -> None:
    text, meta, tag = "Zanzibar passport number QX7731KESTREL", "meta-KUMQUAT-5521", "tag-OKAPI-9315"
    root = tmp_path / "data"
    mos = MemOS(root, config=_config())
    try:
        keep = mos.add("An unrelated note about tea.", user_id="u", tags=["tea"])
        cube = mos.add(text, user_id="u", metadata={"note": meta}, tags=[tag], session_id="s")
        mos.update(cube.id, text + " (renewed)", user_id="u", tags=[tag, "second"])
        # the tag filter still works, on hashed tags
        assert [h.id for h in mos.search("passport", user_id="u", tags=[tag])] == [cube.id]
        assert [h.id for h in mos.search("tea", user_id="u", tags=["tea"])] == [keep.id]
        mos.index.flush()
        mos.vault.checkpoint()
        seen = files_holding(root, ("QX7731KESTREL", meta, tag))
        assert any(set(v) == {"QX7731KESTREL", meta, tag} for v in seen.values()), seen  # the scan sees
        assert not any(k.startswith("index") for k in seen), f"index files hold user data: {seen}"
        mos.forget(cube.id, user_id="u")
        assert files_holding(root, ("QX7731KESTREL", meta, tag)) == {}
    finally:
        mos.close()
    assert files_holding(root, ("QX7731KESTREL", meta, tag)) == {}


def test_imported_tombstones_carry_no_text_and_forget_reports_nothing_removed(
        store: MemOS, tmp_path: Path) -> None:
    live = store.add("A live note.", user_id="ivan")
    bundle = store.export(tmp_path / "b", user_id="ivan")
    mid = str(uuid.uuid4())
    version = json.loads(live.model_dump_json())
    v1 = {**version, "id": mid, "text": "Ivan's secret: HERON4455", "tags": ["t-HERON"]}
    digest = "sha256:" + hashlib.sha256(b"Ivan's secret: HERON4455").hexdigest()
    v2 = {**v1, "version": 2, "state": "deleted", "scrubbed": True, "text": digest}  # an old store's
    write_rows(bundle, rows(bundle) + [{"id": mid, "versions": [v1, v2]}])
    with MemOS(tmp_path / "other", config=_config()) as other:
        other.import_(bundle, user_id="ivan")
        versions = other.history(mid, user_id="ivan")
        assert all(v.scrubbed for v in versions)
        assert "HERON" not in "".join(v.model_dump_json() for v in versions)
        assert [v.text for v in versions] == ["", ""]  # nor the older store's digest
        receipt = other.forget(mid, user_id="ivan")
        assert receipt.removed_from == () and receipt.derived == ()


def test_a_legacy_tombstone_with_text_is_scrubbed_by_forget(store: MemOS) -> None:
    """A tombstone that still holds text (written by something other than forget) is
    repaired by the next forget, and the receipt says so -- and only then."""
    cube = store.add("Olga's note QUAIL2211.", user_id="olga")
    store.forget(cube.id, user_id="olga")
    with store.vault._tx() as db:  # plant the text back into version 1, as schema 1 could
        doc = json.loads(db.execute("SELECT doc FROM versions WHERE id=? AND version=1",
                                    (cube.id,)).fetchone()[0])
        doc.update(text="sha256:QUAIL2211 kept", scrubbed=False)
        db.execute("UPDATE versions SET doc=? WHERE id=? AND version=1", (json.dumps(doc), cube.id))
    assert store.forget(cube.id, user_id="olga").removed_from == ("vault",)
    assert "QUAIL2211" not in store.history(cube.id, user_id="olga")[0].text
    assert store.forget(cube.id, user_id="olga").removed_from == ()


@pytest.mark.parametrize("spell", [str.upper, lambda i: i.replace("-", ""),
                                   lambda i: "{" + i + "}", lambda i: "urn:uuid:" + i])
def test_a_bundle_cannot_respell_another_users_id(store: MemOS, tmp_path: Path, spell: Any) -> None:
    """Another spelling of Bob's memory id (same UUID) would have shared his index point, so
    his search lost the memory for good (reindex too); the bundle is refused, and no path
    writes a memory whose id is not canonical."""
    bob = store.add("Bob keeps his passport in the blue drawer.", user_id="bob")
    mine = store.add("Mallory's note.", user_id="mallory")
    bundle = store.export(tmp_path / "b", user_id="mallory")
    (row,) = rows(bundle)
    forged = spell(bob.id)
    write_rows(bundle, [{"id": forged, "versions": [{**v, "id": forged} for v in row["versions"]]}])
    before = counts(store)
    with pytest.raises(BundleError, match="canonical"):
        store.import_(bundle, user_id="mallory")
    assert counts(store) == before
    assert [h.id for h in store.search("where is the passport", user_id="bob")] == [bob.id]
    # the class: no vault writes a memory whose id is spelt another way (reading is not
    # checked, so a store written before this rule still opens)
    respelt = mine.model_validate({**mine.model_dump(), "id": forged})
    with pytest.raises(InvalidInputError, match="canonical"):
        store.vault.import_histories([[respelt]], [], Actor("mallory"))
    with pytest.raises(InvalidInputError, match="canonical"):
        store.vault.insert([respelt], Actor("mallory"))


def test_a_live_version_after_a_deleted_one_is_refused(store: MemOS, tmp_path: Path) -> None:
    live = store.add("A note.", user_id="ivan")
    bundle = store.export(tmp_path / "b", user_id="ivan")
    v1 = json.loads(live.model_dump_json())
    v2 = {**v1, "version": 2, "state": "deleted"}
    v3 = {**v1, "version": 3, "text": "back from the dead"}
    mid = str(uuid.uuid4())
    write_rows(bundle, [{"id": mid, "versions": [{**v, "id": mid} for v in (v1, v2, v3)]}])
    with pytest.raises(BundleError, match="tombstone is its last version"):
        store.import_(bundle, user_id="ivan")
    v1s = {**v1, "id": mid, "scrubbed": True}
    write_rows(bundle, [{"id": mid, "versions": [v1s]}])
    with pytest.raises(BundleError, match="marked scrubbed"):
        store.import_(bundle, user_id="ivan")


# -- 3. redacted hits ----------------------------------------------------------------------------


SENSITIVE = "Alice Cooper was treated at Charite Berlin for asthma."


def test_a_redacted_hit_reveals_nothing(store: MemOS) -> None:
    secret = store.add(SENSITIVE, user_id="alice", tags=["asthma-TAG"], sensitivity=["health"],
                       metadata={"doctor": "Dr Wu"})
    store.add("Alice Cooper likes Berlin in spring.", user_id="alice")
    store.share(secret.id, with_user_id="bob", user_id="alice")
    for user in ("alice", "bob"):
        hits = {h.id: h for h in store.search("Alice Cooper Berlin", user_id=user, k=5)}
        hit = hits[secret.id]
        assert hit.redacted == ("health",)
        shown = hit.memory.model_dump_json() + " ".join(hit.reasons) + hit.explain()
        for needle in ("Cooper", "cooper", "Berlin", "berlin", "asthma", "Charite", "Wu"):
            assert needle not in shown, (user, needle, shown)
        assert hit.memory.tags == () and hit.reasons == ()


def test_a_redacted_hit_carries_no_scores_to_test_guesses_against(store: MemOS) -> None:
    """A reader shown '[redacted: pii]' saw dense 0.663 and bm25 #1 for the query '4821' and
    dense 0.579 for '4822': a model could test guesses of the hidden text by its scores."""
    pin = store.add("The alarm code is 4821.", user_id="alice", sensitivity=["pii"])
    store.share(pin.id, with_user_id="bob", user_id="alice")
    for guess in ("4821", "4822", "alarm code"):
        (hit,) = [h for h in store.search(guess, user_id="bob", k=5) if h.id == pin.id]
        assert hit.redacted == ("pii",) and hit.text == "[redacted: pii]"
        assert (hit.score, hit.signals, hit.ranks, hit.reasons) == (0.0, {}, {}, ())
        assert hit.explain() == "no signal"
    (shown,) = store.search("4821", user_id="bob", k=5, allow_sensitive=["pii"])
    assert shown.signals and shown.score > 0  # allowed: the usual account


def test_the_cli_why_line_of_a_redacted_hit_names_no_entity(store: MemOS, tmp_path: Path) -> None:
    data = tmp_path / "cli"
    with MemOS(data, config=_config()) as mos:
        mos.add(SENSITIVE, user_id="alice", sensitivity=["health"])
        mos.add("Alice Cooper likes Berlin in spring.", user_id="alice")
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["search", "Alice Cooper Berlin", "--user", "alice", "--data-dir", str(data)]) == 0
    lines = out.getvalue().splitlines()
    redacted = [i for i, line in enumerate(lines) if "[redacted: health]" in line]
    assert redacted, out.getvalue()
    why = lines[redacted[0] + 1]
    assert "why:" in why and "berlin" not in why.lower() and "cooper" not in why.lower()


# -- 6. stats and verify_audit -----------------------------------------------------------------


def test_stats_are_per_user_unless_admin(store: MemOS) -> None:
    store.add("Alice one.", user_id="alice")
    store.add("Alice two.", user_id="alice")
    shared = store.add("Bob's shared note.", user_id="bob")
    store.share(shared.id, with_user_id="alice", user_id="bob")
    mine = store.stats(user_id="alice")
    assert mine["scope"] == "user" and mine["vault"]["memories"] == 2
    assert mine["vault"]["shared_with_me"] == 1 and "users" not in mine["vault"]
    assert "points" not in mine["index"] and "graph" not in mine
    assert store.stats(user_id="bob")["vault"]["memories"] == 1
    everything = store.stats(user_id="root")
    assert everything["scope"] == "store" and everything["vault"]["memories"] == 3
    with pytest.raises(TypeError):
        store.stats()  # type: ignore[call-arg]


def test_verify_audit_is_admin_only(store: MemOS) -> None:
    store.add("A note.", user_id="alice")
    with pytest.raises(AccessDeniedError, match="admin"):
        store.verify_audit(user_id="alice")
    assert store.verify_audit(user_id="root") == (True, "audit chain intact")


def test_the_cli_runs_stats_and_verify_as_the_operator(tmp_path: Path) -> None:
    data = tmp_path / "d"
    with MemOS(data, config=_config()) as mos:
        mos.add("A note.", user_id="alice")
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["audit", "verify", "--user", "ops", "--data-dir", str(data)]) == 0
        assert main(["stats", "--json", "--user", "ops", "--data-dir", str(data)]) == 0
    assert "audit chain intact" in out.getvalue() and '"scope": "store"' in out.getvalue()
