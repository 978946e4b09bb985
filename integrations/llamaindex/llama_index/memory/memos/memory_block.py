"""``MemOSMemoryBlock``: long-term MemOS memory as a llama-index ``Memory`` block."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, TextBlock
from llama_index.core.bridge.pydantic import Field
from llama_index.core.memory.memory import BaseMemoryBlock
from llama_index.core.storage.chat_store.base_db import MessageStatus
from memos_core import InvalidInputError, MemCube, MemOS
from memos_core.integration import (
    ConversationLog,
    LateWrite,
    check_k,
    check_name,
    quoting,
    recall_query,
    whole,
)

from llama_index.memory.memos._checks import (
    check_chat_messages,
    check_mos,
    check_roles,
    check_scope,
    scope_filters,
)
from llama_index.memory.memos._convert import (
    asked_or_answered,
    check_line_template,
    format_hits,
    load_message,
    message_text,
    query_text,
    to_memos_messages,
)
from llama_index.memory.memos._forgets import alate_write, late_redacted, watch_forgets

#: The ``block_kwargs`` key through which :class:`MemOSMemory` tells the block which chat
#: message ids are already in the prompt, so memories made from them are not repeated.
EXCLUDE_SOURCES_KWARG = "memos_exclude_message_ids"
_ARCHIVED = MessageStatus.ARCHIVED.value
#: llama-index ``Memory``'s default token estimate of an image or audio block.
_MEDIA_TOKENS = 256
logger = logging.getLogger(__name__)


class MemOSMemoryBlock(BaseMemoryBlock[str]):
    """Recalls the user's MemOS memories relevant to the latest message; stores what
    ``Memory`` flushes.

    ``MemOSMemoryBlock(mos=mos, user_id="alice")``, then
    ``Memory.from_defaults(memory_blocks=[block], ...)``.

    Read (``aget``): searches MemOS for the latest user message (else the latest message with
    text) and returns up to ``k`` memories, best first, one ``line_template`` line each; ""
    when nothing matches. A memory another user shared names that user ("alice: I'm
    allergic to peanuts." for a turn recorded as "user: ...", else "... (shared by
    alice)"), so the model does not take it for the block's user's own. Recall is best
    effort: a message MemOS would refuse as a query (a NUL character, an unpaired
    surrogate, over its 1 MB text limit) is searched without those characters and cut to
    the limit, with a log warning; the turn goes on either way. Which memories: all
    of the user's (``search_scope="user"``), only those written by ``agent_id``
    (``"agent"``), or only ``session_id``'s (``"session"``). Every recall counts as an
    access in MemOS (usage, heat).

    Write (``aput``): the messages ``Memory`` flushes out of its short-term queue become
    episodic memories, one per message with text and a role in ``remember_roles`` (default
    the user's) that tells something, owned by ``user_id`` and filed under the session
    ``Memory`` names (else ``session_id``): of a question, the sentences that tell (unless
    ``remember_questions`` keeps it whole); the rule is
    ``memos_core.integration.remembered_text``. Messages without text (tool-call requests,
    images) are skipped. A message MemOS refuses (e.g. one holding a NUL character) is
    left out with a warning in the log (``Memory`` has archived it already); the others
    are stored. When ``Memory`` keeps its history in a :class:`MemOSAsyncChatStore`
    with this block's ``user_id``, each memory names the message it was made from, and
    forgetting the memory blanks that message. Questions and answers stay in the chat
    history only: stored, a question is the best match for the same question asked again
    and crowds out the fact. Recalled questions and assistant turns (stored with wider
    settings) rank after statements.

    Truncation (``atruncate``): drops the lowest-ranked lines first; an empty block (nothing
    recalled) has nothing to drop. With ``priority=0`` the block is never truncated.

    ``aget`` takes None or a list of ``ChatMessage``, ``aput`` a list of ``ChatMessage``;
    anything else raises :class:`memos_core.InvalidInputError` before anything is read or
    written.
    """

    name: str = Field(default="memos_memories", description="Block name; the prompt tag.")
    description: str | None = Field(
        default="Long-term memories about the user, most relevant first.",
        description="What the block holds.",
    )
    priority: int = Field(
        default=1, description="Truncation priority (0 = never truncate, 1 = keep longest)."
    )
    mos: MemOS = Field(exclude=True, description="The MemOS to read and write.")
    user_id: str = Field(description="Owner of the memories; every call is made as this user.")
    agent_id: str | None = Field(default=None, description="Agent recorded on new memories.")
    session_id: str | None = Field(
        default=None, description="Session for new memories when Memory does not name one."
    )
    k: int = Field(default=5, description="Most memories recalled per turn (1..1000).")
    search_scope: str = Field(default="user", description="'user', 'agent' or 'session'.")
    remember_roles: tuple[str, ...] = Field(
        default=("user",), description="Roles whose flushed messages are stored."
    )
    remember_questions: bool = Field(
        default=False, description="Also store questions (they crowd out facts on recall)."
    )
    line_template: str = Field(
        default="- {text}",
        description="str.format template per memory; fields: id, text, score, type, "
        "session_id, created_at, occurred_at, owner.",
    )

    def __init__(self, *, mos: MemOS, user_id: str, **data: Any) -> None:
        owner = "MemOSMemoryBlock"
        agent_id = check_name(data.get("agent_id"), "agent_id", optional=True)
        session_id = check_name(data.get("session_id"), "session_id", optional=True)
        checked = {
            "mos": check_mos(mos, owner),
            "user_id": check_name(user_id, "user_id"),
            "k": check_k(data.get("k", 5)),
            "search_scope": check_scope(
                data.get("search_scope", "user"), agent_id=agent_id, session_id=session_id
            ),
            "remember_roles": check_roles(data.get("remember_roles", ("user",))),
            "line_template": check_line_template(data.get("line_template", "- {text}")),
        }
        super().__init__(**{**data, **checked})
        watch_forgets(self.mos)  # the forgets whose text a flush may still hold

    # -- read ---------------------------------------------------------------------------

    async def _aget(
        self, messages: list[ChatMessage] | None = None, **block_kwargs: Any
    ) -> str:
        """Memories relevant to the latest message, as lines; "" if none or no text."""
        if messages is not None:
            messages = check_chat_messages(messages)
        text = query_text(messages)
        query = recall_query(text) if text.strip() else None
        if query is None:
            return ""
        exclude: Sequence[str] = block_kwargs.get(EXCLUDE_SOURCES_KWARG) or ()
        filters = scope_filters(self.search_scope, self.agent_id, self.session_id)
        hits = await self.mos.asearch(query, user_id=self.user_id, k=self.k,
                                      exclude_sources=list(exclude), **filters)
        hits = sorted(hits, key=asked_or_answered)
        return format_hits(hits, self.line_template, self.user_id)

    async def atruncate(  # type: ignore[override]  # any shape Memory may hand over
        self, content: str | Sequence[Any], tokens_to_truncate: int
    ) -> str | list[Any] | None:
        """Drop the end of ``content`` (the least relevant) until about ``tokens_to_truncate``
        tokens are gone (estimated at 4 characters per token); None when nothing is left.

        ``content`` is what ``aget`` returned (a str, one line per memory), or ``[]`` when it
        returned nothing: ``Memory`` truncates every block with a priority when the history
        alone is over its ``token_limit``, giving an empty block ``[]``. A list of content
        blocks or chat messages (the other shapes a llama-index block may return) keeps its
        type: text blocks lose lines, other items are dropped whole from the end.
        """
        if isinstance(content, str):
            return _drop_last_lines(content, tokens_to_truncate) or None
        if not isinstance(content, Sequence):
            raise InvalidInputError(
                f"MemOSMemoryBlock.atruncate takes the block's content (a str, or a list of "
                f"content blocks or chat messages), got {type(content).__name__}."
            )
        if not content:
            return None
        texts = [item.text for item in content if isinstance(item, TextBlock)]
        if len(texts) == len(content):  # text blocks only: cut by lines, as a str
            text = _drop_last_lines("\n".join(texts), tokens_to_truncate)
            return [TextBlock(text=text)] if text else None
        items = list(content)
        budget = tokens_to_truncate * 4
        while items and budget > 0:
            budget -= _item_chars(items.pop()) + 1
        return items or None

    # -- write --------------------------------------------------------------------------

    async def aput(
        self,
        messages: list[ChatMessage],
        from_short_term_memory: bool = False,
        session_id: str | None = None,
    ) -> None:
        """Store ``messages`` (see the class docstring); checked first, because llama-index
        writes the session into each message before ``_aput`` sees them."""
        await super().aput(check_chat_messages(messages), from_short_term_memory, session_id)

    @whole  # the writes and the forget of what quotes a forgotten memory: one unit
    async def _aput(self, messages: list[ChatMessage]) -> None:
        """Store flushed messages as memories, grouped by the session ``Memory`` gave them;
        what a run held when its user forgot a memory comes without it (as in the chat
        stores: ``late_redacted``). A cancelled caller does not split the writes from that
        forget (``memos_core.integration.whole``)."""
        async with alate_write(self.mos) as late:
            messages = late_redacted(self.mos, self.user_id, messages)
            by_session: dict[str | None, list[ChatMessage]] = {}
            for message in messages:
                session = message.additional_kwargs.get("session_id")
                session = session if isinstance(session, str) and session else self.session_id
                by_session.setdefault(session, []).append(message)
            for session, group in by_session.items():
                ids = await self._flushed_ids(session, group)
                items = to_memos_messages(group, self.remember_roles, ids,
                                          questions=self.remember_questions)
                if items:
                    # Memory archived them already, and a flush is never handed over again
                    await add_memories(self.mos, items, "MemOSMemoryBlock: flushed message",
                                       user_id=self.user_id, agent_id=self.agent_id,
                                       session_id=session, late=late)

    async def _flushed_ids(
        self, session: str | None, messages: list[ChatMessage]
    ) -> list[str] | None:
        """The chat-history ids of ``messages``, so that the memories made from them name
        their source messages (a forget then blanks those by id); None where unknown.

        ``Memory`` archives the messages it flushes just before it hands them over, so in a
        :class:`MemOSAsyncChatStore` of this block's ``user_id`` they are the session's newest
        archived messages. Anything else (another chat store or user namespace, an ``aput``
        of other messages) does not match them by role and blocks: None.
        """
        if session is None:
            return None
        log, n = ConversationLog(self.mos), len(messages)
        total = await log.acount(self.user_id, session, _ARCHIVED)
        if total < n:
            return None
        rows = await log.aread(self.user_id, session, _ARCHIVED, n, total - n)
        stored = [load_message(data) for _, data in rows]
        if [(m.role, m.blocks) for m in stored] != [(m.role, m.blocks) for m in messages]:
            return None
        return [mid for mid, _ in rows]


def _drop_last_lines(text: str, tokens: int) -> str:
    """``text`` less its last lines, about ``tokens`` tokens of them (4 characters each)."""
    lines = text.split("\n")
    budget = tokens * 4
    while lines and budget > 0:
        budget -= len(lines.pop()) + 1
    return "\n".join(lines)


def _item_chars(item: object) -> int:
    """The size of one item of a block's list content, in characters (4 a token); an image,
    audio or other media block counts as ``Memory`` estimates one by default (256 tokens)."""
    if isinstance(item, ChatMessage):
        return len(message_text(item))
    return len(item.text) if isinstance(item, TextBlock) else _MEDIA_TOKENS * 4


async def add_memories(mos: MemOS, items: list[dict[str, Any]], what: str, *,
                       user_id: str, agent_id: str | None, session_id: str | None,
                       late: LateWrite) -> None:
    """Store ``items`` (``MemOS.aadd`` message dicts) in one call; if MemOS refuses the
    batch (it checks every item first), each on its own, so one message MemOS does not
    store (a NUL character, an unpaired surrogate, over its size limit) does not lose the
    others. A refused one is logged as ``what`` (its position, id and error class, never
    its text). ``late``: made before the messages were redacted of recent forgets
    (``late_redacted``); a memory made while a forget ran that quotes its memory is
    forgotten right after (``memos_core.integration.quoting``). Call it in a function made
    ``memos_core.integration.whole``, so that a cancelled caller cannot split the two."""
    kwargs: dict[str, Any] = {"user_id": user_id, "agent_id": agent_id, "session_id": session_id}
    added: list[MemCube] = []
    try:
        added += await mos.aadd(items, **kwargs)
    except InvalidInputError:
        for i, item in enumerate(items):
            try:
                added += await mos.aadd([item], **kwargs)
            except InvalidInputError as exc:
                logger.warning(
                    "%s %d of %d (id %s, session %r) was not stored as a memory: MemOS "
                    "refused it (%s)", what, i + 1, len(items), item.get("id", "unknown"),
                    session_id, type(exc).__name__)
    for cube in quoting(added, await late.amissed(user_id)):
        await mos.aforget(cube.id, user_id=user_id, agent_id=agent_id,
                          reason=f"{what} quoted a memory forgotten meanwhile")
