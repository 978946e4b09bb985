"""Forgetting reaches the LangGraph checkpointer's thread state (in the MemOS vault).

An agent with the middleware (which records each turn as memories whose source is the
message id) and the checkpointer holds a conversation; forgetting the memory made from one
message redacts that message in every checkpoint, channel value and pending write. Then no
byte of any file in the data directory holds the text, the receipt names the thread, and
the thread still loads and resumes -- with the checkpointer open (its forget hook), closed,
or never constructed since MemOS was reopened (the package's vault redactor, an entry point).
Real MemOS, real SQLite; only the chat model is fake.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
from lc_fakes import scripted, tool_call
from memos_core import InvalidInputError, MemCube, MemOS
from memos_core.integration import DerivedForm

from langchain_memos import MemOSCheckpointer, MemOSMiddleware, create_memory_tools
from langchain_memos import checkpoint as checkpoint_module
from langchain_memos.checkpoint import FILENAME, FORM

VAULT = "vault.sqlite3"

SECRET = "My locker code is MARMOT9920"
MARKER = "MARMOT9920"
CONFIG = {"configurable": {"thread_id": "t1"}}


def files_holding(root: Path, needle: str) -> list[str]:
    """Files under ``root`` whose raw bytes contain ``needle`` (as in test_gov_forgetting)."""
    return sorted(
        str((Path(d) / n).relative_to(root))
        for d, _, names in os.walk(root) for n in names
        if needle.encode() in (Path(d) / n).read_bytes()
    )


def _agent(mos: MemOS, saver: MemOSCheckpointer, *replies: AIMessage | str) -> Any:
    return create_agent(
        scripted(*replies), tools=create_memory_tools(mos, user_id="dana"),
        middleware=[MemOSMiddleware(mos, user_id="dana")], checkpointer=saver,
    )


def _memory_of(mos: MemOS, text: str) -> MemCube:
    return next(c for c in mos.list(user_id="dana", limit=100) if c.text == text)


def test_forget_redacts_the_message_in_every_checkpoint(mos: MemOS) -> None:
    saver = MemOSCheckpointer(mos)
    agent = _agent(mos, saver, "Noted.", "Teal is nice.")
    agent.invoke({"messages": [HumanMessage(SECRET)]}, CONFIG)
    agent.invoke({"messages": [HumanMessage("I like teal")]}, CONFIG)
    assert any(f.startswith(VAULT) for f in files_holding(mos.data_dir, MARKER))
    assert not (mos.data_dir / FILENAME).exists()

    memory = _memory_of(mos, f"user: {SECRET}")
    receipt = mos.forget(memory.id, user_id="dana")

    assert DerivedForm(kind="conversation_log", id=f"{FORM}:t1", action="redacted") in receipt.derived
    assert "conversation_log" in receipt.removed_from
    assert files_holding(mos.data_dir, MARKER) == []
    history = saver.list(CONFIG)  # every checkpoint of the thread, not only the latest
    for tup in history:
        for message in tup.checkpoint["channel_values"].get("messages", []):
            assert MARKER not in str(message.content)
    messages = agent.get_state(CONFIG).values["messages"]
    assert [(m.type, m.content) for m in messages] == [
        ("human", "[forgotten]"), ("ai", "Noted."), ("human", "I like teal"), ("ai", "Teal is nice."),
    ]
    # the thread resumes, and the next forget finds nothing left to redact there
    _agent(mos, saver, "Sure.").invoke({"messages": [HumanMessage("thanks")]}, CONFIG)
    assert len(agent.get_state(CONFIG).values["messages"]) == 6
    assert mos.forget(memory.id, user_id="dana").derived == ()
    saver.close()
    assert files_holding(mos.data_dir, MARKER) == []


def test_tool_call_arguments_and_pending_writes_are_redacted(mos: MemOS) -> None:
    saver = MemOSCheckpointer(mos)
    fact = "Dana's passport number is QX77130"
    agent = _agent(mos, saver, tool_call("store_memory", text=fact, memory_type="fact"), "Stored.")
    agent.invoke({"messages": [HumanMessage("Remember my passport number, QX77130.")]}, CONFIG)
    # a pending write that mentions the fact, as an interrupted step would leave it
    last = saver.get_tuple(CONFIG)
    saver.put_writes(last.config, [("messages", [AIMessage(f"About to save: {fact}")])], "task-1")

    receipt = mos.forget(_memory_of(mos, fact).id, user_id="dana")
    assert [d.id for d in receipt.derived] == [f"{FORM}:t1"]
    state = saver.get_tuple(CONFIG)
    assert [w[2][0].content for w in state.pending_writes] == ["About to save: [forgotten]"]
    calls = [m for m in state.checkpoint["channel_values"]["messages"] if getattr(m, "tool_calls", None)]
    assert calls[0].tool_calls[0]["args"]["text"] == "[forgotten]"
    # the user's message the tool stored it from is its source: it is blanked too, though
    # it does not quote the stored text (and the middleware recorded nothing of a turn in
    # which the model stored a memory), so the number is in no file at all
    human = state.checkpoint["channel_values"]["messages"][0]
    assert human.type == "human" and human.content == "[forgotten]"
    assert _memory_of_source(mos, human.id) == []
    assert files_holding(mos.data_dir, "QX77130") == []


def test_the_tools_results_and_calls_lose_the_memory_s_tags_and_explanation(mos: MemOS) -> None:
    """The memory tools' results name the memory with its tags and why it ranked ("graph
    (mentions ...)"), and the model's store_memory call carries the tags it chose: a forget
    empties those in the checkpoints, so no file keeps a tag; other memories' stay."""
    saver = MemOSCheckpointer(mos)
    fact, tag = "Dana sees Dr Okonkwo every Tuesday", "diagnosis-VOLE4417"
    other = mos.add("Dana's gym is on Elm Street", user_id="dana", tags=["gym-ELM5512"])
    agent = _agent(mos, saver, tool_call("store_memory", text=fact, tags=[tag]),
                   tool_call("search_memories", query="Dr Okonkwo gym Elm Street"), "ok")
    agent.invoke({"messages": [HumanMessage("Remember that I see Dr Okonkwo on Tuesdays")]},
                 CONFIG)
    before = saver.get_tuple(CONFIG).checkpoint["channel_values"]["messages"]
    found = next(m for m in before if m.type == "tool" and isinstance(m.artifact, list))
    assert {tag, "gym-ELM5512"} <= {t for hit in found.artifact for t in hit["tags"]}

    memory = _memory_of(mos, fact)
    mos.forget(memory.id, user_id="dana")
    messages = saver.get_tuple(CONFIG).checkpoint["channel_values"]["messages"]
    call = next(m for m in messages if m.type == "ai" and m.tool_calls).tool_calls[0]
    assert call["args"] == {"text": "[forgotten]", "tags": []}
    stored = next(m for m in messages if m.type == "tool" and isinstance(m.artifact, dict))
    assert stored.artifact["id"] == memory.id and stored.artifact["tags"] == []
    hits = {h["id"]: h for h in next(
        m for m in messages if m.type == "tool" and isinstance(m.artifact, list)).artifact}
    assert hits[memory.id]["tags"] == [] and hits[memory.id]["why"] == "[forgotten]"
    assert hits[other.id]["tags"] == ["gym-ELM5512"] and hits[other.id]["why"] != "[forgotten]"
    saver.close()
    assert files_holding(mos.data_dir, "VOLE4417") == []
    assert files_holding(mos.data_dir, "Okonkwo".lower()) == []


