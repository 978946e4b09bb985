"""MemOSMemory as ``memory=`` of llama-index chat engines, end to end with MockLLM.

MockLLM echoes its whole prompt, so a reply shows what memory injected. For the same
reason these memories keep only the user's messages (``remember_roles=["user"]``): an echoed
reply restates the injected memories, and storing it would recall a forgotten fact through
the echo.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
from llama_index.core.agent.workflow import ReActAgent
from llama_index.core.base.llms.types import TextBlock
from llama_index.core.chat_engine import CondensePlusContextChatEngine, SimpleChatEngine
from llama_index.core.llms import ChatMessage, MockLLM
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.storage.chat_store.base_db import MessageStatus
from memos_core import InvalidInputError, MemOS

from llama_index.memory.memos import MemOSMemory, MemOSMemoryBlock, MemOSRetriever

FACT = "My favourite tea is genmaicha."
QUESTION = "Which tea should I buy?"


def memory_for(mos: MemOS, user: str, session: str, **kwargs: Any) -> MemOSMemory:
    return MemOSMemory.from_defaults(mos=mos, user_id=user, session_id=session,
                                     remember_roles=["user"], **kwargs)


def simple_engine(memory: MemOSMemory) -> SimpleChatEngine:
    return SimpleChatEngine.from_defaults(llm=MockLLM(), memory=memory)


def condense_engine(memory: MemOSMemory) -> CondensePlusContextChatEngine:
    retriever = MemOSRetriever(memory.mos, user_id=memory.user_id, k=3)
    return CondensePlusContextChatEngine.from_defaults(retriever, llm=MockLLM(), memory=memory)


def ask(engine: Any, message: str, use_async: bool) -> str:
    if use_async:
        return str(asyncio.run(engine.achat(message)))
    return str(engine.chat(message))


ENGINES = {"simple": simple_engine, "condense_plus_context": condense_engine}


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("make_engine", list(ENGINES.values()), ids=list(ENGINES))
def test_fact_recalled_after_restart_for_same_user_only_until_forgotten(
    open_mos: Callable[..., MemOS], make_engine: Callable[[MemOSMemory], Any], use_async: bool,
) -> None:
    mos = open_mos()
    ask(make_engine(memory_for(mos, "alice", "monday")), FACT, use_async)
    mos.close()

    mos = open_mos()  # a restart: a new process would see the same files
    assert "genmaicha" in ask(make_engine(memory_for(mos, "alice", "tuesday")), QUESTION, use_async)
    bob = make_engine(memory_for(mos, "bob", "tuesday"))
    assert "genmaicha" not in ask(bob, QUESTION, use_async)

    for cube in mos.list(user_id="alice"):
        if "genmaicha" in cube.text:
            mos.forget(cube.id, user_id="alice")
    after = make_engine(memory_for(mos, "alice", "friday"))
    assert "genmaicha" not in ask(after, QUESTION, use_async)


def test_session_history_resumes_after_restart(open_mos: Callable[..., MemOS]) -> None:
    mos = open_mos()
    memory = memory_for(mos, "alice", "s1")
    memory.put(ChatMessage(role="user", content="hello"))
    memory.put(ChatMessage(role="assistant", content="hi there"))
    mos.close()
    mos = open_mos()
    resumed = memory_for(mos, "alice", "s1")
    assert [str(m) for m in resumed.get_all()] == ["user: hello", "assistant: hi there"]
    assert memory_for(mos, "bob", "s1").get_all() == []  # same session name, other user


async def test_put_writes_through_and_messages_in_prompt_are_not_repeated(mos: MemOS) -> None:
    memory = MemOSMemory.from_defaults(mos=mos, user_id="alice", session_id="s1")
    await memory.aput(ChatMessage(role="user", content="I keep bees in my garden."))
    await memory.aput(ChatMessage(role="assistant", content="Bees are great pollinators."))
    # the user's statement is a memory; the answer stays in the chat history only
    assert {c.text for c in mos.list(user_id="alice")} == {"user: I keep bees in my garden."}
    assert all(c.session_id == "s1" for c in mos.list(user_id="alice"))
    prompt = await memory.aget(input="Tell me about my bees")
    # both messages are in the history already, so the memory block adds nothing
    assert [m.role.value for m in prompt] == ["user", "assistant"]

    other_session = MemOSMemory.from_defaults(mos=mos, user_id="alice", session_id="s2")
    prompt = await other_session.aget(input="Tell me about my bees")
    assert prompt[0].role.value == "system" and "I keep bees in my garden." in prompt[0].content


async def test_flushed_messages_are_recalled_in_the_same_session(mos: MemOS) -> None:
    memory = MemOSMemory.from_defaults(mos=mos, user_id="alice", session_id="s1",
                                       k=2, token_limit=60, chat_history_token_ratio=0.5,
                                       token_flush_size=20)
    await memory.aput(ChatMessage(role="user", content="The spare key is under the blue pot."))
    for i in range(6):
        await memory.aput(ChatMessage(role="user", content=f"filler message number {i} here"))
    assert await memory.sql_store.count_messages("s1", MessageStatus.ARCHIVED) > 0
    prompt = await memory.aget(input="Where is the spare key?")
    assert "under the blue pot" in prompt[0].content
    # written once (write-through), not again when the queue flushed
    assert sum("spare key" in c.text for c in mos.list(user_id="alice")) == 1


def test_set_and_reset_touch_only_short_term_history(mos: MemOS) -> None:
    memory = memory_for(mos, "alice", "s1")
    memory.put(ChatMessage(role="user", content="I was born in Porto."))
    memory.set([ChatMessage(role="user", content="replaced history")])
    assert [m.content for m in memory.get_all()] == ["replaced history"]
    memory.reset()
    assert memory.get_all() == []
    assert [c.text for c in mos.list(user_id="alice")] == ["user: I was born in Porto."]


def test_set_keeps_the_link_from_a_memory_to_its_message(mos: MemOS) -> None:
    """``set`` (what ``agent.run(chat_history=...)`` does) with messages the history already
    holds keeps their ids, so a memory's source still names its message and forget blanks it."""
    memory = memory_for(mos, "alice", "s1")
    memory.put(ChatMessage(role="user", blocks=[TextBlock(text="My passport is X1234567."),
                                                TextBlock(text="It expires in May 2031.")]))
    memory.set([*memory.get_all(), ChatMessage(role="assistant", content="Noted.")])
    ids = asyncio.run(memory.sql_store.get_message_ids("s1"))
    [cube] = mos.list(user_id="alice")
    assert cube.provenance.source_message_ids == (ids[0],)
    mos.forget(cube.id, user_id="alice")
    assert [[b.text for b in m.blocks] for m in memory.get_all()] == [
        ["[forgotten]", "[forgotten]"], ["Noted."]]


@pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20")
@pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211")
@pytest.mark.filterwarnings("ignore:is_running called from within a step:DeprecationWarning")
async def test_react_agent_sees_memories_with_insert_method_user(mos: MemOS) -> None:
    """ReActAgent drops the first system message (it writes its own ReAct header), so it
    needs the memories in the user message: ``insert_method="user"``, as the docs say."""
    mos.add("Alice is allergic to peanuts.", user_id="alice", type="fact")
    prompts: list[str] = []

    def respond(messages: list[ChatMessage], **_: Any) -> ChatMessage:
        prompts.append("\n".join(m.content or "" for m in messages))
        return ChatMessage(role="assistant", content="Thought: I can answer.\nAnswer: ok")

    agent = ReActAgent(tools=[], llm=MockFunctionCallingLLM(response_generator=respond))
    memory = memory_for(mos, "alice", "s1", insert_method="user")
    await agent.run(user_msg="What should I avoid eating?", memory=memory)
    assert "Alice is allergic to peanuts." in prompts[0]


def test_chat_history_argument_seeds_short_term_only(mos: MemOS) -> None:
    memory = memory_for(mos, "alice", "s1", chat_history=[ChatMessage(role="user", content="seed")])
    assert [m.content for m in memory.get_all()] == ["seed"]
    assert mos.list(user_id="alice") == []


