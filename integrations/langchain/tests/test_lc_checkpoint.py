"""MemOSCheckpointer: LangGraph's checkpointer conformance suite, persistence, bad input."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from operator import add
from typing import Annotated, TypedDict

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.report import ProgressCallbacks
from langgraph.graph import END, START, StateGraph
from memos_core import InvalidInputError, MemOS

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
    assert (mos.data_dir / FILENAME).exists()
    saver.close()
    mos.close()

    again = MemOSCheckpointer(make_mos("restart"))
    graph = _graph(again)
    assert graph.get_state(config).values == {"seen": ["in", "step1"]}
    assert graph.invoke({"seen": ["more"]}, config) == {"seen": ["in", "step1", "more", "step3"]}
    assert len(list(graph.get_state_history(config))) >= 4
    again.close()


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
        types = {row[0] for row in saver._execute("SELECT type FROM blobs UNION SELECT type FROM checkpoints")}
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
