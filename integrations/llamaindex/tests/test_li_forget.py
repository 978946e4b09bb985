"""Forgetting reaches the chat history (the core's conversation logs, in the vault).

``MemOSMemory`` writes each message through to a memory whose source is the message's id in
the history. Forgetting that memory redacts the message (and any other stored message that
quotes it) in every queue, active or archived: no byte of any file in the data directory
holds the text afterwards, the receipt names the queue, and the history still loads with
its other messages intact -- with the store open, closed, or never constructed since MemOS
was reopened: the core redacts its own log. Real MemOS, real SQLite.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.base.llms.types import TextBlock, ToolCallBlock
from llama_index.core.llms import ChatMessage
from memos_core import MemCube, MemOS
from memos_core.integration import LOG_FORM, DerivedForm
import memos_core.ops.forget as forget_ops

from llama_index.memory.memos import (
    MemOSAsyncChatStore,
    MemOSChatStore,
    MemOSMemory,
    MemOSMemoryBlock,
)
from llama_index.memory.memos._chat_log import FILENAME

VAULT = "vault.sqlite3"


def in_vault(root: Path, needle: str) -> bool:
    """The text is in the vault's files (and in no side file)."""
    found = files_holding(root, needle)
    return bool(found) and all(f.startswith(VAULT) for f in found)

SECRET = "My locker code is MARMOT9920"
MARKER = "MARMOT9920"


def files_holding(root: Path, needle: str) -> list[str]:
    """Files under ``root`` whose raw bytes contain ``needle`` (as in test_gov_forgetting)."""
    return sorted(
        str((Path(d) / n).relative_to(root))
        for d, _, names in os.walk(root) for n in names
        if needle.encode() in (Path(d) / n).read_bytes()
    )


def _memory(mos: MemOS, text: str) -> MemCube:
    return next(c for c in mos.list(user_id="dana", limit=100) if c.text == text)


def _texts(messages: list[ChatMessage]) -> list[tuple[str, str | None]]:
    return [(m.role.value, m.content) for m in messages]


def test_forget_redacts_the_written_through_message(mos: MemOS) -> None:
    memory = MemOSMemory.from_defaults(mos=mos, user_id="dana", session_id="s1")
    memory.put_messages([ChatMessage(role="user", content=SECRET),
                         ChatMessage(role="assistant", content="Noted.")])
    memory.put(ChatMessage(role="user", content="I like teal"))
    assert in_vault(mos.data_dir, MARKER) and not (mos.data_dir / FILENAME).exists()

    receipt = mos.forget(_memory(mos, f"user: {SECRET}").id, user_id="dana")

    assert receipt.derived == (
        DerivedForm(kind="conversation_log", id=f"{LOG_FORM}:dana/s1", action="redacted"),)
    assert "conversation_log" in receipt.removed_from
    assert files_holding(mos.data_dir, MARKER) == []
    assert _texts(memory.get_all()) == [
        ("user", "[forgotten]"), ("assistant", "Noted."), ("user", "I like teal")]
    memory.put(ChatMessage(role="user", content="thanks"))  # the session goes on
    assert len(memory.get_all()) == 4


async def test_archived_quoted_and_tool_call_copies_are_redacted(mos: MemOS) -> None:
    fact = mos.add("Dana's passport number is QX77130", user_id="dana")
    queue = MemOSAsyncChatStore(mos=mos, user_id="dana")
    await queue.add_messages("s2", [
        ChatMessage(role="user", content="Note: Dana's passport number is QX77130."),
        ChatMessage(role="assistant", blocks=[
            TextBlock(text="Saving it."),
            ToolCallBlock(tool_name="store", tool_kwargs={"text": "Dana's passport number is QX77130"}),
        ]),
        ChatMessage(role="user", content="unrelated"),
    ])
    await queue.archive_oldest_messages("s2", 1)
    plain = MemOSChatStore(mos=mos)  # another store, another user namespace ("")
    plain.add_message("k", ChatMessage(role="user", content="Dana's passport number is QX77130"))

    receipt = mos.forget(fact.id, user_id="dana")

    assert sorted(d.id for d in receipt.derived) == [f"{LOG_FORM}:/k", f"{LOG_FORM}:dana/s2"]
    assert files_holding(mos.data_dir, "QX77130") == []
    archived, *active = await queue.get_messages("s2", status=None)
    assert archived.content == "Note: [forgotten]."
    assert active[0].blocks[0].text == "Saving it."
    assert active[0].blocks[1].tool_kwargs == {"text": "[forgotten]"}
    assert active[1].content == "unrelated"
    assert _texts(plain.get_messages("k")) == [("user", "[forgotten]")]