def test_bad_message_changes_nothing(mos: MemOS) -> None:
    memory = memory_for(mos, "alice", "s1")
    memory.put(ChatMessage(role="user", content="kept"))
    with pytest.raises(InvalidInputError, match="must be a llama_index ChatMessage"):
        memory.put("just a string")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="must be a list of ChatMessage"):
        memory.set(ChatMessage(role="user", content="x"))  # type: ignore[arg-type]
    unstorable = ChatMessage(role="user", content="My flight leaves at 7am.",
                             additional_kwargs={"trace": object()})
    with pytest.raises(InvalidInputError, match="cannot be stored"):
        memory.put(unstorable)
    with pytest.raises(InvalidInputError, match="cannot be stored"):
        asyncio.run(memory.aput_messages([ChatMessage(role="user", content="ok"), unstorable]))
    assert [m.content for m in memory.get_all()] == ["kept"]
    assert [c.text for c in mos.list(user_id="alice")] == ["user: kept"]


def test_memory_is_truthy_and_serialises_without_mos(shared_mos: MemOS, user: str) -> None:
    memory = memory_for(shared_mos, user, "s1", memory_blocks=[])
    assert bool(memory)  # agents replace a falsy memory with a default one
    dumped = memory.model_dump()
    assert "mos" not in dumped and dumped["user_id"] == user and dumped["session_id"] == "s1"
    assert isinstance(memory.memory_blocks[0], MemOSMemoryBlock)


BAD_DEFAULTS: list[tuple[dict[str, Any], str]] = [
    ({"mos": "./data"}, "MemOSMemory needs mos=<memos_core.MemOS>, got str"),
    ({"user_id": ""}, "user_id must be a non-empty str"),
    ({"session_id": 42}, "session_id must be a non-empty str"),
    ({"session_id": ""}, "session_id must be a non-empty str"),  # not a new random session
    ({"agent_id": ""}, "agent_id must be a non-empty str"),
    ({"k": 0}, "k must be an int between 1 and 1000"),
    ({"search_scope": "everyone"}, "search_scope must be one of"),
    ({"remember_roles": ["narrator"]}, "remember_roles contains 'narrator'"),
    ({"token_limit": 0}, "token_limit must be an int between 1 and"),
    ({"memory_blocks": ["not a block"]}, r"memory_blocks\[0\] must be a llama-index"),
]


