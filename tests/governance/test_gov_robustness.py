"""Regression tests of issue 11, cases 4 and 5: a cut audit tail, and errors that used to
come from dependencies. Each bad input gets the project's own exception with a message (or
the repair the design promises), and nothing stored is lost.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any

import pytest

from memos_core.index.base import IndexFilter
from memos_core import MemOS, MemOSConfig
from memos_core.cli import main
from memos_core.errors import CorruptDataError, InvalidInputError
from memos_core.index import IndexCorruptError, IndexLockedError
from memos_core.index.edge import EdgeIndex
from memos_core.integration import ItemKey, put_by_key
from memos_core.validation import MAX_METADATA_BYTES
from memos_core.vault import Actor, SQLiteVault


def _config(**extra: Any) -> MemOSConfig:
    return MemOSConfig(show_progress=False, **extra)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MemOS]:
    mos = MemOS(tmp_path / "data", config=_config())
    yield mos
    mos.close()


def open_fds(path: Path) -> list[str]:
    """File descriptors of this process that point at ``path`` (Linux /proc)."""
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        pytest.skip("needs /proc")
    found = []
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(fd_dir / fd)
        except OSError:
            continue
        if target == str(path.resolve()):
            found.append(target)
    return found


# -- 4. audit tail -----------------------------------------------------------------------------


def _cut_last_audit_record(vault_path: Path) -> None:
    db = sqlite3.connect(vault_path)
    db.execute("DELETE FROM audit WHERE seq = (SELECT MAX(seq) FROM audit)")
    db.commit()
    db.close()


@pytest.mark.parametrize("last", ["export", "share_namespace", "revoke_namespace"])
def test_a_cut_tail_that_changed_no_memory_is_detected(tmp_path: Path, last: str) -> None:
    data = tmp_path / "data"
    with MemOS(data, config=_config()) as mos:
        mos.add("A note.", user_id="alice")
        if last == "export":
            mos.export(tmp_path / "bundle", user_id="alice")
        else:
            mos.share_namespace(with_user_id="bob", user_id="alice")
            if last == "revoke_namespace":
                mos.revoke_namespace(with_user_id="bob", user_id="alice")
        assert mos.vault.audit_log(limit=1)[-1].action == last
    _cut_last_audit_record(data / "vault.sqlite3")
    vault = SQLiteVault(data / "vault.sqlite3")
    try:
        ok, message = vault.verify_audit()
    finally:
        vault.close()
    assert not ok and "last 1 audit record(s) were deleted" in message


def test_a_deleted_head_record_is_detected(tmp_path: Path) -> None:
    vault = SQLiteVault(tmp_path / "v.sqlite3")
    vault.audit(Actor("alice"), "export")
    assert vault.verify_audit() == (True, "audit chain intact")
    with vault._tx() as db:
        db.execute("DELETE FROM meta WHERE key='audit_head'")
    ok, message = vault.verify_audit()
    vault.close()
    assert not ok and "head record" in message


def test_a_schema_1_vault_is_upgraded(tmp_path: Path) -> None:
    """A vault written before the head record and the scrub flag: opening it records the
    current tail as the head and flags (or scrubs) the versions of forgotten memories."""
    data = tmp_path / "data"
    with MemOS(data, config=_config()) as mos:
        gone = mos.add("Old note TOUCAN3131.", user_id="alice")
        mos.forget(gone.id, user_id="alice")
    db = sqlite3.connect(data / "vault.sqlite3")
    db.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    db.execute("DELETE FROM meta WHERE key='audit_head'")
    for version, doc in db.execute("SELECT version, doc FROM versions WHERE id=?", (gone.id,)).fetchall():
        cube = json.loads(doc)
        cube.pop("scrubbed", None)
        if version == 1:  # a text that schema 1's scrub skipped
            cube.update(text="sha256: TOUCAN3131 was kept", tags=["t"])
        db.execute("UPDATE versions SET doc=? WHERE id=? AND version=?", (json.dumps(cube), gone.id, version))
    db.commit()
    db.close()
    with MemOS(data, config=_config()) as mos:
        assert mos.vault.verify_audit() == (True, "audit chain intact")
        versions = mos.history(gone.id, user_id="alice")
        assert all(v.scrubbed for v in versions)
        assert "TOUCAN" not in "".join(v.model_dump_json() for v in versions)
        assert all(v.text == "" for v in versions)  # schema 1's digests go too (schema 3)


def test_a_schema_2_vault_loses_its_digests(tmp_path: Path) -> None:
    """Schema 2 kept sha256(text) in a forgotten memory's versions; a short secret can be
    recovered from it by hashing guesses. Opening the vault empties those texts, and no
    file of the data directory holds the digest afterwards."""
    data = tmp_path / "data"
    with MemOS(data, config=_config()) as mos:
        gone = mos.add("PIN 4921.", user_id="alice")
        mos.forget(gone.id, user_id="alice")
        kept = mos.add("sha256:" + "ab" * 32, user_id="alice")  # a live text of that form stays
    digest = "sha256:" + hashlib.sha256(b"PIN 4921.").hexdigest()
    db = sqlite3.connect(data / "vault.sqlite3")
    db.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
    for table in ("versions", "memories"):
        for key, doc in db.execute(f"SELECT rowid, doc FROM {table} WHERE id=?", (gone.id,)).fetchall():
            db.execute(f"UPDATE {table} SET doc=? WHERE rowid=?",
                       (json.dumps({**json.loads(doc), "text": digest}), key))
    db.commit()
    db.close()
    assert any(digest.encode() in p.read_bytes() for p in data.rglob("*") if p.is_file())
    with MemOS(data, config=_config()) as mos:
        assert mos.vault.get_meta("schema_version") == "4"
        assert [v.text for v in mos.history(gone.id, user_id="alice")] == ["", ""]
        assert mos.get(kept.id, user_id="alice").text == kept.text
        assert mos.vault.verify_audit() == (True, "audit chain intact")
    assert not any(digest.encode() in p.read_bytes() for p in data.rglob("*") if p.is_file())


# -- 5. errors from dependencies -------------------------------------------------------------


def test_a_failed_purge_of_one_summary_does_not_stop_the_cascade(tmp_path: Path) -> None:
    """forget(derived="forget") of a memory with two summaries: the first summary's files
    cannot be removed. The second summary (which repeats the fact) is forgotten too, and the
    source's own purge runs; the tombstone dropped the relations, so nothing could find the
    second summary later."""
    from memos_core import PurgePendingError

    with MemOS(tmp_path / "d", config=_config()) as mos:
        src = mos.add("Locker MARMOT9920 opens on Sundays.", user_id="ada")
        one = mos.compress([src.id, mos.add("Note one.", user_id="ada").id],
                           "Summary one: locker MARMOT9920.", user_id="ada")
        two = mos.compress([src.id, mos.add("Note two.", user_id="ada").id],
                           "Summary two: locker MARMOT9920, Sundays.", user_id="ada")
        purged: list[str] = []

        def stubborn(memory_id: str) -> Any:
            def finish() -> list[Any]:
                if memory_id == one.id:
                    raise OSError("cannot remove a file")
                purged.append(memory_id)
                return []
            return finish

        mos.store.add_purger(stubborn)
        with pytest.raises(PurgePendingError, match=one.id):
            mos.forget(src.id, user_id="ada", derived="forget")
        assert [mos.vault.get(i).state.value for i in (src.id, one.id, two.id)] == ["deleted"] * 3
        assert sorted(purged) == sorted([src.id, two.id])
        assert mos.store.purge_pending == {one.id}


def test_a_nearly_full_disk_is_refused_before_the_index_maps_its_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With 64 MB free the embedded index's memory-mapped files killed the process (SIGBUS)
    at open; below the threshold the open is refused with a clear error instead."""
    from memos_core.errors import MemOSError
    from memos_core.store import kernel

    with MemOS(tmp_path / "d", config=_config()) as mos:
        kept = mos.add("Ada likes tea.", user_id="ada")
    monkeypatch.setattr(kernel, "MIN_FREE_BYTES", 2**62)  # more than any disk has
    with pytest.raises(MemOSError, match="MiB are free"):
        MemOS(tmp_path / "d", config=_config())
    monkeypatch.undo()
    with MemOS(tmp_path / "d", config=_config()) as mos:  # nothing was changed
        assert mos.get(kept.id, user_id="ada").text == kept.text