def _closed_log(open_mos: Callable[..., MemOS], restart: bool) -> tuple[MemOS, MemCube]:
    """A session whose history holds SECRET, its memory closed -- and with ``restart`` the
    MemOS reopened on the same data directory, no chat store constructed since."""
    mos = open_mos()
    memory = MemOSMemory.from_defaults(mos=mos, user_id="dana", session_id="s1")
    memory.put_messages([ChatMessage(role="user", content=SECRET),
                         ChatMessage(role="assistant", content="Noted.")])
    memory.put(ChatMessage(role="user", content="I like teal"))
    memory.sql_store.close()
    fact = _memory(mos, f"user: {SECRET}")
    if restart:
        mos.close()
        mos = open_mos()
    assert in_vault(mos.data_dir, MARKER)
    return mos, fact


@pytest.mark.parametrize("restart", [False, True], ids=["closed", "reopened"])
def test_forget_reaches_the_log_with_no_store_open(
        open_mos: Callable[..., MemOS], restart: bool) -> None:
    mos, fact = _closed_log(open_mos, restart)

    receipt = mos.forget(fact.id, user_id="dana")

    assert receipt.derived == (
        DerivedForm(kind="conversation_log", id=f"{LOG_FORM}:dana/s1", action="redacted"),)
    assert "conversation_log" in receipt.removed_from
    assert files_holding(mos.data_dir, MARKER) == []
    memory = MemOSMemory.from_defaults(mos=mos, user_id="dana", session_id="s1")
    assert _texts(memory.get_all()) == [
        ("user", "[forgotten]"), ("assistant", "Noted."), ("user", "I like teal")]
    memory.put(ChatMessage(role="user", content="thanks"))  # the session goes on
    assert len(memory.get_all()) == 4
    memory.sql_store.close()
    assert files_holding(mos.data_dir, MARKER) == []


def test_a_failing_redaction_after_a_restart_leaves_the_memory_and_the_log_unchanged(
        open_mos: Callable[..., MemOS], monkeypatch: pytest.MonkeyPatch) -> None:
    mos, fact = _closed_log(open_mos, restart=True)

    def broken(*args: object) -> str:
        raise ValueError("cannot encode")

    monkeypatch.setattr(forget_ops, "redact_log_message", broken)
    with pytest.raises(ValueError, match="cannot encode"):
        mos.forget(fact.id, user_id="dana")
    assert mos.get(fact.id, user_id="dana").text == f"user: {SECRET}"
    assert in_vault(mos.data_dir, MARKER)
    monkeypatch.undo()
    assert mos.forget(fact.id, user_id="dana").derived  # retrying works
    assert files_holding(mos.data_dir, MARKER) == []


def test_closed_dropped_and_reopened_stores(mos: MemOS) -> None:
    store = MemOSChatStore(mos=mos, user_id="dana")
    store.add_message("k", ChatMessage(role="user", content=SECRET))
    first, second = (mos.add(t, user_id="dana") for t in (SECRET, "My bike lock is OTTER5531"))
    store.close()
    dropped = MemOSChatStore(mos=mos, user_id="dana")  # never closed, then garbage
    del dropped
    gc.collect()
    receipt = mos.forget(first.id, user_id="dana")  # nobody has the log open: the core redacts
    assert [d.id for d in receipt.derived] == [f"{LOG_FORM}:dana/k"]
    assert files_holding(mos.data_dir, MARKER) == []

    store.add_message("k", ChatMessage(role="user", content="My bike lock is OTTER5531"))
    receipt = mos.forget(second.id, user_id="dana")  # a closed store's history is reached too
    assert [d.id for d in receipt.derived] == [f"{LOG_FORM}:dana/k"]
    assert files_holding(mos.data_dir, "OTTER5531") == []
    store.close()


