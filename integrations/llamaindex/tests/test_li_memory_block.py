"""MemOSMemoryBlock inside llama-index's own ``Memory``: flushes become memories, recall
goes into the prompt, scopes, truncation, and construction errors."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from llama_index.core.base.llms.types import ImageBlock, TextBlock
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.llms import ChatMessage, MockLLM
from llama_index.core.memory import Memory
from llama_index.core.schema import QueryBundle
from llama_index.core.storage.chat_store.base_db import MessageStatus
from memos_core import InvalidInputError

from llama_index.memory.memos import MemOSAsyncChatStore, MemOSMemoryBlock, MemOSRetriever
from llama_index.memory.memos.memory_block import EXCLUDE_SOURCES_KWARG

TURNS = [
    ("user", "My name is Ada and I live in Lisbon."),
    ("assistant", "Nice to meet you, Ada."),
    ("user", "I am allergic to peanuts, please remember that."),
    ("assistant", "Noted: no peanuts."),
    ("user", "What is the weather like?"),
    ("assistant", "I cannot check the weather."),
]


def small_memory(mos, block: MemOSMemoryBlock, session_id: str,
                 store_user: str | None = None) -> Memory:
    """A Memory whose short-term queue flushes after a few turns; its chat store is the
    block user's (or ``store_user``'s)."""
    return Memory.from_defaults(
        session_id=session_id, memory_blocks=[block], token_limit=60,
        chat_history_token_ratio=0.5, token_flush_size=20,
        chat_store=MemOSAsyncChatStore(mos=mos, user_id=store_user or block.user_id),
    )


def system_text(messages: list[ChatMessage]) -> str:
    return "\n".join(m.content or "" for m in messages if m.role.value == "system")


async def test_flushed_messages_become_memories_and_are_recalled(mos) -> None:
    block = MemOSMemoryBlock(mos=mos, user_id="ada")
    memory = small_memory(mos, block, "s1")
    await memory.aput_messages([ChatMessage(role=r, content=t) for r, t in TURNS])
    stored = mos.list(user_id="ada")
    assert stored, "the queue should have flushed into MemOS"
    assert all(c.session_id == "s1" and c.type.value == "episode" for c in stored)
    assert "user: I am allergic to peanuts, please remember that." in {c.text for c in stored}

    later = small_memory(mos, MemOSMemoryBlock(mos=mos, user_id="ada"), "s2")
    prompt = await later.aget(input="Can I eat peanut butter?")
    assert "<memos_memories>" in system_text(prompt)
    assert "allergic to peanuts" in system_text(prompt)


@pytest.mark.parametrize("store_user", ["ada", "someone-else"])
async def test_flushed_memories_name_their_source_messages(mos, store_user: str) -> None:
    """With the block's user's MemOSAsyncChatStore, a memory made from a flushed message has
    that message's id as its source (forget blanks it by id); with another store, none."""
    memory = small_memory(mos, MemOSMemoryBlock(mos=mos, user_id="ada"), "s1", store_user)
    store = memory.sql_store
    two_blocks = ChatMessage(role="user", blocks=[TextBlock(text="My passport is X1234567."),
                                                  TextBlock(text="It expires in May 2031.")])
    await memory.aput_messages([two_blocks, *(ChatMessage(role=r, content=t) for r, t in TURNS)])
    archived = await store.get_messages("s1", MessageStatus.ARCHIVED)
    ids = dict(zip((m.blocks[0].text for m in archived),
                   await store.get_message_ids("s1", MessageStatus.ARCHIVED)))
    stored = mos.list(user_id="ada")
    assert any("passport" in c.text for c in stored)
    for cube in stored:
        source = ids[cube.text.removeprefix("user: ").split("\n")[0]]
        assert cube.provenance.source_message_ids == ((source,) if store_user == "ada" else ())


def test_sync_memory_api_works_too(mos) -> None:
    memory = small_memory(mos, MemOSMemoryBlock(mos=mos, user_id="ada"), "s1")
    for role, text in TURNS:
        memory.put(ChatMessage(role=role, content=text))
    prompt = memory.get(input="Where do I live?")
    assert "Lisbon" in system_text(prompt)


