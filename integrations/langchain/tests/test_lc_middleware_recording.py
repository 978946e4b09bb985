"""``MemOSMiddleware``: what a turn records, what a model call recalls, which hooks it has.

A scripted tool-calling model stands in for the LLM; MemOS, the checkpointer and LangChain's
own ``SummarizationMiddleware`` are real. The tests pin:

* a message is recorded once: replaying or forking a thread from an earlier checkpoint, or
  invoking it with no new message, adds no memory (an edited message supersedes its old one);
* a turn in which the model changed memory with a tool, small talk and requests to forget are not
  recorded, so a forgotten fact does not come back in the words of the request;
* recall leaves out only memories whose messages the model is sent anyway: a fact of the
  same thread that summarization dropped from the conversation is recalled;
* ``record=False`` / ``recall=False`` switch recording and recall off; a turn that only
  searched memory is recorded;
* a message MemOS refuses (a NUL character, an unpaired surrogate, over 1 MB) is answered:
  recall searches for what is searchable of it, and it is not recorded.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import SummarizationMiddleware
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.checkpoint.memory import InMemorySaver
from lc_fakes import ScriptedChatModel, scripted, tool_call
from memos_core import MemCube, MemOS

from langchain_memos import MemOSCheckpointer, MemOSMiddleware

ALLERGY = "I'm allergic to peanuts."


def _config(thread: str, user: str = "alice", **extra: Any) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread, "user_id": user, **extra}}


def _run(agent: Any, mode: str, payload: Any, config: dict[str, Any]) -> Any:
    if mode == "sync":
        return agent.invoke(payload, config)
    return asyncio.run(agent.ainvoke(payload, config))


def _texts(mos: MemOS, user: str = "alice") -> list[str]:
    return [c.text for c in mos.list(user_id=user)]


def _always(text: str) -> ScriptedChatModel:
    """A model that answers ``text`` to every call."""
    return ScriptedChatModel(messages=itertools.repeat(AIMessage(text)), calls=[])


def _system_prompt(model: ScriptedChatModel, call: int = 0) -> str:
    first = model.calls[call][0]
    return first.text if isinstance(first, SystemMessage) else ""


# ------------------------------------------------------------------ once per message


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_replay_fork_and_empty_follow_up_record_nothing_again(mos: MemOS, mode: str) -> None:
    agent = create_agent(_always("Noted."), middleware=[MemOSMiddleware(mos)],
                         checkpointer=MemOSCheckpointer(mos))
    _run(agent, mode, {"messages": [HumanMessage(ALLERGY)]}, _config("t1"))
    assert _texts(mos) == [f"user: {ALLERGY}"]

    # time travel: re-run the thread from each of its earlier checkpoints (LangGraph replay)
    earlier = [h for h in agent.get_state_history(_config("t1")) if h.next]
    assert {h.next for h in earlier} >= {("__start__",), ("model",)}
    for snapshot in earlier:
        _run(agent, mode, None, _config("t1", **snapshot.config["configurable"]))
    # ... and invoke it again with no new message
    _run(agent, mode, {"messages": []}, _config("t1"))
    assert _texts(mos) == [f"user: {ALLERGY}"]

    # a new statement in the same thread is still recorded, once
    _run(agent, mode, {"messages": [HumanMessage("My cat is called Miso.")]}, _config("t1"))
    _run(agent, mode, {"messages": []}, _config("t1"))
    assert _texts(mos) == [f"user: {ALLERGY}", "user: My cat is called Miso."]


def _edited_first_message(mos: MemOS) -> tuple[Any, MemCube, BaseMessage, dict[str, Any]]:
    """An agent whose thread "t1" recorded ALLERGY, then had that message corrected the
    LangGraph way (replaced, same id, in a fork from before the model call): the agent, the
    memory of the old text, the first message and the fork's config, not run yet."""
    agent = create_agent(_always("Noted."), middleware=[MemOSMiddleware(mos)],
                         checkpointer=MemOSCheckpointer(mos))
    agent.invoke({"messages": [HumanMessage(ALLERGY)]}, _config("t1"))
    [old] = mos.list(user_id="alice")
    first = agent.get_state(_config("t1")).values["messages"][0]
    before_model = next(h for h in agent.get_state_history(_config("t1")) if h.next == ("model",))
    forked = agent.update_state(before_model.config,
                                {"messages": [HumanMessage("I'm allergic to shellfish.", id=first.id)]})
    return agent, old, first, _config("t1", **forked["configurable"])


