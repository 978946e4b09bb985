"""Damaged files of the embedded index: the store rebuilds the index from the vault.

qdrant-edge reports damage as a bare ``Exception`` in a search or write (a vector chunk cut
short loads fine), or as a Rust panic at load (``pyo3_runtime.PanicException``, a
``BaseException`` that ``except Exception`` missed): both used to escape MemOS. Each test
closes a real store, cuts a real shard file, and opens it again.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from memos_core import MemOS, MemOSConfig
from memos_core.cli import main
from memos_core.errors import CorruptDataError
from memos_core.index import EdgeIndex, IndexCorruptError, IndexFilter
from memos_core.store import MemoryStore

STATUS = "vector_storage-dense/vectors/status.dat"
DELETED = "vector_storage-dense/deleted/status.dat"
CHUNK = "vector_storage-dense/vectors/chunk_0.mmap"


def _config() -> MemOSConfig:
    return MemOSConfig(show_progress=False)


def _store(data: Path) -> list[str]:
    """Five memories of user u in a closed store at ``data``; their ids."""
    with MemOS(data, config=_config()) as mos:
        return [mos.add(f"note {i}: the zebra{i} eats grass", user_id="u").id for i in range(5)]


def _cut(data: Path, rel: str, mode: str) -> None:
    """Empty (``zero``) or halve (``half``) ``rel`` in every segment of the closed store."""
    paths = [seg / rel for seg in (data / "index" / "segments").iterdir() if (seg / rel).exists()]
    assert paths, rel
    for path in paths:
        os.truncate(path, 0 if mode == "zero" else path.stat().st_size // 2)


def _finds_all(mos: MemOS, ids: list[str]) -> None:
    for i, mid in enumerate(ids):
        assert mos.search(f"zebra{i}", user_id="u", k=1)[0].id == mid
    assert mos.index.count() == len(ids)


@pytest.mark.parametrize(("rel", "mode"), [(STATUS, "zero"), (DELETED, "half"), (CHUNK, "zero")])
def test_a_damaged_shard_is_rebuilt_when_the_store_opens(tmp_path: Path, rel: str,
                                                         mode: str) -> None:
    data = tmp_path / "data"
    ids = _store(data)
    _cut(data, rel, mode)
    with pytest.raises(IndexCorruptError):  # the index layer names the damage, at load ...
        with EdgeIndex(data / "index", 384) as index:  # ... or when a search reads it
            index.search_dense([1.0] + [0.0] * 383, IndexFilter(), 1)
    with MemOS(data, config=_config()) as mos:  # and the store rebuilds it from the vault
        _finds_all(mos, ids)
    with MemOS(data, config=_config()) as mos:  # the rebuilt index is kept
        _finds_all(mos, ids)


@pytest.mark.parametrize("rel", [STATUS, CHUNK])
def test_memos_reindex_works_on_a_damaged_shard(tmp_path: Path, rel: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    ids = _store(data)
    _cut(data, rel, "zero")
    assert main(["reindex", "--data-dir", str(data), "--user", "u", "--json"]) == 0
    assert '"indexed": 5' in capsys.readouterr().out
    with MemOS(data, config=_config()) as mos:
        _finds_all(mos, ids)


@pytest.fixture
def unprobed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Open without the check that reads the vectors: the damage is met by a running store
    (as when a file is damaged after the open)."""
    monkeypatch.setattr(MemoryStore, "_probe_index", lambda self: None)


