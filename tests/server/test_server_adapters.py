"""The framework adapters in server mode: constructors take a ``postgresql://`` URL, and two
MemOS instances on one database (two "processes") share the LangGraph store's items."""

from __future__ import annotations

from operator import add
from typing import Annotated, TypedDict

import pytest

from memos_core import MemOS, MemOSConfig
from memos_core.errors import InvalidInputError
from memos_core.testing.late_writes import hold_after_commit
from memos_core import resolve_memos

langgraph_store = pytest.importorskip("langchain_memos")


class Counter(TypedDict):
    seen: Annotated[list[str], add]


@pytest.fixture
def two(pg_url):
    a = MemOS(pg_url, config=MemOSConfig(show_progress=False))
    b = MemOS(pg_url, config=MemOSConfig(show_progress=False))
    yield a, b
    a.close()
    b.close()


def test_resolve_memos_shares_one_instance_per_url(pg_url):
    first = resolve_memos(pg_url)
    try:
        assert isinstance(first, MemOS) and resolve_memos(pg_url) is first
        assert resolve_memos(first) is first and resolve_memos("./dir") == "./dir"
    finally:
        first.close()
    assert resolve_memos(pg_url) is not first  # a closed one is replaced
    resolve_memos(pg_url).close()
    # reopening leaves nothing behind: the closed instances are not kept alive (by one exit
    # hook each, as they were) and the one exit hook closes what is still open
    import gc
    import weakref

    from memos_core import memos as memos_module

    closed = weakref.ref(first)
    del first
    gc.collect()
    assert closed() is None
    last = resolve_memos(pg_url)
    memos_module._close_shared()
    assert last.closed


def test_adapters_accept_a_database_url(pg_url):
    from langchain_memos import MemOSStore

    store = MemOSStore(pg_url, user_label=0)
    try:
        store.put(("alice", "notes"), "k1", {"text": "The spare key is under the mat."})
        assert store.get(("alice", "notes"), "k1").value["text"].startswith("The spare key")
        assert store.mos is resolve_memos(pg_url)
    finally:
        store.mos.close()
    with pytest.raises(InvalidInputError):
        MemOSStore("./not-a-memos", user_label=0)


def test_langgraph_store_items_are_shared_between_processes(two):
    from langchain_memos import MemOSStore

    a, b = two
    store_a, store_b = MemOSStore(a, user_label=0), MemOSStore(b, user_label=0)
    store_a.put(("alice", "prefs"), "drink", {"text": "Alice drinks oolong tea."})
    item = store_b.get(("alice", "prefs"), "drink")
    assert item is not None and item.value == {"text": "Alice drinks oolong tea."}
    hits = store_b.search(("alice",), query="what does alice drink")
    assert [h.key for h in hits][:1] == ["drink"]
    store_b.put(("alice", "prefs"), "drink", {"text": "Alice drinks black coffee."})
    assert store_a.get(("alice", "prefs"), "drink").value["text"] == "Alice drinks black coffee."
    store_a.delete(("alice", "prefs"), "drink")
    assert store_b.get(("alice", "prefs"), "drink") is None
    assert store_b.search(("alice",), query="coffee") == []
    assert store_b.search(("bob",), query="coffee") == []


@pytest.mark.parametrize("last_indexed", [True, False])
def test_the_last_of_two_processes_puts_decides_if_an_item_is_searchable(
        two, monkeypatch, last_indexed):
    """Process A puts a key (one of indexed / not), process B puts it the other way right
    after A's commit: the item is B's, searchable exactly if B indexed it (A's state is
    part of A's version, not a later write that would land on B's)."""
    from langchain_memos import MemOSStore
    from langchain_memos import store as store_module

    a, b = two
    store_a, store_b = MemOSStore(a, user_label=0), MemOSStore(b, user_label=0)
    ns, last_index = ("alice", "diet"), None if last_indexed else False
    store_b.put(ns, "diet", {"text": "Alice eats fish"}, index=last_index)
    put_by_key, raced = store_module.put_by_key, []

    def then_process_b(*args, **kwargs):
        stored = put_by_key(*args, **kwargs)
        if not raced:
            raced.append(True)
            store_b.put(ns, "diet", {"text": "Alice is vegan now"}, index=last_index)
        return stored

    monkeypatch.setattr(store_module, "put_by_key", then_process_b)
    store_a.put(ns, "diet", {"text": "a draft"}, index=False if last_indexed else None)
    assert raced == [True]
    a.catch_up()
    for mos in (a, b):
        [cube] = mos.list(user_id="alice")
        found = [h.id for h in mos.search("Alice is vegan now", user_id="alice")]
        assert (cube.version, cube.state.value, found) == (
            (3, "generated", [cube.id]) if last_indexed else (3, "archived", []))