def test_a_message_edited_before_a_fork_supersedes_its_memory(mos: MemOS) -> None:
    agent, old, first, fork = _edited_first_message(mos)
    agent.invoke(None, fork)
    agent.invoke(None, fork)  # and replay the fork

    new = [c for c in mos.list(user_id="alice") if c.id != old.id]
    assert [c.text for c in new] == ["user: I'm allergic to shellfish."]
    assert new[0].provenance.source_message_ids == (first.id,)
    assert mos.get(old.id, user_id="alice").superseded_by == new[0].id
    assert [h.text for h in mos.search("what am I allergic to?", user_id="alice")] == [
        "user: I'm allergic to shellfish."]


def test_an_edit_another_run_recorded_meanwhile_is_not_an_error(
        mos: MemOS, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs of a thread that see the same edited message both supersede its memory;
    MemOS refuses the second (a memory is superseded once), which the middleware raised out
    of the agent's turn. The edit is recorded once and the turn goes on."""
    agent, old, _, fork = _edited_first_message(mos)
    real_add = mos.add

    def add_after_the_other_run(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("supersedes") == old.id:  # the other run records the edit first
            real_add(*args, **kwargs)
        return real_add(*args, **kwargs)

    monkeypatch.setattr(mos, "add", add_after_the_other_run)
    agent.invoke(None, fork)
    new = [c for c in mos.list(user_id="alice") if c.id != old.id]
    assert [c.text for c in new] == ["user: I'm allergic to shellfish."]
    assert mos.get(old.id, user_id="alice").superseded_by == new[0].id


def test_a_forgotten_message_is_not_recorded_again_on_replay(mos: MemOS) -> None:
    agent = create_agent(_always("Noted."), middleware=[MemOSMiddleware(mos)],
                         checkpointer=MemOSCheckpointer(mos))
    agent.invoke({"messages": [HumanMessage(ALLERGY)]}, _config("t1"))
    [memory] = mos.list(user_id="alice")
    mos.forget(memory.id, user_id="alice")

    for snapshot in [h for h in agent.get_state_history(_config("t1")) if h.next]:
        agent.invoke(None, _config("t1", **snapshot.config["configurable"]))
    agent.invoke({"messages": []}, _config("t1"))
    assert _texts(mos) == []


def test_an_updated_memory_does_not_make_its_message_new(mos: MemOS) -> None:
    agent = create_agent(_always("Noted."), middleware=[MemOSMiddleware(mos)],
                         checkpointer=MemOSCheckpointer(mos))
    agent.invoke({"messages": [HumanMessage(ALLERGY)]}, _config("t1"))
    [memory] = mos.list(user_id="alice")
    mos.update(memory.id, "Alice is allergic to peanuts (severe).", user_id="alice")
    agent.invoke({"messages": []}, _config("t1"))
    assert _texts(mos) == ["Alice is allergic to peanuts (severe)."]


# ------------------------------------------------------------ what a turn records


class ForgetfulModel(ScriptedChatModel):
    """Asked to forget, calls forget_memory with the first id recall showed it; asked to
    remember, calls store_memory; after a tool, "Done."; else "Noted."."""

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self.calls.append(list(messages))
        last = messages[-1]
        if isinstance(last, HumanMessage) and last.text.startswith("Forget"):
            memory_id = re.findall(r"id ([0-9a-f-]{36})", messages[0].text)[0]
            reply = tool_call("forget_memory", "f1", memory_id=memory_id)
        elif isinstance(last, HumanMessage) and last.text.startswith("Remember"):
            reply = tool_call("store_memory", "s1", text="Alice is vegetarian.", memory_type="fact")
        else:
            reply = AIMessage("Done." if last.type == "tool" else "Noted.")
        return ChatResult(generations=[ChatGeneration(message=reply)])


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_memory_tool_turns_small_talk_and_forget_requests_are_not_recorded(mos: MemOS, mode: str) -> None:
    model = ForgetfulModel(messages=iter(()), calls=[])
    agent = create_agent(model, middleware=[MemOSMiddleware(mos, memory_tools=True)],
                         checkpointer=MemOSCheckpointer(mos))
    _run(agent, mode, {"messages": [HumanMessage(ALLERGY)]}, _config("t1"))
    assert _texts(mos) == [f"user: {ALLERGY}"]

    # the model forgets the fact with the tool; the request itself is not a new memory
    _run(agent, mode, {"messages": [HumanMessage("Forget that I'm allergic to peanuts.")]}, _config("t2"))
    assert model.calls[-1][-1].type == "tool"  # forget_memory ran
    _run(agent, mode, {"messages": [HumanMessage("thanks!")]}, _config("t2"))
    _run(agent, mode, {"messages": [HumanMessage("hi")]}, _config("t3"))
    assert _texts(mos) == []

    # "remember that ..." with the model's store_memory call: one memory, the tool's
    _run(agent, mode, {"messages": [HumanMessage("Remember that I am vegetarian.")]}, _config("t4"))
    assert _texts(mos) == ["Alice is vegetarian."]

    # a new thread: the forgotten fact does not come back in the words of the request
    model.calls.clear()
    _run(agent, mode, {"messages": [HumanMessage("Suggest a snack with peanuts.")]}, _config("t5"))
    assert "peanut" not in _system_prompt(model).lower()


def test_the_answer_of_a_memory_tool_turn_is_not_recorded_either(mos: MemOS) -> None:
    chatty = MemOSMiddleware(mos, remember_roles=("user", "assistant"), memory_tools=True)
    model = scripted(tool_call("store_memory", text="Alice is vegetarian.", memory_type="fact"),
                     "I'll remember that you are vegetarian.")
    agent = create_agent(model, middleware=[chatty], checkpointer=InMemorySaver())
    agent.invoke({"messages": [HumanMessage("Please keep in mind I am vegetarian.")]}, _config("t1"))
    assert _texts(mos) == ["Alice is vegetarian."]


# ---------------------------------------------------------------- same-thread recall


def test_a_fact_summarized_out_of_the_thread_is_recalled_in_it(mos: MemOS) -> None:
    model = _always("ok")
    summarizer = SummarizationMiddleware(_always("## SESSION INTENT\nsmall talk"),
                                         trigger=("messages", 6), keep=("messages", 2))
    agent = create_agent(model, middleware=[summarizer, MemOSMiddleware(mos)],
                         checkpointer=MemOSCheckpointer(mos))
    agent.invoke({"messages": [HumanMessage(ALLERGY)]}, _config("t1"))
    for i in range(4):
        agent.invoke({"messages": [HumanMessage(f"Tell me about topic {i}.")]}, _config("t1"))
    model.calls.clear()
    agent.invoke({"messages": [HumanMessage("Can I eat peanut butter?")]}, _config("t1"))

    sent = model.calls[0]
    assert not any(m.text == ALLERGY for m in sent)  # summarized away ...
    assert f"user: {ALLERGY}" in _system_prompt(model)  # ... so recalled from memory

    # while its message was still in the conversation, it was not injected as well
    fresh = _always("ok")
    agent = create_agent(fresh, middleware=[MemOSMiddleware(mos)], checkpointer=InMemorySaver())
    agent.invoke({"messages": [HumanMessage("I'm allergic to shellfish.")]}, _config("t2"))
    agent.invoke({"messages": [HumanMessage("Can I eat shellfish?")]}, _config("t2"))
    assert "user: I'm allergic to shellfish." not in _system_prompt(fresh, call=1)


# ------------------------------------------------------------------- flags and searches


@pytest.mark.parametrize(("recall", "record"), [(True, True), (True, False), (False, True), (False, False)])
def test_the_flags_switch_recall_and_recording(mos: MemOS, recall: bool, record: bool) -> None:
    mos.add("Alice is allergic to peanuts.", user_id="alice")
    model = _always("ok")
    agent = create_agent(model, middleware=[MemOSMiddleware(mos, recall=recall, record=record)],
                         checkpointer=InMemorySaver())
    agent.invoke({"messages": [HumanMessage("I live in Lyon, and peanuts?")]}, _config("t1"))
    agent.invoke({"messages": [HumanMessage("I live in Lyon.")]}, _config("t2"))
    assert ("allergic" in _system_prompt(model)) is recall
    assert ("user: I live in Lyon." in _texts(mos)) is record


def test_a_turn_that_only_searched_memory_is_recorded(mos: MemOS) -> None:
    """Searching is reading: the user's statement in that turn is still a memory."""
    model = scripted(tool_call("search_memories", query="flat"), "Noted.")
    agent = create_agent(model, middleware=[MemOSMiddleware(mos, memory_tools=True)],
                         checkpointer=InMemorySaver())
    agent.invoke({"messages": [HumanMessage("I moved to Porto last month.")]}, _config("t1"))
    assert _texts(mos) == ["user: I moved to Porto last month."]


def test_a_middleware_without_hooks_still_gives_the_memory_tools(mos: MemOS) -> None:
    mos.add("Carol speaks Portuguese", user_id="carol")
    model = scripted(tool_call("search_memories", query="languages"), "Portuguese.")
    middleware = MemOSMiddleware(mos, recall=False, record=False, memory_tools=True)
    out = create_agent(model, middleware=[middleware]).invoke(
        {"messages": [HumanMessage("Which languages do I speak?")]}, _config("t1", user="carol"))
    assert "Carol speaks Portuguese" in out["messages"][2].content
    assert not isinstance(model.calls[0][0], SystemMessage)  # nothing injected


async def test_async_agent_with_a_record_only_middleware(mos: MemOS) -> None:
    agent = create_agent(_always("Noted."), middleware=[MemOSMiddleware(mos, recall=False)],
                         checkpointer=InMemorySaver())
    await agent.ainvoke({"messages": [HumanMessage(ALLERGY)]}, _config("t1"))
    await agent.ainvoke({"messages": []}, _config("t1"))
    assert _texts(mos) == [f"user: {ALLERGY}"]


# ---------------------------------------------------------------- what a turn records


@pytest.mark.parametrize(
    ("said", "recorded"),
    [
        ("My wife's name is Ana. Can you remind me of her birthday?", ["user: My wife's name is Ana."]),
        ("I moved to Lisbon last week. Can you suggest a gym?", ["user: I moved to Lisbon last week."]),
        ("Hi! My sister is Jo. Where does she live? Remind me of her address.",
         ["user: My sister is Jo."]),
        ("I'm vegetarian, what should I cook tonight?", ["user: I'm vegetarian"]),
        ("Since I live in Porto, which airport is closest?", []),  # a subordinate clause: left
        ("What bike do I have?", []),
        ("Remind me of my gym locker code.", []),
        ("Forget that I'm vegan. What's my code?", []),
        ("Do you know what? I adopted a dog. Thanks!", ["user: I adopted a dog."]),
        ([{"type": "text", "text": "My dog is called Rex."}, {"type": "text", "text": "He is three."}],
         ["user: My dog is called Rex. He is three."]),
    ],
    ids=["statement-question", "statement-request", "greeting-statement-questions",
         "clause-question", "subordinate-clause", "question", "recall-request",
         "forget-request", "question-then-statement", "text-blocks"],
)
def test_a_question_records_what_it_tells(mos: MemOS, said: Any, recorded: list[str]) -> None:
    """What a turn tells is recorded, sentence by sentence: statements inside a question
    too (the whole turn was left out as a question); the asking, small talk and requests
    to forget or to be told are not. Text blocks are joined with a space ("Rex.He"
    before)."""
    agent = create_agent(_always("ok"), middleware=[MemOSMiddleware(mos)],
                         checkpointer=MemOSCheckpointer(mos))
    agent.invoke({"messages": [HumanMessage(said)]}, _config("t1"))
    assert _texts(mos) == recorded
    agent.invoke(None, _config("t1"))  # replayed: recorded once
    assert _texts(mos) == recorded


def test_memories_shared_with_the_user_are_not_taken_for_theirs(mos: MemOS) -> None:
    """Bob says what Alice said in a session she shares with him: it is his statement and
    is recorded (her memory, listed for him, made it look recorded already)."""
    agent = create_agent(_always("ok"), middleware=[MemOSMiddleware(mos)],
                         checkpointer=MemOSCheckpointer(mos))
    agent.invoke({"messages": [HumanMessage(ALLERGY)]}, _config("group", "alice"))
    mos.share_namespace(with_user_id="bob", user_id="alice", session_id="group", scope="read")
    agent.invoke({"messages": [HumanMessage(ALLERGY)]}, _config("group", "bob"))
    assert [(c.user_id, c.text) for c in mos.list(user_id="bob")] == [
        ("alice", f"user: {ALLERGY}"), ("bob", f"user: {ALLERGY}")]


# ------------------------------------------------------------------ text MemOS refuses

#: User messages MemOS refuses as a query and as a memory, each about the boat.
REFUSED = {
    "NUL": "My log says ERR\x00\x00 code 7 about my boat.",
    "lone surrogate": "My boat's name got garbled: W\udcffren.",
    "over 1 MB": "Notes about my boat: " + "the hull and the sails " * 45_000,
}


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", list(REFUSED))
def test_a_message_memos_refuses_still_gets_an_answer(
        mos: MemOS, caplog: pytest.LogCaptureFixture, kind: str, mode: str) -> None:
    """A message MemOS refuses as a query and as a memory text failed the whole turn with
    InvalidInputError before the model was called (plain create_agent answers it). Recall
    searches for what is searchable of it; the message stays in the thread, is not
    recorded, and the log says so without its text."""
    mos.add([{"role": "user", "content": "My boat is called Wren."}], user_id="alice")
    model = _always("Noted.")
    agent = create_agent(model, middleware=[MemOSMiddleware(mos)], checkpointer=InMemorySaver())
    with caplog.at_level("WARNING", logger="langchain_memos"):
        state = _run(agent, mode, {"messages": [HumanMessage(REFUSED[kind], id="m1")]},
                     _config("t1"))
        _run(agent, mode, {"messages": [HumanMessage("I also own a red kayak.")]}, _config("t1"))
    assert state["messages"][-1].content == "Noted."
    assert state["messages"][0].content == REFUSED[kind]  # kept in the thread
    assert "My boat is called Wren." in _system_prompt(model)  # recalled for it
    assert _texts(mos) == ["user: My boat is called Wren.", "user: I also own a red kayak."]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("recall" in w for w in warnings) and any("m1" in w for w in warnings)
    assert not any("boat" in w for w in warnings)


# ---------------------------------------------------------------- forgets during a turn

LOCKER = "Alice's locker code is MARMOT9920"


def test_an_answer_quoting_a_memory_forgotten_during_the_turn_is_not_recorded(
        mos: MemOS) -> None:
    """With the assistant's answers recorded, a turn that read a memory before its user
    forgot it (elsewhere) and quotes it in the answer, recorded after the forget, would
    store the forgotten text as a new memory. For a minute after a forget such an answer
    is not recorded; the user's own statements are (new input)."""
    chatty = MemOSMiddleware(mos, remember_roles=("user", "assistant"), recall=False)
    fact = mos.add(LOCKER, user_id="alice")
    mos.forget(fact.id, user_id="alice")
    agent = create_agent(scripted(f"You told me: {LOCKER}."), middleware=[chatty],
                         checkpointer=InMemorySaver())
    agent.invoke({"messages": [HumanMessage("I moved to a bigger locker.")]}, _config("t1"))
    assert _texts(mos) == ["user: I moved to a bigger locker."]


def test_an_answer_recorded_while_a_forget_runs_is_forgotten_too(mos: MemOS) -> None:
    """The turn looks for recent forgets, then records: a forget that ran in between
    missed the new memory. It is forgotten right after it is recorded."""
    import threading

    fact = mos.add(LOCKER, user_id="alice")
    chatty = MemOSMiddleware(mos, remember_roles=("user", "assistant"), recall=False)
    agent = create_agent(scripted(f"You told me: {LOCKER}."), middleware=[chatty],
                         checkpointer=InMemorySaver())
    real_add = mos.add
    forgetting = threading.Thread(target=lambda: mos.forget(fact.id, user_id="alice"))

    def add_after_a_forget(*args: Any, **kwargs: Any) -> Any:
        forgetting.start()
        forgetting.join(60)
        return real_add(*args, **kwargs)

    mos.add = add_after_a_forget  # type: ignore[method-assign]
    try:
        agent.invoke({"messages": [HumanMessage("I moved to a bigger locker.")]},
                     _config("t1"))
    finally:
        mos.add = real_add  # type: ignore[method-assign]
    assert _texts(mos) == ["user: I moved to a bigger locker."]


def test_a_turn_with_nothing_to_record_does_not_touch_memos(make_mos: Any) -> None:
    """A turn of questions only records nothing and reads nothing: after the MemOS is
    closed it still ends as before (the recording step raised the closed error)."""
    mos = make_mos("closed")
    quiet = MemOSMiddleware(mos, recall=False)
    agent = create_agent(scripted("I don't know."), middleware=[quiet],
                         checkpointer=InMemorySaver())
    mos.close()
    out = agent.invoke({"messages": [HumanMessage("What is my locker code?")]}, _config("t1"))
    assert out["messages"][-1].content == "I don't know."