def test_a_stored_memory_s_source_is_the_message_it_came_from(mos: MemOS) -> None:
    """The fact given first, then confirmed with "yes": the source is the fact's message, not
    the latest one, and a "yes" of another thread is not redacted by the forget."""
    saver = MemOSCheckpointer(mos)
    fact = "Dana's passport number is QX77130"
    agent = _agent(mos, saver, "Shall I remember it?",
                   tool_call("store_memory", text=fact, memory_type="fact"), "Stored.", "ok")
    agent.invoke({"messages": [HumanMessage("My passport number is QX77130.")]}, CONFIG)
    agent.invoke({"messages": [HumanMessage("yes")]}, CONFIG)
    other = {"configurable": {"thread_id": "t2"}}
    agent.invoke({"messages": [HumanMessage("yes")]}, other)
    stored = _memory_of(mos, fact)
    first = saver.get_tuple(CONFIG).checkpoint["channel_values"]["messages"][0]
    assert stored.provenance.source_message_ids == (first.id,)
    mos.forget(stored.id, user_id="dana")
    assert _texts(saver, "t2")[0] == "yes"
    assert _texts(saver, "t1")[0] == "[forgotten]" and "yes" in _texts(saver, "t1")


def _memory_of_source(mos: MemOS, message_id: str) -> list[MemCube]:
    return [c for c in mos.list(user_id="dana") if message_id in c.provenance.source_message_ids]


def _closed_log(make_mos: Callable[..., MemOS], restart: bool) -> tuple[MemOS, MemCube]:
    """A thread that holds SECRET, its checkpointer closed -- and with ``restart`` the MemOS
    reopened on the same data directory, no checkpointer constructed since."""
    mos = make_mos()
    with MemOSCheckpointer(mos) as saver:
        agent = _agent(mos, saver, "Noted.", "Teal is nice.")
        agent.invoke({"messages": [HumanMessage(SECRET)]}, CONFIG)
        agent.invoke({"messages": [HumanMessage("I like teal")]}, CONFIG)
    memory = _memory_of(mos, f"user: {SECRET}")
    if restart:
        mos.close()
        mos = make_mos()
    assert any(f.startswith(VAULT) for f in files_holding(mos.data_dir, MARKER))
    return mos, memory


