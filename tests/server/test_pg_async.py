"""Native async server mode (memos_core.vault.pg_async): the async paths answer exactly what the
sync ones do -- same rows, same errors -- on a real PostgreSQL, under concurrency on one loop
with a small pool, from a second event loop, and their pools close with the MemOS."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from operator import add
from typing import Annotated, TypedDict

import psycopg
import pytest

from memos_core import MemOS, MemOSConfig
from memos_core.errors import (
    AccessDeniedError,
    InvalidInputError,
    MemoryDeletedError,
    MemoryNotFoundError,
    ServerUnavailableError,
)
from memos_core.integration import (
    CheckpointRecord,
    ConversationLog,
    ItemKey,
    aget_by_key,
    aiter_by_prefix,
    get_by_key,
    has_native_async,
    iter_by_prefix,
    put_by_key,
)
from memos_core.vault import ListQuery

APP = "memos-vault-async"


@pytest.fixture
def smos(pg_url):
    """A server-mode MemOS with a small pool (2 connections per pool)."""
    mos = MemOS(pg_url, config=MemOSConfig(show_progress=False, pool_size=2, listen=False))
    yield mos
    mos.close()


def _async_conns(url: str) -> int:
    """Connections of native async pools to this database, as the server sees them."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name=%s "
                           "AND datname=current_database()", (APP,)).fetchone()
    return int(row[0]) if row else 0


