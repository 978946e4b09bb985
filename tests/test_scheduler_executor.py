"""The scheduler's executor on a real MemOS (SQLite vault, Qdrant edge, MiniLM) with a tiny
random Llama (SmolLM2's tokenizer) as the local model: promotion builds the owner's hot
block, changes drop it, TTL expiry and archiving go through audited versions, blocks never
mix users, the background thread stops on close, and nothing loads a model needlessly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: the machine is shared

import pytest

from memos_core import MemOS, MemOSConfig, State, Tier
from memos_core.cli import main as cli_main
from memos_core.cube import utcnow
from memos_core.engine import engine_for
from memos_core.errors import InvalidInputError
from memos_core.runtime import LocalModel
from memos_core.scheduler import (
    SCHEDULER_AGENT,
    SchedulerConfig,
    ScheduleReport,
    StepKind,
)
from memos_core.tiers import tempfiles
from memos_core.tiers.activation import KVBudget

# One hit is enough to promote (a hit's heat starts to decay at once, so stay below 1.0).
EAGER = SchedulerConfig.preset("eager", min_heat_to_promote=0.9, demote_below_heat=0.5)




@pytest.fixture(scope="module")
def tiny() -> LocalModel:
    return LocalModel.tiny(seed=0)


@pytest.fixture
def store(make_mos, tiny: LocalModel) -> MemOS:
    mos = make_mos()
    mos.attach_model(tiny)
    return mos


def hit(mos: MemOS, *cubes: Any, times: int = 1) -> None:
    """Count retrieval hits the way search does."""
    for _ in range(times):
        mos.vault.record_usage([c.id for c in cubes], utcnow(), mos.config.heat_half_life_s)


def kv_files(mos: MemOS) -> list[Path]:
    return sorted((mos.data_dir / "kv").glob("*.safetensors"))


def block_members(mos: MemOS) -> list[set[str]]:
    return [{mid for mid, _ in b.memories} for b in engine_for(mos).tier.blocks()]


def actions(mos: MemOS, user: str) -> list[str]:
    return [r.action for r in mos.audit_log(user_id=user, limit=1000)]


def test_promote_builds_the_owners_block_once_and_audits(store: MemOS) -> None:
    cat = store.add("Alice's cat is called Pastel.", user_id="alice")
    job = store.add("Alice works as a nurse in Lisbon.", user_id="alice")
    cold = store.add("Alice once visited Oslo.", user_id="alice")
    hit(store, cat, job)

    report = store.schedule(config=EAGER)

    assert isinstance(report, ScheduleReport)
    alice = report.for_user("alice")
    assert alice is not None and alice.block_built and alice.block_id is not None
    assert {s.memory_id for s in alice.steps if s.kind is StepKind.PROMOTE} == {cat.id, job.id}
    assert all(s.status == "done" for s in alice.steps)
    assert alice.activation_set == (cat.id, job.id)  # block order: (created_at, id)
    assert block_members(store) == [{cat.id, job.id}]
    assert [p.name for p in kv_files(store)] == [f"{alice.block_id}.safetensors"]
    assert store.get(cat.id, user_id="alice").usage.tier is Tier.ACTIVATION
    assert store.get(cold.id, user_id="alice").usage.tier is Tier.PLAINTEXT
    assert store.get(cat.id, user_id="alice").version == 1  # promotion writes no version
    promote = [r for r in store.audit_log(user_id="alice", memory_id=cat.id)
               if r.action == "schedule:promote"]
    assert promote and promote[0].agent_id == SCHEDULER_AGENT and "heat" in promote[0].reason
    assert actions(store, "alice").count("schedule:build") == 1

    again = store.schedule(config=EAGER).for_user("alice")
    assert again is not None and not again.steps and not again.block_built
    assert again.block_id == alice.block_id
    assert actions(store, "alice").count("schedule:build") == 1
    assert store.vault.verify_audit()[0]


@pytest.mark.parametrize("change", ["update", "forget", "share", "expire"])
def test_a_change_to_a_member_drops_its_block(store: MemOS, change: str) -> None:
    cat = store.add("Alice's cat is called Pastel.", user_id="alice")
    job = store.add("Alice works as a nurse in Lisbon.", user_id="alice")
    hit(store, cat, job)
    store.schedule(config=EAGER)
    assert len(kv_files(store)) == 1

    if change == "update":
        store.update(cat.id, "Alice's cat is called Pastel Blue.", user_id="alice")
    elif change == "forget":
        store.forget(cat.id, user_id="alice")
    elif change == "share":
        store.share(cat.id, with_user_id="bob", user_id="alice")
    else:
        store.set_state(cat.id, "expired", user_id="alice")

    assert engine_for(store).tier.blocks() == [] and kv_files(store) == []
    rebuilt = store.schedule(config=EAGER).for_user("alice")
    assert rebuilt is not None and rebuilt.block_built
    members = block_members(store)
    if change in ("forget", "expire"):
        assert members == [{job.id}]
    else:
        block = engine_for(store).tier.blocks()[0]
        assert dict(block.memories)[cat.id] == store.get(cat.id, user_id="alice").version


def test_ttl_expiry_leaves_search_and_drops_the_block(store: MemOS) -> None:
    short = store.add("Alice's parking spot this week is B12.", user_id="alice", ttl_seconds=60)
    keep = store.add("Alice's cat is called Pastel.", user_id="alice")
    hit(store, short, keep)
    store.schedule(config=EAGER)
    assert block_members(store) == [{short.id, keep.id}]

    executor = engine_for(store).executor
    report = executor.run(now=utcnow() + timedelta(seconds=61), config=EAGER)

    alice = report.for_user("alice")
    assert alice is not None
    kinds = {(s.kind, s.memory_id) for s in alice.steps if s.status == "done"}
    assert (StepKind.EXPIRE, short.id) in kinds and (StepKind.DEMOTE, short.id) in kinds
    assert store.get(short.id, user_id="alice").state.value == "expired"
    found = [h.id for h in store.search("parking spot", user_id="alice", k=5)]
    assert short.id not in found
    assert block_members(store) == [{keep.id}]
    expired = [r for r in store.audit_log(user_id="alice", memory_id=short.id)
               if r.action == "state:expired"]
    assert expired and expired[0].reason.startswith("scheduler: TTL")
    # the component that acted, as docs/governance.md says of maintenance records
    assert expired[0].agent_id == SCHEDULER_AGENT


def test_cold_memories_are_archived_unless_protected(store: MemOS) -> None:
    config = SchedulerConfig(archive_after_idle_s=60.0, archive_max_heat=0.25)
    cold = store.add("Alice bought a blue umbrella.", user_id="alice")
    protected = store.add("Alice's blood type is O negative.", user_id="alice", priority=5)

    report = engine_for(store).executor.run(now=utcnow() + timedelta(minutes=5), config=config)

    steps = {(s.kind, s.memory_id) for s in report.for_user("alice").steps}  # type: ignore[union-attr]
    assert steps == {(StepKind.ARCHIVE, cold.id)}
    assert store.get(cold.id, user_id="alice").state.value == "archived"
    assert store.get(protected.id, user_id="alice").state.value == "generated"
    assert cold.id not in [h.id for h in store.search("umbrella", user_id="alice")]
    assert cold.id in [h.id for h in store.search("umbrella", user_id="alice", include_archived=True)]
    assert "state:archived" in actions(store, "alice")


def test_blocks_never_mix_users(store: MemOS) -> None:
    a1 = store.add("Alice's cat is called Pastel.", user_id="alice")
    a2 = store.add("Alice plays the cello.", user_id="alice")
    b1 = store.add("Bob's dog is called Rex.", user_id="bob")
    store.share(a1.id, with_user_id="bob", user_id="alice")
    hit(store, a1, a2, b1, times=2)

    report = store.schedule(config=EAGER)

    owners = {c.id: c.user_id for c in (a1, a2, b1)}
    members = block_members(store)
    assert sorted(map(sorted, members)) == sorted([sorted([a1.id, a2.id]), [b1.id]])
    assert all(len({owners[m] for m in block}) == 1 for block in members)
    executor = engine_for(store).executor
    assert [c.id for c in executor.hot_memories("bob")] == [b1.id]  # shared is not bob's
    assert {c.id for c in executor.hot_memories("alice")} == {a1.id, a2.id}
    assert {u.user_id for u in report.users} == {"alice", "bob"}

    only_bob = store.schedule(user_id="bob", config=EAGER)
    assert [u.user_id for u in only_bob.users] == ["bob"]


def test_demotion_when_memories_cool_down(store: MemOS) -> None:
    hot = store.add("Alice's cat is called Pastel.", user_id="alice")
    hit(store, hot)
    store.schedule(config=EAGER)
    assert len(kv_files(store)) == 1

    later = utcnow() + timedelta(days=20)  # ~2.9 half-lives, not yet idle enough to archive
    report = engine_for(store).executor.run(now=later, config=EAGER)

    alice = report.for_user("alice")
    assert alice is not None and [s.kind for s in alice.steps] == [StepKind.DEMOTE]
    assert alice.block_id is None and len(alice.dropped_blocks) == 1
    assert store.get(hot.id, user_id="alice").usage.tier is Tier.PLAINTEXT
    assert kv_files(store) == [] and engine_for(store).executor.hot_memories("alice") == []
    assert {"schedule:demote", "schedule:drop"} <= set(actions(store, "alice"))


def test_a_plan_with_nothing_hot_loads_no_model(make_mos) -> None:
    mos = make_mos()
    cube = mos.add("A note that expires.", user_id="carol", ttl_seconds=30)

    report = engine_for(mos).executor.run(now=utcnow() + timedelta(minutes=1))

    assert [s.kind for s in report.for_user("carol").steps] == [StepKind.EXPIRE]  # type: ignore[union-attr]
    assert mos.get(cube.id, user_id="carol").state.value == "expired"
    assert not engine_for(mos).model_loaded


#: name -> (store config, add() keywords, hits, scheduler config, run this long after now):
#: memories that were used but that no plan could promote.
NOT_PROMOTABLE: dict[str, tuple[dict[str, Any], dict[str, Any], int, SchedulerConfig, timedelta]] = {
    "warm, below the promote threshold": ({}, {}, 1, SchedulerConfig(), timedelta(0)),
    "tag barred from KV caches": ({"allow_sensitive": ("secret",)}, {"sensitivity": ["secret"]}, 3,
                                  SchedulerConfig(), timedelta(0)),
    "type not activated": ({}, {"type": "note"}, 3, EAGER.model_copy(update={"activate_types": ("fact",)}),
                           timedelta(0)),
    "expires in this run": ({}, {"ttl_seconds": 30}, 3, EAGER, timedelta(minutes=1)),
    "superseded": ({}, {}, 3, EAGER, timedelta(0)),
}


@pytest.mark.parametrize("attached", [False, True], ids=["default model", "tiny attached"])
@pytest.mark.parametrize("case", NOT_PROMOTABLE)
def test_used_memories_that_cannot_be_promoted_load_no_model(make_mos, tiny: LocalModel, case: str,
                                                             attached: bool) -> None:
    """Counting a memory's tokens needs the tokenizer (and so the KV tier and the model): only
    a memory the policy could put in a block is counted."""
    store_config, add_kw, hits, config, later = NOT_PROMOTABLE[case]
    mos = make_mos(**store_config)
    if attached:
        mos.attach_model(tiny)
    cube = mos.add("Dana's locker is number 42.", user_id="dana", **add_kw)
    if case == "superseded":
        mos.add("Dana's locker is number 43.", user_id="dana", supersedes=cube.id)
    hit(mos, cube, times=hits)
    engine = engine_for(mos)

    report = engine.executor.run(now=utcnow() + later, config=config)

    assert report.for_user("dana").activation_set == ()  # type: ignore[union-attr]
    assert engine.tier_if(False) is None  # no tokenizer was asked for a count
    assert engine.model_loaded is attached


def test_background_scheduler_runs_and_stops_on_close(make_mos, tiny: LocalModel) -> None:
    mos = make_mos("bg")
    mos.attach_model(tiny)
    cube = mos.add("Alice's cat is called Pastel.", user_id="alice")
    hit(mos, cube)

    background = mos.start_scheduler(0.05, config=EAGER)
    deadline = time.monotonic() + 30
    while background.runs < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert background.running and background.runs >= 2 and background.errors == 0
    assert background.last_report is not None
    with pytest.raises(InvalidInputError, match="already running"):
        mos.start_scheduler(1.0)

    mos.close()

    assert not background.running
    with pytest.raises(InvalidInputError, match="closed"):
        mos.schedule()


def test_background_scheduler_rejects_a_bad_interval(store: MemOS) -> None:
    # inf and 1e12: the thread could not wait that long and died after its first run
    for bad in (0, -1.0, True, "5", float("inf"), float("nan"), 1e12):
        with pytest.raises(InvalidInputError, match="interval_s"):
            store.start_scheduler(bad)  # type: ignore[arg-type]


def test_reopen_reuses_blocks_and_purges_stale_ones(make_mos, tiny: LocalModel, tmp_path: Path) -> None:
    mos = make_mos("reopen")
    cat = mos.add("Alice's cat is called Pastel.", user_id="alice")
    job = mos.add("Alice works as a nurse.", user_id="alice")
    hit(mos, cat, job)
    mos.attach_model(tiny)
    block_id = mos.schedule(config=EAGER).for_user("alice").block_id  # type: ignore[union-attr]
    mos.close()

    with MemOS(tmp_path / "reopen", config=MemOSConfig(show_progress=False)) as again:
        again.attach_model(tiny)
        engine = engine_for(again)
        assert [c.id for c in engine.executor.hot_memories("alice")] == [cat.id, job.id]
        found = engine.tier.get(engine.executor.hot_memories("alice"))
        assert found is not None and found.block_id == block_id  # loaded from disk, not rebuilt

    with MemOS(tmp_path / "reopen", config=MemOSConfig(show_progress=False)) as again:
        again.update(cat.id, "Alice's cat is called Pastel Blue.", user_id="alice")
        assert len(kv_files(again)) == 1  # no engine listened in this session
    with MemOS(tmp_path / "reopen", config=MemOSConfig(show_progress=False)) as again:
        engine_for(again)  # starting the engine deletes blocks of versions no longer current
        assert kv_files(again) == []


def test_invalidation_purges_other_models_files(store: MemOS, tiny: LocalModel) -> None:
    cat = store.add("Alice's cat is called Pastel.", user_id="alice")
    hit(store, cat)
    store.schedule(config=EAGER)
    other = LocalModel.tiny(seed=1)
    store.attach_model(other)  # the first model's file stays on disk, foreign now
    assert len(kv_files(store)) == 1

    store.update(cat.id, "Alice's cat is called Pastel Blue.", user_id="alice")

    assert kv_files(store) == []


def test_aschedule_and_cli_schedule_json(store: MemOS, tmp_path: Path, capsys) -> None:
    import asyncio

    store.add("Alice's cat is called Pastel.", user_id="alice", ttl_seconds=0.2)
    time.sleep(0.3)
    report = asyncio.run(store.aschedule(user_id="alice"))
    assert report.counts()["expire"] == 1
    store.close()

    code = cli_main(["schedule", "--data-dir", str(tmp_path / "data"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and set(out) >= {"now", "users", "counts", "duration_ms"}
    assert out["counts"]["expire"] == 0  # already expired by the first run

    code = cli_main(["schedule", "--data-dir", str(tmp_path / "data"), "--user", "alice"])
    assert code == 0 and "user(s):" in capsys.readouterr().out


def test_schedule_rejects_a_bad_user(store: MemOS) -> None:
    with pytest.raises(InvalidInputError):
        store.schedule(user_id="")


@pytest.mark.parametrize(("allow", "in_block"), [((), False), (("pii",), True)])
def test_sensitive_memories_enter_a_block_only_if_prompts_may_show_them(
    make_mos, tiny: LocalModel, allow: tuple[str, ...], in_block: bool
) -> None:
    mos = make_mos(f"sens{len(allow)}", allow_sensitive=allow)
    mos.attach_model(tiny)
    plain = mos.add("Alice's cat is called Pastel.", user_id="alice")
    pii = mos.add("Alice's phone number is 555-0199.", user_id="alice", sensitivity=["pii"])
    secret = mos.add("Alice's door code is 4711.", user_id="alice", sensitivity=["secret"])
    hit(mos, plain, pii, secret)

    mos.schedule(config=EAGER)

    expected = {plain.id, pii.id} if in_block else {plain.id}
    assert block_members(mos) == [expected]  # 'secret' never: never_activate_sensitivity
    assert {c.id for c in engine_for(mos).executor.hot_memories("alice")} == expected


def test_a_memory_past_its_ttl_leaves_the_hot_set(store: MemOS, monkeypatch) -> None:
    """Search hides a memory once its TTL has run out; chat's hot block must too, without
    waiting for the next scheduler run to expire it."""
    from memos_core.scheduler.executor import is_hot_candidate

    memory = store.add("Alice's locker code is 4471.", user_id="alice", ttl_seconds=60)
    hit(store, memory)
    store.schedule(config=EAGER)
    executor = engine_for(store).executor
    assert [c.id for c in executor.hot_memories("alice")] == [memory.id]
    cube = store.get(memory.id, user_id="alice")
    later = utcnow() + timedelta(seconds=61)
    assert is_hot_candidate(cube, "alice") and not is_hot_candidate(cube, "alice", now=later)
    monkeypatch.setattr(executor, "_clock", lambda: later)
    assert executor.hot_memories("alice") == []


def test_a_forget_while_the_scheduler_builds_leaves_no_block(store: MemOS, monkeypatch) -> None:
    """The scheduler read the hot set, a forget landed (its purge found no block file), then
    the block was built from the old set: it is dropped, not kept on disk."""
    cat = store.add("Alice's cat is called Pastel.", user_id="alice")
    job = store.add("Alice works as a nurse in Lisbon.", user_id="alice")
    hit(store, cat, job)
    store.schedule(config=EAGER)
    executor = engine_for(store).executor
    engine_for(store).tier.clear()
    read = executor.hot_memories
    forgotten: list[Any] = []

    def racing(user_id: str) -> list[Any]:
        cubes = read(user_id)
        if not forgotten:
            forgotten.append(store.forget(cat.id, user_id="alice"))
        return cubes

    monkeypatch.setattr(executor, "hot_memories", racing)
    report = executor.run(config=EAGER)
    alice = report.for_user("alice")
    assert alice is not None and alice.block_id is None
    assert engine_for(store).tier.blocks() == []
    assert not [p for p in store.data_dir.rglob("*") if p.is_file() and b"Pastel" in p.read_bytes()]


def test_a_forget_dropping_a_kept_block_before_the_build_leaves_no_block(
    store: MemOS, monkeypatch,
) -> None:
    """The owner's block was kept when the run looked at the tier; a forget of a member then
    dropped it (its purge deleted the file) before ``get_or_build`` ran, which built it again
    from the cubes read before the forget. The run must learn that it built the block, find
    the hot set changed, and drop it: no file keeps the forgotten text."""
    cat = store.add("Alice's cat is called Pastel.", user_id="alice")
    job = store.add("Alice works as a nurse in Lisbon.", user_id="alice")
    hit(store, cat, job)
    store.schedule(config=EAGER)
    tier = engine_for(store).tier
    assert block_members(store) == [{cat.id, job.id}]
    build = tier.get_or_build
    forgotten: list[Any] = []

    def racing(*args: Any, **kwargs: Any) -> Any:
        if not forgotten:  # the block is kept when the run decides; the forget lands now
            forgotten.append(store.forget(cat.id, user_id="alice"))
        return build(*args, **kwargs)

    monkeypatch.setattr(tier, "get_or_build", racing)
    alice = store.schedule(config=EAGER).for_user("alice")
    assert forgotten and alice is not None and alice.block_id is None and alice.error
    assert not [m for m in block_members(store) if cat.id in m]
    assert not [p for p in store.data_dir.rglob("*") if p.is_file() and b"Pastel" in p.read_bytes()]


def test_forget_deletes_temporary_kv_files_a_crashed_writer_left(store: MemOS) -> None:
    """A KV file is written to a temporary name, then renamed; a crash between the two leaves
    the temporary file, which holds the memories' text in its header and which no glob for
    ``*.safetensors`` finds. A forget deletes such orphans: one whose writer's pid runs no
    more, and one named for this process's pid that this process is not writing (an earlier
    process with the same pid crashed: a container's app often has the same pid each time).
    A temporary file this process is writing now stays."""
    cat = store.add("Alice's cat is called Pastel.", user_id="alice")
    hit(store, cat)
    store.schedule(config=EAGER)
    [block] = kv_files(store)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    orphan = block.with_name(f".{block.name}.tmp-{dead}-0badc0de")
    same_pid = block.with_name(f".{block.name}.tmp-{os.getpid()}-2badc0de")
    writing = block.with_name(f".{block.name}.tmp-{os.getpid()}-1badc0de")
    orphan.write_bytes(block.read_bytes())
    same_pid.write_bytes(block.read_bytes())
    with tempfiles.writing(writing):
        writing.write_bytes(b"being written")
        receipt = store.forget(cat.id, user_id="alice")
        assert writing.exists()
    assert {orphan.name, same_pid.name} <= {f.id for f in receipt.derived if f.kind == "kv_block"}
    assert not orphan.exists() and not same_pid.exists() and not block.exists()


def test_a_temporary_kv_file_whose_writers_pid_was_reused_is_deleted(store: MemOS) -> None:
    """A process with the writer's pid runs, but it started after the temporary file last
    changed, so it cannot be its writer (the pid was reused): the file is a crash's leftover,
    and a forget deletes it. A file changed after that process started may be its own, half
    written, and stays."""
    if tempfiles.process_start_time(os.getpid()) is None:
        pytest.skip("process start times need Linux's /proc")
    cat = store.add("Alice's cat is called Pastel.", user_id="alice")
    hit(store, cat)
    store.schedule(config=EAGER)
    [block] = kv_files(store)
    stale = block.with_name(f".{block.name}.tmp-PID-3badc0de")
    stale.write_bytes(block.read_bytes())
    os.utime(stale, (stale.stat().st_atime, stale.stat().st_mtime - 3600))  # the crash was long ago
    other = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)  # the process that now has the pid
    try:
        assert tempfiles.process_start_time(other.pid) is not None
        reused = stale.rename(stale.with_name(stale.name.replace("PID", str(other.pid))))
        live = block.with_name(f".{block.name}.tmp-{other.pid}-4badc0de")
        live.write_bytes(b"being written")
        receipt = store.forget(cat.id, user_id="alice")
        assert reused.name in {f.id for f in receipt.derived if f.kind == "kv_block"}
        assert not reused.exists() and live.exists()
    finally:
        assert other.stdin is not None
        other.stdin.close()
        other.wait()


def test_a_config_without_a_heat_half_life_takes_the_stores(make_mos, tiny, monkeypatch) -> None:
    """Search bumps heat with ``MemOSConfig.heat_half_life_s``; a scheduler config passed
    for other knobs (a preset) decays it with the same half-life, not its own default."""
    from datetime import timedelta

    mos = make_mos(heat_half_life_s=60.0)
    mos.attach_model(tiny)
    note = mos.add("Alice's favourite colour is teal.", user_id="alice")
    hit(mos, note, times=3)
    later = utcnow() + timedelta(hours=1)  # 60 half-lives of the store's: the heat is gone
    monkeypatch.setattr(engine_for(mos).executor, "_clock", lambda: later)
    assert mos.schedule(user_id="alice", config=EAGER).counts()["promote"] == 0
    assert engine_for(mos).executor.config.heat_half_life_s == 60.0
    week = SchedulerConfig.preset("eager", heat_half_life_s=7 * 24 * 3600.0)  # its own: kept
    assert mos.schedule(user_id="alice", config=week).counts()["promote"] == 1


def test_token_counts_are_kept_for_the_current_versions_of_live_memories(store: MemOS) -> None:
    """The scheduler counts a memory's tokens once per version. It kept every count it
    ever made (each version's, and the forgotten memories'): a long-lived store that updates
    hot memories grew by one entry per update and run. Now one per live memory."""
    cubes = [store.add(f"Alice's note number {i} is about the garden.", user_id="alice")
             for i in range(3)]
    executor = engine_for(store).executor
    for round_ in range(3):
        hit(store, *cubes)
        store.schedule(config=EAGER)
        cubes = [store.update(c.id, f"{c.text} (round {round_})", user_id="alice")
                 for c in cubes]
    store.forget(cubes[0].id, user_id="alice")
    hit(store, *cubes[1:])
    store.schedule(config=EAGER)
    assert len(executor._tokens) == 2
    assert {mid: v for mid, (_, v, *_) in executor._tokens.items()} == {
        c.id: c.version for c in cubes[1:]}
    store.forget_many([c.id for c in cubes[1:]], user_id="alice")  # alice has none left
    store.schedule(config=EAGER)
    assert executor._tokens == {}


def damage_dtype(path: Path) -> None:
    """Change one tensor's dtype F32 -> F16 in a KV file's header: same length, still JSON,
    but the tensor's bytes no longer match (safetensors' own error is a plain Exception)."""
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = raw[8:8 + size].replace(b'"dtype":"F32"', b'"dtype":"F16"', 1)
    path.write_bytes(raw[:8] + header + raw[8 + size:])


def test_a_damaged_kv_file_does_not_stop_chat_or_the_run(make_mos, tiny: LocalModel,
                                                         tmp_path: Path) -> None:
    """One user's KV file whose header still parses but lies about a tensor: it is dropped
    and rebuilt, and the run schedules the owners after them."""
    mos = make_mos("damaged")
    mos.attach_model(tiny)
    cat = mos.add("Alice's cat is called Pastel.", user_id="alice", type="fact")
    dog = mos.add("Bob's dog is named Zorro.", user_id="bob", type="fact")
    hit(mos, cat)
    mos.schedule(config=EAGER)
    mos.close()
    [path] = kv_files(mos)
    damage_dtype(path)

    with MemOS(tmp_path / "damaged", config=MemOSConfig(show_progress=False)) as again:
        again.attach_model(tiny)
        answer = again.chat("Alice's cat?", user_id="alice", max_new_tokens=2)
        assert answer.trace.kv_prefix and answer.trace.from_activation == (cat.id,)
        hit(again, dog)
        report = again.schedule(config=EAGER)
        bob = report.for_user("bob")
        assert bob is not None and bob.block_built and bob.error is None
        assert again.get(dog.id, user_id="bob").usage.tier is Tier.ACTIVATION
        assert len(kv_files(again)) == 2


def test_an_unforeseen_error_building_one_owners_block_is_reported(
        store: MemOS, caplog: pytest.LogCaptureFixture) -> None:
    """An error no one foresaw building one owner's block (here the file cannot be written:
    a directory stands where it goes) is that owner's ``error``, logged with its cause; the
    owners after them are still scheduled."""
    cat = store.add("Alice's cat is called Pastel.", user_id="alice", type="fact")
    dog = store.add("Bob's dog is named Zorro.", user_id="bob", type="fact")
    hit(store, cat, dog)
    tier = engine_for(store).tier
    (store.data_dir / "kv" / f"{tier.block_id_for([cat])}.safetensors").mkdir(parents=True)

    with caplog.at_level("ERROR", logger="memos_core.scheduler.executor"):
        report = store.schedule(config=EAGER)

    alice, bob = report.for_user("alice"), report.for_user("bob")
    assert alice is not None and alice.error is not None and "IsADirectoryError" in alice.error
    assert "alice" in caplog.text
    assert bob is not None and bob.block_built and bob.error is None
    assert block_members(store) == [{dog.id}]
    assert "block errors for alice" in report.summary()
    # chat builds the block itself, fails the same way, and sends it as text
    answer = store.chat("Alice's cat?", user_id="alice", max_new_tokens=2)
    assert not answer.trace.kv_prefix and "IsADirectoryError" in (answer.trace.fallback or "")
    assert answer.trace.from_activation == (cat.id,)  # the hot block, as text


def write_between(monkeypatch, store: MemOS, memory_id: str, after_read: int,
                  write: Any) -> list[str]:
    """Make ``write`` land right after the executor's ``after_read``-th read of
    ``memory_id`` -- 1: its check before taking the store's write lock; 2: its re-read under
    that lock, just before it writes -- as another thread, or a scheduler in another
    process, would. Returns the reads seen (the test checks the write happened)."""
    vault = engine_for(store).executor._store.vault
    read = vault.get
    reads: list[str] = []

    def get(mid: str) -> Any:
        cube = read(mid)
        if mid == memory_id:
            reads.append(mid)
            if len(reads) == after_read:
                write()
        return cube

    monkeypatch.setattr(vault, "get", get)
    return reads


def _expire(store: MemOS, cube: Any) -> None:
    store.set_state(cube.id, "expired", user_id="alice", reason="another scheduler")


RACES = {
    # another run expired it after the check: nothing left to write (was "done")
    "expired-before-the-lock": ("expire", 1, _expire, "already expired", "state:expired"),
    # another run expired it after the re-read, before the write: the write's version
    # check fails (was "failed" with the ConflictError)
    "expired-during-the-write": (
        "expire", 2, _expire, "changed concurrently: already expired", "state:expired"),
    "archived-during-the-write": (
        "archive", 2, lambda s, c: s.set_state(c.id, "archived", user_id="alice"),
        "changed concurrently: already archived", "state:archived"),
    # a user changed it after the check: the plan decided on version 1 (was "done",
    # expiring version 2 that no plan looked at)
    "updated-before-the-lock": (
        "expire", 1, lambda s, c: s.update(c.id, "Alice parks in B14 now.", user_id="alice"),
        "now at version 2; decided on 1", "update"),
    # another run promoted / demoted it after the check (was "done", audited twice)
    "promoted-before-the-lock": (
        "promote", 1, lambda s, c: s.vault.set_tier(c.id, "activation"),
        "already in the activation tier", None),
    "demoted-before-the-lock": (
        "demote", 1, lambda s, c: s.vault.set_tier(c.id, "plaintext"),
        "already in the plaintext tier", None),
    # another process promoted / demoted it after the re-read under this process's lock
    # (which does not span processes): the tier's compare-and-set fails (was "done", audited
    # twice)
    "promoted-during-the-write": (
        "promote", 2, lambda s, c: s.vault.set_tier(c.id, "activation"),
        "changed concurrently: already in the activation tier", None),
    "demoted-during-the-write": (
        "demote", 2, lambda s, c: s.vault.set_tier(c.id, "plaintext"),
        "changed concurrently: already in the plaintext tier", None),
}


@pytest.mark.parametrize("race", RACES)
def test_a_step_another_writer_got_to_first_is_skipped(store: MemOS, monkeypatch,
                                                       race: str) -> None:
    """Two runs at once (two server-mode processes): the one that did not write a change
    reports its step ``skipped`` with the reason, never ``done`` nor ``failed``, and the
    change is written and audited once."""
    kind, after_read, write, detail, action = RACES[race]
    if kind == "expire":
        cube = store.add("Alice parks in B12 this week.", user_id="alice", ttl_seconds=60)
        run_at, config = utcnow() + timedelta(seconds=61), EAGER
    elif kind == "archive":
        cube = store.add("Alice bought a blue umbrella.", user_id="alice")
        run_at = utcnow() + timedelta(minutes=5)
        config = SchedulerConfig(archive_after_idle_s=60.0, archive_max_heat=0.25)
    else:
        cube = store.add("Alice's cat is called Pastel.", user_id="alice")
        hit(store, cube)
        run_at, config = utcnow(), EAGER
        if kind == "demote":
            store.schedule(config=EAGER)
            run_at = utcnow() + timedelta(days=20)  # cooled down, not yet idle enough to archive
    reads = write_between(monkeypatch, store, cube.id, after_read, lambda: write(store, cube))

    report = engine_for(store).executor.run(now=run_at, config=config).for_user("alice")

    assert report is not None and len(reads) >= after_read
    steps = [s for s in report.steps if s.memory_id == cube.id]
    assert [(s.kind.value, s.status, s.detail) for s in steps] == [(kind, "skipped", detail)]
    audited = actions(store, "alice")
    assert f"schedule:{kind}" not in audited
    if action is not None:  # the other writer's change, once; no version by this run
        assert audited.count(action) == 1
        assert len(store.history(cube.id, user_id="alice")) == 2


def test_blocks_evicted_to_make_room_are_audited_and_reported(store: MemOS) -> None:
    """Under a tight KV budget the owner's superseded block is evicted inside the build of
    the new one, and another owner's block with it: both files (the memories' text) are
    gone, so both are audited -- ``schedule:drop`` for the owner, ``schedule:evict`` in the
    other owner's log -- and reported (before, neither was, and ``dropped_blocks`` said
    nothing was dropped)."""
    cat = store.add("Alice's cat is called Pastel.", user_id="alice")
    dog = store.add("Bob's dog is called Rex.", user_id="bob")
    hit(store, cat, dog)
    first = store.schedule(config=EAGER)
    old_alice = first.for_user("alice").block_id  # type: ignore[union-attr]
    old_bob = first.for_user("bob").block_id  # type: ignore[union-attr]
    tier = engine_for(store).tier
    assert {b.block_id for b in tier.blocks()} == {old_alice, old_bob}
    # room for one block only: Alice's next one evicts her old one and Bob's
    tier.budget = KVBudget(max_tokens=max(b.tokens for b in tier.blocks()) + 20)
    job = store.add("Alice works as a nurse in Lisbon.", user_id="alice")
    hit(store, job)

    alice = store.schedule(user_id="alice", config=EAGER).for_user("alice")

    assert alice is not None and alice.block_built and alice.error is None
    assert [b.block_id for b in tier.blocks()] == [alice.block_id]
    assert [p.stem for p in kv_files(store)] == [alice.block_id]
    assert alice.dropped_blocks == (old_alice,) and alice.evicted_blocks == (old_bob,)

    def blocks(user: str, action: str) -> list[str]:
        return [r.details["block_id"] for r in store.audit_log(user_id=user, action=action)
                if r.agent_id == SCHEDULER_AGENT]

    assert blocks("alice", "schedule:drop") == [old_alice]
    assert blocks("bob", "schedule:evict") == [old_bob]
    assert blocks("alice", "schedule:evict") == [] and blocks("bob", "schedule:drop") == []
    assert store.vault.verify_audit()[0]


@pytest.mark.parametrize("how", ["by-hand", "run-stopped"])
def test_an_expired_hot_memory_is_demoted_by_the_next_run(store: MemOS, how: str) -> None:
    """A hot memory that leaves the live states without its demotion -- expired by hand, or
    by a run stopped between its expire and demote steps -- is demoted by the next run
    (before, no run looked at it again: it kept ``tier == activation`` for good, and was
    served from the hot block the moment it was restored, with no promotion after its
    expiry). It is never served hot while expired."""
    ttl = 60 if how == "run-stopped" else None
    cat = store.add("Alice's cat is called Pastel.", user_id="alice", ttl_seconds=ttl)
    hit(store, cat)
    store.schedule(config=EAGER)
    executor = engine_for(store).executor
    assert [c.id for c in executor.hot_memories("alice")] == [cat.id]
    if how == "by-hand":
        store.set_state(cat.id, "expired", user_id="alice")
        run_at = utcnow()
    else:
        run_at = utcnow() + timedelta(seconds=61)
        stopped = executor.run(now=run_at, config=EAGER, should_stop=lambda: store.vault.get(
            cat.id).state is State.EXPIRED)  # type: ignore[union-attr]
        assert stopped.stopped and [s.kind for s in stopped.users[0].steps] == [StepKind.EXPIRE]
    left = store.get(cat.id, user_id="alice")
    assert left.state is State.EXPIRED and left.usage.tier is Tier.ACTIVATION
    assert executor.hot_memories("alice") == []

    alice = executor.run(now=run_at, config=EAGER).for_user("alice")

    assert alice is not None and alice.memories == 1
    assert [(s.kind, s.status, s.reason) for s in alice.steps] == [
        (StepKind.DEMOTE, "done", "memory is expired")]
    assert store.get(cat.id, user_id="alice").usage.tier is Tier.PLAINTEXT
    assert actions(store, "alice")[-1] == "schedule:demote"
    if how == "by-hand":  # restored: not hot until a run promotes it again, audited
        store.set_state(cat.id, "generated", user_id="alice")
        executor.forget_hot_sets()  # as a new process finds it
        assert executor.hot_memories("alice") == []
        again = executor.run(config=EAGER).for_user("alice")
        assert again is not None and [(s.kind, s.status) for s in again.steps] == [
            (StepKind.PROMOTE, "done")]
        assert actions(store, "alice")[-2:] == ["schedule:promote", "schedule:build"]
