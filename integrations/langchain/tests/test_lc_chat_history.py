"""MemOSChatMessageHistory: exact round-trip, a RunnableWithMessageHistory chain, clear."""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory
from memos_core import InvalidInputError, MemCube, MemOS
from memos_core.integration import DerivedForm

from langchain_memos import MemOSChatMessageHistory


def _conversation() -> list:
    return [
        SystemMessage("be brief"),
        HumanMessage("I moved to Porto last month.", id="h1", name="alice"),
        AIMessage("", id="a1", tool_calls=[{"name": "store_memory", "args": {"text": "lives in Porto"},
                                             "id": "call-1", "type": "tool_call"}]),
        ToolMessage("Stored memory 1.", tool_call_id="call-1", id="t1"),
        AIMessage("Noted: Porto!", id="a2", additional_kwargs={"x": [1, 2]}),
    ]


def test_messages_round_trip_exactly_and_are_searchable(mos: MemOS) -> None:
    history = MemOSChatMessageHistory(mos, user_id="alice", session_id="s1")
    history.add_messages(_conversation())
    assert history.messages == _conversation()
    assert MemOSChatMessageHistory(mos, user_id="alice", session_id="s2").messages == []
    assert MemOSChatMessageHistory(mos, user_id="bob", session_id="s1").messages == []
    hits = mos.search("when did she move?", user_id="alice", k=10)
    [hit] = [h for h in hits if h.text == "alice: I moved to Porto last month."]
    assert (hit.memory.type.value, hit.memory.session_id) == ("episode", "s1")


def test_forgetting_a_message_removes_it_from_the_history(mos: MemOS) -> None:
    history = MemOSChatMessageHistory(mos, user_id="alice", session_id="s1")
    history.add_messages(_conversation())
    [cube] = [c for c in mos.list(user_id="alice") if c.text.startswith("alice:")]
    mos.forget(cube.id, user_id="alice")
    assert [m.id for m in history.messages] == [None, "a1", "t1", "a2"]
    history.clear()
    assert history.messages == [] and mos.list(user_id="alice") == []


def test_runnable_with_message_history_sync_and_async(mos: MemOS) -> None:
    seen: list[int] = []

    def echo(messages: list) -> AIMessage:
        seen.append(len(messages))
        return AIMessage(f"turn {len(seen)}")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # deprecated upstream, still used
        chain = RunnableWithMessageHistory(
            RunnableLambda(echo), lambda sid: MemOSChatMessageHistory(mos, user_id="alice", session_id=sid)
        )
    config = {"configurable": {"session_id": "chat"}}
    chain.invoke([HumanMessage("hi")], config)
    chain.invoke([HumanMessage("again")], config)
    asyncio.run(chain.ainvoke([HumanMessage("async")], config))
    assert seen == [1, 3, 5]
    texts = [m.content for m in MemOSChatMessageHistory(mos, user_id="alice", session_id="chat").messages]
    assert texts == ["hi", "turn 1", "again", "turn 2", "async", "turn 3"]


def test_restart_keeps_the_history(make_mos: Callable[..., MemOS]) -> None:
    mos = make_mos("restart")
    MemOSChatMessageHistory(mos, user_id="alice", session_id="s").add_messages(_conversation())
    mos.close()
    assert MemOSChatMessageHistory(make_mos("restart"), user_id="alice", session_id="s").messages == _conversation()


def test_bad_input(mos: MemOS) -> None:
    history = MemOSChatMessageHistory(mos, user_id="alice", session_id="s")
    with pytest.raises(InvalidInputError, match="not a LangChain BaseMessage"):
        history.add_messages([{"role": "user", "content": "hi"}])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match="JSON"):
        history.add_messages([HumanMessage("hi"), AIMessage("x", additional_kwargs={"f": object()})])
    assert history.messages == []  # the batch stored nothing
    with pytest.raises(InvalidInputError, match="session_id"):
        MemOSChatMessageHistory(mos, user_id="alice", session_id="")
    with pytest.raises(TypeError, match="MemOS"):
        MemOSChatMessageHistory(object(), user_id="a", session_id="s")  # type: ignore[arg-type]


# -- forgetting, updates and sharing --------------------------------------------------------

MARKER = "MARMOT9920"
FACT = f"Alice's locker code is {MARKER}"