@pytest.mark.parametrize(("kwargs", "match"), BAD_DEFAULTS, ids=[c[1][:30] for c in BAD_DEFAULTS])
def test_from_defaults_errors(shared_mos: MemOS, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        MemOSMemory.from_defaults(**{"mos": shared_mos, "user_id": "alice", **kwargs})


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_a_message_over_the_token_limit_does_not_break_the_chat(
        shared_mos: MemOS, user: str, use_async: bool) -> None:
    """A pasted text over ``token_limit`` with nothing recalled: ``Memory`` truncates the
    empty recall block (it hands the block ``[]``); the chat goes on, every turn kept."""
    memory = memory_for(shared_mos, user, "s1", token_limit=50)
    engine = simple_engine(memory)
    ask(engine, "Please summarise this report. " + "word " * 400, use_async)
    ask(engine, "And in one line?", use_async)
    assert [m.role.value for m in memory.get_all()] == ["user", "assistant"] * 2


# ---------------------------------------------------------------- recall is not polluted

BIKE_FACT = "I have a green Brompton bike."
BIKE_QUESTION = "What bike do I have?"


async def test_a_repeated_question_still_recalls_the_fact_first(mos: MemOS) -> None:
    first = MemOSMemory.from_defaults(mos=mos, user_id="dana", session_id="s1")
    await first.aput(ChatMessage(role="user", content=BIKE_FACT))
    await first.aput(ChatMessage(role="assistant", content="Nice bike!"))
    for session in ("s2", "s3"):
        asked = MemOSMemory.from_defaults(mos=mos, user_id="dana", session_id=session)
        await asked.aput(ChatMessage(role="user", content=BIKE_QUESTION))
        await asked.aput(ChatMessage(role="assistant", content="A green Brompton."))
        assert [m.content for m in await asked.aget_all()] == [BIKE_QUESTION, "A green Brompton."]

    again = MemOSMemory.from_defaults(mos=mos, user_id="dana", session_id="s4")
    prompt = await again.aget(input=BIKE_QUESTION)

    recalled = [line for line in prompt[0].content.splitlines() if line.startswith("- ")]
    assert recalled and recalled[0] == f"- user: {BIKE_FACT}", recalled
    assert not any(BIKE_QUESTION in line for line in recalled)
    assert [c.text for c in mos.list(user_id="dana")] == [f"user: {BIKE_FACT}"]


async def test_questions_stored_on_request_rank_below_statements(mos: MemOS) -> None:
    for session, text in [("s1", BIKE_FACT), ("s2", BIKE_QUESTION), ("s3", BIKE_QUESTION)]:
        memory = MemOSMemory.from_defaults(mos=mos, user_id="erin", session_id=session,
                                           remember_roles=("user", "assistant"),
                                           remember_questions=True)
        await memory.aput(ChatMessage(role="user", content=text))
        await memory.aput(ChatMessage(role="assistant", content="A green Brompton."))
    assert len(mos.list(user_id="erin")) == 6
    prompt = await MemOSMemory.from_defaults(mos=mos, user_id="erin", session_id="s4").aget(
        input=BIKE_QUESTION)
    recalled = [line for line in prompt[0].content.splitlines() if line.startswith("- ")]
    assert recalled[0] == f"- user: {BIKE_FACT}", recalled


# ---------------------------------------------------------------- what is recorded

TOLD = [
    ("I'm vegetarian, what should I cook tonight?", {}, "user: I'm vegetarian"),
    ("My wife's name is Ana. Can you remind me of her birthday?", {},
     "user: My wife's name is Ana."),
    ("I moved to Porto last week. Which airport is closest?", {},
     "user: I moved to Porto last week."),
    ("I like teal.", {}, "user: I like teal."),
    ("Which airport is closest?", {}, None),
    ("Thanks!", {}, None),
    ("I'm vegetarian, what should I cook tonight?", {"remember_questions": True},
     "user: I'm vegetarian, what should I cook tonight?"),
]


@pytest.mark.parametrize(("said", "kwargs", "stored"), TOLD,
                         ids=[f"{t[0][:24]}{'-questions' if t[1] else ''}" for t in TOLD])
async def test_what_a_turn_tells_is_remembered(
        mos: MemOS, said: str, kwargs: dict[str, Any], stored: str | None) -> None:
    """Of a turn that asks, the sentences (or the clause about the speaker) that tell; the
    message stays the memory's source, so forgetting it blanks the whole message."""
    memory = memory_for(mos, "ed", "s1", **kwargs)
    await memory.aput(ChatMessage(role="user", content=said))
    cubes = mos.list(user_id="ed")
    assert [c.text for c in cubes] == ([stored] if stored else [])
    if stored is None:
        return
    assert cubes[0].provenance.source_message_ids == tuple(
        await memory.sql_store.get_message_ids("s1"))
    mos.forget(cubes[0].id, user_id="ed")
    assert [m.content for m in await memory.aget_all()] == ["[forgotten]"]


# ---------------------------------------------------------------- a changed memory

def recalled(prompt: list[ChatMessage]) -> list[str]:
    """The recall block's lines in what ``aget`` returned."""
    return [line for m in prompt if m.role.value == "system"
            for line in (m.content or "").splitlines() if line.startswith("- ")]


async def test_a_memory_changed_since_its_message_is_recalled_in_the_same_session(
        mos: MemOS) -> None:
    """The history keeps what the user said; the memory made from it was corrected since
    (by its owner, or by a user she lets write her memories): the recall block shows the
    correction. A change that keeps the text (tags) keeps it out: the message says it."""
    mos.share_namespace(with_user_id="bob", user_id="dana", scope="write")
    memory = memory_for(mos, "dana", "s1")
    await memory.aput(ChatMessage(role="user", content="My locker code is MARMOT9920."))
    await memory.aput(ChatMessage(role="user", content="I ride a green Brompton bike."))
    locker, bike = mos.list(user_id="dana")
    mos.update(bike.id, tags=["bikes"], user_id="dana")
    assert recalled(await memory.aget(input="What is my locker code?")) == []
    assert recalled(await memory.aget(input="Which bike do I ride?")) == []

    mos.update(locker.id, "user: My locker code is OTTER5531.", user_id="dana")
    mos.update(bike.id, "user: I ride a red Brompton bike.", user_id="bob")

    assert "- user: My locker code is OTTER5531." in recalled(
        await memory.aget(input="What is my locker code?"))
    assert "- user: I ride a red Brompton bike." in recalled(
        await memory.aget(input="Which bike do I ride?"))
    assert not any("MARMOT9920" in line or "green" in line for line in recalled(
        await memory.aget(input="My locker code and my bike?")))


#: User messages MemOS refuses as a query and as a memory, each about the boat.
REFUSED = {
    "NUL": "My log says ERR\x00\x00 code 7 about my boat.",
    "lone surrogate": "My boat's name got garbled: W\udcffren.",
    "over 1 MB": "Notes about my boat: " + "the hull and the sails " * 45_000,
}


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("kind", list(REFUSED))
def test_a_message_memos_refuses_still_gets_an_answer(
        mos: MemOS, caplog: pytest.LogCaptureFixture, kind: str, use_async: bool) -> None:
    """A message MemOS refuses as a memory and as a query failed the whole turn with
    InvalidInputError before the model was called (LlamaIndex's own Memory answers it): the
    memory write came first and failed the put, and the recall search refused the query.
    Now the message joins the history (an unpaired surrogate included: the history could
    not write it either) without a memory, recall searches for what is searchable of it,
    and the log says so without its text."""
    mos.add([{"role": "user", "content": "My boat is called Wren."}], user_id="alice")
    memory = memory_for(mos, "alice", "s1", token_limit=10**7)  # the 1 MB prompt keeps the block
    with caplog.at_level(logging.WARNING, logger="llama_index.memory.memos"):
        reply = ask(simple_engine(memory), REFUSED[kind], use_async)
        ask(simple_engine(memory), "I also own a red kayak.", use_async)
    assert "My boat is called Wren." in reply  # MockLLM echoes the recall block
    assert [m.content for m in memory.get_all()][::2] == [REFUSED[kind], "I also own a red kayak."]
    assert [c.text for c in mos.list(user_id="alice")] == [
        "user: My boat is called Wren.", "user: I also own a red kayak."]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("recall" in w for w in warnings) and any("not stored" in w for w in warnings)
    assert not any("boat" in w for w in warnings)


def test_a_forget_redacts_a_kept_message_that_utf8_cannot_hold(mos: MemOS) -> None:
    """The history keeps a message with an unpaired surrogate (as escaped ASCII JSON); a
    forget of a memory it quotes redacts it and writes it back escaped, as it was (written
    unescaped, the vault refused it and the forget failed with the memory intact)."""
    memory = memory_for(mos, "alice", "s1")
    memory.put(ChatMessage(role="user", content="My PIN is 4711."))
    memory.put(ChatMessage(role="user", content="Log dump: My PIN is 4711. garbled W\udcffren"))
    (pin,) = [c for c in mos.list(user_id="alice") if "4711" in c.text]
    mos.forget(pin.id, user_id="alice")
    assert [m.content for m in memory.get_all()] == [
        "[forgotten]", "Log dump: [forgotten] garbled W\udcffren"]


async def test_an_answer_put_while_a_forget_runs_leaves_no_memory_quoting_it(
        mos, forgotten_before_aadd) -> None:
    """``aput_messages`` looks for recent forgets, then makes memories of the messages: a
    forget that ran in between missed them. The memory quoting it is forgotten right after,
    and the history is redacted (the chat store's own re-check)."""
    locker = "Alice's locker code is MARMOT9920"
    memory = MemOSMemory.from_defaults(mos=mos, user_id="alice", session_id="s1",
                                       remember_roles=["user", "assistant"])
    fact = mos.add(locker, user_id="alice")
    with forgotten_before_aadd(fact.id, "alice"):
        await memory.aput_messages([
            ChatMessage(role="user", content="I moved to a bigger locker."),
            ChatMessage(role="assistant", content=f"You told me: {locker}.")])
    assert [c.text for c in mos.list(user_id="alice")] == ["user: I moved to a bigger locker."]
    assert [m.content for m in await memory.aget_all()] == [
        "I moved to a bigger locker.", "You told me: [forgotten]."]
