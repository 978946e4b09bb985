"""What a crash leaves in the adapters directory never outlives the next open or forget.

A new adapter is written whole into a temporary directory (``.v<n>.tmp-<pid>-<hex>``) and
renamed to its version at the end. A process killed before that leaves the temporary
directory: weights trained on memories, and a manifest (or its ``manifest.json.tmp``) whose
evaluation holds their text in clear. No version lists it, so the forget cascade and the
checks at open used to skip it for good; so did they a version directory without a manifest
(what the code before the temporary directory left, or an interrupted delete). Now opening
the directory deletes them, and so does a forget (they may hold the memory), naming them in
its receipt. A temporary directory this process is writing now stays."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from memos_core import MemOS
from memos_core.engine import engine_for
from memos_core.tiers import tempfiles
from memos_core.tiers.parametric import AdapterStore, ParametricConfig

OPEN = ParametricConfig.preset("test", min_recall=0.0, max_control_regressions=1000)

#: A process that trains an adapter on one fact and is killed (os._exit: no cleanup runs)
#: at ``argv[2]``: ``manifest`` -- the weights are written, the manifest's temporary file
#: too, not yet renamed; ``rename`` -- the adapter is complete but not renamed to its version.
CRASHING_TRAINER = r"""
import os, sys
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from memos_core import MemOS, MemOSConfig
from memos_core.runtime import LocalModel
from memos_core.tiers.parametric import ParametricConfig

where, crash_at = sys.argv[1], sys.argv[2]
mos = MemOS(where, config=MemOSConfig(show_progress=False))
mos.attach_model(LocalModel.tiny(seed=0))
memory = mos.add("Zorvin's locker code is ZEBRA7731.", user_id="ada", type="fact")
print(memory.id, flush=True)
replace = os.replace

def killed_at(src, dst):
    dst = os.fspath(dst)
    if (crash_at == "manifest" and dst.endswith("manifest.json")
            or crash_at == "rename" and os.path.basename(dst) == "v1"):
        os._exit(9)
    return replace(src, dst)

os.replace = killed_at
gate_open = ParametricConfig.preset("test", min_recall=0.0, max_control_regressions=1000)
mos.consolidate(user_id="ada", memory_ids=[memory.id], config=gate_open, progress=False)
"""


def files_holding(root: Path, needle: bytes) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and needle in p.read_bytes())


def dead_pid() -> int:
    """The pid of a process that has exited."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


@pytest.mark.parametrize("crash_at", ["manifest", "rename"])
def test_an_adapter_a_crash_left_half_written_is_deleted_at_open(
    tmp_path: Path, crash_at: str,
) -> None:
    pytest.importorskip("peft")
    where = tmp_path / "data"
    child = subprocess.run([sys.executable, "-c", CRASHING_TRAINER, str(where), crash_at],
                           capture_output=True, text=True, timeout=600)
    assert child.returncode == 9, child.stderr[-2000:]
    memory_id = child.stdout.split()[0]
    adapters = where / "adapters"
    assert files_holding(adapters, b"ZEBRA7731")  # the crash left the text there
    mos = MemOS(where)
    try:
        assert files_holding(adapters, b"ZEBRA7731") == []
        assert [p.name for p in adapters.iterdir() if p.is_dir()] == []
        assert mos.adapters(user_id="ada") == []
        mos.forget(memory_id, user_id="ada")
    finally:
        mos.close()
    assert files_holding(where, b"ZEBRA7731") == []


def test_forget_deletes_adapter_directories_a_crash_left(
    store: tuple[MemOS, list[str]],
) -> None:
    mos, ids = store
    mos.consolidate(user_id="ada", memory_ids=ids, config=OPEN, progress=False)
    adapters = mos.data_dir / "adapters"
    complete = adapters / "v1"
    # killed between peft's save and the manifest's rename, before the temporary directory
    torn = adapters / "v2"
    shutil.copytree(complete, torn)
    (torn / "manifest.json").rename(torn / "manifest.json.tmp")
    # killed before the rename of a temporary directory (its pid runs no more), and one that
    # this process is writing now
    orphan = adapters / f".v3.tmp-{dead_pid()}-0badc0de"
    shutil.copytree(complete, orphan)
    writing = adapters / f".v4.tmp-{os.getpid()}-1badc0de"
    with tempfiles.writing(writing):
        shutil.copytree(complete, writing)
        receipt = mos.forget(ids[0], user_id="ada")
        assert writing.is_dir()
    shutil.rmtree(writing)
    assert sorted(f.id for f in receipt.derived if f.kind == "adapter") == sorted(
        [orphan.name, "v1", "v2"])
    assert [p.name for p in adapters.iterdir() if p.is_dir()] == ["v1"]
    assert files_holding(mos.data_dir, b"Pastel") == []  # ids[0]: "Zorvin's cat is named Pastel."
    assert engine_for(mos).parametric.store.versions() == ["v1"]


def test_a_version_number_a_crash_left_is_not_given_again(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path)
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "adapter_model.safetensors").write_bytes(b"weights")
    (tmp_path / "notes").mkdir()  # not a name the store gives: not its to delete
    assert store.versions() == [] and store.next_version() == "v2"
    assert store.leftovers() == [tmp_path / "v1"]
    assert store.discard(tmp_path / "v1") and not store.discard(tmp_path / "v1")
    assert (tmp_path / "notes").is_dir()


