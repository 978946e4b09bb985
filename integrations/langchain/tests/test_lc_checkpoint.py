"""MemOSCheckpointer: LangGraph's checkpointer conformance suite, persistence, bad input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from operator import add
from pathlib import Path
from typing import Annotated, TypedDict

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.report import ProgressCallbacks
from langgraph.graph import END, START, StateGraph
from memos_core.testing.closing import close_during
from memos_core import CorruptDataError, InvalidInputError, MemOS

from langchain_memos import MemOSCheckpointer
from langchain_memos.checkpoint import FILENAME


async def test_conformance_suite(mos: MemOS) -> None:
    @checkpointer_test(name="MemOSCheckpointer")
    async def fresh() -> AsyncIterator[MemOSCheckpointer]:
        saver = MemOSCheckpointer(mos)
        yield saver
        saver.close()

    report = await validate(fresh, progress=ProgressCallbacks.quiet())
    failures = {name: r.failures for name, r in report.results.items() if r.failures}
    assert report.passed_all_base(), failures
    # The optional capabilities it implements pass too; prune is deliberately not offered.
    for name in ("delete_for_runs", "copy_thread"):
        assert report.results[name].passed, (name, report.results[name].failures)
    assert not report.results["prune"].detected


class Counter(TypedDict):
    seen: Annotated[list[str], add]


def _graph(checkpointer: MemOSCheckpointer):  # noqa: ANN202 - a compiled graph
    def step(state: Counter) -> dict[str, list[str]]:
        return {"seen": [f"step{len(state['seen'])}"]}

    builder = StateGraph(Counter)
    builder.add_node("step", step)
    builder.add_edge(START, "step")
    builder.add_edge("step", END)
    return builder.compile(checkpointer=checkpointer)


def test_thread_state_survives_a_restart(make_mos: Callable[..., MemOS]) -> None:
    mos = make_mos("restart")
    saver = MemOSCheckpointer(mos)
    config = {"configurable": {"thread_id": "t1"}}
    _graph(saver).invoke({"seen": ["in"]}, config)
    assert not (mos.data_dir / FILENAME).exists()  # no side file: the vault holds them
    assert [r.thread_id for r in mos.store.vault.cp_list(limit=1)] == ["t1"]
    saver.close()
    mos.close()

    again = MemOSCheckpointer(make_mos("restart"))
    graph = _graph(again)
    assert graph.get_state(config).values == {"seen": ["in", "step1"]}
    assert graph.invoke({"seen": ["more"]}, config) == {"seen": ["in", "step1", "more", "step3"]}
    assert len(list(graph.get_state_history(config))) >= 4
    again.close()


_LEGACY_SCHEMA = """
CREATE TABLE checkpoints (thread_id TEXT NOT NULL, checkpoint_ns TEXT NOT NULL,
    checkpoint_id TEXT NOT NULL, parent_checkpoint_id TEXT, run_id TEXT, type TEXT NOT NULL,
    checkpoint BLOB NOT NULL, metadata_type TEXT NOT NULL, metadata BLOB NOT NULL,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id));
CREATE TABLE blobs (thread_id TEXT NOT NULL, checkpoint_ns TEXT NOT NULL, channel TEXT NOT NULL,
    version TEXT NOT NULL, type TEXT NOT NULL, value BLOB,
    PRIMARY KEY (thread_id, checkpoint_ns, channel, version));
CREATE TABLE writes (thread_id TEXT NOT NULL, checkpoint_ns TEXT NOT NULL,
    checkpoint_id TEXT NOT NULL, task_id TEXT NOT NULL, idx INTEGER NOT NULL,
    channel TEXT NOT NULL, type TEXT NOT NULL, value BLOB, task_path TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx));