async def test_langgraph_checkpointer_conformance_on_postgres(pg_url):
    from langgraph.checkpoint.conformance import checkpointer_test, validate
    from langgraph.checkpoint.conformance.report import ProgressCallbacks

    from langchain_memos import MemOSCheckpointer

    mos = MemOS(pg_url, config=MemOSConfig(show_progress=False))
    try:
        @checkpointer_test(name="MemOSCheckpointer on PostgreSQL")
        async def fresh():  # noqa: ANN202 - an async generator of savers
            saver = MemOSCheckpointer(mos)
            yield saver
            saver.close()

        report = await validate(fresh, progress=ProgressCallbacks.quiet())
        failures = {name: r.failures for name, r in report.results.items() if r.failures}
        assert report.passed_all_base(), failures
        for name in ("delete_for_runs", "copy_thread"):
            assert report.results[name].passed, (name, report.results[name].failures)
    finally:
        mos.close()


def test_langgraph_thread_state_moves_between_processes(two):
    from langgraph.graph import END, START, StateGraph

    from langchain_memos import MemOSCheckpointer

    def graph(saver: MemOSCheckpointer):  # noqa: ANN202 - a compiled graph
        builder = StateGraph(Counter)
        builder.add_node("step", lambda state: {"seen": [f"step{len(state['seen'])}"]})
        builder.add_edge(START, "step")
        builder.add_edge("step", END)
        return builder.compile(checkpointer=saver)

    a, b = two
    config = {"configurable": {"thread_id": "t1"}}
    graph(MemOSCheckpointer(a)).invoke({"seen": ["in"]}, config)
    # worker b picks the thread up where worker a left it
    out = graph(MemOSCheckpointer(b)).invoke({"seen": ["again"]}, config)
    assert out["seen"] == ["in", "step1", "again", "step3"]


def test_llamaindex_chat_store_is_shared_and_forget_redacts_it(two, pg_url):
    from llama_index.core.llms import ChatMessage

    from llama_index.memory.memos import MemOSChatStore

    a, b = two
    store_a = MemOSChatStore(mos=a, user_id="alice")
    store_b = MemOSChatStore(mos=b, user_id="alice")
    store_a.add_message("chat-1", ChatMessage(role="user", content="My locker code is 7319."))
    store_b.add_message("chat-1", ChatMessage(role="assistant", content="Noted."))
    assert [m.content for m in store_a.get_messages("chat-1")] == [
        "My locker code is 7319.", "Noted."]
    assert MemOSChatStore(mos=b, user_id="bob").get_messages("chat-1") == []
    memory = a.add("My locker code is 7319.", user_id="alice")
    b.forget(memory.id, user_id="alice")  # the other process forgets it
    assert all("7319" not in (m.content or "") for m in store_a.get_messages("chat-1"))
    import psycopg

    with psycopg.connect(pg_url) as conn:
        for table in ("conversation_log", "versions", "memories"):
            # the text, not "7319" alone: a row's timestamps and uuids hold four such digits
            # once in a few hundred tests
            n = conn.execute(f"SELECT COUNT(*) FROM {table} x WHERE strpos(x::text, %s) > 0",
                             ("locker code is 7319",)).fetchone()[0]
            assert n == 0, table