@pytest.mark.parametrize("restart", [False, True], ids=["closed", "reopened"])
def test_forget_reaches_the_vault_with_no_checkpointer_open(
        make_mos: Callable[..., MemOS], restart: bool) -> None:
    mos, memory = _closed_log(make_mos, restart)

    receipt = mos.forget(memory.id, user_id="dana")

    assert receipt.derived == (
        DerivedForm(kind="conversation_log", id=f"{FORM}:t1", action="redacted"),)
    assert "conversation_log" in receipt.removed_from
    assert files_holding(mos.data_dir, MARKER) == []
    with MemOSCheckpointer(mos) as saver:  # the thread loads, every checkpoint redacted
        for tup in saver.list(CONFIG):
            for message in tup.checkpoint["channel_values"].get("messages", []):
                assert MARKER not in str(message.content)
        agent = _agent(mos, saver, "Sure.")
        assert [(m.type, m.content) for m in agent.get_state(CONFIG).values["messages"]] == [
            ("human", "[forgotten]"), ("ai", "Noted."), ("human", "I like teal"),
            ("ai", "Teal is nice.")]
        agent.invoke({"messages": [HumanMessage("thanks")]}, CONFIG)  # and resumes
        assert len(agent.get_state(CONFIG).values["messages"]) == 6
    assert files_holding(mos.data_dir, MARKER) == []


def test_a_failing_vault_redaction_leaves_the_memory_and_the_log_unchanged(
        make_mos: Callable[..., MemOS], monkeypatch: pytest.MonkeyPatch) -> None:
    mos, memory = _closed_log(make_mos, restart=True)

    def broken(*args: Any) -> Any:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(checkpoint_module, "_redact", broken)
    with pytest.raises(sqlite3.OperationalError):
        mos.forget(memory.id, user_id="dana")
    assert mos.get(memory.id, user_id="dana").text == f"user: {SECRET}"
    assert any(f.startswith(VAULT) for f in files_holding(mos.data_dir, MARKER))
    monkeypatch.undo()
    assert mos.forget(memory.id, user_id="dana").derived  # retrying works
    assert files_holding(mos.data_dir, MARKER) == []


def test_an_open_checkpointer_redacts_with_its_own_hook(
        mos: MemOS, monkeypatch: pytest.MonkeyPatch) -> None:
    saver = MemOSCheckpointer(mos)
    _agent(mos, saver, "Noted.").invoke({"messages": [HumanMessage(SECRET)]}, CONFIG)

    def not_while_open(*args: Any) -> Any:
        raise AssertionError("the vault redactor ran while the checkpointer was open")

    monkeypatch.setattr(checkpoint_module, "redact_vault", not_while_open)
    assert mos.forget(_memory_of(mos, f"user: {SECRET}").id, user_id="dana").derived
    assert files_holding(mos.data_dir, MARKER) == []
    saver.close()


def test_a_failing_redaction_leaves_the_memory_and_the_log_unchanged(
        mos: MemOS, monkeypatch: pytest.MonkeyPatch) -> None:
    saver = MemOSCheckpointer(mos)
    _agent(mos, saver, "Noted.").invoke({"messages": [HumanMessage(SECRET)]}, CONFIG)
    memory = _memory_of(mos, f"user: {SECRET}")

    def broken(*args: Any) -> Any:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(saver.serde, "dumps_typed", broken)  # fails mid-transaction
    with pytest.raises(sqlite3.OperationalError):
        mos.forget(memory.id, user_id="dana")
    assert mos.get(memory.id, user_id="dana").text == f"user: {SECRET}"
    assert saver.get_tuple(CONFIG).checkpoint["channel_values"]["messages"][0].content == SECRET
    monkeypatch.undo()
    assert mos.forget(memory.id, user_id="dana").derived  # retrying works
    assert files_holding(mos.data_dir, MARKER) == []
    saver.close()


def test_other_threads_and_checkpoint_ids_are_kept(make_mos: Callable[..., MemOS]) -> None:
    mos = make_mos()
    saver = MemOSCheckpointer(mos)
    saver.put({"configurable": {"thread_id": "other", "checkpoint_ns": ""}},
              empty_checkpoint(), {}, {})
    _agent(mos, saver, "Noted.").invoke({"messages": [HumanMessage(SECRET)]}, CONFIG)
    ids = [t.config["configurable"]["checkpoint_id"] for t in saver.list(None)]
    mos.forget(_memory_of(mos, f"user: {SECRET}").id, user_id="dana")
    assert [t.config["configurable"]["checkpoint_id"] for t in saver.list(None)] == ids
    saver.close()


def test_interrupt_values_are_redacted(mos: MemOS) -> None:
    from langgraph.types import Interrupt

    saver = MemOSCheckpointer(mos)
    memory = mos.add("Dana's passport number is QX77130", user_id="dana")
    config = saver.put({"configurable": {"thread_id": "t9", "checkpoint_ns": ""}},
                       empty_checkpoint(), {}, {})
    question = Interrupt({"question": "Is Dana's passport number is QX77130 right?"}, "i1")
    saver.put_writes(config, [("__interrupt__", [question])], "task-1")
    assert [d.id for d in mos.forget(memory.id, user_id="dana").derived] == [f"{FORM}:t9"]
    (_, _, [stored]), = saver.get_tuple(config).pending_writes
    assert (stored.value, stored.id) == ({"question": "Is [forgotten] right?"}, "i1")
    saver.close()


def test_chat_message_history_lives_in_the_vault_and_forget_scrubs_it(mos: MemOS) -> None:
    from langchain_memos import MemOSChatMessageHistory

    history = MemOSChatMessageHistory(mos, user_id="dana", session_id="chat")
    history.add_messages([HumanMessage(SECRET), AIMessage("Noted.")])
    assert not (mos.data_dir / "chat_history.sqlite3").exists()  # no log of its own
    mos.forget(_memory_of(mos, f"user: {SECRET}").id, user_id="dana")
    assert [m.content for m in history.messages] == ["Noted."]
    assert files_holding(mos.data_dir, MARKER) == []