def _files_holding(root: Path, needle: str) -> list[str]:
    """Files under ``root`` whose raw bytes contain ``needle`` (as tests/governance do)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and needle.encode() in p.read_bytes())


def _quoting_history(mos: MemOS) -> tuple[MemOSChatMessageHistory, str]:
    """A session that quotes FACT in a human message, a store_memory call's arguments and
    the answer; the fact memory, updated once (the history quotes its first version)."""
    fact = mos.add(FACT, user_id="alice", type="fact")
    history = MemOSChatMessageHistory(mos, user_id="alice", session_id="s")
    history.add_messages([
        HumanMessage(f"Remember: {FACT}", id="h1"),
        AIMessage("", id="a1", tool_calls=[{"name": "store_memory", "args": {"text": FACT},
                                             "id": "c1", "type": "tool_call"}]),
        ToolMessage(f"Stored memory {fact.id}.", tool_call_id="c1", id="t1"),
        AIMessage(f"Got it: {FACT}.", id="a2"),
    ])
    mos.update(fact.id, "Alice's locker code is PUFFIN4417", user_id="alice")
    return history, fact.id


def test_forgetting_a_memory_redacts_the_history_messages_that_quote_it(mos: MemOS) -> None:
    """A chat history is a conversation log: forgetting a memory redacts its text (and
    what its earlier versions said) in the user's history messages, which are searchable
    memories too -- search and recall no longer show it -- and the receipt names the
    session. Another user's history is left alone."""
    history, fact_id = _quoting_history(mos)
    bobs = MemOSChatMessageHistory(mos, user_id="bob", session_id="s")
    bobs.add_messages([HumanMessage(f"Alice told me: {FACT}")])
    history.add_messages([HumanMessage("PUFFIN4417 is the new locker code")])

    receipt = mos.forget(fact_id, user_id="alice")

    assert DerivedForm(kind="conversation_log", id="chat_history:s", action="redacted") \
        in receipt.derived
    messages = history.messages
    assert [m.content for m in messages] == [
        "Remember: [forgotten]", "", f"Stored memory {fact_id}.", "Got it: [forgotten].",
        "PUFFIN4417 is the new locker code"]  # does not quote the memory: kept
    assert messages[1].tool_calls[0]["args"] == {"text": "[forgotten]"}
    assert [m.id for m in messages[:4]] == ["h1", "a1", "t1", "a2"]
    found = [h.text for h in mos.search(f"locker code {MARKER}", user_id="alice", k=10)]
    assert found and not any(MARKER in t for t in found)
    assert [m.content for m in bobs.messages] == [f"Alice told me: {FACT}"]


def test_the_message_a_forgotten_memory_came_from_loses_all_its_text(mos: MemOS) -> None:
    history = MemOSChatMessageHistory(mos, user_id="alice", session_id="s")
    history.add_messages([HumanMessage(f"My locker code, {MARKER}, remember it", id="h1"),
                          AIMessage("Noted.", id="a1")])
    (stored,) = mos.add_many([{"text": FACT, "message_id": "h1"}], user_id="alice", type="fact")
    mos.forget(stored.id, user_id="alice")
    assert [m.content for m in history.messages] == ["[forgotten]", "Noted."]
    assert not any(MARKER in h.text for h in mos.search("locker code", user_id="alice", k=10))


def test_forgotten_text_leaves_every_file_of_the_data_directory(
        make_mos: Callable[..., MemOS]) -> None:
    mos = make_mos("bytes")
    _, fact_id = _quoting_history(mos)
    mos.forget(fact_id, user_id="alice")
    mos.close()
    assert _files_holding(mos.data_dir, MARKER) == []


def test_a_forget_finds_quotes_however_the_store_escapes_them(
        make_mos: Callable[..., MemOS]) -> None:
    """The forget hook asks the vault only for the messages that hold one of the memory's
    runs of ASCII letters and digits (a long history is not decoded whole): a text with an
    accent and quotes is escaped in the stored record, twice in a tool call's raw
    arguments, and a text with no ASCII run is looked for in every message."""
    mos = make_mos("escapes")
    fact = mos.add('Zoë\'s "safe word" is Tromsø-1187', user_id="alice")
    cjk = mos.add("我家保险箱的密码是山川和大海", user_id="alice")
    raw = json.dumps({"text": fact.text})  # ASCII-escaped, as OpenAI-style messages keep it
    history = MemOSChatMessageHistory(mos, user_id="alice", session_id="s")
    history.add_messages([
        HumanMessage(f"Remember: {fact.text}", id="h1"),
        AIMessage("", id="a1", tool_calls=[{"name": "store_memory", "args": {"text": fact.text},
                                             "id": "c1", "type": "tool_call"}],
                  additional_kwargs={"tool_calls": [{"id": "c1", "type": "function", "function": {
                      "name": "store_memory", "arguments": raw}}]}),
        HumanMessage(f"还有:{cjk.text}", id="h2"),
        HumanMessage("Unrelated chatter about kayaks", id="h3"),
    ])
    mos.forget(fact.id, user_id="alice")
    mos.forget(cjk.id, user_id="alice")
    messages = history.messages
    assert [m.content for m in messages] == [
        "Remember: [forgotten]", "", "还有:[forgotten]", "Unrelated chatter about kayaks"]
    assert messages[1].tool_calls[0]["args"] == {"text": "[forgotten]"}
    assert "1187" not in json.dumps(messages[1].additional_kwargs)
    mos.close()
    for needle in ("Tromsø-1187", "Troms\\u00f8-1187", "密码是山川"):
        assert _files_holding(mos.data_dir, needle) == [], needle