def _wait_no_conns(url: str, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while (n := _async_conns(url)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return n


def _raises(fn, *args, **kwargs):
    """The (type, message) a sync call raises."""
    with pytest.raises(Exception) as info:
        fn(*args, **kwargs)
    return type(info.value), str(info.value)


async def _araises(coro):
    with pytest.raises(Exception) as info:
        await coro
    return type(info.value), str(info.value)


def _record(thread: str, cid: str, parent: str | None = None, run: str | None = None):
    return CheckpointRecord(thread, "", cid, parent, run, ("json", f"cp-{cid}".encode()),
                            ("json", b'{"step": 1}'))


async def test_async_view_checkpoints_match_sync(smos):
    vault = smos.vault
    view = vault.native_async()
    blobs = [("messages", "1", ("json", b"[1]")), ("empty", "2", ("empty", None))]
    # the same writes, one thread through each path
    for path, thread in (("sync", "ts"), ("async", "ta")):
        for i, (cid, parent) in enumerate((("c1", None), ("c2", "c1"), ("c3", "c2"))):
            record, writes = _record(thread, cid, parent, f"run{i % 2}"), [
                (0, "ch", ("json", b'"w0"')), (-1, "__error__", ("json", b'"e"'))]
            if path == "sync":
                vault.cp_put(record, blobs)
                vault.cp_put_writes(thread, "", cid, "task", "p", writes)
            else:
                await view.cp_put(record, blobs)
                await view.cp_put_writes(thread, "", cid, "task", "p", writes)

    def same(a, b):  # equal but for the thread id
        return [replace(r, thread_id="t") for r in a] == [replace(r, thread_id="t") for r in b]

    for cid in ("c1", "c3", None, "missing"):
        a, s = await view.cp_get("ta", "", cid), vault.cp_get("ts", "", cid)
        assert (a is None) == (s is None) and (a is None or same([a], [s]))
    for kwargs in ({}, {"before": "c3"}, {"limit": 1}, {"checkpoint_id": "c2"}):
        assert same(await view.cp_list("ta", "", **kwargs), vault.cp_list("ts", "", **kwargs))
    assert len(await view.cp_list()) == len(vault.cp_list()) == 6
    versions = {"messages": "1", "empty": "2", "nope": "9"}
    assert await view.cp_blobs("ta", "", versions) == vault.cp_blobs("ts", "", versions)
    assert await view.cp_blobs("ta", "", {}) == vault.cp_blobs("ts", "", {}) == {}
    assert await view.cp_writes("ta", "", "c2") == vault.cp_writes("ts", "", "c2")
    assert len(vault.cp_writes("ta", "", "c2")) == 2
    # copy, delete runs, delete thread: the same effect either way
    await view.cp_copy_thread("ta", "ta2")
    vault.cp_copy_thread("ts", "ts2")
    assert same(vault.cp_list("ta2"), vault.cp_list("ts2"))
    await view.cp_delete_runs(["run0"])
    vault.cp_delete_runs(["run0"])
    assert [r.checkpoint_id for r in vault.cp_list("ta")] == \
        [r.checkpoint_id for r in vault.cp_list("ts")] == ["c2"]
    await view.cp_delete_runs([])
    await view.cp_delete_thread("ta2")
    vault.cp_delete_thread("ts2")
    assert await view.cp_list("ta2") == vault.cp_list("ts2") == []


async def test_async_view_logs_and_reads_match_sync(smos):
    vault = smos.vault
    view = vault.native_async()
    rows = [(f"m{i}", f'{{"n": {i}}}') for i in range(6)]
    await view.log_append("u", "a", rows, "active")
    vault.log_append("u", "s", rows, "active")
    assert await view.log_read("u", "a", "active") == vault.log_read("u", "s", "active") == rows
    assert await view.log_read("u", "a", None, 2, 1) == vault.log_read("u", "s", None, 2, 1)
    assert await view.log_count("u", "a", None) == vault.log_count("u", "s", None) == 6
    assert await view.log_take_oldest("u", "a", 2, archive=True) == \
        vault.log_take_oldest("u", "s", 2, archive=True)
    assert await view.log_take_oldest("u", "a", 1, archive=False) == \
        vault.log_take_oldest("u", "s", 1, archive=False)
    assert await view.log_read("u", "a", "archived") == vault.log_read("u", "s", "archived")
    for idx in (0, -1, 99, -99):
        assert await view.log_delete_at("u", "a", idx, "active") == \
            vault.log_delete_at("u", "s", idx, "active")
    await view.log_replace("u", "a", rows[:2], "active", "active")
    vault.log_replace("u", "s", rows[:2], "active", "active")
    assert await view.log_read("u", "a", None) == vault.log_read("u", "s", None)
    assert await view.log_ids("u") == vault.log_ids("u") == ["a", "s"]
    assert await view.log_ids("nobody") == vault.log_ids("nobody") == []
    assert await view.log_delete("u", "a", None) == vault.log_delete("u", "s", None)
    assert await view.log_delete("u", "a", None) == vault.log_delete("u", "s", None) == []
    # bad input: the same error, and nothing written
    assert await _araises(view.log_append("u", "a", rows, "bogus")) == \
        _raises(vault.log_append, "u", "s", rows, "bogus")
    assert await _araises(view.log_read("u", "a", "bogus")) == \
        _raises(vault.log_read, "u", "s", "bogus")
    assert await view.log_count("u", "a", None) == 0
    # the log writes took the vault's write lock and wrote no change-feed row
    assert await view.change_head() == vault.change_head()

    # memories: get / get_many / list / history, keyed reads
    cube = smos.add("Ada keeps her bike in the blue shed.", user_id="ada")
    smos.update(cube.id, "Ada keeps her bike in the green shed.", user_id="ada")
    item = ItemKey("ada", ("prefs", "x"), "bike")
    keyed = put_by_key(smos, item, "Ada rides a red bike.")
    put_by_key(smos, ItemKey("ada", ("prefs", "y"), "k2"), "Ada likes hills.")
    for mid in (cube.id, keyed.id, "no-such-id"):
        assert await view.get(mid) == vault.get(mid)
        assert await view.history(mid) == vault.history(mid)
    assert await view.get_many([cube.id, "nope", keyed.id, cube.id]) == \
        vault.get_many([cube.id, "nope", keyed.id, cube.id])
    for query in (ListQuery(user_ids=("ada",)), ListQuery(user_ids=("ada",), newest_first=True,
                                                          limit=1), ListQuery(user_ids=("bob",))):
        assert await view.list(query) == vault.list(query)
    assert await view.get_keyed(item) == vault.get_keyed(item)
    assert await view.get_keyed(ItemKey("ada", ("prefs",), "none")) is None
    for prefix in ((), ("prefs",), ("prefs", "y"), ("other",)):
        assert await view.list_keyed("ada", prefix) == vault.list_keyed("ada", prefix)
    assert await _araises(view.list_keyed("ada", ("",))) == _raises(vault.list_keyed, "ada", ("",))
    assert await aget_by_key(smos, item) == get_by_key(smos, item)
    assert [p async for p in aiter_by_prefix(smos, "ada", ("prefs",))] == \
        list(iter_by_prefix(smos, "ada", ("prefs",)))
    assert await _araises(aget_by_key(smos, "not an item")) == \
        _raises(get_by_key, smos, "not an item")


def _refuse(*args, **kwargs):
    raise AssertionError("the native path called the sync vault")


async def test_memos_async_reads_native_and_equal(smos):
    assert has_native_async(smos)
    cube = smos.add("Grace's lab is on the third floor.", user_id="grace")
    smos.update(cube.id, "Grace's lab is on the fourth floor.", user_id="grace")
    gone = smos.add("Grace's old locker code.", user_id="grace")
    smos.forget(gone.id, user_id="grace")
    smos.share(cube.id, with_user_id="alan", user_id="grace")
    view = smos.vault.native_async()
    assert await smos.aget(cube.id, user_id="grace") == smos.get(cube.id, user_id="grace")
    assert view.pools == 1  # served by the native pool of this loop
    assert await smos.aget(cube.id, user_id="alan") == smos.get(cube.id, user_id="alan")
    assert await smos.ahistory(cube.id, user_id="grace") == smos.history(cube.id, user_id="grace")
    assert await smos.ahistory(gone.id, user_id="grace") == smos.history(gone.id, user_id="grace")
    # version and as_of reads: native too (the sync vault's reads are not called)
    before = datetime.now(timezone.utc) - timedelta(days=1)
    older = [((cube.id,), {"user_id": "grace", "version": 1}),
             ((cube.id,), {"user_id": "alan", "version": 2}),
             ((gone.id,), {"user_id": "grace", "version": 1}),  # a forgotten memory's version
             ((cube.id,), {"user_id": "grace", "as_of": datetime.now(timezone.utc)})]
    expected_old = [smos.get(*args, **kwargs) for args, kwargs in older]
    with pytest.MonkeyPatch.context() as mp:
        for name in ("get_version", "get_as_of", "get"):
            mp.setattr(smos.vault, name, _refuse)
        assert [await smos.aget(*args, **kwargs) for args, kwargs in older] == expected_old
    assert [c.version for c in expected_old] == [1, 2, 1, 3]  # the share made v3
    for args, kwargs in [((cube.id,), {"user_id": "grace", "version": 9}),   # VersionNotFound
                         ((cube.id,), {"user_id": "grace", "version": 1, "as_of": before}),
                         ((cube.id,), {"user_id": "grace", "as_of": before}),
                         ((cube.id,), {"user_id": "grace", "version": "x"}),  # InvalidInput
                         ((cube.id,), {"user_id": "mallory", "version": 1})]:  # AccessDenied
        assert await _araises(smos.aget(*args, **kwargs)) == _raises(smos.get, *args, **kwargs)
    for kwargs in ({"user_id": "grace"}, {"user_id": "alan"}, {"user_id": "grace", "limit": 1,
                   "newest_first": True}, {"user_id": "grace", "states": ["deleted"]}):
        assert await smos.alist(**kwargs) == smos.list(**kwargs)
    # the same errors for bad input, unknown ids, forgotten memories and no rights
    cases = [
        ((cube.id,), {"user_id": "mallory"}),           # AccessDeniedError
        (("no-such-memory",), {"user_id": "grace"}),     # MemoryNotFoundError
        ((gone.id,), {"user_id": "grace"}),              # MemoryDeletedError
        ((42,), {"user_id": "grace"}),                   # InvalidInputError (id type)
        ((cube.id,), {"user_id": ""}),                   # InvalidInputError (user)
    ]
    seen = set()
    for args, kwargs in cases:
        expected = _raises(smos.get, *args, **kwargs)
        assert await _araises(smos.aget(*args, **kwargs)) == expected
        seen.add(expected[0])
        if args[0] != gone.id:
            assert await _araises(smos.ahistory(*args, **kwargs)) == \
                _raises(smos.history, *args, **kwargs)
    assert seen == {AccessDeniedError, MemoryNotFoundError, MemoryDeletedError, InvalidInputError}
    assert await _araises(smos.alist(user_id="grace", limit=0)) == \
        _raises(smos.list, user_id="grace", limit=0)
    assert await _araises(smos.alist(user_id="grace", offset=-1)) == \
        _raises(smos.list, user_id="grace", offset=-1)


async def test_async_reads_catch_up_with_another_process(pg_url, smos):
    other = MemOS(pg_url, config=MemOSConfig(show_progress=False, listen=False))
    try:
        smos.graph.view(("linus",))  # linus's graph view is loaded in this process
        cube = other.add("Linus moved to the night shift.", user_id="linus")
        assert smos.graph.payload(cube.id) is None  # and has not seen the other's add yet
        got = await smos.aget(cube.id, user_id="linus")  # the feed moved: caught up first
        assert smos.store.follower.cursor == smos.vault.change_head()
        assert smos.graph.payload(cube.id) is not None  # the derived state followed
        assert got == smos.get(cube.id, user_id="linus")
    finally:
        other.close()


async def test_many_concurrent_checkpoint_calls_on_one_loop(smos):
    from langchain_memos import MemOSCheckpointer
    from langgraph.checkpoint.base import empty_checkpoint

    saver = MemOSCheckpointer(smos)

    async def one(i: int):
        config = {"configurable": {"thread_id": f"t{i % 10}", "checkpoint_ns": ""}}
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"n": i}
        checkpoint["channel_versions"] = {"n": str(i)}
        stored = await saver.aput(config, checkpoint, {"step": i}, {"n": str(i)})
        await saver.aput_writes(stored, [("n", i + 1)], f"task{i}")
        got = await saver.aget_tuple(stored)
        return checkpoint["id"], got

    results = await asyncio.gather(*[one(i) for i in range(50)])
    for i, (cid, got) in enumerate(results):
        assert got.checkpoint["id"] == cid and got.checkpoint["channel_values"] == {"n": i}
        assert got.metadata["step"] == i and got.pending_writes == [(f"task{i}", "n", i + 1)]
        assert got == saver.get_tuple(got.config)  # the sync path reads the same tuple
    stats = smos.vault.native_async().pool_stats()
    assert stats["pool_max"] == 2 and stats["pool_size"] <= 2 and stats["requests_num"] >= 150
    assert len([t async for t in saver.alist(None)]) == len(list(saver.list(None))) == 50
    latest = await asyncio.gather(*[saver.aget_tuple({"configurable": {"thread_id": f"t{t}"}})
                                    for t in range(10)])
    assert latest == [saver.get_tuple({"configurable": {"thread_id": f"t{t}"}}) for t in range(10)]
    assert await _araises(saver.aget_tuple({"configurable": {}})) == \
        _raises(saver.get_tuple, {"configurable": {}})


class Counter(TypedDict):
    seen: Annotated[list[str], add]


async def test_langgraph_ainvoke_with_the_memos_checkpointer(smos):
    from langchain_memos import MemOSCheckpointer
    from langgraph.graph import END, START, StateGraph

    def step(state: Counter) -> dict:
        return {"seen": [f"step{len(state['seen'])}"]}

    graph = StateGraph(Counter)
    graph.add_node("step", step)
    graph.add_edge(START, "step")
    graph.add_edge("step", END)
    with MemOSCheckpointer(smos) as saver:
        app = graph.compile(checkpointer=saver)
        config = {"configurable": {"thread_id": "conv-1"}}
        first = await app.ainvoke({"seen": ["hi"]}, config)
        second = await app.ainvoke({"seen": ["again"]}, config)
        assert first == {"seen": ["hi", "step1"]}
        assert second == {"seen": ["hi", "step1", "again", "step3"]}
        state = await app.aget_state(config)
        assert state.values == app.get_state(config).values == second
        history = [s async for s in app.aget_state_history(config)]
        assert [s.values for s in history] == [s.values for s in app.get_state_history(config)]
        assert len(history) == 6
        assert smos.vault.native_async().pools == 1


async def test_store_abatch_native_matches_batch(smos):
    from langchain_memos import MemOSStore
    from langgraph.store.base import GetOp, PutOp, SearchOp

    store = MemOSStore(smos, user_label=0)
    store.put(("ada", "prefs"), "tea", {"text": "Ada drinks green tea.", "n": 1})
    store.put(("ada", "prefs"), "bike", {"text": "Ada rides a red bike.", "n": 2})
    store.put(("ada", "work"), "desk", {"text": "Ada's desk is by the window.", "n": 1})
    ops = [GetOp(("ada", "prefs"), "tea"), GetOp(("ada", "prefs"), "nope"),
           SearchOp(("ada",), limit=10), SearchOp(("ada",), filter={"n": 1}, limit=10),
           SearchOp(("ada", "prefs"), limit=1, offset=1),
           SearchOp(("ada",), query="green tea", limit=2)]
    native = await store.abatch(ops)
    assert native == store.batch(ops)
    assert native[0].value["n"] == 1 and native[1] is None and len(native[2]) == 3
    assert len(native[3]) == 2 and len(native[4]) == 1
    assert await store.alist_namespaces(prefix=("ada",)) == store.list_namespaces(prefix=("ada",))
    await store.abatch([PutOp(("ada", "prefs"), "tea", {"text": "Ada drinks black tea."})])
    assert (await store.aget(("ada", "prefs"), "tea")).value == {"text": "Ada drinks black tea."}
    with pytest.raises(Exception) as sync_error:
        store.batch([GetOp(("ada",), 5)])
    with pytest.raises(type(sync_error.value)):
        await store.abatch([GetOp(("ada",), 5)])


async def test_chat_stores_async_over_server_mode(smos):
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_memos import MemOSChatMessageHistory
    from llama_index.core.base.llms.types import ChatMessage
    from llama_index.memory.memos import MemOSAsyncChatStore, MemOSChatStore

    history = MemOSChatMessageHistory(smos, user_id="ada", session_id="s1")
    history.add_messages([HumanMessage("Hi, I'm Ada."), AIMessage("Hello Ada!")])
    assert await history.aget_messages() == history.messages

    log = ConversationLog(smos)
    rows = [("m1", '{"a": 1}'), ("m2", '{"a": 2}')]
    await log.aappend("ada", "k", rows, "active")
    assert await log.aread("ada", "k", None) == log.read("ada", "k", None) == rows
    assert await log.acount("ada", "k", "active") == 2 and await log.akeys("ada") == ["k"]

    store = MemOSAsyncChatStore(mos=smos, user_id="ada")
    messages = [ChatMessage(role="user", content=f"message {i}") for i in range(4)]
    await store.add_messages("conv", messages)
    assert [m.content for m in await store.get_messages("conv")] == [m.content for m in messages]
    archived = await store.archive_oldest_messages("conv", 1)
    assert [m.content for m in archived] == ["message 0"]
    assert await store.count_messages("conv", status=None) == 4
    assert (await store.delete_message("conv", 0)).content == "message 0"
    assert await store.get_keys() == ["k", "conv"]  # the log above is ada's too
    classic = MemOSChatStore(mos=smos, user_id="bob")
    await classic.aset_messages("c", messages[:2])
    await classic.async_add_message("c", messages[2])
    assert [m.content for m in await classic.aget_messages("c")] == \
        [m.content for m in classic.get_messages("c")] == ["message 0", "message 1", "message 2"]
    assert (await classic.adelete_last_message("c")).content == "message 2"
    assert await classic.aget_keys() == classic.get_keys() == ["c"]
    with pytest.raises(InvalidInputError):
        await store.get_messages("conv", status="bogus")


async def test_pool_closed_by_aclose_and_by_close_inside_the_loop(pg_url):
    mos = MemOS(pg_url, config=MemOSConfig(show_progress=False, pool_size=2, listen=False))
    cube = await mos.aadd("Closing time.", user_id="u")
    await asyncio.gather(*[mos.aget(cube.id, user_id="u") for _ in range(8)])
    view = mos.vault.native_async()
    assert view.pools == 1 and _async_conns(pg_url) >= 1
    await mos.aclose()
    assert view.pools == 0 and _wait_no_conns(pg_url) == 0
    with pytest.raises(InvalidInputError, match="closed"):
        await mos.aget(cube.id, user_id="u")
    with pytest.raises(ServerUnavailableError, match="closed"):
        await view.get(cube.id)

    mos = MemOS(pg_url, config=MemOSConfig(show_progress=False, pool_size=2, listen=False))
    assert await mos.aget(cube.id, user_id="u") == mos.get(cube.id, user_id="u")
    mos.close()  # synchronously, inside the pool's own loop: idle connections close now
    assert _wait_no_conns(pg_url) == 0

    from memos_core.vault.postgres import PostgresVault

    vault = PostgresVault(pg_url, pool_size=2)
    assert await vault.native_async().get(cube.id) == vault.get(cube.id)
    await vault.aclose()
    await vault.aclose()  # idempotent
    assert vault.native_async().pools == 0 and _wait_no_conns(pg_url) == 0


def test_loops_that_end_with_calls_in_flight_do_not_hang(pg_url):
    # asyncio.run cancels what is left when its main returns; the pool has no task of its own
    # that could swallow that cancellation (psycopg_pool's workers did: a rare hang at exit)
    mos = MemOS(pg_url, config=MemOSConfig(show_progress=False, pool_size=2, listen=False))
    try:
        cube = mos.add("Loops end.", user_id="u")
        expected = mos.get(cube.id, user_id="u")
        results: list = []

        async def main() -> None:
            tasks = [asyncio.ensure_future(mos.aget(cube.id, user_id="u")) for _ in range(12)]
            for _ in range(20):  # calls cancelled at any point of their round trip
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(mos.aget(cube.id, user_id="u"), 0.0005)
            results.append(await mos.aget(cube.id, user_id="u"))
            del tasks  # still running: asyncio.run cancels them

        for _ in range(5):
            thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
            thread.start()
            thread.join(60)
            assert not thread.is_alive(), "asyncio.run did not return"
        assert results == [expected] * 5
        assert _async_conns(pg_url) <= 2  # the pool's bound; cancelled calls' conns closed
    finally:
        mos.close()
    assert _wait_no_conns(pg_url) == 0


def test_second_event_loop_and_a_loop_in_another_thread(pg_url):
    mos = MemOS(pg_url, config=MemOSConfig(show_progress=False, pool_size=2, listen=False))
    try:
        cube = mos.add("Loops and pools.", user_id="u")
        view = mos.vault.native_async()
        expected = mos.get(cube.id, user_id="u")
        assert asyncio.run(mos.aget(cube.id, user_id="u")) == expected
        assert view.pools == 1
        # a second loop (the first one is closed): a new pool, the old one's connections closed
        assert asyncio.run(mos.aget(cube.id, user_id="u")) == expected
        assert view.pools == 1 and _async_conns(pg_url) <= 2

        # a loop that keeps running in another thread, while this thread uses its own
        started, stop = threading.Event(), threading.Event()
        other: dict = {}

        def serve() -> None:
            async def main() -> None:
                other["got"] = await mos.aget(cube.id, user_id="u")
                started.set()
                while not stop.is_set():
                    await asyncio.sleep(0.02)
            asyncio.run(main())

        thread = threading.Thread(target=serve)
        thread.start()
        assert started.wait(30) and other["got"] == expected

        async def here():
            return await mos.aget(cube.id, user_id="u")

        loop = asyncio.new_event_loop()
        try:
            assert loop.run_until_complete(here()) == expected
            assert view.pools == 2  # the thread's loop and this one
            mos.close()  # closes the running thread's pool through its loop, this one at once
            assert view.pools == 0
        finally:
            loop.close()
            stop.set()
            thread.join(10)
        assert _wait_no_conns(pg_url) == 0
    finally:
        mos.close()


async def test_embedded_mode_keeps_the_thread_path(tmp_path):
    from langchain_memos import MemOSCheckpointer
    from langgraph.checkpoint.base import empty_checkpoint

    mos = MemOS(tmp_path / "d", config=MemOSConfig(show_progress=False))
    try:
        assert not has_native_async(mos)
        log = ConversationLog(mos)
        await log.aappend("u", "k", [("m1", "{}")], "active")
        assert await log.aread("u", "k", None) == log.read("u", "k", None) == [("m1", "{}")]
        assert await _araises(log.aread("u", "k", "bogus")) == _raises(log.read, "u", "k", "bogus")
        saver = MemOSCheckpointer(mos)
        stored = await saver.aput({"configurable": {"thread_id": "t"}}, empty_checkpoint(), {}, {})
        assert await saver.aget_tuple(stored) == saver.get_tuple(stored)
        cube = mos.add("Embedded memory.", user_id="u")
        assert await mos.aget(cube.id, user_id="u") == mos.get(cube.id, user_id="u")
    finally:
        mos.close()