def test_index_settings_and_a_file_in_the_index_s_place(tmp_path: Path) -> None:
    with MemOS(tmp_path / "d", config=_config()) as mos:
        kept = mos.add("Ada likes tea.", user_id="ada")
    with pytest.raises(InvalidInputError, match="needs url"):
        MemOS(tmp_path / "d", config=_config(index="pgvector"))
    shutil.rmtree(tmp_path / "d" / "index")
    (tmp_path / "d" / "index").write_text("not an index")  # derived data: rebuilt
    with MemOS(tmp_path / "d", config=_config()) as mos:
        assert [h.id for h in mos.search("tea", user_id="ada")] == [kept.id]


def test_reconcile_says_when_the_vault_lost_memories_the_index_has(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A damaged WAL can drop acknowledged writes; reconcile then deleted their index points,
    the last trace, without a word. It still removes them, and logs an error saying so."""
    with MemOS(tmp_path / "d", config=_config()) as mos:
        lost = mos.add("A memory the vault will lose.", user_id="ada")
        mos.add("A memory that stays.", user_id="ada")
    db = sqlite3.connect(tmp_path / "d" / "vault.sqlite3")
    for table in ("memories", "versions"):
        db.execute(f"DELETE FROM {table} WHERE id=?", (lost.id,))
    db.execute("UPDATE meta SET value='0' WHERE key='index_clean'")
    db.commit()
    db.close()
    with MemOS(tmp_path / "d", config=_config()) as mos:
        assert "the vault lost them" in caplog.text and "1 memories" in caplog.text
        assert mos.index.count() == 1


def test_reconcile_after_a_restored_vault_backup_reindexes_points_ahead_of_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A vault restored from an older backup leaves index points at versions it no longer
    has. Reconcile saw them as stale but re-indexing them was refused (an upsert never moves
    a point back a version), so search kept ranking on the newer, lost text."""
    data = tmp_path / "d"
    with MemOS(data, config=_config()) as mos:
        boat = mos.add("Ada's boat is called Gaivota.", user_id="ada")
    shutil.copy(data / "vault.sqlite3", tmp_path / "backup.sqlite3")
    with MemOS(data, config=_config()) as mos:
        mos.update(boat.id, "Ada's telescope is a Dobsonian.", user_id="ada")
    shutil.copy(tmp_path / "backup.sqlite3", data / "vault.sqlite3")
    with MemOS(data, config=_config()) as mos:
        assert mos.reconcile()["reindexed"] == 1
        assert "older backup" in caplog.text
        assert mos.index.versions() == {boat.id: 1}
        assert mos.reconcile() == {"reindexed": 0, "removed": 0}
        ada = IndexFilter(user_ids=("ada",))
        bm25 = mos.store.bm25
        assert mos.index.search_sparse(bm25.encode_query("telescope Dobsonian"), ada, 3) == []
        assert [h.id for h in mos.index.search_sparse(bm25.encode_query("Gaivota"), ada, 3)] \
            == [boat.id]


def test_a_store_holding_a_respelt_id_still_opens(tmp_path: Path) -> None:
    """Such ids came in through a bundle bug (fixed): refusing them on read would have made
    those stores unreadable, so only writes check them."""
    with MemOS(tmp_path / "d", config=_config()) as mos:
        old = mos.add("A memory imported before ids were checked.", user_id="ada")
        mos.forget(mos.add("A forgotten one.", user_id="ada").id, user_id="ada")
    db = sqlite3.connect(tmp_path / "d" / "vault.sqlite3")
    for table in ("memories", "versions"):
        db.execute(f"UPDATE {table} SET id=upper(id), doc=json_set(doc, '$.id', upper(id))")
    db.execute("UPDATE meta SET value='2' WHERE key='schema_version'")  # migrations run too
    db.commit()
    db.close()
    with MemOS(tmp_path / "d", config=_config()) as mos:
        assert [c.text for c in mos.list(user_id="ada")] == [old.text]


def _damage_record(data: Path, memory_id: str, **meta: str) -> None:
    """Cut the vault's current record of ``memory_id`` short, and set ``meta`` keys."""
    db = sqlite3.connect(data / "vault.sqlite3")
    db.execute("UPDATE memories SET doc=substr(doc, 1, 40) WHERE id=?", (memory_id,))
    for key, value in meta.items():
        db.execute("UPDATE meta SET value=? WHERE key=?", (value, key))
    db.commit()
    db.close()


def test_a_damaged_record_or_page_is_a_corrupt_data_error(tmp_path: Path) -> None:
    """A damaged row made get (and list, search and export) raise a raw pydantic error, a damaged
    page mid-file a raw sqlite3.DatabaseError; both are CorruptDataError naming what is
    damaged, and the other memories stay readable by id."""
    data = tmp_path / "d"
    with MemOS(data, config=_config()) as mos:
        bad = mos.add("A note whose record gets damaged.", user_id="ada")
        good = mos.add("A note that stays fine.", user_id="ada")
    _damage_record(data, bad.id, index_unoptimized="x")
    with MemOS(data, config=_config()) as mos:  # a damaged counter does not stop the open
        with pytest.raises(CorruptDataError, match=f"memory {bad.id}"):
            mos.get(bad.id, user_id="ada")
        assert [c.id for c in mos.list(user_id="ada")] == [good.id]  # left out, not raised
        assert mos.get(good.id, user_id="ada").text == good.text
    db = sqlite3.connect(data / "vault.sqlite3")  # garbage over the versions table's root page
    root, size = (db.execute("SELECT rootpage FROM sqlite_master WHERE name='versions'").fetchone()[0],
                  db.execute("PRAGMA page_size").fetchone()[0])
    db.close()
    with open(data / "vault.sqlite3", "r+b") as fh:
        fh.seek((root - 1) * size)
        fh.write(b"\xa5" * size)
    vault = SQLiteVault(data / "vault.sqlite3")
    try:
        with pytest.raises(CorruptDataError, match="damaged"):
            vault.history(good.id)
        assert vault.get(good.id).text == good.text  # type: ignore[union-attr]
    finally:
        vault.close()


def test_a_damaged_record_does_not_stop_the_store_opening_or_reindexing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An index rebuild (reconcile on open after an index loss, reindex) read every memory
    and stopped at the first damaged record: the store could not be opened by anyone. It
    now leaves that memory out of the index, names it in an error, and indexes the rest."""
    data = tmp_path / "d"
    with MemOS(data, config=_config()) as mos:
        bad = mos.add("A note whose record gets damaged.", user_id="ada")
        good = mos.add("A note that stays fine.", user_id="ada")
        bobs = mos.add("Bob's note about kayaks.", user_id="bob")
    _damage_record(data, bad.id, index_clean="0")
    shutil.rmtree(data / "index")
    with MemOS(data, config=_config()) as mos:
        assert f"memory {bad.id}" in caplog.text and "left out of the index" in caplog.text
        assert [h.id for h in mos.search("kayaks", user_id="bob")] == [bobs.id]
        assert mos.reindex() == {"indexed": 2}
        assert set(mos.index.versions()) == {good.id, bobs.id}
        with pytest.raises(CorruptDataError, match=f"memory {bad.id}"):
            mos.get(bad.id, user_id="ada")


def test_an_embedder_that_cannot_load_stores_nothing(tmp_path: Path) -> None:
    """The model loads lazily, after the vault's commit: a bad embedder path raised a raw
    FileNotFoundError from add although the memory was stored, and each retry stored
    another copy. The model is now loaded before the first commit; a model other than the
    bundled MiniLM is loaded when a new store opens (its index is made for its dimension)."""
    from memos_core.runtime.errors import ModelLoadError

    for _ in range(2):
        with pytest.raises(ModelLoadError, match="Nothing was stored"):
            MemOS(tmp_path / "d", config=_config(embedder=str(tmp_path / "no-such-model"),
                                                 embedder_backend="torch"))
    with MemOS(tmp_path / "d", config=_config()) as mos:
        assert mos.list(user_id="ada") == []
        kept = mos.add("Ada's PIN is 4921.", user_id="ada")
    # a forget needs no vector: it works while the model cannot load (offline, files gone);
    # the store opens with the index it has, and writes still raise
    with MemOS(tmp_path / "d", config=_config(embedder=str(tmp_path / "no-such-model"),
                                              embedder_backend="torch")) as mos:
        with pytest.raises(ModelLoadError, match="Nothing was stored"):
            mos.add("Ada likes tea.", user_id="ada")
        assert mos.forget(kept.id, user_id="ada").removed_from == ("vault", "index", "graph")
        assert mos.list(user_id="ada") == []


class _FailsOnce:
    """The real embedder, failing on the calls it is told to (a dropped GPU, an OOM)."""

    def __init__(self) -> None:
        from memos_core.embedding import default_embedder

        self.real = default_embedder()
        self.name, self.dim, self.fail = self.real.name, self.real.dim, 0

    def embed(self, texts: Any) -> Any:
        if self.fail:
            self.fail -= 1
            raise RuntimeError("embedder crashed")
        return self.real.embed(texts)


def test_an_index_update_that_fails_after_the_commit_is_retried(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The commit is acknowledged: add returns the memory (no error a caller would retry
    into a duplicate), the failure is logged, and the index catches up on the next call --
    or, if the store closes first, when it is opened again."""
    flaky = _FailsOnce()
    mos = MemOS(tmp_path / "d", config=_config(), embedder=flaky)
    mos.add("Warm-up note.", user_id="ada")
    flaky.fail = 1
    tea = mos.add("Ada likes green tea.", user_id="ada")
    assert "updating the index after a commit failed" in caplog.text
    assert [h.id for h in mos.search("what does ada drink", user_id="ada", k=1)] == [tea.id]
    flaky.fail = 1
    cat = mos.add("Ada's cat is called Miso.", user_id="ada")
    mos.close()  # before any retry: the index is not marked clean
    with MemOS(tmp_path / "d", config=_config()) as again:  # so the next open reconciles
        assert [h.id for h in again.search("ada's cat", user_id="ada", k=1)] == [cat.id]
        assert len(again.list(user_id="ada")) == 3


def _sized(size: int, key: str = "k") -> dict[str, str]:
    """Metadata of exactly ``size`` bytes as JSON (``{"k": "xx..."}``)."""
    return {key: "x" * (size - len(json.dumps({key: ""})))}


_HALF = MAX_METADATA_BYTES // 2 + 1
_RESERVED = "metadata key 'source_forgotten' is reserved"
_ITEM = ItemKey("u", ("u", "notes"), "n")


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"k": value}
    return value