async def test_a_flush_with_a_message_memos_refuses_stores_the_others(
        mos, caplog: pytest.LogCaptureFixture) -> None:
    """``Memory`` archives the flushed messages before the block gets them: one that MemOS
    refuses (a NUL character) is logged, without its text, and the others are stored."""
    memory = small_memory(mos, MemOSMemoryBlock(mos=mos, user_id="ada"), "s1")
    with caplog.at_level(logging.WARNING, logger="llama_index.memory.memos.memory_block"):
        await memory.aput_messages([
            ChatMessage(role="user", content="I like the colour teal."),
            ChatMessage(role="user", content="I own a \x00 sailing boat called Wren."),
            ChatMessage(role="user", content="I also keep two cats, both of them grey."),
            ChatMessage(role="user", content="And my latest news is that I live in Porto now."),
        ])
    assert await memory.sql_store.count_messages("s1", MessageStatus.ARCHIVED) >= 2
    assert "user: I like the colour teal." in {c.text for c in mos.list(user_id="ada")}
    [record] = [r for r in caplog.records if r.name == "llama_index.memory.memos.memory_block"]
    assert record.levelno == logging.WARNING and "not stored" in record.getMessage()
    assert "Wren" not in record.getMessage() and "boat" not in record.getMessage()


async def test_what_a_question_tells_is_stored(mos) -> None:
    block = MemOSMemoryBlock(mos=mos, user_id="ada", session_id="s1")
    await block.aput([ChatMessage(role="user", content="I'm vegetarian, what should I cook?"),
                      ChatMessage(role="user", content="What should I cook?")])
    assert [c.text for c in mos.list(user_id="ada")] == ["user: I'm vegetarian"]


async def test_a_shared_memory_names_its_owner(mos) -> None:
    """Another user's memories read as theirs in the prompt: a turn recorded by role names
    its speaker, another memory says who shared it; ``{owner}`` is a template field."""
    mos.add([{"role": "user", "content": "I'm allergic to peanuts.", "id": "m1"}],
            user_id="alice")
    mos.add("Allergic to shellfish as well.", user_id="alice")
    mos.share_namespace(with_user_id="bob", user_id="alice")
    query = [ChatMessage(role="user", content="Which allergies should I plan for?")]

    bob = await MemOSMemoryBlock(mos=mos, user_id="bob").aget(query)
    alice = await MemOSMemoryBlock(mos=mos, user_id="alice").aget(query)
    owned = await MemOSMemoryBlock(mos=mos, user_id="bob",
                                   line_template="- ({owner}) {text}").aget(query)

    assert set(bob.splitlines()) == {"- alice: I'm allergic to peanuts.",
                                     "- Allergic to shellfish as well. (shared by alice)"}
    assert set(alice.splitlines()) == {"- user: I'm allergic to peanuts.",
                                       "- Allergic to shellfish as well."}
    assert "- (alice) alice: I'm allergic to peanuts." in owned.splitlines()
    nodes = MemOSRetriever(mos, user_id="bob").retrieve("Which allergies should I plan for?")
    assert {(n.node.text, n.node.metadata["owner"]) for n in nodes} == {
        ("alice: I'm allergic to peanuts.", "alice"),
        ("Allergic to shellfish as well. (shared by alice)", "alice")}


async def test_only_remember_roles_are_stored(mos) -> None:
    block = MemOSMemoryBlock(mos=mos, user_id="ada", remember_roles=["user"], session_id="fallback")
    await block.aput([ChatMessage(role="user", content="I like tea."),
                      ChatMessage(role="assistant", content="Tea is nice."),
                      ChatMessage(role="tool", content="tool output"),
                      ChatMessage(role="user", content="  ")])
    assert [c.text for c in mos.list(user_id="ada")] == ["user: I like tea."]
    assert mos.list(user_id="ada")[0].session_id == "fallback"


