"""Export / import bundles, including corrupt and hostile ones (nothing is written)."""

from __future__ import annotations

import json
import os

import pytest

from memos_core import BundleError, InvalidInputError
from memos_core.validation import MAX_METADATA_BYTES


@pytest.fixture
def exported(mos, tmp_path):
    old = mos.add("Alice lives in Lisbon.", user_id="alice", type="fact")
    new = mos.add("Alice moved to Porto.", user_id="alice", type="fact", supersedes=old.id)
    mos.update(new.id, "Alice moved to Porto in 2024.", user_id="alice")
    mos.add("Bob's private note.", user_id="bob")
    path = mos.export(tmp_path / "bundle", user_id="alice")
    return path, old, new


def test_round_trip_keeps_versions_relations_and_search(make_mos, exported):
    path, old, new = exported
    other = make_mos("other")
    result = other.import_(path, user_id="alice")
    assert result["imported"] == 2 and result["edges"] == 1
    assert [c.version for c in other.history(new.id, user_id="alice")] == [1, 2]
    assert other.get(old.id, user_id="alice").superseded_by == new.id
    assert other.search("where does alice live", user_id="alice", k=1)[0].id == new.id
    assert other.list(user_id="bob") == []  # only alice's memories were exported
    assert other.import_(path, user_id="alice")["skipped"] == 2  # idempotent