def test_a_memory_tagged_as_history_without_a_message_does_not_stop_a_forget(
        mos: MemOS) -> None:
    """A memory given the history's tag by hand (no serialised message in its metadata) made
    every later forget of its owner fail with a KeyError (a reviewer found it)."""
    history = MemOSChatMessageHistory(mos, user_id="alice", session_id="s")
    fact = mos.add("The vault combination is 7731-Gamma", user_id="alice")
    mos.add(f"note: {fact.text}", user_id="alice", tags=["lc.chat_history"], session_id="s")
    history.add_messages([HumanMessage(f"Remember: {fact.text}", id="h1")])
    mos.forget(fact.id, user_id="alice")
    assert [m.content for m in history.messages] == ["Remember: [forgotten]"]


def test_a_memory_given_new_text_gives_its_message_that_text(mos: MemOS) -> None:
    """``mos.update`` (e.g. the update_memory tool removing a phone number) reaches the
    history: a chain is fed the new text, not the message as it was added. Non-text blocks
    of a multi-part message stay."""
    history = MemOSChatMessageHistory(mos, user_id="bob", session_id="s1")
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    history.add_messages([
        HumanMessage(content=[{"type": "text", "text": "My phone is 555-0101."}, image], id="h1"),
        AIMessage("I will call 555-0101.", id="a1"),
    ])
    first, second = mos.list(user_id="bob")
    mos.update(first.id, "user: (phone number removed)", user_id="bob")
    mos.update(second.id, "assistant: I will call you.", user_id="bob")
    messages = history.messages
    assert messages[0].content == [{"type": "text", "text": "(phone number removed)"}, image]
    assert (messages[1].content, messages[1].id) == ("I will call you.", "a1")
    assert asyncio.run(history.aget_messages()) == messages
    mos.set_state(first.id, "archived", user_id="bob")  # a version with the same text
    assert history.messages == messages


def test_memories_shared_with_the_user_are_not_their_history(mos: MemOS) -> None:
    """``mos.list`` also returns memories other users share: after Alice shares her session
    "s1" with Bob, Bob's history of "s1" is still his own messages only, and clearing it
    leaves Alice's alone (it raised AccessDeniedError on her first message)."""
    alices = MemOSChatMessageHistory(mos, user_id="alice", session_id="s1")
    alices.add_messages([HumanMessage("My bank password is hunter2", id="a1"), AIMessage("Noted.")])
    mos.share_namespace(with_user_id="bob", user_id="alice", session_id="s1", scope="read")
    bobs = MemOSChatMessageHistory(mos, user_id="bob", session_id="s1")
    bobs.add_messages([HumanMessage("Hi, I am Bob", id="b1")])
    assert [m.content for m in bobs.messages] == ["Hi, I am Bob"]
    assert [m.content for m in asyncio.run(bobs.aget_messages())] == ["Hi, I am Bob"]
    bobs.clear()
    assert bobs.messages == []
    assert [m.content for m in alices.messages] == ["My bank password is hunter2", "Noted."]


def test_clear_forgets_the_session_all_or_nothing(mos: MemOS) -> None:
    """``clear`` is one ``forget_many``: every forget hook runs before the first tombstone,
    so one that fails leaves the whole history (one forget per message left the first
    messages forgotten and the rest not)."""
    history = MemOSChatMessageHistory(mos, user_id="alice", session_id="s")
    history.add_messages([HumanMessage(f"message {i}") for i in range(5)])
    seen: list[str] = []

    def failing(memory: MemCube) -> list[DerivedForm]:
        seen.append(memory.id)
        if len(seen) == 3:
            raise OSError("disk full")
        return []

    unhook = mos.on_forget(failing)
    with pytest.raises(OSError):
        history.clear()
    assert len(history.messages) == 5
    unhook()
    asyncio.run(history.aclear())
    assert history.messages == [] and mos.list(user_id="alice") == []