async def test_recall_is_per_user(mos) -> None:
    await MemOSMemoryBlock(mos=mos, user_id="ada").aput(
        [ChatMessage(role="user", content="My locker code is 4711.")])
    messages = [ChatMessage(role="user", content="What is my locker code?")]
    assert "4711" in await MemOSMemoryBlock(mos=mos, user_id="ada").aget(messages)
    assert "4711" not in await MemOSMemoryBlock(mos=mos, user_id="bob").aget(messages)


@pytest.mark.parametrize(("scope", "extra", "expected"), [
    ("user", {}, {"from s1", "from s2 by helper"}),
    ("session", {"session_id": "s1"}, {"from s1"}),
    ("agent", {"agent_id": "helper"}, {"from s2 by helper"}),
])
async def test_search_scope(mos, scope: str, extra: dict[str, Any], expected: set[str]) -> None:
    mos.add("tea note from s1", user_id="ada", session_id="s1")
    mos.add("tea note from s2 by helper", user_id="ada", session_id="s2", agent_id="helper")
    block = MemOSMemoryBlock(mos=mos, user_id="ada", search_scope=scope, **extra)
    got = await block.aget([ChatMessage(role="user", content="tea note")])
    found = {t for t in ("from s1", "from s2 by helper") if t in got}
    assert found == expected


async def test_nothing_to_search_gives_empty_block(mos) -> None:
    mos.add("something", user_id="ada")
    block = MemOSMemoryBlock(mos=mos, user_id="ada")
    assert await block.aget(None) == ""
    assert await block.aget([]) == ""
    assert await block.aget([ChatMessage(role="user", content="   ")]) == ""


@pytest.mark.parametrize("text", ["ERR\x00 on my boat", "W\udcffren is my boat",
                                  "my boat " + "and its sails " * 80_000])
async def test_a_query_memos_refuses_still_recalls(mos, text: str) -> None:
    """A latest message holding a NUL character, an unpaired surrogate or over 1 MB made
    the whole ``Memory.get`` raise InvalidInputError (on LlamaIndex's own chat store, as
    here); recall is best effort: it searches for what is searchable of it."""
    mos.add([{"role": "user", "content": "My boat is called Wren."}], user_id="ada")
    memory = Memory.from_defaults(session_id="s1", token_limit=10**7,
                                  memory_blocks=[MemOSMemoryBlock(mos=mos, user_id="ada")])
    try:
        await memory.aput(ChatMessage(role="user", content=text))
        assert "My boat is called Wren." in system_text(await memory.aget())
    finally:
        # LlamaIndex's store keeps an aiosqlite connection whose worker thread, closed only
        # when collected after this test's event loop is gone, raised "Event loop is closed"
        # in whichever later test was running (PytestUnhandledThreadExceptionWarning)
        await memory.sql_store._async_engine.dispose()


async def test_line_template_and_k(mos) -> None:
    for i in range(4):
        mos.add(f"coffee fact number {i}", user_id="ada", type="fact")
    block = MemOSMemoryBlock(mos=mos, user_id="ada", k=2, line_template="* [{type}] {text}")
    lines = (await block.aget([ChatMessage(role="user", content="coffee fact")])).split("\n")
    assert len(lines) == 2 and all(line.startswith("* [fact] coffee fact number") for line in lines)


async def test_memories_sourced_from_excluded_messages_are_skipped(mos) -> None:
    mos.add([{"role": "user", "content": "I own a red bicycle.", "id": "m-1"}],
            user_id="ada", session_id="s1")
    mos.add("Ada's bicycle is red.", user_id="ada")
    block = MemOSMemoryBlock(mos=mos, user_id="ada")
    query = [ChatMessage(role="user", content="What colour is my bicycle?")]
    assert "I own a red bicycle" in await block.aget(query)
    got = await block.aget(query, **{EXCLUDE_SOURCES_KWARG: ["m-1"]})
    assert "I own a red bicycle" not in got and "Ada's bicycle is red." in got


async def test_atruncate_drops_least_relevant_lines_first(shared_mos) -> None:
    block = MemOSMemoryBlock(mos=shared_mos, user_id="ada")
    content = "- first, best\n- second\n- third, worst"
    assert await block.atruncate(content, 2) == "- first, best\n- second"
    assert await block.atruncate(content, 1000) is None