def test_tool_call_arguments_another_encoder_escaped_are_redacted(mos: MemOS) -> None:
    """A provider's SDK in another language writes the arguments with escapes Python's json
    never writes (.NET: upper-case hex, "'" and "&" escaped): the history kept the text."""
    import json
    import re

    from langchain_memos import MemOSChatMessageHistory

    secret = "Renée's bank PIN is 4821 & the branch is Crédit du Nord"
    fact = mos.add(secret, user_id="dana", type="fact")
    arguments = re.sub(r"\\u([0-9a-f]{4})", lambda m: "\\u" + m.group(1).upper(),
                       json.dumps({"text": secret})).replace("&", "\\u0026")
    history = MemOSChatMessageHistory(mos, user_id="dana", session_id="chat")
    history.add_messages([AIMessage("", additional_kwargs={"tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "store_memory", "arguments": arguments}}]})])
    mos.forget(fact.id, user_id="dana")
    stored = history.messages[0].additional_kwargs["tool_calls"][0]["function"]["arguments"]
    assert json.loads(stored) == {"text": "[forgotten]"}
    mos.close()
    for marker in ("PIN is 4821", "du Nord", "Cr\\u00E9dit"):
        assert files_holding(mos.data_dir, marker) == [], marker


@pytest.mark.parametrize("stored", ["NFC", "NFD"])
def test_a_chat_history_copy_in_the_other_unicode_form_is_redacted(mos: MemOS, stored: str) -> None:
    """The history holds the memory in the other Unicode form (NFD: an accent typed on macOS
    is a letter and a combining mark; NFC: composed): compared byte for byte, it was kept --
    and a decomposed memory's ASCII runs ("Rene" of a decomposed "Renée") are not in a composed
    record, so the history's pre-filter did not even select it."""
    import unicodedata

    from langchain_memos import MemOSChatMessageHistory

    secret = "Renée's bank PIN is 4821 at the Crédit du Nord in Göttingen"
    other = "NFD" if stored == "NFC" else "NFC"
    fact = mos.add(unicodedata.normalize(stored, secret), user_id="dana", type="fact")
    copy = unicodedata.normalize(other, secret)
    history = MemOSChatMessageHistory(mos, user_id="dana", session_id="chat")
    history.add_messages([HumanMessage(f"Remember: {copy}"), AIMessage(copy), AIMessage("Noted.")])
    markers = [unicodedata.normalize(form, text) for form in ("NFC", "NFD")
               for text in ("Renée", "Göttingen")] + ["PIN is 4821"]
    assert all(files_holding(mos.data_dir, marker) for marker in markers)

    mos.forget(fact.id, user_id="dana")

    assert [m.content for m in history.messages] == ["Remember: [forgotten]", "[forgotten]",
                                                     "Noted."]
    mos.close()
    for marker in markers:
        assert files_holding(mos.data_dir, marker) == [], marker


def _move_to_legacy_file(mos: MemOS, threads: list[str]) -> None:
    """Move ``threads`` out of the vault into an old-style ``checkpoints.sqlite3``, as a
    data directory from before the vault held checkpoints has them."""
    from test_lc_checkpoint import _LEGACY_SCHEMA

    vault = mos.store.vault
    legacy = sqlite3.connect(mos.data_dir / FILENAME)
    legacy.executescript(_LEGACY_SCHEMA)
    for r in vault.cp_list():
        if r.thread_id in threads:
            legacy.execute("INSERT INTO checkpoints VALUES (?,?,?,?,?,?,?,?,?)",
                           (r.thread_id, r.checkpoint_ns, r.checkpoint_id,
                            r.parent_checkpoint_id, r.run_id, *r.checkpoint, *r.metadata))
    legacy.executemany("INSERT INTO blobs VALUES (?,?,?,?,?,?)",
                       vault._db.execute("SELECT * FROM cp_blobs").fetchall())
    legacy.commit()
    legacy.close()
    for thread in threads:
        vault.cp_delete_thread(thread)


def test_forget_reaches_an_old_checkpoints_file_not_yet_moved(make_mos: Callable[..., MemOS]) -> None:
    """A data directory from before the vault held checkpoints, reopened: until a
    checkpointer moves its checkpoints.sqlite3 into the vault, the file redactor (entry point
    ``memos_core.forget_hooks``) reaches it; the move then carries the redacted thread."""
    mos, memory = _closed_log(make_mos, restart=False)
    _move_to_legacy_file(mos, ["t1"])
    mos.close()
    mos = make_mos()
    assert FILENAME in files_holding(mos.data_dir, MARKER)

    receipt = mos.forget(memory.id, user_id="dana")

    assert DerivedForm(kind="conversation_log", id=f"{FILENAME}:t1",
                       action="redacted") in receipt.derived
    assert files_holding(mos.data_dir, MARKER) == []
    with MemOSCheckpointer(mos) as saver:  # moved in, redacted
        assert not (mos.data_dir / FILENAME).exists()
        messages = _agent(mos, saver, "Sure.").get_state(CONFIG).values["messages"]
        assert [m.content for m in messages][:2] == ["[forgotten]", "Noted."]


def _thread(saver: MemOSCheckpointer, thread: str, user: str | None, *texts: str) -> None:
    """A checkpoint of ``thread`` holding ``texts`` as human messages; ``user`` goes into
    ``configurable["user_id"]``, which LangGraph copies into the checkpoint's metadata."""
    configurable = {"thread_id": thread, "checkpoint_ns": ""}
    if user is not None:
        configurable["user_id"] = user
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"messages": [HumanMessage(t) for t in texts]}
    checkpoint["channel_versions"] = {"messages": "1"}
    saver.put({"configurable": configurable}, checkpoint, {}, {"messages": "1"})


def _texts(saver: MemOSCheckpointer, thread: str) -> list[str]:
    state = saver.get_tuple({"configurable": {"thread_id": thread}})
    return [m.content for m in state.checkpoint["channel_values"]["messages"]]


def test_forget_leaves_other_users_threads_alone(mos: MemOS) -> None:
    """One user's forget must not rewrite, nor report, another user's conversation: a
    memory with the same text as a message of Alice's thread, added and forgotten by
    Mallory, leaves Alice's thread as it was. Alice's own forget redacts it; a thread that
    names no user is redacted by anyone's forget (it is nobody's)."""
    saver = MemOSCheckpointer(mos)
    _thread(saver, "alice-t", "alice", SECRET, "thanks")
    _thread(saver, "shared-t", None, SECRET)

    planted = mos.add(SECRET, user_id="mallory")
    receipt = mos.forget(planted.id, user_id="mallory")
    assert [d.id for d in receipt.derived] == [f"{FORM}:shared-t"]
    assert _texts(saver, "alice-t") == [SECRET, "thanks"]
    assert _texts(saver, "shared-t") == ["[forgotten]"]

    own = mos.add(SECRET, user_id="alice")
    assert [d.id for d in mos.forget(own.id, user_id="alice").derived] == [f"{FORM}:alice-t"]
    assert _texts(saver, "alice-t") == ["[forgotten]", "thanks"]
    saver.close()
    # the vault redactor (no checkpointer open) keeps to the same rule
    _thread(saver := MemOSCheckpointer(mos), "bob-t", "bob", SECRET)
    saver.close()
    planted = mos.add(SECRET, user_id="mallory")
    assert mos.forget(planted.id, user_id="mallory").derived == ()
    with MemOSCheckpointer(mos) as saver:
        assert _texts(saver, "bob-t") == [SECRET]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_user_given_as_the_runs_context_owns_its_thread(mos: MemOS, mode: str) -> None:
    """create_agent(context_schema=...) passes the user as the run's context, which LangGraph
    does not copy into checkpoint metadata: every thread looked like nobody's, so Alice's
    forget rewrote Bob's thread and named it in her receipt. The checkpointer records the
    context's user in each checkpoint's metadata."""
    import asyncio
    from dataclasses import dataclass

    @dataclass
    class User:
        user_id: str

    saver = MemOSCheckpointer(mos)
    agent = create_agent(scripted("Noted.", "Noted."), context_schema=User, checkpointer=saver,
                         middleware=[MemOSMiddleware(mos)])
    for user in ("alice", "bob"):
        args = ({"messages": [HumanMessage(SECRET)]}, {"configurable": {"thread_id": f"{user}-t"}})
        if mode == "sync":
            agent.invoke(*args, context=User(user))
        else:
            asyncio.run(agent.ainvoke(*args, context=User(user)))
    assert saver.get_tuple({"configurable": {"thread_id": "bob-t"}}).metadata["user_id"] == "bob"
    alices = next(c for c in mos.list(user_id="alice") if MARKER in c.text)
    receipt = mos.forget(alices.id, user_id="alice")
    assert [d.id for d in receipt.derived] == [f"{FORM}:alice-t"]
    assert _texts(saver, "bob-t") == [SECRET, "Noted."]
    assert _texts(saver, "alice-t") == ["[forgotten]", "Noted."]
    saver.close()


def test_a_custom_user_id_key_names_the_threads_user(mos: MemOS) -> None:
    saver = MemOSCheckpointer(mos, user_id_key="account")
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"messages": [HumanMessage(SECRET)]}
    checkpoint["channel_versions"] = {"messages": "1"}
    saver.put({"configurable": {"thread_id": "t", "checkpoint_ns": "", "account": "alice"}},
              checkpoint, {}, {"messages": "1"})
    planted = mos.add(SECRET, user_id="mallory")
    assert mos.forget(planted.id, user_id="mallory").derived == ()
    assert _texts(saver, "t") == [SECRET]
    saver.close()
    with pytest.raises(InvalidInputError, match="user_id_key"):
        MemOSCheckpointer(mos, user_id_key="")


def _put(saver: MemOSCheckpointer, thread: str, configurable: dict[str, str], text: str) -> None:
    """A checkpoint of ``thread`` holding ``text``; ``configurable`` names its user."""
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"messages": [HumanMessage(text, id=f"{thread}-m")]}
    checkpoint["channel_versions"] = {"messages": "1"}
    saver.put({"configurable": {"thread_id": thread, "checkpoint_ns": "", **configurable}},
              checkpoint, {}, {"messages": "1"})


@pytest.mark.parametrize("restart", [False, True], ids=["closed", "reopened"])
def test_a_custom_user_id_key_keeps_other_users_threads_with_no_checkpointer_open(
        make_mos: Callable[..., MemOS], restart: bool) -> None:
    """The vault redactor (no checkpointer open: closed, another worker, the CLI) does not
    know the checkpointer's ``user_id_key``. It read only ``"user_id"``, so a thread tagged
    under another key was nobody's: Mallory's forget rewrote Alice's thread and named it in
    her receipt. The checkpointer records the user under a key of its own too."""
    mos = make_mos()
    with MemOSCheckpointer(mos, user_id_key="uid") as saver:
        _put(saver, "alice-t", {"uid": "alice"}, SECRET)
        _put(saver, "nobody-t", {}, SECRET)
        metadata = saver.get_tuple({"configurable": {"thread_id": "alice-t"}}).metadata
        assert metadata["uid"] == "alice"  # and the checkpointer's own key is not shown,
        assert not [key for key in metadata if key.startswith("__")]
        owner = next(key for key in saver.serde.loads_typed(  # nor filtered on
            saver._store.cp_list("alice-t")[0].metadata) if key.startswith("__"))
        assert list(saver.list(None, filter={owner: "alice"})) == []
        assert len(list(saver.list(None, filter={"uid": "alice"}))) == 1
    if restart:
        mos.close()
        mos = make_mos()
    planted = mos.add(SECRET, user_id="mallory")
    assert [d.id for d in mos.forget(planted.id, user_id="mallory").derived] == [
        f"{FORM}:nobody-t"]
    alices = mos.add(SECRET, user_id="alice")
    _put(MemOSCheckpointer(mos, user_id_key="uid"), "nobody-t", {}, SECRET)  # said again
    assert [d.id for d in mos.forget(alices.id, user_id="alice").derived] == [
        f"{FORM}:alice-t", f"{FORM}:nobody-t"]
    with MemOSCheckpointer(mos, user_id_key="uid") as saver:
        assert _texts(saver, "alice-t") == ["[forgotten]"]


def test_checkpoints_of_earlier_versions_name_their_user_under_user_id(mos: MemOS) -> None:
    """A checkpoint stored before the checkpointer recorded OWNER_KEY still names its user
    under "user_id", and reads back as it was stored."""
    from dataclasses import replace

    with MemOSCheckpointer(mos) as saver:
        _put(saver, "alice-t", {"user_id": "alice"}, SECRET)
        store, serde = saver._store, saver.serde
        [record] = store.cp_list("alice-t")
        old = {"user_id": "alice", "source": "input", "step": 0}
        store.cp_put(replace(record, metadata=serde.dumps_typed(old)), [])
        assert saver.get_tuple({"configurable": {"thread_id": "alice-t"}}).metadata == old
    planted = mos.add(SECRET, user_id="mallory")
    assert mos.forget(planted.id, user_id="mallory").derived == ()
    with MemOSCheckpointer(mos) as saver:
        assert _texts(saver, "alice-t") == [SECRET]


class _Zipped:
    """A serde that compresses what LangGraph's default one writes (as one that encrypts
    at rest would): its types are unknown to the default serializer."""

    def __init__(self) -> None:
        from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

        self._inner = JsonPlusSerializer()

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        import zlib

        kind, data = self._inner.dumps_typed(obj)
        return "z-" + kind, zlib.compress(data)

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        import zlib

        kind, raw = data
        if kind.startswith("z-"):
            return self._inner.loads_typed((kind[2:], zlib.decompress(raw)))
        return self._inner.loads_typed(data)


def test_a_custom_serde_fails_only_its_users_forget_with_no_checkpointer_open(
        mos: MemOS, caplog: pytest.LogCaptureFixture) -> None:
    """The vault redactor decodes with the default serializer. A thread stored with another
    serde made every forget (any user's) fail with LangGraph's NotImplementedError. Now
    another user's forget succeeds; the owner's fails with a MemOSError naming the thread
    (the memory is not forgotten: nothing could redact it there), and succeeds once a
    checkpointer with that serde is open."""
    from memos_core import MemOSError

    saver = MemOSCheckpointer(mos, serde=_Zipped(), user_id_key="uid")
    _put(saver, "alice-t", {"uid": "alice"}, SECRET)
    _put(saver, "nobody-t", {}, "Carol likes tea.")
    saver.close()

    carols = mos.add("Carol prefers window seats.", user_id="carol")
    with caplog.at_level("WARNING", logger="langchain_memos.checkpoint"):
        assert mos.forget(carols.id, user_id="carol").derived == ()
    assert "'nobody-t'" in caplog.text and "'alice-t'" not in caplog.text

    alices = mos.add(SECRET, user_id="alice")
    with pytest.raises(MemOSError, match="'alice-t'.*serde.*not forgotten"):
        mos.forget(alices.id, user_id="alice")
    assert mos.get(alices.id, user_id="alice").text == SECRET

    with MemOSCheckpointer(mos, serde=_Zipped(), user_id_key="uid") as saver:
        assert _texts(saver, "alice-t") == [SECRET]
        receipt = mos.forget(alices.id, user_id="alice")
        assert [d.id for d in receipt.derived] == [f"{FORM}:alice-t"]
        assert _texts(saver, "alice-t") == ["[forgotten]"]


def test_a_short_memory_matches_only_whole_messages(mos: MemOS) -> None:
    """A one-letter memory must not redact that letter in every conversation: a text
    shorter than MIN_NEEDLE characters matches only a message that is exactly it."""
    saver = MemOSCheckpointer(mos)
    _thread(saver, "t", None, "Hello there, see you", "ok")
    for text in ("e", "ok"):
        mos.forget(mos.add(text, user_id="dana").id, user_id="dana")
    assert _texts(saver, "t") == ["Hello there, see you", "[forgotten]"]
    saver.close()


def test_an_old_checkpoints_file_keeps_other_users_threads(make_mos: Callable[..., MemOS]) -> None:
    """The legacy file redactor follows the same rule as the vault's."""
    mos = make_mos()
    with MemOSCheckpointer(mos) as saver:
        _thread(saver, "alice-t", "alice", SECRET)
        _thread(saver, "nobody-t", None, SECRET)
    _move_to_legacy_file(mos, ["alice-t", "nobody-t"])
    mos.close()
    mos = make_mos()
    planted = mos.add(SECRET, user_id="mallory")
    assert [d.id for d in mos.forget(planted.id, user_id="mallory").derived] == [
        f"{FILENAME}:nobody-t"]
    with MemOSCheckpointer(mos) as saver:  # moved into the vault
        assert _texts(saver, "alice-t") == [SECRET]
        assert _texts(saver, "nobody-t") == ["[forgotten]"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_forget_memory_in_the_running_conversation_stays_forgotten(mos: MemOS, mode: str) -> None:
    """The model forgets a memory with the tool in the thread that holds its message.
    ``MemOS.forget`` redacts the stored checkpoints; the tool redacts the running graph's
    own messages (a Command that replaces them by id), so the graph's next checkpoint does
    not write the text back and the next model call is not sent it."""
    import asyncio

    saver = MemOSCheckpointer(mos)

    def turn(text: str, *replies: AIMessage | str) -> Any:
        model = scripted(*replies)
        agent = create_agent(model, tools=create_memory_tools(mos, user_id="dana"),
                             middleware=[MemOSMiddleware(mos, user_id="dana")], checkpointer=saver)
        args = ({"messages": [HumanMessage(text)]}, CONFIG)
        asyncio.run(agent.ainvoke(*args)) if mode == "async" else agent.invoke(*args)
        return model

    turn(SECRET, "Noted.")
    memory = _memory_of(mos, f"user: {SECRET}")
    turn("Please forget my locker code.", tool_call("forget_memory", memory_id=memory.id), "Done.")
    model = turn("What should I pack for the gym?", "A towel.")

    assert not any(MARKER in str(m.content) for m in model.calls[0])
    messages = saver.get_tuple(CONFIG).checkpoint["channel_values"]["messages"]
    assert messages[0].content == "[forgotten]"
    [answer] = [m for m in messages if m.type == "tool"]
    assert answer.content == f"Forgot memory {memory.id}."
    assert answer.artifact["memory_id"] == memory.id and answer.name == "forget_memory"
    saver.close()
    assert files_holding(mos.data_dir, MARKER) == []


def test_a_checkpoint_made_before_a_forget_and_stored_after_it_is_redacted(mos: MemOS) -> None:
    """LangGraph stores a step's checkpoint and writes in the background (durability
    "async") while the next step -- a forget_memory tool -- runs: one made before the forget
    that lands after it is redacted on the way in. One made after it is the conversation
    going on, and is kept."""
    saver = MemOSCheckpointer(mos)
    memory = mos.add(SECRET, user_id="dana")
    early = empty_checkpoint()  # made before the forget...
    early["channel_values"] = {"messages": [HumanMessage(SECRET, id="m1")]}
    early["channel_versions"] = {"messages": "1"}
    mos.forget(memory.id, user_id="dana")
    config = saver.put({"configurable": {"thread_id": "late", "checkpoint_ns": ""}},  # ...stored after
                       early, {}, {"messages": "1"})
    saver.put_writes(config, [("messages", [AIMessage(f"You said: {SECRET}")])], "task-1")
    state = saver.get_tuple(config)
    assert state.checkpoint["channel_values"]["messages"][0].content == "[forgotten]"
    assert state.pending_writes[0][2][0].content == "You said: [forgotten]"
    _thread(saver, "later", "dana", SECRET)  # said again after the forget
    assert _texts(saver, "later") == [SECRET]
    saver.close()


def test_a_checkpoint_written_while_a_forget_begins_is_redacted(mos: MemOS) -> None:
    """LangGraph stores a step's checkpoint in the background ("async" durability): its
    write may look for recent forgets, then a forget redacts the stored thread, then the
    write lands with the text. The forget's pass now waits for a write in flight, and
    redacts it once stored."""
    import threading
    import time

    saver = MemOSCheckpointer(mos)
    memory = mos.add([{"role": "user", "content": SECRET}], user_id="dana")[0]
    store = saver._store
    real_put = store.cp_put
    forgetting = threading.Thread(target=lambda: mos.forget(memory.id, user_id="dana"))

    def put_while_a_forget_begins(*args: Any) -> None:
        forgetting.start()
        time.sleep(0.5)  # the forget runs its hooks meanwhile, unless it waits for this write
        real_put(*args)

    store.cp_put = put_while_a_forget_begins  # type: ignore[method-assign]
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"messages": [HumanMessage(SECRET)]}
    checkpoint["channel_versions"] = {"messages": "1"}
    saver.put(CONFIG, checkpoint, {"user_id": "dana"}, {"messages": "1"})
    forgetting.join(60)
    store.cp_put = real_put  # type: ignore[method-assign]
    stored = saver.get_tuple(CONFIG).checkpoint["channel_values"]["messages"]
    assert MARKER not in str(stored[0].content)
    saver.close()
    assert files_holding(mos.data_dir, MARKER) == []


def _checkpoint_rows(mos: MemOS, thread: str) -> dict[str, int]:
    """The rows each checkpoint table of the vault holds for ``thread`` (read beside it)."""
    db = sqlite3.connect(mos.data_dir / VAULT)
    try:
        return {table: db.execute(f"SELECT COUNT(*) FROM {table} WHERE thread_id=?",
                                  (thread,)).fetchone()[0]
                for table in ("cp_checkpoints", "cp_blobs", "cp_writes")}
    finally:
        db.close()


NO_ROWS = {"cp_checkpoints": 0, "cp_blobs": 0, "cp_writes": 0}


@pytest.mark.parametrize("where", ["open", "closed", "reopened"])
def test_delete_for_runs_takes_the_channel_values_its_thread_no_longer_loads(
        make_mos: Callable[..., MemOS], where: str) -> None:
    """delete_for_runs deleted a thread's checkpoints and writes but kept its channel values
    (the blobs), which then no checkpoint named: a forget with no checkpointer open (closed,
    MemOS reopened, the CLI) never looked at them, as the vault held no checkpoint, and the
    text stayed on disk with nothing in the receipt. A thread's last checkpoint now takes
    its channel values with it, so nothing is left for a forget to find."""
    mos = make_mos()
    saver = MemOSCheckpointer(mos)
    run = {**CONFIG, "metadata": {"run_id": "run-1"}}
    _agent(mos, saver, "Noted.").invoke({"messages": [HumanMessage(SECRET)]}, run)
    memory = _memory_of(mos, f"user: {SECRET}")
    saver.delete_for_runs(["run-1"])
    assert _checkpoint_rows(mos, "t1") == NO_ROWS
    if where != "open":
        saver.close()
    if where == "reopened":
        mos.close()
        mos = make_mos()

    assert mos.forget(memory.id, user_id="dana").derived == ()
    assert files_holding(mos.data_dir, MARKER) == []
    saver.close()


#: (serde, checkpointer open for the forget, a live thread of another user in the vault)
ORPHANS = {
    "default-closed-alone": ("default", False, False),
    "default-closed": ("default", False, True),
    "default-open": ("default", True, True),
    "custom-closed": ("custom", False, True),
    "custom-open": ("custom", True, True),
}


@pytest.mark.parametrize(("serde", "open_", "live"), ORPHANS.values(), ids=list(ORPHANS))
def test_channel_values_an_earlier_delete_for_runs_left_are_dropped_unsearched(
        make_mos: Callable[..., MemOS], serde: str, open_: bool, live: bool) -> None:
    """Data directories of earlier versions may hold channel values of threads whose
    checkpoints delete_for_runs removed. No checkpoint says whose they are, so a forget took
    them as nobody's: Mallory's forget rewrote Bob's and named his thread in her receipt;
    with a custom serde and no checkpointer open, her forget failed (they could not be
    decoded); and with no checkpoint left in the vault, no forget searched them at all.
    A redaction now deletes them first (nothing can load them): never rewritten, named,
    decoded, nor left on disk."""
    def saver() -> MemOSCheckpointer:
        return MemOSCheckpointer(mos, serde=_Zipped() if serde == "custom" else None,
                                 user_id_key="uid")

    mos = make_mos()
    with saver() as writer:
        _put(writer, "bob-t", {"uid": "bob"}, SECRET)
        _put(writer, "mallory-old", {"uid": "mallory"}, SECRET)
        if live:
            _put(writer, "carol-t", {"uid": "carol"}, "Carol likes tea.")
    mos.close()
    db = sqlite3.connect(mos.data_dir / VAULT)  # as an earlier version's delete_for_runs left it
    with db:
        db.execute("DELETE FROM cp_checkpoints WHERE thread_id IN ('bob-t', 'mallory-old')")
    db.close()
    mos = make_mos()
    assert _checkpoint_rows(mos, "bob-t")["cp_blobs"] > 0
    live_saver = saver() if open_ else None

    planted = mos.add(SECRET, user_id="mallory")
    assert mos.forget(planted.id, user_id="mallory").derived == ()
    assert _checkpoint_rows(mos, "bob-t") == NO_ROWS
    assert _checkpoint_rows(mos, "mallory-old") == NO_ROWS
    assert files_holding(mos.data_dir, MARKER) == []
    if live:
        with saver() as reader:
            assert _texts(reader, "carol-t") == ["Carol likes tea."]
    if live_saver is not None:
        live_saver.close()
