"""The kernel (memos_core.store.MemoryStore) on its own, with the operations over it: the one
write path (vault commit, then index and graph, then listeners) and the layering in use --
nothing here goes through the MemOS facade."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from memos_core import MemOSConfig
from memos_core.cube import MemCube, State
from memos_core.embedding import default_embedder
from memos_core.errors import MemOSError
from memos_core.ops import forget, share, writes
from memos_core.store import MemoryStore
from memos_core.vault import Actor

ALICE = Actor("alice")


class CountingEmbedder:
    """The real MiniLM embedder, counting the texts it embeds (no fake vectors)."""

    def __init__(self) -> None:
        self.inner = default_embedder("minilm")
        self.dim, self.name = self.inner.dim, self.inner.name
        self.texts: list[str] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.texts.extend(texts)
        return self.inner.embed(texts)


@pytest.fixture
def embedder() -> CountingEmbedder:
    return CountingEmbedder()


@pytest.fixture
def store(tmp_path: Path, embedder: CountingEmbedder) -> Iterator[MemoryStore]:
    s = MemoryStore(tmp_path, MemOSConfig(show_progress=False), embedder=embedder)
    yield s
    s.close()


def new(store: MemoryStore, text: str, user: str = "alice") -> MemCube:
    return writes.new_cube(store.extractor, text=text, user_id=user)


def test_listeners_run_after_the_vault_index_and_graph_follow(store: MemoryStore) -> None:
    seen: list[tuple[str, int, int | None, int | None]] = []

    def listener(cubes: Sequence[MemCube]) -> None:
        for c in cubes:  # everything derived is already in step when a listener runs
            stored = store.vault.get(c.id)
            node = store.graph.payload(c.id)
            seen.append((c.id, stored.version if stored else -1, store.index.versions().get(c.id),
                         node["version"] if node else None))

    store.on_change(listener)
    (cube,) = writes.add(store, [new(store, "Alice keeps bees in Porto.")], ALICE)
    updated = writes.write_version(store, cube, {"text": "Alice keeps bees in Lisbon."}, ALICE,
                                   "update")
    assert seen == [(cube.id, 1, 1, 1), (cube.id, 2, 2, 2)]
    assert updated.version == 2 and store.index.versions() == {cube.id: 2}


def test_a_failing_commit_changes_nothing_derived(store: MemoryStore) -> None:
    (cube,) = writes.add(store, [new(store, "Alice's bike is red.")], ALICE)
    heard: list[Sequence[MemCube]] = []
    store.on_change(heard.append)
    stale = cube.model_copy(update={"text": "Alice's bike is blue.", "version": 2})

    def commit() -> list[MemCube]:
        store.vault.put_version(stale, 7, ALICE, "update")  # wrong expected version
        return [stale]

    with pytest.raises(MemOSError):
        store.write(commit)
    assert heard == [] and store.index.versions() == {cube.id: 1}
    assert store.vault.get(cube.id).text == "Alice's bike is red."  # type: ignore[union-attr]


def test_a_governance_change_updates_the_payload_without_embedding(
    store: MemoryStore, embedder: CountingEmbedder,
) -> None:
    (cube,) = writes.add(store, [new(store, "Alice's garden has three apple trees.")], ALICE)
    embedded = len(embedder.texts)
    shared = share.set_access(store, cube, "bob", "read", True, ALICE)
    assert shared.governance.readers == ("bob",) and shared.version == 2
    assert len(embedder.texts) == embedded  # no re-embedding
    assert store.index.versions() == {cube.id: 2}
    hits = store.retriever.retrieve("apple trees", _filter_for("bob"), 3)
    assert [h.id for h in hits] == [cube.id]  # bob's filter (readers) sees it


def _filter_for(user: str) -> object:
    from memos_core.lifecycle import SEARCHABLE_STATES
    from memos_core.retrieval.filters import build_filter

    return build_filter((user,), states=SEARCHABLE_STATES)


def test_forget_over_the_store_runs_the_purgers_around_the_tombstone(store: MemoryStore) -> None:
    (cube,) = writes.add(store, [new(store, "Alice's door code is 2468.")], ALICE)
    calls: list[str] = []

    def purger(memory_id: str):  # type: ignore[no-untyped-def]
        calls.append(f"start:{store.vault.get(memory_id).state.value}")  # type: ignore[union-attr]

        def finish():  # type: ignore[no-untyped-def]
            calls.append(f"finish:{store.vault.get(memory_id).state.value}")  # type: ignore[union-attr]
            from memos_core.results import DerivedForm

            return [DerivedForm(kind="kv_block", id="block-1", action="deleted")]

        return finish

    store.add_purger(purger)
    with store.write_lock:
        receipt = forget.forget_one(store, cube, ALICE, "flag")
    assert calls == ["start:generated", "finish:deleted"]
    assert receipt.removed_from == ("vault", "index", "graph", "kv")
    assert [d.id for d in receipt.derived] == ["block-1"]
    assert store.vault.get(cube.id).state is State.DELETED  # type: ignore[union-attr]
    assert store.index.versions() == {}


def test_reopening_reconciles_an_index_that_missed_a_write(tmp_path: Path,
                                                           embedder: CountingEmbedder) -> None:
    config = MemOSConfig(show_progress=False)
    first = MemoryStore(tmp_path, config, embedder=embedder)
    (cube,) = writes.add(first, [new(first, "Alice's boat is called Gaivota.")], ALICE)
    first.index.delete([cube.id])  # as if the process died between commit and index
    first.vault.set_meta("index_clean", "0")
    first.index.close()
    first.vault.close()
    again = MemoryStore(tmp_path, config, embedder=embedder)
    try:
        assert again.index.versions() == {cube.id: 1}
    finally:
        again.close()


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_an_update_interrupted_while_indexing_is_indexed_again(
        tmp_path: Path, embedder: CountingEmbedder, interrupt: type[BaseException]) -> None:
    """Ctrl-C, or a SIGTERM (which the CLIs turn into SystemExit(143)), while an update's new
    text was embedded left the old vector in the index and the close marked it clean: an
    update keeps the point count, all that an open checks of a clean index, so the memory
    was found by its old text for good."""
    config = MemOSConfig(show_progress=False)
    first = MemoryStore(tmp_path, config, embedder=embedder)
    (cube,) = writes.add(first, [new(first, "Alice drinks green tea every morning.")], ALICE)
    heard: list[int] = []
    first.on_change(lambda cubes: heard.extend(c.version for c in cubes))

    def interrupted(texts: Sequence[str]) -> np.ndarray:
        raise interrupt()

    first.embedder.embed = interrupted  # type: ignore[method-assign]
    with pytest.raises(interrupt):
        writes.write_version(first, cube, {"text": "Alice rides a red motorcycle to work."},
                             ALICE, "update")
    assert cube.id in first.deferred and heard == [2]  # the listeners heard of it still
    del first.embedder.embed
    first.close()
    with closing(sqlite3.connect(tmp_path / "vault.sqlite3")) as db:
        assert db.execute("SELECT value FROM meta WHERE key='index_clean'").fetchone() == ("0",)
    again = MemoryStore(tmp_path, config, embedder=embedder)
    try:
        assert again.index.versions() == {cube.id: 2}
        hits = again.retriever.retrieve("motorcycle", _filter_for("alice"), 1)
        assert [h.id for h in hits] == [cube.id]
    finally:
        again.close()