LINES = "- first, best\n- second\n- third, worst"
IMAGE = ImageBlock(url="https://example.com/tea.png")
#: (content, tokens to truncate, expected): every shape llama-index's ``Memory`` can hand a
#: block's ``atruncate`` -- ``[]`` for a block that recalled nothing (Memory's placeholder),
#: text and content blocks, chat messages -- keeps its type and loses its end first.
TRUNCATIONS: list[tuple[Any, int, Any]] = [
    ([], 5, None),
    ("", 5, None),
    (LINES, 0, LINES),
    ([TextBlock(text=LINES)], 2, [TextBlock(text="- first, best\n- second")]),
    ([TextBlock(text="- a"), TextBlock(text="- b")], 1, [TextBlock(text="- a")]),
    ([TextBlock(text=LINES)], 1000, None),
    ([TextBlock(text="- a"), IMAGE], 1, [TextBlock(text="- a")]),
    ([TextBlock(text="- a"), IMAGE], 300, None),
    ([ChatMessage(role="user", content="first"), ChatMessage(role="user", content="second")],
     1, [ChatMessage(role="user", content="first")]),
    ([ChatMessage(role="user", content="only")], 1000, None),
]


@pytest.mark.parametrize(("content", "tokens", "expected"), TRUNCATIONS,
                         ids=[f"{type(c[0]).__name__}-{i}" for i, c in enumerate(TRUNCATIONS)])
async def test_atruncate_takes_every_content_shape(shared_mos, content: Any, tokens: int,
                                                   expected: Any) -> None:
    block = MemOSMemoryBlock(mos=shared_mos, user_id="ada")
    assert await block.atruncate(content, tokens) == expected


async def test_atruncate_refuses_what_is_no_block_content(shared_mos) -> None:
    block = MemOSMemoryBlock(mos=shared_mos, user_id="ada")
    with pytest.raises(InvalidInputError, match="atruncate takes the block's content"):
        await block.atruncate(42, 5)  # type: ignore[arg-type]


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_a_history_over_the_limit_with_nothing_recalled_still_reads(
        mos, use_async: bool) -> None:
    """The history alone is over ``token_limit`` and the block recalled nothing: ``Memory``
    truncates the block anyway, handing it ``[]``; reads (and the chat) go on."""
    memory = Memory.from_defaults(
        session_id="s1", token_limit=50,
        chat_store=MemOSAsyncChatStore(mos=mos, user_id="ada"),
        memory_blocks=[MemOSMemoryBlock(mos=mos, user_id="ada")])
    long = ChatMessage(role="user", content="Tell me about the weather in Paris today? " * 20)
    memory.set([long])
    got = asyncio.run(memory.aget()) if use_async else memory.get()
    assert got == [long]
    engine = SimpleChatEngine.from_defaults(llm=MockLLM(max_tokens=3), memory=memory)
    reply = asyncio.run(engine.achat("And tomorrow?")) if use_async else engine.chat("And tomorrow?")
    assert str(reply)
    assert [m.role.value for m in memory.get_all()] == ["user", "user", "assistant"]


BAD_CALLS: list[tuple[str, Any, str]] = [
    ("aget", "tea", "messages must be a list of ChatMessage, got str"),
    ("aget", ["tea"], r"messages\[0\] must be a llama_index ChatMessage, got str"),
    ("aput", "I like tea.", "messages must be a list of ChatMessage, got str"),
    ("aput", ["I like tea."], r"messages\[0\] must be a llama_index ChatMessage, got str"),
    ("aput", None, "messages must be a list of ChatMessage, got NoneType"),
]


@pytest.mark.parametrize(("method", "messages", "match"), BAD_CALLS,
                         ids=[f"{c[0]}-{c[2][:24]}" for c in BAD_CALLS])