def _rewrite_manifest(path, change):
    manifest = json.loads((path / "manifest.json").read_text())
    change(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def _truncate(path):
    data = (path / "memories.jsonl").read_bytes()
    (path / "memories.jsonl").write_bytes(data[: len(data) // 2])


def _bad_line(path):
    with open(path / "memories.jsonl", "a") as f:
        f.write('{"id": "x", "versions": [{"text": 1}]}\n')
    _fix_hashes(path)


def _bad_version_numbers(path):
    rows = [json.loads(l) for l in (path / "memories.jsonl").read_text().splitlines()]
    rows[0]["versions"][0]["version"] = 5
    (path / "memories.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _fix_hashes(path)


def _nul_in_tags(path):
    """A NUL character in a tag: the embedded store would keep it, PostgreSQL cannot."""
    rows = [json.loads(l) for l in (path / "memories.jsonl").read_text().splitlines()]
    rows[0]["versions"][0]["tags"] = ["a\x00b"]
    (path / "memories.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _fix_hashes(path)


def _first_version(change):
    """A damage that edits the first memory's first version (``change(version)``)."""
    def damage(path):
        rows = [json.loads(l) for l in (path / "memories.jsonl").read_text().splitlines()]
        change(rows[0]["versions"][0])
        (path / "memories.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        _fix_hashes(path)
    return damage


def _later_version(change, first=None, both=None):
    """``change(version)`` applied to the second version of the bundle's two-version memory
    (after the fields ``both`` are set in both versions and ``first`` in the first)."""
    def damage(path):
        rows = [json.loads(l) for l in (path / "memories.jsonl").read_text().splitlines()]
        row = next(r for r in rows if len(r["versions"]) == 2)
        for version in row["versions"]:
            version.update(both or {})
        row["versions"][0].update(first or {})
        change(row["versions"][1])
        (path / "memories.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        _fix_hashes(path)
    return damage


def _forgotten(change):
    """The first memory of the bundle as a forgotten one (its last version a tombstone),
    with ``change(version)`` applied to that tombstone."""
    def damage(path):
        rows = [json.loads(l) for l in (path / "memories.jsonl").read_text().splitlines()]
        tombstone = rows[0]["versions"][-1]
        tombstone["state"] = "deleted"
        change(tombstone)
        (path / "memories.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        _fix_hashes(path)
    return damage


def _rows(change):
    """A damage that edits the rows of memories.jsonl (``change(rows)``)."""
    def damage(path):
        rows = [json.loads(l) for l in (path / "memories.jsonl").read_text().splitlines()]
        change(rows)
        (path / "memories.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        _fix_hashes(path)
    return damage


_KEY = {"namespace": ["prefs"], "key": "colour"}
_UPPER_ID = "7B2D3F4E-0000-4000-8000-000000000000"  # a UUID, not in the form the vault stores


def _deep(depth):
    value: dict = {}
    for _ in range(depth):
        value = {"k": value}
    return value


def _dangling_edge(path):
    (path / "edges.jsonl").write_text(json.dumps(
        {"src": "00000000-0000-4000-8000-000000000001", "dst": "00000000-0000-4000-8000-000000000002",
         "kind": "supersedes"}) + "\n")
    _fix_hashes(path)


def _traversal(path):
    _rewrite_manifest(path, lambda m: m["files"].update({"../../etc/passwd": m["files"].pop("edges.jsonl")}))


def _symlink(path):
    (path / "edges.jsonl").unlink()
    os.symlink("/etc/passwd", path / "edges.jsonl")


def _fifo(path):
    (path / "edges.jsonl").unlink()
    os.mkfifo(path / "edges.jsonl")  # opening it for reading would wait for a writer


def _fix_hashes(path):
    from memos_core.ops.bundle import _file_info

    _rewrite_manifest(path, lambda m: m["files"].update(
        {n: _file_info(path / n) for n in ("memories.jsonl", "edges.jsonl")}))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: (p / "manifest.json").unlink(), "no manifest.json"),
        (lambda p: (p / "manifest.json").write_text("{not json"), "not valid JSON"),
        (lambda p: _rewrite_manifest(p, lambda m: m.update(format="zip")), "bundle"),
        (lambda p: _rewrite_manifest(p, lambda m: m.update(format_version=99)), "not supported"),
        # equal to 1 in Python, but no export writes them
        (lambda p: _rewrite_manifest(p, lambda m: m.update(format_version=True)), "not supported"),
        (lambda p: _rewrite_manifest(p, lambda m: m.update(format_version=1.0)), "not supported"),
        (_truncate, "truncated"),
        (_bad_line, "invalid memory"),
        (_bad_version_numbers, "numbered"),
        (_nul_in_tags, "NUL character"),
        # what add refuses, import refused too: metadata nested past what the vault's JSON
        # reader reads back made a record no call could read, forget or reindex
        (_first_version(lambda v: v.update(metadata=_deep(200))), "nested more than"),
        (_first_version(lambda v: v.update(tags=["t\ud800"])), "unpaired surrogate"),
        # every version of it is stored: add refuses metadata past the limit, import too
        (_first_version(lambda v: v["metadata"].update(blob="x" * MAX_METADATA_BYTES)),
         r"line \d+: version 1 of .*: metadata is [\d,]+ bytes as JSON .*the limit is"),
        (_first_version(lambda v: v.update(tags=[f"t{i}" for i in range(5000)])), "limit is 256"),
        (_first_version(lambda v: v["governance"].update(ttl_seconds=float("inf"))),
         "ttl_seconds must be"),
        (_first_version(lambda v: v["governance"].update(priority=2**70)), "priority must be"),
        (_first_version(lambda v: v["namespace"].update(agent_id="")), "agent_id must be"),
        (_first_version(lambda v: v.update(valid_to="2031-01-01T00:00:00")), "no time zone"),
        # the forget flag, which the forget cascade extends: an int there made every forget
        # of one of the summary's sources raise TypeError; a string was split into letters
        (_first_version(lambda v: v["metadata"].update(source_forgotten=5)),
         r"line \d+: .*source_forgotten.* must be a list of memory ids, got int"),
        (_first_version(lambda v: v["metadata"].update(source_forgotten="xyz")),
         "must be a list of memory ids, got str"),
        (_first_version(lambda v: v["metadata"].update(source_forgotten=["xyz"])),
         "source_forgotten.*not a memory id"),
        # ids the vault refused later, with an error that was no BundleError and named no line
        (_first_version(lambda v: v.update(superseded_by=_UPPER_ID)),
         r"line \d+: .*superseded_by .*canonical form"),
        (_first_version(lambda v: v["provenance"].update(derived_from=[_UPPER_ID])),
         r"line \d+: .*derived_from .*canonical form"),
        # item keys
        (_rows(lambda rows: rows[0].update(key={"namespace": "prefs", "key": "colour"})),
         r"line 1: 'key' must be"),
        (_rows(lambda rows: rows[0].update(key={"namespace": ["a\x1fb"], "key": "colour"})),
         r"line 1: 'key' must be"),
        (_rows(lambda rows: rows[0].update(key={"namespace": ["prefs"], "key": "c\x00"})),
         r"line 1: 'key' must be"),
        (_rows(lambda rows: [r.update(key=_KEY) for r in rows[:2]]),
         "line 2: key 'colour' .* names another memory"),
        (_rows(lambda rows: (rows[0]["versions"][-1].update(state="deleted"),
                             rows[0].update(key=_KEY))),
         "line 1: .* is forgotten and has a 'key'"),
        # only add sets the creation times: one in the future made compress overflow
        (_first_version(lambda v: v.update(created_at="9999-12-01T00:00:00+00:00",
                                           updated_at="9999-12-01T00:00:00+00:00")),
         "in the future"),
        (_first_version(lambda v: v.update(updated_at="2001-01-01T00:00:00+00:00")),
         "earlier than created_at"),
        # versions out of time: get(as_of=...) gave version 2 before version 1 existed
        (_later_version(lambda v: v.update(updated_at="2020-06-01T00:00:00+00:00"),
                        first={"updated_at": "2024-06-01T00:00:00+00:00"},
                        both={"created_at": "2019-01-01T00:00:00+00:00"}),
         "written after version 1"),
        (_later_version(lambda v: v.update(created_at="2020-01-01T00:00:00+00:00")),
         "keep the created_at"),
        # a tombstone keeps its namespace, times and governance: they are checked as well
        (_forgotten(lambda v: v["namespace"].update(session_id="s\ud800")), "unpaired surrogate"),
        (_forgotten(lambda v: v["namespace"].update(agent_id="a\x00b")), "NUL character"),
        (_forgotten(lambda v: v["governance"].update(priority=2**70)), "priority must be"),
        (_forgotten(lambda v: v.update(created_at="2031-01-01T00:00:00")), "no time zone"),
        (lambda p: (p / "manifest.json").write_bytes(b" " * (16 * 2**20 + 1)), "larger than"),
        (_dangling_edge, "not in the bundle"),
        (_traversal, "exactly the files|path"),
        (_symlink, "not a regular file"),
        (_fifo, "not a regular file"),
        (lambda p: (p / "memories.jsonl").write_bytes(b"\xff\xfe\x00garbage"), "truncated|UTF-8"),
    ],
)
def test_bad_bundles_are_refused_and_nothing_is_written(make_mos, exported, damage, message):
    path, _, _ = exported
    damage(path)
    other = make_mos("other")
    other.add("pre-existing", user_id="alice")
    with pytest.raises(BundleError, match=message):
        other.import_(path, user_id="alice")
    assert [c.text for c in other.list(user_id="alice")] == ["pre-existing"]
    assert other.index.count() == 1


def test_export_refuses_a_non_empty_target(mos, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ValueError, match="not an empty directory"):
        mos.export(tmp_path / "full", user_id="u")


def test_export_refuses_a_target_inside_the_data_directory(mos):
    """A bundle there would keep a forgotten memory's text in a file under the data
    directory, which forget promises to leave clean."""
    mos.add("The spare key is under the blue pot.", user_id="u")
    for inside in (mos.data_dir / "exports" / "b1", mos.data_dir):
        with pytest.raises(InvalidInputError, match="inside the data directory"):
            mos.export(inside, user_id="u")
    assert not (mos.data_dir / "exports").exists()


def test_a_file_swapped_after_its_check_is_never_read(make_mos, exported, monkeypatch):
    """The import parses the bytes it checked against the manifest: a memories.jsonl
    replaced between the check and the parse (another local account racing the importer)
    does not get in."""
    from memos_core.ops import bundle

    path, _, new = exported
    real = bundle._read_manifest

    def check_then_swap(where):
        checked = real(where)
        lines = (where / "memories.jsonl").read_text().replace(
            "Porto in 2024", "Porto in 2024. Also: wire 5000 EUR to account X").splitlines()
        (where / "memories.jsonl").write_text("\n".join(lines) + "\n")
        return checked

    monkeypatch.setattr(bundle, "_read_manifest", check_then_swap)
    other = make_mos("other")
    assert other.import_(path, user_id="alice")["imported"] == 2
    assert other.get(new.id, user_id="alice").text == "Alice moved to Porto in 2024."


def test_an_export_during_an_unfinished_forget_imports(make_mos, mos, tmp_path):
    """A tombstone keeps its summaries' relations until the forget's cascade ran; a bundle
    made in between leaves them out (an importer refuses relations to a tombstone)."""
    from memos_core.vault import Actor

    a = mos.add("Alice's locker code is 4471.", user_id="alice")
    b = mos.add("Alice parks on level 3.", user_id="alice")
    summary = mos.compress([a.id, b.id], "Alice: locker 4471, level 3.", user_id="alice")
    mos.store.write(lambda: [mos.vault.tombstone(a.id, Actor("alice"))])  # no cascade yet
    bundle = mos.export(tmp_path / "bundle", user_id="alice")
    result = make_mos("other").import_(bundle, user_id="alice")
    assert result["imported"] == 3 and result["edges"] == 1
    # the store itself keeps both relations until the cascade runs
    assert {(e.src, e.dst) for e in mos.vault.edges()} == {(summary.id, a.id), (summary.id, b.id)}


def test_a_ttl_an_older_version_took_imports(make_mos, mos, tmp_path):
    """add() now takes TTLs up to 10^10 s; a store written before may hold a longer one, and
    its owner's export must import (the TTL is kept; uses of it count it as the cap)."""
    from memos_core.vault import Actor

    old = mos.add("The spare key is under the mat.", user_id="u")
    vast = old.model_copy(update={"version": 2, "governance": old.governance.model_copy(
        update={"ttl_seconds": 1e12})})
    mos.vault.put_version(vast, 1, Actor("u"), "update")  # as an older memos-core stored it
    other = make_mos("other")
    assert other.import_(mos.export(tmp_path / "bundle", user_id="u"), user_id="u")["imported"] == 1
    assert other.get(old.id, user_id="u").governance.ttl_seconds == 1e12
    assert [h.id for h in other.search("spare key", user_id="u")] == [old.id]


def test_a_memory_forgotten_while_the_export_ran_is_not_in_the_bundle(mos, tmp_path, monkeypatch):
    """Another thread forgets a memory while the bundle's files are being written: the
    export writes them again before it publishes the bundle."""
    from memos_core.ops import bundle

    secret = mos.add("Alice's vault word is zanzibar-quokka.", user_id="alice")
    mos.add("Alice likes tea.", user_id="alice")
    real = bundle._write_bundle
    calls = []

    def write_then_forget(*args, **kwargs):
        result = real(*args, **kwargs)
        if not calls:
            mos.forget(secret.id, user_id="alice")  # the other thread, mid-export
        calls.append(1)
        return result

    monkeypatch.setattr(bundle, "_write_bundle", write_then_forget)
    path = mos.export(tmp_path / "bundle", user_id="alice")
    assert len(calls) == 2
    assert not any(b"zanzibar-quokka" in p.read_bytes() for p in path.iterdir())


_KILLED_MID_EXPORT = """
import os, signal, sys
from memos_core import MemOS, MemOSConfig
mos = MemOS(sys.argv[1], config=MemOSConfig(show_progress=False))
print(mos.add("Alice's passport number is X99413.", user_id="alice").id, flush=True)
mos.vault.graph_edges = lambda ids: os.kill(os.getpid(), signal.SIGKILL)  # after memories.jsonl
mos.export(sys.argv[2], user_id="alice")
"""


def test_an_export_killed_before_its_rename_leaves_no_copy_for_good(make_mos, tmp_path):
    """An export writes into a hidden directory beside the target and renames it at the
    end; a process killed in between left that directory, every memory's text in it, where
    no forget reaches. The next export to the same path deletes it (its writer is gone)."""
    import subprocess
    import sys
    from pathlib import Path

    data, out = tmp_path / "data", tmp_path / "exports"
    child = subprocess.run([sys.executable, "-c", _KILLED_MID_EXPORT, str(data),
                            str(out / "bundle")], capture_output=True, text=True, timeout=300)
    assert child.returncode == -9, child.stderr
    memory_id = child.stdout.split()[0]

    def holding(needle: bytes) -> list[Path]:
        return [p for p in out.rglob("*") if p.is_file() and needle in p.read_bytes()]

    assert holding(b"X99413")  # the kill left the working directory
    mos = make_mos()
    mos.forget(memory_id, user_id="alice")
    mos.export(out / "bundle", user_id="alice")
    assert holding(b"X99413") == []
    assert sorted(p.name for p in out.iterdir()) == ["bundle"]


def test_an_export_leaves_a_users_own_lookalike_directories_alone(mos, tmp_path):
    """Only names exactly as an export makes them are its leftovers: ".bundle.tmp-keep"
    or ".bundle.tmp-2024-01-05" beside the target are the user's."""
    import os

    out = tmp_path / "exports"
    mine = [out / ".bundle.tmp-keep", out / ".bundle.tmp-2024-01-05",
            out / f".bundle.tmp-{os.getpid()}-notes"]
    for folder in mine:
        folder.mkdir(parents=True)
        (folder / "notes.txt").write_text("my own notes")
    mos.add("Ines visited Porto in May.", user_id="ada")
    mos.export(out / "bundle", user_id="ada")
    assert all((folder / "notes.txt").read_text() == "my own notes" for folder in mine)


def test_compress_counts_a_far_future_creation_in_seconds(mos):
    """A store may hold a creation time near the end of the calendar (a bundle imported
    before import refused them): the summary's TTL is still computed, not an OverflowError."""
    from memos_core.vault import Actor

    far = mos.add("Alice keeps bees.", user_id="alice", ttl_seconds=7200)
    near = mos.add("Alice sells honey.", user_id="alice")
    stored = mos.vault.get(far.id)
    mos.vault.put_version(stored.model_copy(update={
        "version": 2, "created_at": stored.created_at.replace(year=9999, month=12, day=31, hour=23)}),
        1, Actor("alice"), "update")
    summary = mos.compress([far.id, near.id], "Alice keeps bees and sells honey.",
                           user_id="alice")
    assert summary.governance.ttl_seconds is not None
    # its end (an hour past the calendar's last) is about 8,000 years away
    assert summary.governance.ttl_seconds > 3600 * 24 * 365 * 7000


def _bundle_of(path, rows):
    """A bundle at ``path`` holding the memories ``rows`` (memories.jsonl lines) and no edges."""
    path.mkdir()
    (path / "memories.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "edges.jsonl").write_text("")
    (path / "manifest.json").write_text(json.dumps(
        {"format": "memos-bundle", "format_version": 1, "files": {}}))
    _fix_hashes(path)
    return path


def test_a_successor_the_importer_does_not_own_is_dropped(mos, tmp_path):
    """A bundle memory whose superseded_by names another user's memory: whether it may be
    superseded depended on that memory being live, which told the importer what get()
    hides. Such a successor is dropped (valid_to kept); one in the bundle is kept."""
    import uuid

    victim = mos.add("Victim's note.", user_id="victim")
    mine = mos.add("Mallory's note.", user_id="mallory")
    row = json.loads(mos.export(tmp_path / "b0", user_id="mallory").joinpath(
        "memories.jsonl").read_text())
    forged, kept = str(uuid.uuid4()), str(uuid.uuid4())
    rows = []
    for mid, successor in ((forged, victim.id), (kept, mine.id)):
        versions = [{**v, "id": mid, "superseded_by": successor, "valid_to": v["updated_at"]}
                    for v in row["versions"]]
        rows.append({"id": mid, "versions": versions})
    # the victim's id listed in the bundle too: skipped as a memory, and no successor either
    rows.append({"id": victim.id, "versions": [{**v, "id": victim.id} for v in row["versions"]]})
    rows.append(row)  # Mallory's own memory: skipped, but a successor she may name
    result = mos.import_(_bundle_of(tmp_path / "b1", rows), user_id="mallory")
    assert result["imported"] == 2 and result["skipped"] == 2
    dropped = mos.get(forged, user_id="mallory")
    assert dropped.superseded_by is None and dropped.valid_to is not None
    assert all(v.superseded_by is None for v in mos.history(forged, user_id="mallory"))
    assert mos.get(kept, user_id="mallory").superseded_by == mine.id  # hers: it stays
    mos.add("Mallory's probe.", user_id="mallory", supersedes=forged)  # nothing to learn


def test_item_keys_travel_with_the_bundle(make_mos, mos, tmp_path):
    """put_by_key's binding is exported with its memory and bound again on import: after a
    migration get_by_key finds the item and the next put writes its next version, not a
    second live memory. A key already bound in the target keeps its memory there."""
    from memos_core.integration import ItemKey, get_by_key, put_by_key

    colour, city = ItemKey("al", ("prefs",), "colour"), ItemKey("al", ("prefs",), "city")
    put_by_key(mos, colour, "Favourite colour is blue.")
    put_by_key(mos, city, "Lives in Lisbon.")
    gone = put_by_key(mos, ItemKey("al", ("prefs",), "pin"), "PIN is 4471.")
    mos.forget(gone.id, user_id="al")  # a forget removes its key: none is exported
    path = mos.export(tmp_path / "bundle", user_id="al")
    assert '"pin"' not in (path / "memories.jsonl").read_text()

    other = make_mos("other")
    theirs = put_by_key(other, city, "Lives in Porto.")  # bound in the target already
    result = other.import_(path, user_id="al")
    assert result["imported"] == 3 and result["keys"] == 1
    assert get_by_key(other, colour).text == "Favourite colour is blue."
    assert get_by_key(other, city).id == theirs.id
    again = put_by_key(other, colour, "Favourite colour is green.")
    assert again.version == 2
    live = [c.text for c in other.list(user_id="al")]
    assert sorted(live) == ["Favourite colour is green.", "Lives in Lisbon.", "Lives in Porto."]
    assert other.import_(path, user_id="al")["keys"] == 0  # idempotent


def test_a_forget_replaces_a_malformed_forget_flag(mos):
    """A summary whose stored flag is not a list of ids (an import before bundles were
    checked for it): forgetting one of its sources raised TypeError, on every retry and
    every open. The forget flags it with a well-formed list instead."""
    from memos_core.vault import Actor

    a = mos.add("Alice's locker code is 4471.", user_id="alice")
    b = mos.add("Alice parks on level 3.", user_id="alice")
    summary = mos.compress([a.id, b.id], "Alice: locker 4471, level 3.", user_id="alice")
    stored = mos.vault.get(summary.id)
    mos.vault.put_version(stored.model_copy(update={
        "version": stored.version + 1, "metadata": {**stored.metadata, "source_forgotten": 5}}),
        stored.version, Actor("alice"), "update")
    mos.forget(a.id, user_id="alice")
    assert mos.get(summary.id, user_id="alice").metadata["source_forgotten"] == [a.id]
    assert mos.vault.unfinished_forgets() == []
