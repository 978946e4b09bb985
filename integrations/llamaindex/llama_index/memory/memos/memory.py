"""``MemOSMemory``: a llama-index ``Memory`` whose history and long-term memory live in MemOS."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.bridge.pydantic import Field
from llama_index.core.memory.memory import (
    DEFAULT_FLUSH_SIZE,
    DEFAULT_MEMORY_BLOCKS_TEMPLATE,
    DEFAULT_TOKEN_LIMIT,
    BaseMemoryBlock,
    InsertMethod,
    Memory,
)
from llama_index.core.prompts import RichPromptTemplate
from llama_index.core.storage.chat_store.base_db import MessageStatus
from memos_core import InvalidInputError, MemCube, MemOS
from memos_core.integration import check_k, check_name, whole

from llama_index.memory.memos._checks import (
    check_chat_message,
    check_chat_messages,
    check_mos,
    check_roles,
)
from llama_index.memory.memos._convert import message_text, to_memos_messages
from llama_index.memory.memos._forgets import alate_write, late_redacted
from llama_index.memory.memos.chat_store import MemOSAsyncChatStore, history_rows
from llama_index.memory.memos.memory_block import (
    EXCLUDE_SOURCES_KWARG,
    MemOSMemoryBlock,
    add_memories,
)


#: How many pages of the session's episodes ``_repeated_sources`` reads at most.
_SOURCE_PAGES = 5

class MemOSMemory(Memory):
    """Chat memory for engines and agents: history and long-term memory in one data directory.

    Build it with :meth:`from_defaults` and pass it as ``memory=`` to ``SimpleChatEngine``,
    ``CondensePlusContextChatEngine`` or ``FunctionAgent.run``. It is a llama-index
    ``Memory`` with:

    - the short-term queue in :class:`MemOSAsyncChatStore` (the session's messages survive a
      restart; reopening with the same ``user_id`` and ``session_id`` resumes it);
    - a :class:`MemOSMemoryBlock` that puts the user's relevant long-term memories, from
      every session, into the prompt.

    Write-through: every message passed to ``put``/``put_messages`` (and their async twins)
    with text and a role in ``remember_roles`` (default the user's) that tells something
    becomes a long-term memory at once, so a fact told in a short session is recalled in
    the next one; of a question, only the sentences that tell ("My wife's name is Ana. Can
    you remind me of her birthday?" -> "My wife's name is Ana."), unless
    ``remember_questions=True`` keeps it whole (rule:
    ``memos_core.integration.remembered_text``). A message MemOS does not store as a memory
    (a NUL character, an unpaired surrogate, over its 1 MB text limit) is left out of
    long-term memory with a log warning. Every message stays in the chat history;
    questions and answers are kept out of searched memory because a stored question is the
    best match for the same question asked again and would crowd out the fact that answers
    it. ``set`` and ``reset`` change only the short-term history of this session; they never
    add or remove long-term memories (use ``MemOS.forget`` or the forget tool for that).
    Memories made from messages still in the short-term queue are not recalled again (they
    are in the prompt already), unless they were changed since (``MemOS.update``): the
    prompt then shows the correction.
    """

    mos: MemOS = Field(exclude=True, description="The MemOS holding history and memories.")
    user_id: str = Field(description="Whose memory this is; every MemOS call uses it.")
    agent_id: str | None = Field(default=None, description="Agent recorded on new memories.")
    remember_roles: tuple[str, ...] = Field(
        default=("user",),
        description="Roles whose messages become long-term memories when put.",
    )
    remember_questions: bool = Field(
        default=False, description="Also make questions long-term memories.")

    @classmethod
    def from_defaults(  # type: ignore[override]
        cls,
        *,
        mos: MemOS,
        user_id: str,
        session_id: str | None = None,
        agent_id: str | None = None,
        k: int = 5,
        search_scope: str = "user",
        remember_roles: Sequence[str] = ("user",),
        remember_questions: bool = False,
        chat_history: list[ChatMessage] | None = None,
        memory_blocks: list[BaseMemoryBlock[Any]] | None = None,
        token_limit: int = DEFAULT_TOKEN_LIMIT,
        token_flush_size: int = DEFAULT_FLUSH_SIZE,
        chat_history_token_ratio: float = 0.7,
        tokenizer_fn: Callable[[str], list[Any]] | None = None,
        memory_blocks_template: RichPromptTemplate = DEFAULT_MEMORY_BLOCKS_TEMPLATE,
        insert_method: InsertMethod = InsertMethod.SYSTEM,
    ) -> MemOSMemory:
        """A memory for ``user_id``'s session ``session_id`` (None: a new random one; an
        empty or non-str id raises :class:`memos_core.InvalidInputError`).

        ``k`` and ``search_scope`` configure the recall block (see
        :class:`MemOSMemoryBlock`); ``memory_blocks`` are extra blocks placed after it. The
        token arguments are ``Memory``'s. ``chat_history`` replaces the session's short-term
        history (it is not stored as long-term memory).
        """
        mos = check_mos(mos, "MemOSMemory")
        user_id = str(check_name(user_id, "user_id"))
        if session_id is None:  # only None: "" is a mistake to report, not a new session
            session_id = uuid.uuid4().hex
        session_id = str(check_name(session_id, "session_id"))
        agent_id = check_name(agent_id, "agent_id", optional=True)
        roles = check_roles(remember_roles)
        token_limit = check_k(token_limit, "token_limit", maximum=10**9)
        extra = list(memory_blocks or [])
        for i, block in enumerate(extra):
            if not isinstance(block, BaseMemoryBlock):
                raise InvalidInputError(
                    f"memory_blocks[{i}] must be a llama-index BaseMemoryBlock, got "
                    f"{type(block).__name__}."
                )
        recall = MemOSMemoryBlock(
            mos=mos, user_id=user_id, agent_id=agent_id, session_id=session_id, k=k,
            search_scope=search_scope, remember_roles=roles,
            remember_questions=bool(remember_questions),
            # write-through already stored every message; a flush must not store it twice
            accept_short_term_memory=False,
        )
        memory = cls(
            mos=mos,
            user_id=user_id,
            agent_id=agent_id,
            remember_roles=roles,
            remember_questions=bool(remember_questions),
            session_id=session_id,
            sql_store=MemOSAsyncChatStore(mos=mos, user_id=user_id),
            memory_blocks=[recall, *extra],
            token_limit=token_limit,
            token_flush_size=token_flush_size,
            chat_history_token_ratio=chat_history_token_ratio,
            tokenizer_fn=tokenizer_fn,
            memory_blocks_template=memory_blocks_template,
            insert_method=insert_method,
        )
        if chat_history is not None:
            memory.set(chat_history)
        return memory

    @classmethod
    def class_name(cls) -> str:
        return "MemOSMemory"

    @property
    def _store(self) -> MemOSAsyncChatStore:
        if not isinstance(self.sql_store, MemOSAsyncChatStore):
            raise InvalidInputError(
                "MemOSMemory needs its MemOSAsyncChatStore; build it with "
                "MemOSMemory.from_defaults(mos=..., user_id=...)."
            )
        return self.sql_store

    async def aget(
        self, input: str | ChatMessage | None = None, **block_kwargs: Any
    ) -> list[ChatMessage]:
        """The session's short-term history with the relevant memories inserted.

        Accepts the extra keywords engines pass (e.g. ``initial_token_count``).
        """
        in_prompt = await self._store._id_messages(self.session_id, MessageStatus.ACTIVE)
        block_kwargs[EXCLUDE_SOURCES_KWARG] = await self._repeated_sources(
            {mid: message_text(m) for mid, m in in_prompt})
        return await super().aget(input=input, **block_kwargs)

    async def _repeated_sources(self, said: dict[str, str]) -> list[str]:
        """The ids of the history's messages (``said``: id -> text) whose memories would only
        repeat them in the recall block: all of them but those whose memory was changed
        (``MemOS.update``) to say what the message does not.

        The memories made from the history's messages are the user's newest of the session
        (its insertion order; an update keeps a memory's place): they are read newest first,
        a page at a time, up to the first one made from an older message."""
        changed: set[str] = set()
        page, offset = len(said) + 10, 0
        # episodes only (what messages make), and a few pages at most: every model call
        # runs this, and a session with many tool-stored memories would be read whole; a
        # memory left unread is excluded, as one never changed is
        for _ in range(_SOURCE_PAGES):
            if not said:
                break
            cubes = await self.mos.alist(user_id=self.user_id, session_id=self.session_id,
                                         types=["episode"], newest_first=True, limit=page,
                                         offset=offset)
            for cube in cubes:
                if cube.user_id != self.user_id or not cube.provenance.source_message_ids:
                    continue  # shared with the user; stored by a tool
                sources = [s for s in cube.provenance.source_message_ids if s in said]
                if not sources:  # made from an older message: the rest are older still
                    return [mid for mid in said if mid not in changed]
                if cube.version > 1 and not any(_holds(said[s], cube) for s in sources):
                    changed.update(sources)
            if len(cubes) < page:
                break
            offset += page
        return [mid for mid in said if mid not in changed]

    async def aput(self, message: ChatMessage) -> None:
        """Append a message to the history and store it as a long-term memory."""
        await self.aput_messages([check_chat_message(message, "message")])

    async def aput_messages(self, messages: list[ChatMessage]) -> None:
        """Append messages to the history and store what each one tells as a memory.

        Nothing is written unless the history can store every message (``additional_kwargs``
        must be JSON-serialisable). Then the memories are written; a message MemOS does not
        store as a memory (a NUL character, an unpaired surrogate, over its 1 MB text limit)
        is left out of them with a log warning and still joins the history, as the others
        do. Then the short-term queue is flushed as ``Memory`` does.
        """
        messages = check_chat_messages(messages)
        if not messages:
            return
        messages, ids = await self._remember(messages)
        await self._store.add_messages(self.session_id, messages, MessageStatus.ACTIVE, ids=ids)
        await self._manage_queue()

    @whole  # the writes and the forget of what quotes a forgotten memory: one unit
    async def _remember(self, messages: list[ChatMessage]
                        ) -> tuple[list[ChatMessage], list[str]]:
        """Store what ``messages`` tell as memories; returns the messages as the history
        gets them and their new ids. What a run held when its user forgot a memory (its tool
        calls and results) comes without it (the store would redact the history, not the
        memories made here); a memory made while a forget ran that quotes it is forgotten
        right after, even when the caller is cancelled in between
        (``memos_core.integration.whole``)."""
        async with alate_write(self.mos) as late:
            messages = late_redacted(self.mos, self.user_id, messages)
            ids = [uuid.uuid4().hex for _ in messages]
            history_rows(messages, ids)  # raises InvalidInputError before anything is written
            items = to_memos_messages(messages, self.remember_roles, ids,
                                      questions=self.remember_questions)
            if items:
                await add_memories(self.mos, items, "MemOSMemory: message",
                                   user_id=self.user_id, agent_id=self.agent_id,
                                   session_id=self.session_id, late=late)
        return messages, ids

    async def aset(self, messages: list[ChatMessage]) -> None:
        """Replace this session's short-term history (no long-term memory is written)."""
        await super().aset(check_chat_messages(messages))


def _holds(text: str, cube: MemCube) -> bool:
    """The message ``text`` still says what the memory says (the content of a memory made
    from a chat turn, "speaker: content"), whitespace aside."""
    content = cube.text
    if "role" in cube.metadata and ": " in content:
        content = content.split(": ", 1)[1]
    return " ".join(content.split()) in " ".join(text.split())