@pytest.mark.usefixtures("unprobed")
def test_a_search_that_meets_a_damaged_chunk_rebuilds_the_index(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ids = _store(data)
    _cut(data, CHUNK, "zero")
    with MemOS(data, config=_config()) as mos:
        assert mos.search("zebra3", user_id="u", k=1)[0].id == ids[3]
        _finds_all(mos, ids)


@pytest.mark.usefixtures("unprobed")
def test_writes_that_meet_a_damaged_chunk_rebuild_the_index(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ids = _store(data)
    _cut(data, CHUNK, "zero")
    with MemOS(data, config=_config()) as mos:
        new = mos.add("note 5: the zebra5 eats grass", user_id="u")
        assert not mos.store.lagging  # indexed by the rebuild, not left for a retry
        receipt = mos.forget(ids[0], user_id="u")
        assert "index" in receipt.removed_from
        ids = ids[1:] + [new.id]
        for mid, i in zip(ids, range(1, 6)):
            assert mos.search(f"zebra{i}", user_id="u", k=1)[0].id == mid
        assert mos.index.count() == 5


@pytest.mark.usefixtures("unprobed")
def test_an_index_that_cannot_be_rebuilt_gets_a_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    ids = _store(data)
    _cut(data, CHUNK, "zero")
    with MemOS(data, config=_config()) as mos:
        def fails(self: MemoryStore) -> dict[str, int]:
            raise OSError("No space left on device")

        monkeypatch.setattr(MemoryStore, "reindex", fails)
        with pytest.raises(CorruptDataError, match=r"is damaged .*not rebuilt .*`memos reindex`"):
            mos.search("zebra3", user_id="u")
        monkeypatch.undo()
        assert mos.reindex() == {"indexed": 5}  # what the error says to do works
        _finds_all(mos, ids)


_REOPEN = """
import sys
from memos_core import MemOS, MemOSConfig
with MemOS(sys.argv[1], config=MemOSConfig(show_progress=False)) as mos:
    hits = [mos.search(f"zebra{i}", user_id="u", k=1)[0].id for i in range(5)]
    print(",".join(hits), mos.index.count())
"""


def test_a_garbled_id_tracker_is_rebuilt_before_the_engine_reads_it(tmp_path: Path) -> None:
    """A garbled mutable_id_tracker.mappings made the engine try to allocate tens of GB and
    abort the whole process at open (no exception to catch): the store compares the trackers
    with their digest from the clean close and rebuilds the index before loading it. The
    reopen runs in a child process, which the abort would kill."""
    import random
    import subprocess
    import sys

    data = tmp_path / "data"
    ids = _store(data)
    trackers = list((data / "index").rglob("mutable_id_tracker.mappings"))
    assert trackers
    for path in trackers:  # these bytes made the engine abort (SIGABRT) before the guard
        size, rng = path.stat().st_size, random.Random(1)
        raw = bytearray(path.read_bytes())
        for _ in range(4):
            at = rng.randrange(0, max(1, min(size, 65536) - 64))
            raw[at:at + 64] = rng.randbytes(64)
        path.write_bytes(bytes(raw[:size]))
    child = subprocess.run([sys.executable, "-c", _REOPEN, str(data)], capture_output=True,
                           text=True, timeout=300, env={**os.environ, "RUST_BACKTRACE": "0"})
    assert child.returncode == 0, child.stdout + child.stderr[-3000:]
    assert child.stdout.split() == [",".join(ids), "5"]
    assert "changed since the store closed" in child.stderr


_KILLED_IN_CLOSE = """
import os, signal, sys
from memos_core import MemOS, MemOSConfig
from memos_core.store.kernel import MemoryStore
mos = MemOS(sys.argv[1], config=MemOSConfig(show_progress=False))
mos.add("note 5: the zebra5 eats grass", user_id="u")
# killed after close() flushed and closed the index and marked it clean, before it recorded
# the id trackers' new digest
MemoryStore._record_trackers = lambda self: os.kill(os.getpid(), signal.SIGKILL)
mos.close()
"""


def test_a_kill_late_in_close_does_not_make_the_next_open_rebuild_the_index(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The digest of the last clean close stayed while a later session wrote: a kill after
    that session's close marked the index clean, before it recorded the new digest, made
    the next open take the intact index for one changed behind its back, delete it and
    embed every memory again."""
    import subprocess
    import sys

    data = tmp_path / "data"
    ids = _store(data)
    child = subprocess.run([sys.executable, "-c", _KILLED_IN_CLOSE, str(data)],
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == -9, child.stdout + child.stderr[-3000:]
    with MemOS(data, config=_config()) as mos:
        _finds_all(mos, [*ids, mos.list(user_id="u", newest_first=True, limit=1)[0].id])
    assert "rebuilding" not in caplog.text and "changed since" not in caplog.text


def test_an_unchanged_index_is_not_rebuilt_at_open(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    ids = _store(data)
    for _ in range(2):  # a read-only session leaves the trackers as they were
        with MemOS(data, config=_config()) as mos:
            _finds_all(mos, ids)
    assert "rebuilding" not in caplog.text