@pytest.mark.parametrize("call,match", [
    (lambda m: m.add("x", user_id="u", metadata=_nested(100_000)), "nested more than"),
    (lambda m: m.add("x", user_id="u", metadata=_nested(40)), "nested more than"),
    (lambda m: m.add("x", user_id="u", metadata={"n": 2**70}), "integer outside"),
    # every version (a share, a revoke, a state change) stores the metadata again
    (lambda m: m.add("x", user_id="u", metadata=_sized(MAX_METADATA_BYTES + 1)),
     f"metadata is {MAX_METADATA_BYTES + 1:,} bytes as JSON .* the limit is"),
    (lambda m: m.add_many([{"text": "a", "metadata": _sized(MAX_METADATA_BYTES + 1)}],
                          user_id="u"), "item 0: metadata is"),
    (lambda m: m.add([{"role": "user", "content": "hi", "metadata": _sized(_HALF)}],
                     metadata=_sized(_HALF, "c"), user_id="u"), "the limit is"),  # merged
    # the forget cascade's flag: a memory carrying one had its history scrubbed by its next
    # text update, and a bundle exported with a caller's value was refused on import
    (lambda m: m.add("x", user_id="u", metadata={"source_forgotten": False}), _RESERVED),
    (lambda m: m.add_many([{"text": "a", "metadata": {"source_forgotten": []}}],
                          user_id="u"), _RESERVED),
    (lambda m: m.add_many(["a"], user_id="u", metadata={"source_forgotten": ["x"]}), _RESERVED),
    (lambda m: m.add([{"role": "user", "content": "hi", "metadata": {"source_forgotten": 1}}],
                     user_id="u"), _RESERVED),
    (lambda m: m.add("x", user_id="u", ttl_seconds=float("nan")), "finite"),
    (lambda m: m.add("x", user_id="u", ttl_seconds=float("inf")), "finite"),
    (lambda m: m.add("x", user_id="u", priority=2**64), "priority"),
    (lambda m: m.list(user_id="u", offset=2**63), "offset"),
    (lambda m: m.list(user_id="u", metadata={"n": 2**70}), "outside"),
    (lambda m: m.list(user_id="u", metadata={"n": float("nan")}), "nan, which no stored"),
    # SQLite matched nothing and PostgreSQL refused the JSON: one clear error on both
    (lambda m: m.list(user_id="u", metadata={"n": float("inf")}), "inf, which no stored"),
    (lambda m: m.list(user_id="u", metadata={"n": float("-inf")}), "-inf, which no stored"),
    (lambda m: m.list(user_id="u", metadata={'a"b': "x"}), "double quote"),
    (lambda m: m.list(user_id="u", metadata={"a\\b": "x"}), "backslash"),
    (lambda m: m.list(user_id="u", metadata={"a\nb": "x"}), "control character"),
    (lambda m: m.list(user_id="u", metadata={1: "x"}), "must be a str"),
    (lambda m: m.add_many(["a"], user_id="u", batch_size=0), "batch_size"),
    (lambda m: m.add_many([{"text": "a", "tagz": ["x"]}], user_id="u"), "unknown keys"),
    (lambda m: m.add_many([{"text": "a", "user_id": "victim"}], user_id="u"), "unknown keys"),
    (lambda m: m.add_many(["a"], user_id="u", colour="red"), "unknown keys"),
    (lambda m: m.add_many([42], user_id="u"), "item 0"),
])
def test_bad_input_gets_our_error_and_writes_nothing(store: MemOS, call: Any, match: str) -> None:
    before = store.vault.stats()
    with pytest.raises(InvalidInputError, match=match):
        call(store)
    assert store.vault.stats() == before