"""


def test_an_old_checkpoints_file_moves_into_the_vault(make_mos: Callable[..., MemOS]) -> None:
    """A data directory from before the vault held checkpoints: its checkpoints.sqlite3
    (the old layout, real rows) is moved in on first open and deleted; the thread resumes."""
    import sqlite3

    mos = make_mos("legacy")
    config = {"configurable": {"thread_id": "old"}}
    with MemOSCheckpointer(mos) as saver:
        _graph(saver).invoke({"seen": ["in"]}, config)
    vault = mos.store.vault
    legacy = sqlite3.connect(mos.data_dir / FILENAME)
    legacy.executescript(_LEGACY_SCHEMA)
    records = vault.cp_list("old")
    for r in records:
        legacy.execute("INSERT INTO checkpoints VALUES (?,?,?,?,?,?,?,?,?)",
                       (r.thread_id, r.checkpoint_ns, r.checkpoint_id, r.parent_checkpoint_id,
                        r.run_id, *r.checkpoint, *r.metadata))
    db = vault._db  # the SQLite vault's own rows of the other two tables, copied as they are
    legacy.executemany("INSERT INTO blobs VALUES (?,?,?,?,?,?)",
                       db.execute("SELECT * FROM cp_blobs").fetchall())
    legacy.executemany("INSERT INTO writes VALUES (?,?,?,?,?,?,?,?,?)",
                       db.execute("SELECT thread_id, checkpoint_ns, checkpoint_id, task_id, idx, "
                                  "channel, type, value, task_path FROM cp_writes").fetchall())
    legacy.commit()
    legacy.close()
    vault.cp_delete_thread("old")
    assert len(records) >= 2 and vault.cp_list() == []
    with MemOSCheckpointer(mos) as again:
        assert not (mos.data_dir / FILENAME).exists()
        assert _graph(again).get_state(config).values == {"seen": ["in", "step1"]}
        assert len(vault.cp_list("old")) == len(records)


def _foreign_checkpoints_file(path: Path) -> None:  # another program's checkpoints table
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE checkpoints (x TEXT)")
        db.execute("INSERT INTO checkpoints VALUES ('hello')")
        db.commit()


@pytest.mark.parametrize("damage, reason", [
    (lambda path: path.write_bytes(b"this is not sqlite" * 100), "file is not a database"),
    (_foreign_checkpoints_file, "no such column"),
])
def test_a_damaged_old_checkpoints_file_is_named_not_a_raw_sqlite_error(
        mos: MemOS, damage: Callable[[Path], None], reason: str) -> None:
    """A checkpoints.sqlite3 that is damaged or not the old checkpointer's: forgetting
    (its file redactor) and opening a checkpointer (the move) refuse with a
    CorruptDataError naming the file and saying to move it away; nothing changes. Once it
    is moved, both go through."""
    path = mos.data_dir / FILENAME
    fact = mos.add("Dana's passport number is QX77130", user_id="dana")
    damage(path)
    before = path.read_bytes()
    for attempt in (lambda: mos.forget(fact.id, user_id="dana"),
                    lambda: MemOSCheckpointer(mos)):
        with pytest.raises(CorruptDataError, match=reason) as caught:
            attempt()
        assert str(path) in str(caught.value)
        assert "Move it out of the data directory" in str(caught.value)
    assert path.read_bytes() == before
    assert mos.get(fact.id, user_id="dana").text == "Dana's passport number is QX77130"

    path.rename(mos.data_dir.parent / "moved-away.sqlite3")
    MemOSCheckpointer(mos).close()
    assert mos.forget(fact.id, user_id="dana").memory_id == fact.id


async def test_async_graph_and_thread_deletion(mos: MemOS) -> None:
    with MemOSCheckpointer(mos) as saver:
        graph = _graph(saver)
        config = {"configurable": {"thread_id": "t-async"}}
        assert await graph.ainvoke({"seen": ["a"]}, config) == {"seen": ["a", "step1"]}
        assert (await graph.aget_state(config)).values["seen"] == ["a", "step1"]
        await saver.adelete_thread("t-async")
        assert await saver.aget_tuple(config) is None
        await saver.adelete_thread("never-existed")  # deleting a missing thread is a no-op


def test_values_are_not_pickled(mos: MemOS) -> None:
    with MemOSCheckpointer(mos) as saver:
        _graph(saver).invoke({"seen": ["x"]}, {"configurable": {"thread_id": "t"}})
        vault = mos.store.vault
        records = vault.cp_list("t")
        types = {t for r in records for t in (r.checkpoint[0], r.metadata[0])}
        for r in records:
            versions = saver.serde.loads_typed(r.checkpoint)["channel_versions"]
            types |= {v[0] for v in vault.cp_blobs("t", "", {c: str(x) for c, x in versions.items()}).values()}
    assert "pickle" not in types and types <= {"msgpack", "json", "empty", "null", "bytes", "bytearray"}


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda s: s.get_tuple({"configurable": {}}), "thread_id"),
        (lambda s: s.get_tuple({}), "thread_id"),
        (lambda s: s.put_writes({"configurable": {"thread_id": "t"}}, [("c", 1)], "task"), "checkpoint_id"),
    ],
)
def test_bad_config_gets_a_clear_error(module_mos: MemOS, call: Callable[[MemOSCheckpointer], object],
                                      words: str) -> None:
    with MemOSCheckpointer(module_mos) as saver, pytest.raises(InvalidInputError, match=words):
        call(saver)


def test_closed_and_wrong_constructor_argument(mos: MemOS, tmp_path) -> None:  # noqa: ANN001
    saver = MemOSCheckpointer(mos)
    saver.close()
    saver.close()  # idempotent
    with pytest.raises(InvalidInputError, match="closed"):
        saver.get_tuple({"configurable": {"thread_id": "t"}})
    with pytest.raises(InvalidInputError, match="MemOS"):
        MemOSCheckpointer(str(tmp_path))  # type: ignore[arg-type]


# -- the MemOS closed under the checkpointer: its closed error, never the driver's --------

_CONFIG = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}


def _put(saver: MemOSCheckpointer) -> object:
    return saver.put(_CONFIG, empty_checkpoint(), {"step": 1}, {})


async def _aput(saver: MemOSCheckpointer) -> object:
    return await saver.aput(_CONFIG, empty_checkpoint(), {"step": 1}, {})


async def _alist(saver: MemOSCheckpointer) -> object:
    return [t async for t in saver.alist(_CONFIG)]


_AFTER_CLOSE: dict[str, Callable[[MemOSCheckpointer], object]] = {
    "put": _put,
    "put_writes": lambda s: s.put_writes({"configurable": {**_CONFIG["configurable"],
                                                           "checkpoint_id": "c"}},
                                         [("ch", 1)], "task"),
    "get_tuple": lambda s: s.get_tuple(_CONFIG),
    "list": lambda s: list(s.list(_CONFIG)),
    "list (every thread)": lambda s: list(s.list(None)),
    "delete_thread": lambda s: s.delete_thread("t"),
    "aput": lambda s: asyncio.run(_aput(s)),
    "aget_tuple": lambda s: asyncio.run(s.aget_tuple(_CONFIG)),
    "alist": lambda s: asyncio.run(_alist(s)),
}


@pytest.mark.parametrize("call", list(_AFTER_CLOSE.values()), ids=list(_AFTER_CLOSE))
def test_calls_after_the_mos_closed_raise_its_closed_error(
        make_mos: Callable[..., MemOS], call: Callable[[MemOSCheckpointer], object]) -> None:
    """Not ``sqlite3.ProgrammingError: Cannot operate on a closed database``."""
    mos = make_mos()
    saver = MemOSCheckpointer(mos)
    _put(saver)
    mos.close()
    with pytest.raises(InvalidInputError, match="This MemOS is closed"):
        call(saver)


@pytest.mark.parametrize("call", [_put, lambda s: asyncio.run(_aput(s))], ids=["put", "aput"])
def test_close_waits_for_a_checkpoint_write_in_flight(
        make_mos: Callable[..., MemOS], monkeypatch: pytest.MonkeyPatch,
        call: Callable[[MemOSCheckpointer], object]) -> None:
    mos = make_mos()
    saver = MemOSCheckpointer(mos)
    outcome = close_during(mos, monkeypatch, "cp_put", lambda: call(saver))
    assert "error" not in outcome, outcome
    reopened = make_mos()
    assert MemOSCheckpointer(reopened).get_tuple(_CONFIG) is not None  # it landed


async def test_writes_racing_aclose_land_or_raise_the_closed_error(
        make_mos: Callable[..., MemOS]) -> None:
    """Writers that keep writing until the MemOS is closed under them: each write lands or
    raises the closed error."""
    mos = make_mos()
    saver = MemOSCheckpointer(mos)
    landed = 0

    async def writer(thread: int) -> BaseException | None:
        nonlocal landed
        config = {"configurable": {"thread_id": f"t{thread}", "checkpoint_ns": ""}}
        for step in range(10_000):
            try:
                await saver.aput(config, empty_checkpoint(), {"step": step}, {})
            except Exception as exc:  # noqa: BLE001 - checked below
                return exc
            landed += 1
        return None

    tasks = [asyncio.create_task(writer(i)) for i in range(8)]
    while landed < 40:
        await asyncio.sleep(0.001)
    await mos.aclose()
    errors = await asyncio.gather(*tasks)
    assert all(isinstance(e, InvalidInputError) and "This MemOS is closed" in str(e)
               for e in errors), {f"{type(e).__name__}: {str(e)[:60]}" for e in errors}