def test_forget_redacts_copies_in_the_other_unicode_form_on_postgres(two, pg_url):
    """The PostgreSQL filters (strpos on the log, on the memories' documents) select a copy
    in the other Unicode form too, and it is redacted: a chat store's message in NFD of a
    memory stored NFC, a chat history's message in NFC of one stored NFD."""
    import unicodedata

    import psycopg
    from langchain_core.messages import HumanMessage
    from llama_index.core.llms import ChatMessage

    from langchain_memos import MemOSChatMessageHistory
    from llama_index.memory.memos import MemOSChatStore

    a, b = two

    def nfd(text: str) -> str:
        return unicodedata.normalize("NFD", text)

    logged = "Renée's locker at Göttingen station is 7319"  # composed (NFC), as typed here
    said = "Zoë's bike lock at Bahnhof Zürich is 5582"
    MemOSChatStore(mos=a, user_id="alice").add_message(
        "chat-1", ChatMessage(role="user", content=f"note: {nfd(logged)}"))
    MemOSChatMessageHistory(a, user_id="alice", session_id="s").add_messages(
        [HumanMessage(f"note: {said}")])
    # the history's hook is on `a`, the MemOS it was built on
    for text in (logged, nfd(said)):
        a.forget(b.add(text, user_id="alice").id, user_id="alice")
    markers = ["locker at G", "lock at Bahnhof Z", "Renée", nfd("Renée"), "Zoë", nfd("Zoë")]
    with psycopg.connect(pg_url) as conn:
        for table in ("conversation_log", "versions", "memories"):
            for marker in markers:
                n = conn.execute(f"SELECT COUNT(*) FROM {table} x WHERE strpos(x::text, %s) > 0",
                                 (marker,)).fetchone()[0]
                assert n == 0, (table, marker)


# -- the MemOS closed under the adapters: its closed error, not "Lost the connection" ------

def _checkpointer_calls():  # noqa: ANN202 - name -> call(checkpointer, chat store, async store)
    import asyncio

    from langgraph.checkpoint.base import empty_checkpoint
    from llama_index.core.llms import ChatMessage

    config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    hi = ChatMessage(role="user", content="hi")

    async def alist(saver):  # noqa: ANN001, ANN202
        return [t async for t in saver.alist(config)]

    return {
        "put": lambda cp, cs, acs: cp.put(config, empty_checkpoint(), {"step": 1}, {}),
        "get_tuple": lambda cp, cs, acs: cp.get_tuple(config),
        "list": lambda cp, cs, acs: list(cp.list(config)),
        "aput": lambda cp, cs, acs: asyncio.run(
            cp.aput(config, empty_checkpoint(), {"step": 1}, {})),
        "aget_tuple": lambda cp, cs, acs: asyncio.run(cp.aget_tuple(config)),
        "alist": lambda cp, cs, acs: asyncio.run(alist(cp)),
        "chat store add_message": lambda cp, cs, acs: cs.add_message("k", hi),
        "chat store aget_messages": lambda cp, cs, acs: asyncio.run(cs.aget_messages("k")),
        "async chat store add_message": lambda cp, cs, acs: asyncio.run(acs.add_message("k", hi)),
        "async chat store get_messages": lambda cp, cs, acs: asyncio.run(acs.get_messages("k")),
    }


@pytest.mark.parametrize("name", list(_checkpointer_calls()))
def test_adapter_calls_after_close_raise_the_closed_error(open_mos, name):
    pytest.importorskip("llama_index.memory.memos")
    from langchain_memos import MemOSCheckpointer
    from langgraph.checkpoint.base import empty_checkpoint
    from llama_index.memory.memos import MemOSAsyncChatStore, MemOSChatStore

    mos = open_mos()
    saver = MemOSCheckpointer(mos)
    saver.put({"configurable": {"thread_id": "t", "checkpoint_ns": ""}}, empty_checkpoint(),
              {"step": 0}, {})
    stores = MemOSChatStore(mos=mos, user_id="alice"), MemOSAsyncChatStore(mos=mos, user_id="alice")
    mos.close()
    with pytest.raises(InvalidInputError, match="This MemOS is closed"):
        _checkpointer_calls()[name](saver, *stores)