def test_metadata_at_the_size_limit_is_kept(store: MemOS) -> None:
    """The limit counts the JSON's UTF-8 bytes (an ``é`` is 2, not the 6 of ``\\u00e9``)."""
    exact = _sized(MAX_METADATA_BYTES)
    wide = {"k": "é" * ((MAX_METADATA_BYTES - 9) // 2)}
    for metadata in (exact, wide):
        cube = store.add("sized", user_id="u", metadata=metadata)
        assert store.get(cube.id, user_id="u").metadata == metadata
    before = store.vault.stats()
    with pytest.raises(InvalidInputError, match="the limit is"):
        store.update(cube.id, metadata=_sized(MAX_METADATA_BYTES + 1), user_id="u")
    assert store.vault.stats() == before and store.get(cube.id, user_id="u").version == 1


#: Writes of an existing memory (without the forget flag) whose metadata names it.
FLAG_NAMING_UPDATES: dict[str, Any] = {
    "update": lambda m, mid: m.update(mid, metadata={"source_forgotten": ["x"], "k": 1},
                                      user_id="u"),
    "update with text": lambda m, mid: m.update(mid, "y", metadata={"source_forgotten": False},
                                                user_id="u"),
    "keyed put": lambda m, mid: put_by_key(m, _ITEM, "y", metadata={"source_forgotten": False}),
}


@pytest.mark.parametrize("write", list(FLAG_NAMING_UPDATES))
def test_an_update_naming_the_forget_flag_is_refused(store: MemOS, write: str) -> None:
    """An update of a memory without the flag whose metadata named it was taken with the
    key quietly dropped."""
    cube = put_by_key(store, _ITEM, "x", metadata={"k": 0})
    with pytest.raises(InvalidInputError, match=_RESERVED):
        FLAG_NAMING_UPDATES[write](store, cube.id)
    assert store.get(cube.id, user_id="u") == cube


def test_metadata_at_the_depth_limit_is_kept(store: MemOS) -> None:
    cube = store.add("deep", user_id="u", metadata=_nested(31))
    assert store.get(cube.id, user_id="u").metadata == _nested(31)
    assert store.list(user_id="u", metadata={"k": 1}) == []


@pytest.mark.parametrize("target", ["edge_config.json", "wal/first-index", "segment.json"])
def test_garbage_in_the_index_files_is_rebuilt_from_the_vault(tmp_path: Path, target: str) -> None:
    data = tmp_path / "lockers"  # a path containing "lock" must not read as a locked index
    with MemOS(data, config=_config()) as mos:
        kept = mos.add("Basil needs sun and water.", user_id="u", tags=["garden"])
    files = [p for p in (data / "index").rglob(target.split("/")[-1])]
    assert files
    for path in files:
        path.write_bytes(b"\x00garbage\xff" * 3)
    with pytest.raises(IndexCorruptError):  # the index layer names the damage ...
        EdgeIndex(data / "index", 384).close()
    with MemOS(data, config=_config()) as mos:  # ... and MemOS rebuilds it from the vault
        assert [h.id for h in mos.search("basil", user_id="u", tags=["garden"])] == [kept.id]
        assert mos.index.count() == 1


def test_a_locked_index_is_still_reported_as_locked(tmp_path: Path) -> None:
    path = tmp_path / "blocks" / "index"
    first = EdgeIndex(path, 4)
    try:
        with pytest.raises(IndexLockedError, match="already open"):
            EdgeIndex(path, 4)
    finally:
        first.close()


def test_a_failed_open_closes_the_vault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from memos_core.store import MemoryStore

    data = tmp_path / "data"
    with MemOS(data, config=_config()) as mos:
        mos.add("A note.", user_id="u")

    def cannot_open(self: MemoryStore, *args: Any) -> Any:
        raise OSError("the index cannot open")

    monkeypatch.setattr(MemoryStore, "_open_index", cannot_open)
    with pytest.raises(OSError):
        MemOS(data, config=_config())
    assert open_fds(data / "vault.sqlite3") == []
    monkeypatch.undo()
    with MemOS(data, config=_config()) as mos:  # the next open works, nothing was lost
        assert len(mos.list(user_id="u")) == 1


def test_an_unreadable_vault_is_closed_after_the_error(tmp_path: Path) -> None:
    path = tmp_path / "vault.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CorruptDataError, match="not a readable SQLite database"):
        SQLiteVault(path)
    assert open_fds(path) == []


def test_a_zero_byte_vault_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "vault.sqlite3").write_bytes(b"")
    with pytest.raises(CorruptDataError, match="empty file"):
        MemOS(data, config=_config())
    assert (data / "vault.sqlite3").stat().st_size == 0  # left for the operator to restore
    assert open_fds(data / "vault.sqlite3") == []


@pytest.mark.parametrize("argv_user,env", [(["--user", ""], None), (["--user", "  "], None), ([], "")])
def test_the_cli_refuses_an_empty_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       argv_user: list[str], env: str | None) -> None:
    if env is not None:
        monkeypatch.setenv("MEMOS_USER", env)
    err = io.StringIO()
    with redirect_stderr(err):
        code = main(["add", "a note", "--data-dir", str(tmp_path / "d"), *argv_user])
    assert code == 2 and "must be a non-empty str" in err.getvalue()
    assert not (tmp_path / "d" / "vault.sqlite3").exists()


def test_a_metadata_key_add_takes_can_be_filtered_on(store: MemOS) -> None:
    """Keys whose letters carry combining vowel signs (Devanagari, Thai) or that hold spaces
    and dots were stored by add and refused by the filter ("must be letters, digits")."""
    keys = ["नाम", "ชื่อ", "città", "my key", "a.b"]
    made = [store.add(f"note {i}", user_id="u", metadata={key: "x"}) for i, key in enumerate(keys)]
    for key, memory in zip(keys, made):
        assert [c.id for c in store.list(user_id="u", metadata={key: "x"})] == [memory.id], key