def test_a_failing_redaction_leaves_the_memory_and_the_log_unchanged(
        mos: MemOS, monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemOSChatStore(mos=mos, user_id="dana")
    store.add_message("k", ChatMessage(role="user", content="keep"))
    store.add_message("k", ChatMessage(role="user", content=SECRET))
    fact = mos.add(SECRET, user_id="dana")

    def broken(*args: object) -> str:
        raise ValueError("cannot encode")

    monkeypatch.setattr(forget_ops, "redact_log_message", broken)
    with pytest.raises(ValueError, match="cannot encode"):
        mos.forget(fact.id, user_id="dana")
    assert mos.get(fact.id, user_id="dana").text == SECRET
    assert _texts(store.get_messages("k")) == [("user", "keep"), ("user", SECRET)]
    monkeypatch.undo()
    assert mos.forget(fact.id, user_id="dana").derived  # retrying works
    assert files_holding(mos.data_dir, MARKER) == []
    assert _texts(store.get_messages("k")) == [("user", "keep"), ("user", "[forgotten]")]


def test_another_users_conversation_is_left_alone(mos: MemOS) -> None:
    fact = mos.add("Dana's passport number is QX77130", user_id="dana")
    erin = MemOSChatStore(mos=mos, user_id="erin")  # her conversation is hers to forget
    erin.add_message("k", ChatMessage(role="user", content="Dana's passport number is QX77130"))
    assert mos.forget(fact.id, user_id="dana").derived == ()
    assert _texts(erin.get_messages("k")) == [("user", "Dana's passport number is QX77130")]


def test_forget_reaches_an_old_history_file_not_yet_moved(mos: MemOS) -> None:
    """A data directory from before the vault held chat history: until a chat store moves
    its chat_history.sqlite3 into the vault, the file redactor (entry point
    ``memos_core.forget_hooks``) reaches it; the move then carries the redacted messages."""
    import sqlite3

    from llama_index.memory.memos._convert import dump_message

    legacy = sqlite3.connect(mos.data_dir / FILENAME)
    legacy.executescript("""
        CREATE TABLE chat_messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL,
            key TEXT NOT NULL, message_id TEXT NOT NULL, status TEXT NOT NULL,
            message TEXT NOT NULL, created_at TEXT NOT NULL);""")
    rows = [("m1", ChatMessage(role="user", content=SECRET)),
            ("m2", ChatMessage(role="assistant", content="Noted."))]
    legacy.executemany(
        "INSERT INTO chat_messages (user_id, key, message_id, status, message, created_at) "
        "VALUES ('dana', 's1', ?, 'active', ?, 'then')",
        [(mid, dump_message(m, "m")) for mid, m in rows])
    legacy.commit()
    legacy.close()
    fact = mos.add([{"role": "user", "content": SECRET, "id": "m1"}], user_id="dana")[0]
    assert FILENAME in files_holding(mos.data_dir, MARKER)

    receipt = mos.forget(fact.id, user_id="dana")

    assert DerivedForm(kind="conversation_log", id=f"{FILENAME}:dana/s1",
                       action="redacted") in receipt.derived
    assert files_holding(mos.data_dir, MARKER) == []
    store = MemOSChatStore(mos=mos, user_id="dana")  # moves the redacted file in
    assert not (mos.data_dir / FILENAME).exists()
    assert _texts(store.get_messages("s1")) == [("user", "[forgotten]"), ("assistant", "Noted.")]


def _foreign_chat_file(path: Path) -> None:  # another program's chat_messages table
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE chat_messages (x TEXT)")
        db.execute("INSERT INTO chat_messages VALUES ('hello')")
        db.commit()


@pytest.mark.parametrize("damage, reason", [
    (lambda path: path.write_bytes(b"this is not sqlite" * 100), "file is not a database"),
    (_foreign_chat_file, "no such column"),
])
def test_a_damaged_old_history_file_is_named_not_a_raw_sqlite_error(
        mos: MemOS, damage: Callable[[Path], None], reason: str) -> None:
    """A chat_history.sqlite3 that is damaged or not the old chat store's: forgetting
    refuses (the file may hold the text) and opening a chat store refuses to move it, both
    with a CorruptDataError naming the file and saying to move it away; the memory, the
    file and the vault are left as they were. Once it is moved, both go through."""
    from memos_core import CorruptDataError

    path = mos.data_dir / FILENAME
    fact = mos.add("Dana's passport number is QX77130", user_id="dana")
    damage(path)
    before = path.read_bytes()
    for attempt in (lambda: mos.forget(fact.id, user_id="dana"),
                    lambda: MemOSChatStore(mos=mos, user_id="dana"),
                    lambda: MemOSAsyncChatStore(mos=mos, user_id="dana")):
        with pytest.raises(CorruptDataError, match=reason) as caught:
            attempt()
        assert str(path) in str(caught.value)
        assert "Move it out of the data directory" in str(caught.value)
    assert "forget again" in str(pytest.raises(CorruptDataError, mos.forget, fact.id,
                                               user_id="dana").value)
    assert path.read_bytes() == before
    assert mos.get(fact.id, user_id="dana").text == "Dana's passport number is QX77130"

    path.rename(mos.data_dir.parent / "moved-away.sqlite3")
    assert MemOSChatStore(mos=mos, user_id="dana").get_keys() == []
    assert mos.forget(fact.id, user_id="dana").memory_id == fact.id


def test_an_old_history_file_with_rows_the_old_store_never_wrote_is_not_moved(
        mos: MemOS) -> None:
    """The old columns, but a status the vault does not know (or no text): refused whole
    with a CorruptDataError naming the file, not half moved or an InvalidInputError."""
    import sqlite3
    from contextlib import closing

    from memos_core import CorruptDataError

    path = mos.data_dir / FILENAME
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE chat_messages (seq INTEGER PRIMARY KEY, user_id TEXT, "
                   "key TEXT, message_id TEXT, status TEXT, message TEXT)")
        db.execute("INSERT INTO chat_messages VALUES (1, 'dana', 'k', 'm1', 'active', '{}')")
        db.execute("INSERT INTO chat_messages VALUES (2, 'dana', 'k', 'm2', 'pending', '{}')")
        db.commit()
    with pytest.raises(CorruptDataError, match="could not have written") as caught:
        MemOSChatStore(mos=mos, user_id="dana")
    assert str(path) in str(caught.value) and path.exists()
    assert mos.store.vault.log_ids("dana") == []


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_message_written_while_a_forget_begins_is_redacted(mos: MemOS, mode: str) -> None:
    """A write looks for recent forgets, then commits: a forget whose pass over the stored
    logs ran in between (and whose hook registered it after) missed the message, which
    landed with the text. The write now notices the pass after its commit and redacts
    what it wrote, journal included -- and only that: the user's own message telling it
    again elsewhere after the forget is new input, kept."""
    import asyncio
    import threading

    [memory] = mos.add([{"role": "user", "content": SECRET}], user_id="dana")
    store = MemOSChatStore(mos=mos, user_id="dana")
    logs_done, hooks_go = threading.Event(), threading.Event()

    def later_hook(_: MemCube) -> list[DerivedForm]:  # runs after the log pass went by
        logs_done.set()
        hooks_go.wait(30)
        return []

    mos.on_forget(later_hook)
    vault = mos.store.vault
    real_append = vault.log_append
    forgetting = threading.Thread(target=lambda: mos.forget(memory.id, user_id="dana"))

    def append_while_a_forget_runs(user: str, log: str, *args: Any) -> None:
        if log == "k":
            forgetting.start()
            logs_done.wait(30)  # the forget's pass over the logs went by
            hooks_go.set()
        real_append(user, log, *args)
        if log == "k":
            forgetting.join(30)
            store.add_message("other", ChatMessage(role="user", content=SECRET))

    vault.log_append = append_while_a_forget_runs  # type: ignore[method-assign]
    said = ChatMessage(role="assistant", content=f"Your code: {SECRET}.")
    try:
        if mode == "sync":
            store.add_message("k", said)
        else:
            asyncio.run(MemOSAsyncChatStore(mos=mos, user_id="dana").add_messages("k", [said]))
    finally:
        vault.log_append = real_append  # type: ignore[method-assign]
    assert [m.content for m in store.get_messages("k")] == ["Your code: [forgotten]."]
    assert [m.content for m in store.get_messages("other")] == [SECRET]


def test_a_close_waits_for_the_redaction_after_a_write(open_mos: Callable[..., MemOS]) -> None:
    """``close()`` between a write's commit and its redaction used to refuse the
    redaction: the forgotten text stayed in the log for good. The write and its redaction
    are one call of the MemOS, which ``close()`` waits for."""
    import threading
    import time

    mos = open_mos("closing")
    [memory] = mos.add([{"role": "user", "content": SECRET}], user_id="dana")
    in_hook, release = threading.Event(), threading.Event()

    def slow_hook(_: MemCube) -> list[DerivedForm]:  # after the log pass went by
        in_hook.set()
        release.wait(30)
        return []

    mos.on_forget(slow_hook)
    vault = mos.store.vault
    real_append = vault.log_append
    forgetting = threading.Thread(target=lambda: mos.forget(memory.id, user_id="dana"))
    closing = threading.Thread(target=mos.close)

    def append_while_a_forget_runs(*args: Any) -> None:
        forgetting.start()
        in_hook.wait(30)
        real_append(*args)
        closing.start()  # the write has committed; its redaction waits for the forget
        time.sleep(0.3)
        release.set()

    vault.log_append = append_while_a_forget_runs  # type: ignore[method-assign]
    MemOSChatStore(mos=mos, user_id="dana").add_message(
        "k", ChatMessage(role="assistant", content=f"Your code: {SECRET}."))
    forgetting.join(30)
    closing.join(30)
    assert mos.closed and files_holding(mos.data_dir, MARKER) == []


# -- a caller cancelled between a write's commit and its late redaction ---------------------

def _forget_first(monkeypatch: pytest.MonkeyPatch, obj: object, names: tuple[str, ...],
                  forget: Callable[[], object]) -> None:
    """The first call of ``obj``'s methods ``names`` first has ``forget`` run to its end in
    another thread: a forget between a write's look at recent forgets and its commit. A
    sync method is wrapped as such, an async one as such."""
    import asyncio
    import inspect
    import threading

    forgetting = threading.Thread(target=forget)

    def start_once() -> bool:
        if forgetting.ident is not None:
            return False
        forgetting.start()
        return True

    for name in names:
        real = getattr(obj, name)
        if inspect.iscoroutinefunction(real):
            async def wrapped(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
                if start_once():
                    await asyncio.to_thread(forgetting.join, 60)
                return await _real(*args, **kwargs)
        else:
            def wrapped(*args: Any, _real: Any = real, **kwargs: Any) -> Any:  # type: ignore[misc]
                if start_once():
                    forgetting.join(60)
                return _real(*args, **kwargs)
        monkeypatch.setattr(obj, name, wrapped)


async def _cancel_after_the_commit(mos: MemOS, monkeypatch: pytest.MonkeyPatch,
                                   write: Any) -> None:
    """Run the coroutine ``write`` and cancel it once it has committed, while its follow-up
    waits for the forget's pass (``LateWrite.amissed``); then close ``mos`` (which waits
    for what it runs)."""
    import asyncio

    from memos_core.testing.late_writes import hold_after_commit

    waiting, go = hold_after_commit(mos, monkeypatch)
    task = asyncio.ensure_future(write)
    assert await asyncio.to_thread(waiting.wait, 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task  # the caller stops waiting at once
    go.set()
    await mos.aclose()


_SAID = ChatMessage(role="assistant", content=f"Your code: {SECRET}.")
_CANCELLED_WRITES: dict[str, Callable[[MemOS], Any]] = {
    "MemOSChatStore.aset_messages":
        lambda mos: MemOSChatStore(mos=mos, user_id="dana").aset_messages("k", [_SAID]),
    "MemOSChatStore.async_add_message":
        lambda mos: MemOSChatStore(mos=mos, user_id="dana").async_add_message("k", _SAID),
    "MemOSAsyncChatStore.add_messages":
        lambda mos: MemOSAsyncChatStore(mos=mos, user_id="dana").add_messages("k", [_SAID]),
    "MemOSAsyncChatStore.set_messages":
        lambda mos: MemOSAsyncChatStore(mos=mos, user_id="dana").set_messages("k", [_SAID]),
    "MemOSMemoryBlock.aput":
        lambda mos: MemOSMemoryBlock(mos=mos, user_id="dana", session_id="s1",
                                     remember_roles=("assistant",)).aput([_SAID]),
    "MemOSMemory.aput_messages":
        lambda mos: MemOSMemory.from_defaults(
            mos=mos, user_id="dana", session_id="s1",
            remember_roles=("user", "assistant")).aput_messages([_SAID]),
}


@pytest.mark.parametrize("write", sorted(_CANCELLED_WRITES))
async def test_a_write_cancelled_before_its_late_redaction_leaves_no_text(
        mos: MemOS, monkeypatch: pytest.MonkeyPatch, write: str) -> None:
    """A forget's pass ran between a write's look at recent forgets and its commit, so
    the write stored the text, and redacts it after its commit (the chat stores) or
    forgets the memory it made that quotes it (the memory block). Its caller cancelled
    in between (a timeout, a cancelled agent run) used to stop that follow-up: the
    forgotten text stayed on disk. The write and its follow-up are one unit now: the
    caller still stops waiting at once, the unit runs to its end, and ``close()`` waits
    for it."""
    [memory] = mos.add([{"role": "user", "content": SECRET}], user_id="dana")
    call = _CANCELLED_WRITES[write](mos)  # built first: the store watches for forgets
    forget = lambda: mos.forget(memory.id, user_id="dana")  # noqa: E731
    if write.startswith("MemOSMemory"):  # the commit: the memory made of the message
        _forget_first(monkeypatch, mos, ("aadd",), forget)
    else:  # the commit: the message in the log
        _forget_first(monkeypatch, mos.store.vault, ("log_append", "log_replace"), forget)

    await _cancel_after_the_commit(mos, monkeypatch, call)

    assert files_holding(mos.data_dir, MARKER) == []