async def test_native_checkpoint_write_in_flight_is_waited_for_by_aclose(open_mos, monkeypatch):
    """A native ``aput`` held on its connection while ``aclose()`` starts: aclose waits for
    it, and it lands."""
    import asyncio

    from langchain_memos import MemOSCheckpointer
    from langgraph.checkpoint.base import empty_checkpoint

    mos = open_mos()
    saver = MemOSCheckpointer(mos)
    view = mos.store.vault.native_async()
    original = view.cp_put
    entered, release = asyncio.Event(), asyncio.Event()

    async def held(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        entered.set()
        await release.wait()
        return await original(*args, **kwargs)

    monkeypatch.setattr(view, "cp_put", held)
    config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    write = asyncio.create_task(saver.aput(config, empty_checkpoint(), {"step": 1}, {}))
    await entered.wait()
    closing = asyncio.create_task(mos.aclose())
    await asyncio.wait({closing}, timeout=1.0)  # a close that did not wait is done by now
    release.set()
    await write  # landed: not "The vault ... is closed"
    await closing
    assert mos.closed
    assert MemOSCheckpointer(open_mos()).get_tuple(config) is not None


@pytest.mark.parametrize("cancelled", [False, True], ids=["awaited", "cancelled"])
@pytest.mark.parametrize("call", ["aput", "aput_writes"])
async def test_a_native_checkpoint_written_while_a_forget_runs_is_redacted(open_mos, monkeypatch,
                                                                             call, cancelled):
    """A native ``aput``/``aput_writes`` looks for recent forgets, then commits: a forget
    whose pass ran in between (from another thread) missed it, and it landed with the
    text. The write now notices the pass after its commit and redacts the stored threads
    again -- also when its caller is cancelled between the commit and that redaction
    (which used to leave the text): the two are one unit, which runs to its end after its
    caller stopped waiting."""
    import asyncio
    import threading

    from langchain_core.messages import HumanMessage
    from langchain_memos import MemOSCheckpointer
    from langgraph.checkpoint.base import empty_checkpoint

    secret = "My locker code is MARMOT9920"
    mos = open_mos()
    saver = MemOSCheckpointer(mos)
    config = {"configurable": {"thread_id": "t", "checkpoint_ns": "", "user_id": "dana"}}
    written = saver.put(config, empty_checkpoint(), {"user_id": "dana"}, {})
    [memory] = mos.add([{"role": "user", "content": secret}], user_id="dana")
    view = mos.store.vault.native_async()
    name = "cp_put" if call == "aput" else "cp_put_writes"
    original = getattr(view, name)
    forgetting = threading.Thread(target=lambda: mos.forget(memory.id, user_id="dana"))

    async def while_a_forget_runs(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        forgetting.start()
        await asyncio.to_thread(forgetting.join, 60)  # its pass runs before this write lands
        return await original(*args, **kwargs)

    monkeypatch.setattr(view, name, while_a_forget_runs)
    waiting, go = hold_after_commit(mos, monkeypatch)
    if call == "aput":
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"messages": [HumanMessage(secret)]}
        checkpoint["channel_versions"] = {"messages": "1"}
        write = saver.aput(written, checkpoint, {"user_id": "dana"}, {"messages": "1"})
    else:
        write = saver.aput_writes(written, [("messages", [HumanMessage(secret)])], "task")
    task = asyncio.ensure_future(write)
    assert await asyncio.to_thread(waiting.wait, 30)
    if cancelled:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task  # the caller stops waiting at once
        go.set()
        await asyncio.gather(*(asyncio.all_tasks() - {asyncio.current_task()}))  # the unit
        newest = saver.get_tuple({"configurable": {"thread_id": "t", "checkpoint_ns": ""}})
        written = newest.config if call == "aput" else written
    else:
        go.set()
        result = await task
        written = result if call == "aput" else written
    monkeypatch.setattr(view, name, original)
    stored = saver.get_tuple(written)
    values = (stored.checkpoint["channel_values"].get("messages", []) if call == "aput"
              else stored.pending_writes[0][2])
    assert [m.content for m in values] == ["[forgotten]"]


def test_every_adapter_takes_a_database_url(pg_url):
    """scale_out.md: the adapters take a ``postgresql://`` URL wherever they take a MemOS
    (the process's shared one). ``MemOSRetriever`` refused it (a pydantic error)."""
    from langchain_memos import (
        MemOSChatMessageHistory,
        MemOSCheckpointer,
        MemOSMiddleware,
        MemOSRetriever,
        MemOSStore,
        create_memory_tools,
    )
    from llama_index.memory.memos import (
        MemOSAsyncChatStore,
        MemOSChatStore,
        MemOSLLM,
        MemOSMemory,
        MemOSMemoryBlock,
        memos_tools,
    )
    from llama_index.memory.memos import MemOSRetriever as LlamaRetriever

    shared = resolve_memos(pg_url)
    try:
        built = [
            MemOSRetriever(pg_url, user_id="alice"), MemOSRetriever(mos=pg_url, user_id="alice"),
            MemOSChatMessageHistory(pg_url, user_id="alice", session_id="s"),
            MemOSCheckpointer(pg_url), MemOSMiddleware(pg_url), MemOSStore(pg_url, user_label=0),
            MemOSChatStore(mos=pg_url), MemOSAsyncChatStore(mos=pg_url),
            MemOSMemory.from_defaults(mos=pg_url, user_id="alice", session_id="s"),
            MemOSMemoryBlock(mos=pg_url, user_id="alice"), LlamaRetriever(pg_url, user_id="alice"),
            MemOSLLM(mos=pg_url, user_id="alice"),
        ]
        assert all(adapter.mos is shared for adapter in built)
        assert create_memory_tools(pg_url, user_id="alice") and memos_tools(pg_url, user_id="alice")
        shared.add("The spare key is under the mat.", user_id="alice")
        assert built[0].invoke("spare key")[0].page_content == "The spare key is under the mat."
    finally:
        shared.close()


@pytest.mark.parametrize("mode", ["embedded", "server"])
async def test_checkpointer_twins_report_a_bad_config_before_a_closed_store(
        mode, pg_url, tmp_path):
    """Every checkpointer method, sync or async, checks its config first and then whether
    it (or its MemOS) is closed; the async twins and ``put_writes`` checked closed first."""
    from langgraph.checkpoint.base import empty_checkpoint

    from langchain_memos import MemOSCheckpointer

    mos = MemOS(pg_url if mode == "server" else tmp_path / "d",
                config=MemOSConfig(show_progress=False))
    no_thread, no_id = {"configurable": {}}, {"configurable": {"thread_id": "t1"}}
    checkpoint = empty_checkpoint()

    async def errors(saver: MemOSCheckpointer) -> list[tuple[str, str]]:
        pairs = [(lambda: saver.get_tuple(no_thread), lambda: saver.aget_tuple(no_thread)),
                 (lambda: saver.put(no_thread, checkpoint, {}, {}),
                  lambda: saver.aput(no_thread, checkpoint, {}, {})),
                 (lambda: saver.put_writes(no_id, [("x", 1)], "task"),
                  lambda: saver.aput_writes(no_id, [("x", 1)], "task"))]
        out = []
        for sync, twin in pairs:
            with pytest.raises(InvalidInputError) as sync_error:
                sync()
            with pytest.raises(InvalidInputError) as twin_error:
                await twin()
            out.append((str(sync_error.value), str(twin_error.value)))
        return out

    closed = MemOSCheckpointer(mos)
    closed.close()
    other = MemOSCheckpointer(mos)
    try:
        for sync, twin in await errors(closed):
            assert sync == twin and "closed" not in sync
        await mos.aclose()
        for sync, twin in await errors(other):
            assert sync == twin and "closed" not in sync
    finally:
        mos.close()


def test_a_forget_killed_in_the_chat_history_hook_leaves_no_text_once_retried(pg_url, tmp_path):
    """Server mode: a process killed right after the history hook's commit of a redacted
    message (integrations/langchain/tests/forget_crash_child.py) has redacted the message's
    earlier version in the same transaction, so the retried forget leaves no live row
    holding the text (the two commits it used to make left version 1 holding it for good)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import psycopg

    from langchain_memos import MemOSChatMessageHistory

    child = Path(__file__).parents[2] / "integrations/langchain/tests/forget_crash_child.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(child), pg_url, str(tmp_path / "ids.json")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == -9, done.stderr[-3000:]
    ids = json.loads((tmp_path / "ids.json").read_text())
    with MemOS(pg_url, config=MemOSConfig.preset("test")) as mos:
        assert ["ZZPIN4711" in v.text for v in mos.history(ids["message"], user_id="alice")] == [
            False, False]
        MemOSChatMessageHistory(mos, user_id="alice", session_id="other")  # the hook, here too
        mos.forget(ids["pin"], user_id="alice")
    with psycopg.connect(pg_url) as conn:
        for table in ("memories", "versions", "audit", "conversation_log", "changes"):
            rows = conn.execute(f"SELECT * FROM {table}").fetchall()
            assert not [r for r in rows if "ZZPIN4711" in str(r)], table
