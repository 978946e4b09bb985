"""MemOSChatStore (BaseChatStore) and MemOSAsyncChatStore (AsyncDBChatStore).

Both are checked against llama-index's own reference stores (SimpleChatStore and the
in-memory SQLAlchemyChatStore) on the same operation sequences, then for what the references
do not have: persistence across a restart, per-user key namespaces, copies on read, thread
safety, and clear errors for bad input.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.base.llms.types import ImageBlock, TextBlock, ToolCallBlock
from llama_index.core.llms import ChatMessage
from llama_index.core.storage.chat_store import SimpleChatStore
from llama_index.core.storage.chat_store.base_db import MessageStatus
from llama_index.core.storage.chat_store.sql import SQLAlchemyChatStore
from memos_core import InvalidInputError, MemOS
from memos_core.testing.closing import close_during
from sqlalchemy.ext.asyncio import create_async_engine

from llama_index.memory.memos import MemOSAsyncChatStore, MemOSChatStore


def msg(text: str, role: str = "user") -> ChatMessage:
    return ChatMessage(role=role, content=text)


@pytest.fixture
def sync_store(shared_mos, user: str) -> MemOSChatStore:
    return MemOSChatStore(mos=shared_mos, user_id=user)


@pytest.fixture
def async_store(shared_mos, user: str) -> MemOSAsyncChatStore:
    return MemOSAsyncChatStore(mos=shared_mos, user_id=user)


def texts(messages: list[ChatMessage] | None) -> list[str] | None:
    return None if messages is None else [m.content for m in messages]


# -- sync store: same answers as SimpleChatStore --------------------------------------------

SYNC_SCRIPT: list[tuple[str, tuple[Any, ...]]] = [
    ("get_messages", ("a",)),
    ("add_message", ("a", msg("one"))),
    ("add_message", ("a", msg("two", "assistant"))),
    ("add_message", ("b", msg("bee"))),
    ("get_messages", ("a",)),
    ("get_keys", ()),
    ("set_messages", ("a", [msg("x"), msg("y", "assistant"), msg("z")])),
    ("get_messages", ("a",)),
    ("delete_message", ("a", 1)),
    ("delete_message", ("a", 5)),
    ("get_messages", ("a",)),
    ("delete_last_message", ("a",)),
    ("get_messages", ("a",)),
    ("delete_messages", ("b",)),
    ("delete_messages", ("nope",)),
    ("get_keys", ()),
]


def _normalise(result: Any) -> Any:
    if isinstance(result, ChatMessage):
        return ("msg", result.role.value, result.content)
    if isinstance(result, list):
        return [_normalise(r) for r in result]
    return result


def test_sync_store_matches_simple_chat_store(sync_store: MemOSChatStore) -> None:
    ours, ref = sync_store, SimpleChatStore()
    for name, args in SYNC_SCRIPT:
        assert _normalise(getattr(ours, name)(*args)) == _normalise(getattr(ref, name)(*args)), name


def test_sync_store_edge_cases(sync_store: MemOSChatStore) -> None:
    store = sync_store
    assert store.delete_last_message("empty") is None  # SimpleChatStore raises here
    assert store.delete_message("empty", 0) is None
    store.set_messages("k", [msg("a"), msg("b"), msg("c")])
    assert store.delete_message("k", -1).content == "c"
    assert store.delete_message("k", -3) is None
    store.set_messages("k", [])
    assert store.get_messages("k") == [] and store.get_keys() == []


async def test_sync_store_async_twins(sync_store: MemOSChatStore) -> None:
    store = sync_store
    await store.async_add_message("k", msg("hi"))
    await store.aset_messages("j", [msg("a"), msg("b")])
    assert texts(await store.aget_messages("k")) == ["hi"]
    assert (await store.adelete_last_message("j")).content == "b"
    assert sorted(await store.aget_keys()) == ["j", "k"]


# -- async store: same answers as SQLAlchemyChatStore ---------------------------------------

ASYNC_SCRIPT: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("get_messages", ("s",), {}),
    ("add_messages", ("s", [msg(f"m{i}", "user" if i % 2 == 0 else "assistant")
                            for i in range(6)]), {}),
    ("add_message", ("t", msg("other key")), {}),
    ("count_messages", ("s",), {}),
    ("archive_oldest_messages", ("s", 2), {}),
    ("count_messages", ("s",), {}),
    ("count_messages", ("s",), {"status": None}),
    ("get_messages", ("s",), {"status": MessageStatus.ARCHIVED}),
    ("get_messages", ("s",), {"status": None}),
    ("get_messages", ("s",), {"limit": 2, "offset": 1}),
    ("delete_oldest_messages", ("s", 1), {}),
    ("get_messages", ("s",), {}),
    ("add_message", ("s", msg("late archived")), {"status": MessageStatus.ARCHIVED}),
    ("delete_messages", ("s",), {"status": MessageStatus.ARCHIVED}),
    ("get_messages", ("s",), {"status": None}),
    ("set_messages", ("t", [msg("fresh")]), {}),
    ("get_messages", ("t",), {}),
    ("archive_oldest_messages", ("nope", 3), {}),
    ("delete_messages", ("s",), {}),
    ("get_keys", (), {}),
]


async def test_async_store_matches_sqlalchemy_store(async_store: MemOSAsyncChatStore) -> None:
    ours = async_store
    engine = create_async_engine("sqlite+aiosqlite:///:memory:")
    ref = SQLAlchemyChatStore(table_name="reference", async_engine=engine)
    try:
        for name, args, kwargs in ASYNC_SCRIPT:
            got = await getattr(ours, name)(*args, **kwargs)
            want = await getattr(ref, name)(*args, **kwargs)
            assert _normalise(got) == _normalise(want), (name, args, kwargs)
    finally:
        await engine.dispose()


async def test_async_store_positions_and_ids(async_store: MemOSAsyncChatStore) -> None:
    store = async_store
    await store.add_messages("k", [msg("a"), msg("b"), msg("c")], ids=["i1", "i2", "i3"])
    await store.archive_oldest_messages("k", 1)
    assert await store.get_message_ids("k") == ["i2", "i3"]
    assert await store.get_message_ids("k", None) == ["i1", "i2", "i3"]
    # positions count every message of the key, archived ones included
    assert (await store.delete_message("k", 0)).content == "a"
    assert (await store.delete_message("k", -1)).content == "c"
    assert await store.delete_message("k", 7) is None
    assert texts(await store.get_messages("k", None)) == ["b"]


async def test_set_messages_keeps_the_ids_of_messages_already_held(shared_mos, user: str) -> None:
    """Memories name their source message by id: setting a history to messages it already
    holds (each id used once) must not cut that link; new messages get new ids."""
    queue = MemOSAsyncChatStore(mos=shared_mos, user_id=user)
    active = MemOSChatStore(mos=shared_mos, user_id=user)  # the same log, its active view
    await queue.add_messages("k", [msg("a"), msg("b"), msg("a")], ids=["i1", "i2", "i3"])
    await queue.set_messages("k", [msg("b"), msg("a"), msg("new"), msg("a"), msg("a")])
    ids = await queue.get_message_ids("k")
    assert ids[:2] == ["i2", "i1"] and ids[3] == "i3"
    assert len(set(ids)) == 5
    active.set_messages("k", [msg("a"), msg("b")])
    assert await queue.get_message_ids("k") == ["i1", "i2"]
    await active.aset_messages("k", [msg("b")])
    assert await queue.get_message_ids("k") == ["i2"]


# -- what the references do not do ----------------------------------------------------------

async def test_history_survives_restart(open_mos) -> None:
    mos = open_mos()
    MemOSChatStore(mos=mos).set_messages("k", [msg("kept"), msg("too", "assistant")])
    await MemOSAsyncChatStore(mos=mos).add_messages("q", [msg("queued")])
    await MemOSAsyncChatStore(mos=mos).archive_oldest_messages("q", 1)
    mos.close()
    mos = open_mos()
    assert texts(MemOSChatStore(mos=mos).get_messages("k")) == ["kept", "too"]
    archived = await MemOSAsyncChatStore(mos=mos).get_messages("q", MessageStatus.ARCHIVED)
    assert texts(archived) == ["queued"]


def test_rich_messages_round_trip(sync_store: MemOSChatStore) -> None:
    rich = ChatMessage(
        role="assistant",
        blocks=[TextBlock(text="see"), ImageBlock(image=b"\x89PNG"),
                ToolCallBlock(tool_call_id="c1", tool_name="f", tool_kwargs={"x": [1, 2]})],
        additional_kwargs={"name": "bot", "n": 3},
    )
    store = sync_store
    store.add_message("k", rich)
    assert store.get_messages("k") == [rich]


def test_text_pasted_from_binary_round_trips(sync_store: MemOSChatStore) -> None:
    """NUL characters and unpaired surrogates (not UTF-8: pydantic refused to write the
    message, "cannot be stored") come back as they were put."""
    odd = [ChatMessage(role="user", content="ERR\x00 in W\udcffren, café"),
           ChatMessage(role="user", content="plain", additional_kwargs={"raw": "\ud800"})]
    sync_store.set_messages("k", odd)
    assert sync_store.get_messages("k") == odd


def test_reads_return_copies(sync_store: MemOSChatStore) -> None:
    store = sync_store
    store.add_message("k", msg("original"))
    got = store.get_messages("k")[0]
    got.blocks.insert(0, TextBlock(text="<memory>injected</memory>"))
    got.additional_kwargs["session_id"] = "x"
    again = store.get_messages("k")[0]
    assert again.content == "original" and again.additional_kwargs == {}


async def test_user_namespaces_are_separate(shared_mos, user: str) -> None:
    alice = MemOSAsyncChatStore(mos=shared_mos, user_id=f"{user}-alice")
    bob = MemOSAsyncChatStore(mos=shared_mos, user_id=f"{user}-bob")
    await alice.add_message("s1", msg("alice's"))
    await bob.add_message("s1", msg("bob's"))
    assert texts(await alice.get_messages("s1")) == ["alice's"]
    assert texts(await bob.get_messages("s1")) == ["bob's"]
    assert await MemOSAsyncChatStore(mos=shared_mos, user_id=f"{user}-carol").get_keys() == []
    same_bob = MemOSChatStore(mos=shared_mos, user_id=f"{user}-bob")  # the other view
    assert texts(same_bob.get_messages("s1")) == ["bob's"]


def test_concurrent_writers_lose_nothing(sync_store: MemOSChatStore) -> None:
    store = sync_store

    def write(t: int) -> None:
        for i in range(40):
            store.add_message("k", msg(f"{t}:{i}"))

    threads = [threading.Thread(target=write, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    got = texts(store.get_messages("k"))
    assert len(got) == 240
    for t in range(6):  # each writer's messages stay in its own order
        assert [x for x in got if x.startswith(f"{t}:")] == [f"{t}:{i}" for i in range(40)]


def test_serialisation_leaves_out_mos(shared_mos) -> None:
    store = MemOSChatStore(mos=shared_mos, user_id="u")
    assert store.to_dict() == {"user_id": "u", "class_name": "MemOSChatStore"}
    assert "mos" not in MemOSAsyncChatStore(mos=shared_mos).model_dump()


# -- bad input: clear errors, nothing written ------------------------------------------------

SYNC_BAD: list[tuple[str, tuple[Any, ...], str]] = [
    ("add_message", ("", msg("x")), "key must be a non-empty str"),
    ("add_message", (None, msg("x")), "key must be a non-empty str"),
    ("add_message", ("k", {"role": "user", "content": "x"}), "must be a llama_index ChatMessage"),
    ("add_message", ("k", "hello"), "must be a llama_index ChatMessage"),
    ("set_messages", ("k", msg("x")), "must be a list of ChatMessage"),
    ("set_messages", ("k", [msg("ok"), "bad"]), r"messages\[1\] must be a llama_index"),
    ("add_message", ("k", ChatMessage(content="x", additional_kwargs={"f": object()})),
     "JSON-serialisable"),
    ("delete_message", ("k", "0"), "idx must be an int"),
]


@pytest.mark.parametrize(("method", "args", "match"), SYNC_BAD, ids=[c[2][:30] for c in SYNC_BAD])
def test_sync_store_bad_input(sync_store: MemOSChatStore, method: str, args: tuple[Any, ...],
                              match: str) -> None:
    store = sync_store
    store.set_messages("k", [msg("before")])
    with pytest.raises(InvalidInputError, match=match):
        getattr(store, method)(*args)
    assert texts(store.get_messages("k")) == ["before"]


ASYNC_BAD: list[tuple[str, tuple[Any, ...], dict[str, Any], str]] = [
    ("get_messages", ("k",), {"status": "done"}, "status must be a MessageStatus"),
    ("get_messages", ("k",), {"limit": -1}, "limit must be a non-negative int"),
    ("get_messages", ("k",), {"offset": 1.5}, "offset must be a non-negative int"),
    ("add_message", ("k", msg("x")), {"status": None}, "status must be a MessageStatus"),
    ("add_messages", ("k", [msg("x")]), {"ids": ["a", "b"]}, "ids must be a list of 1"),
    ("archive_oldest_messages", ("k", -2), {}, "n must be a non-negative int"),
    ("set_messages", ("", []), {}, "key must be a non-empty str"),
    ("delete_message", ("k", None), {}, "idx must be an int"),
]


@pytest.mark.parametrize(("method", "args", "kwargs", "match"), ASYNC_BAD,
                         ids=[c[3][:30] for c in ASYNC_BAD])
async def test_async_store_bad_input(async_store: MemOSAsyncChatStore, method: str,
                                     args: tuple[Any, ...], kwargs: dict[str, Any],
                                     match: str) -> None:
    store = async_store
    await store.set_messages("k", [msg("before")])
    with pytest.raises(InvalidInputError, match=match):
        await getattr(store, method)(*args, **kwargs)
    assert texts(await store.get_messages("k", None)) == ["before"]


@pytest.mark.parametrize("cls", [MemOSChatStore, MemOSAsyncChatStore])
@pytest.mark.parametrize(("kwargs", "match"), [
    ({"mos": "/tmp/data"}, "needs mos=<memos_core.MemOS>, got str"),
    ({"user_id": ""}, "user_id must be a non-empty str"),
    ({"user_id": 7}, "user_id must be a non-empty str"),
])
def test_store_construction_errors(shared_mos, cls: type, kwargs: dict[str, Any],
                                   match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        cls(**{"mos": shared_mos, **kwargs})


# -- the MemOS closed under the stores: its closed error, never the driver's --------------

_AFTER_CLOSE: dict[str, Callable[[MemOSChatStore, MemOSAsyncChatStore], object]] = {
    "get_messages": lambda s, a: s.get_messages("k"),
    "add_message": lambda s, a: s.add_message("k", msg("hi")),
    "set_messages": lambda s, a: s.set_messages("k", [msg("hi")]),
    "delete_messages": lambda s, a: s.delete_messages("k"),
    "get_keys": lambda s, a: s.get_keys(),
    "aget_messages": lambda s, a: asyncio.run(s.aget_messages("k")),
    "async_add_message": lambda s, a: asyncio.run(s.async_add_message("k", msg("hi"))),
    "async store get_messages": lambda s, a: asyncio.run(a.get_messages("k")),
    "async store add_message": lambda s, a: asyncio.run(a.add_message("k", msg("hi"))),
    "async store count_messages": lambda s, a: asyncio.run(a.count_messages("k")),
    "async store archive_oldest_messages": lambda s, a: asyncio.run(
        a.archive_oldest_messages("k", 1)),
}


@pytest.mark.parametrize("call", list(_AFTER_CLOSE.values()), ids=list(_AFTER_CLOSE))
def test_calls_after_the_mos_closed_raise_its_closed_error(
        open_mos: Callable[..., MemOS],
        call: Callable[[MemOSChatStore, MemOSAsyncChatStore], object]) -> None:
    """Not ``sqlite3.ProgrammingError: Cannot operate on a closed database``."""
    mos = open_mos()
    stores = MemOSChatStore(mos=mos, user_id="alice"), MemOSAsyncChatStore(mos=mos, user_id="alice")
    stores[0].add_message("k", msg("hello"))
    mos.close()
    with pytest.raises(InvalidInputError, match="This MemOS is closed"):
        call(*stores)


@pytest.mark.parametrize("call", [
    lambda s, a: s.add_message("k", msg("landed")),
    lambda s, a: asyncio.run(s.async_add_message("k", msg("landed"))),
    lambda s, a: asyncio.run(a.add_message("k", msg("landed"))),
], ids=["add_message", "async_add_message", "async store add_message"])
def test_close_waits_for_a_write_in_flight(
        open_mos: Callable[..., MemOS], monkeypatch: pytest.MonkeyPatch,
        call: Callable[[MemOSChatStore, MemOSAsyncChatStore], object]) -> None:
    mos = open_mos()
    stores = MemOSChatStore(mos=mos, user_id="alice"), MemOSAsyncChatStore(mos=mos, user_id="alice")
    outcome = close_during(mos, monkeypatch, "log_append", lambda: call(*stores))
    assert "error" not in outcome, outcome
    assert texts(MemOSChatStore(mos=open_mos(), user_id="alice").get_messages("k")) == ["landed"]


async def test_writes_racing_aclose_land_or_raise_the_closed_error(
        open_mos: Callable[..., MemOS]) -> None:
    """Writers that keep writing until the MemOS is closed under them: each write lands or
    raises the closed error, and every write that returned is there after a reopen."""
    mos = open_mos()
    store = MemOSAsyncChatStore(mos=mos, user_id="alice")
    landed: dict[str, int] = {}

    async def writer(key: str) -> BaseException | None:
        for n in range(10_000):
            try:
                await store.add_message(key, msg(f"{key}-{n}"))
            except Exception as exc:  # noqa: BLE001 - checked below
                return exc
            landed[key] = n + 1
        return None

    tasks = [asyncio.create_task(writer(f"k{i}")) for i in range(8)]
    while sum(landed.values()) < 40:
        await asyncio.sleep(0.001)
    await mos.aclose()
    errors = await asyncio.gather(*tasks)
    assert all(isinstance(e, InvalidInputError) and "This MemOS is closed" in str(e)
               for e in errors), {f"{type(e).__name__}: {str(e)[:60]}" for e in errors}
    reopened = MemOSChatStore(mos=open_mos(), user_id="alice")
    for key, n in landed.items():
        assert len(reopened.get_messages(key)) >= n


def _holding(root: Path, needle: str) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.is_file() and needle.encode() in
                  p.read_bytes())


@pytest.mark.parametrize("delete", [
    lambda s, a: s.delete_messages("k"),
    lambda s, a: s.delete_message("k", 0),
    lambda s, a: s.delete_last_message("k"),
    lambda s, a: s.set_messages("k", [msg("replacement")]),
    lambda s, a: asyncio.run(a.delete_messages("k")),  # Memory.reset()
    lambda s, a: asyncio.run(a.set_messages("k", [msg("replacement")])),  # Memory.set()
], ids=["delete_messages", "delete_message", "delete_last_message", "set_messages",
        "async delete_messages", "async set_messages"])
def test_deleted_messages_leave_no_byte_on_disk(
        open_mos: Callable[..., MemOS], delete: Callable[..., object]) -> None:
    """A chat-store delete (and ``MemOSMemory.reset``) removes the text from every file of the
    data directory when it returns -- the vault's WAL included -- not at close."""
    mos = open_mos()
    store = MemOSChatStore(mos=mos, user_id="alice")
    astore = MemOSAsyncChatStore(mos=mos, user_id="alice")
    store.add_message("k", msg("Your new password is ZQXPASS123.", "assistant"))
    assert _holding(mos.data_dir, "ZQXPASS123")
    delete(store, astore)
    assert texts(store.get_messages("k")) in ([], ["replacement"])
    assert _holding(mos.data_dir, "ZQXPASS123") == []