async def test_aget_and_aput_refuse_what_is_no_chat_message(
        shared_mos, user: str, method: str, messages: Any, match: str) -> None:
    block = MemOSMemoryBlock(mos=shared_mos, user_id=user, session_id="s1")
    with pytest.raises(InvalidInputError, match=match):
        await getattr(block, method)(messages)
    with pytest.raises(InvalidInputError, match=match):  # as Memory calls it on a flush
        if method == "aput":
            await block.aput(messages, from_short_term_memory=True, session_id="s2")
        else:
            await block.aget(messages, session_id="s2")
    assert shared_mos.list(user_id=user) == []


@pytest.mark.parametrize("query", [None, 5, QueryBundle(query_str=None)],  # type: ignore[arg-type]
                         ids=["None", "int", "bundle-of-None"])
@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_retriever_refuses_a_query_that_is_no_text(shared_mos, query: Any,
                                                   use_async: bool) -> None:
    retriever = MemOSRetriever(shared_mos, user_id="ada")
    with pytest.raises(InvalidInputError, match="MemOSRetriever needs the query as a str"):
        asyncio.run(retriever.aretrieve(query)) if use_async else retriever.retrieve(query)


def test_serialisation_leaves_out_mos(shared_mos) -> None:
    dumped = MemOSMemoryBlock(mos=shared_mos, user_id="ada").model_dump()
    assert "mos" not in dumped and dumped["user_id"] == "ada"


BAD_BLOCKS: list[tuple[dict[str, Any], str]] = [
    ({"mos": None}, "needs mos=<memos_core.MemOS>, got NoneType"),
    ({"user_id": ""}, "user_id must be a non-empty str"),
    ({"user_id": None}, "user_id must be a non-empty str"),
    ({"k": 0}, "k must be an int between 1 and 1000"),
    ({"k": "5"}, "k must be an int between 1 and 1000"),
    ({"search_scope": "world"}, "search_scope must be one of user, agent, session"),
    ({"search_scope": "agent"}, "search_scope='agent' needs agent_id"),
    ({"search_scope": "session"}, "search_scope='session' needs session_id"),
    ({"remember_roles": ["robot"]}, "remember_roles contains 'robot'"),
    ({"line_template": "{nope}"}, "line_template '{nope}' is not usable"),
    ({"line_template": "no fields"}, "line_template must be a str with fields"),
    ({"agent_id": ""}, "agent_id must be a non-empty str"),
]


@pytest.mark.parametrize(("kwargs", "match"), BAD_BLOCKS, ids=[c[1][:30] for c in BAD_BLOCKS])
def test_block_construction_errors(shared_mos, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        MemOSMemoryBlock(**{"mos": shared_mos, "user_id": "ada", **kwargs})


LOCKER = "Ada's locker code is MARMOT9920"


async def test_a_flushed_answer_quoting_a_memory_just_forgotten_is_not_stored(mos) -> None:
    """A flush hands over what the short-term queue held before the user forgot a memory:
    for a minute after the forget, an answer quoting it is redacted, and a redacted message
    is not remembered; the user's own messages are (new input)."""
    block = MemOSMemoryBlock(mos=mos, user_id="ada", remember_roles=["user", "assistant"])
    fact = mos.add(LOCKER, user_id="ada")
    mos.forget(fact.id, user_id="ada")
    await block.aput([ChatMessage(role="user", content="I moved to a bigger locker."),
                      ChatMessage(role="assistant", content=f"You told me: {LOCKER}.")])
    assert [c.text for c in mos.list(user_id="ada")] == ["user: I moved to a bigger locker."]


async def test_a_flushed_answer_stored_while_a_forget_runs_is_forgotten(
        mos, forgotten_before_aadd) -> None:
    """The flush looks for recent forgets, then stores: a forget that ran in between missed
    the new memory, which is forgotten right after it is stored."""
    block = MemOSMemoryBlock(mos=mos, user_id="ada", remember_roles=["user", "assistant"])
    fact = mos.add(LOCKER, user_id="ada")
    with forgotten_before_aadd(fact.id, "ada"):
        await block.aput([ChatMessage(role="user", content="I moved to a bigger locker."),
                          ChatMessage(role="assistant", content=f"You told me: {LOCKER}.")])
    assert [c.text for c in mos.list(user_id="ada")] == ["user: I moved to a bigger locker."]