def test_clearing_one_session_leaves_the_others_as_they_were(mos: MemOS) -> None:
    """clear() forgets the session's messages; the history's forget hook must not take them
    for quotes in the user's other sessions (an identical question or "ok thanks" there was
    blanked), and forgetting a short message alone leaves the same words elsewhere."""
    monday = MemOSChatMessageHistory(mos, user_id="alice", session_id="monday")
    tuesday = MemOSChatMessageHistory(mos, user_id="alice", session_id="tuesday")
    for history, weather in ((monday, "Sunny, 24C."), (tuesday, "Rainy, 15C.")):
        history.add_messages([HumanMessage("What's the weather like in Lisbon?"),
                              AIMessage(weather), HumanMessage("ok thanks")])
    before = [m.content for m in tuesday.messages]
    monday.clear()
    assert monday.messages == [] and [m.content for m in tuesday.messages] == before
    wednesday = MemOSChatMessageHistory(mos, user_id="alice", session_id="wednesday")
    wednesday.add_messages([HumanMessage("ok thanks")])
    [thanks] = [c for c in mos.list(user_id="alice", session_id="tuesday")
                if c.text == "user: ok thanks"]
    mos.forget(thanks.id, user_id="alice")
    assert [m.content for m in tuesday.messages] == before[:2]
    assert [m.content for m in wednesday.messages] == ["ok thanks"]


def test_messages_added_just_after_a_forget_are_redacted(
        mos: MemOS, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chain that read a memory before its user forgot it adds its turn afterwards
    (``RunnableWithMessageHistory`` writes the answer when the run ends): for a minute after
    the forget, what the chain said (not the user's own message: new input) comes without
    the text. Another user's forget leaves it alone; after the minute nothing is redacted."""
    from memos_core.integration import RecentForgets

    history = MemOSChatMessageHistory(mos, user_id="alice", session_id="s")
    fact = mos.add(FACT, user_id="alice", type="fact")
    mos.forget(mos.add(f"Bob's code is {MARKER}", user_id="bob").id, user_id="bob")
    history.add_messages([AIMessage(f"Yours: {FACT}.")])
    mos.forget(fact.id, user_id="alice")  # redacts that message
    history.add_messages([HumanMessage(f"Is it {FACT}?"), AIMessage(f"Yes, {FACT}.")])
    assert [m.content for m in history.messages] == [
        "Yours: [forgotten].", f"Is it {FACT}?", "Yes, [forgotten]."]
    found = [h.text for h in mos.search("Yes locker code", user_id="alice", k=10)]
    assert "assistant: Yes, [forgotten]." in found
    monkeypatch.setattr(RecentForgets, "window_s", 0.0)  # the minute is over
    history.add_messages([AIMessage(f"Yes, {FACT}.")])
    assert history.messages[-1].content == f"Yes, {FACT}."


def test_messages_added_while_a_forget_runs_are_redacted(mos: MemOS) -> None:
    """``add_messages`` looks for recent forgets, then writes: a forget that ran in between
    missed the messages, and they missed it. They are redacted right after the write, in
    no file either -- and only they: the user's own message telling it again in another
    session after the forget is new input, kept."""
    import threading

    history = MemOSChatMessageHistory(mos, user_id="alice", session_id="s")
    other = MemOSChatMessageHistory(mos, user_id="alice", session_id="s2")
    fact = mos.add(FACT, user_id="alice", type="fact")
    real_add_many = mos.add_many
    forgetting = threading.Thread(target=lambda: mos.forget(fact.id, user_id="alice"))

    def add_after_a_forget(*args: object, **kwargs: object) -> list[MemCube]:
        if kwargs.get("session_id") == "s":
            forgetting.start()
            forgetting.join(60)
            other.add_messages([HumanMessage(f"Again: {FACT}")])
        return real_add_many(*args, **kwargs)  # type: ignore[arg-type]

    mos.add_many = add_after_a_forget  # type: ignore[method-assign]
    try:
        history.add_messages([AIMessage(f"Yes, {FACT}.", id="a1")])
    finally:
        mos.add_many = real_add_many  # type: ignore[method-assign]
    assert [m.content for m in history.messages] == ["Yes, [forgotten]."]
    assert [m.content for m in other.messages] == [f"Again: {FACT}"]
    said = [v.text for v in mos.history(history._cubes()[0].id, user_id="alice")]
    assert not any(MARKER in t for t in said)
    assert _files_holding(mos.data_dir, f"Yes, {FACT}") == []  # the journal neither


def test_a_forget_that_fails_redacts_nothing_later(mos: MemOS) -> None:
    """A forget a later hook aborts leaves the memory; messages added after it keep its
    text (it was not forgotten)."""
    history = MemOSChatMessageHistory(mos, user_id="alice", session_id="s")
    fact = mos.add(FACT, user_id="alice", type="fact")

    def failing(_: MemCube) -> list[DerivedForm]:
        raise RuntimeError("a later redactor failed")

    unhook = mos.on_forget(failing)
    with pytest.raises(RuntimeError):
        mos.forget(fact.id, user_id="alice")
    unhook()
    history.add_messages([AIMessage(f"Yes, {FACT}.")])
    assert [m.content for m in history.messages] == [f"Yes, {FACT}."]