def test_json_files_a_crash_left_half_written_are_deleted_by_a_forget(
    store: tuple[MemOS, list[str]],
) -> None:
    """The state, the queue and a rewritten manifest are written through temporary files of
    the writer's own; a dead writer's (a manifest's may hold an evaluation's text) goes with
    the next forget, this process's own while it writes stays, and a failed write leaves none."""
    mos, ids = store
    mos.consolidate(user_id="ada", memory_ids=ids, config=OPEN, progress=False)
    adapters = mos.data_dir / "adapters"
    manifest = (adapters / "v1" / "manifest.json").read_bytes()
    assert b"Pastel" in manifest
    torn = adapters / "v1" / f".manifest.json.tmp-{dead_pid()}-0badc0de"
    torn.write_bytes(manifest)
    queue = adapters / f".queue.json.tmp-{dead_pid()}-1badc0de"
    queue.write_text("[]")
    live = adapters / f".state.json.tmp-{os.getpid()}-2badc0de"
    with tempfiles.writing(live):
        live.write_text("{}")
        receipt = mos.forget(ids[0], user_id="ada")
        assert live.is_file()
    live.unlink()
    assert queue.name in {f.id for f in receipt.derived}  # the torn manifest went with v1
    assert not torn.exists() and not queue.exists()
    assert files_holding(mos.data_dir, b"Pastel") == []

    store_ = engine_for(mos).parametric.store
    real_replace = os.replace

    def refused(src: object, dst: object) -> None:
        raise OSError("disk full")

    os.replace = refused  # type: ignore[assignment]
    try:
        with pytest.raises(OSError, match="disk full"):
            store_.set_active("ada", None)
    finally:
        os.replace = real_replace
    assert [p.name for p in adapters.iterdir() if tempfiles.is_temp_name(p.name)] == []


def test_a_torn_json_file_in_a_kept_version_is_a_leftover(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path)
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "manifest.json").write_text("{}")
    torn = tmp_path / "v1" / f".manifest.json.tmp-{dead_pid()}-0badc0de"
    torn.write_text("{}")
    live = tmp_path / "v1" / f".manifest.json.tmp-{os.getpid()}-1badc0de"
    with tempfiles.writing(live):
        live.write_text("{}")
        assert store.leftovers() == [torn]
    assert store.discard(torn) and not torn.exists() and (tmp_path / "v1").is_dir()


def reopened(make_mos, mos: MemOS) -> MemOS:
    mos.close()
    return make_mos("data")


def test_a_kill_inside_activate_is_reconciled_at_open(store, make_mos) -> None:
    """activate writes state.json (what chat serves by), then the manifest's status, then
    each memory's tier; a kill after the first write left ``adapters()`` saying ``ready``
    for the adapter chat served, and its memories plaintext (the scheduler could put them in
    a KV block as well). Open brings both in line with state.json."""
    from memos_core.cube import Tier

    mos, ids = store
    version = mos.consolidate(user_id="ada", memory_ids=ids, config=OPEN, activate=False,
                              progress=False).manifest.version
    engine_for(mos).parametric.store.set_active("ada", version)  # the kill comes after this
    mos = reopened(make_mos, mos)
    assert [(m.version, m.status) for m in mos.adapters(user_id="ada")] == [(version, "active")]
    assert {mos.get(i, user_id="ada").usage.tier for i in ids} == {Tier.PARAMETRIC}


def test_a_kill_while_marking_memories_is_reconciled_at_open(store, make_mos) -> None:
    from memos_core.cube import Tier

    mos, ids = store
    mos.consolidate(user_id="ada", memory_ids=ids, config=OPEN, progress=False)
    mos.vault.set_tier(ids[0], Tier.PLAINTEXT.value)  # not marked yet at the kill
    mos = reopened(make_mos, mos)
    assert {mos.get(i, user_id="ada").usage.tier for i in ids} == {Tier.PARAMETRIC}
    # the mark the open wrote is audited on the memory as activate's own are (once each)
    moves = [[(r.action, r.reason, r.details) for r in mos.audit_log(user_id="ada", memory_id=i)
              if r.action.startswith("parametric:")] for i in ids[:2]]
    promoted = ("parametric:promote", "passed the gate after training",
                {"adapter": "v1", "tier": "parametric"})
    assert moves == [[promoted, ("parametric:promote", "settled with state.json",
                                 {"adapter": "v1", "tier": "parametric"})], [promoted]]


def test_a_kill_inside_deactivate_is_reconciled_at_open(store, make_mos) -> None:
    from memos_core.cube import Tier

    mos, ids = store
    version = mos.consolidate(user_id="ada", memory_ids=ids, config=OPEN,
                              progress=False).manifest.version
    engine_for(mos).parametric.store.set_active("ada", None)  # the kill comes after this
    mos = reopened(make_mos, mos)
    assert [(m.version, m.status) for m in mos.adapters(user_id="ada")] == [(version, "ready")]
    assert {mos.get(i, user_id="ada").usage.tier for i in ids} == {Tier.PLAINTEXT}
