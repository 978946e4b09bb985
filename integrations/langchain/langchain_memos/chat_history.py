"""``MemOSChatMessageHistory``: a LangChain chat history kept as MemOS episodic memories.

For chains built on ``RunnableWithMessageHistory`` (deprecated upstream in favour of
LangGraph persistence, still widely used). Each message is one episodic memory of the user
in the given session: its text is ``"speaker: content"`` (so the conversation is searchable
from any other component) and its metadata holds the serialised LangChain message, so the
history returns exactly the messages that were added.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import AIMessage, BaseMessage, message_to_dict, messages_from_dict
from memos_core import resolve_memos
from memos_core import InvalidInputError, MemCube, MemOS
from memos_core.integration import check_name, has_native_async

from langchain_memos._shared import message_text, role_of

#: Tag on every memory written by a chat history (other episodic memories may share the
#: session, e.g. turns recorded by the middleware; the history reads only its own).
HISTORY_TAG = "lc.chat_history"
META_MESSAGE = "lc_message"
_LIVE_STATES = ("generated", "activated", "archived")
_PAGE = 1000


class MemOSChatMessageHistory(BaseChatMessageHistory):
    """The messages of one session of one user, stored in MemOS.

    Contracts: ``messages`` returns the added messages in the order they were added, equal
    to the originals (type, content, ids, tool calls, additional kwargs); a message that was
    forgotten in MemOS is gone from the history. ``add_messages`` stores a batch in one
    transaction; a message that cannot be stored (content that is not JSON-serialisable)
    raises ``InvalidInputError`` and stores nothing. ``clear`` forgets every message of the
    session (tombstones stay in the audit log). ``aget_messages`` is native async in server mode; the
    other async twins (writes: embedding, the memory write path) run in a worker thread.
    """

    def __init__(self, mos: MemOS, *, user_id: str, session_id: str, agent_id: str | None = None) -> None:
        """History of ``session_id`` for ``user_id``; ``get_session_history`` factories
        typically build one per call: ``lambda sid: MemOSChatMessageHistory(mos, user_id=u,
        session_id=sid)``."""
        mos = resolve_memos(mos)  # a postgresql:// URL: the process's shared MemOS
        if not isinstance(mos, MemOS):
            raise TypeError(f"MemOSChatMessageHistory needs a memos_core.MemOS, got {type(mos).__name__}.")
        self.mos = mos
        self.user_id = check_name(user_id, "user_id")
        self.session_id = check_name(session_id, "session_id")
        self.agent_id = agent_id

    def _page(self, offset: int) -> dict[str, object]:
        """``MemOS.list`` arguments of one page of the history."""
        return {"user_id": self.user_id, "session_id": self.session_id, "tags": [HISTORY_TAG],
                "states": _LIVE_STATES, "limit": _PAGE, "offset": offset}

    def _cubes(self) -> list[MemCube]:
        cubes: list[MemCube] = []
        while True:
            page = self.mos.list(**self._page(len(cubes)))  # type: ignore[arg-type]
            cubes.extend(page)
            if len(page) < _PAGE:
                return [c for c in cubes if META_MESSAGE in c.metadata]

    async def _acubes(self) -> list[MemCube]:
        cubes: list[MemCube] = []
        while True:
            page = await self.mos.alist(**self._page(len(cubes)))  # type: ignore[arg-type]
            cubes.extend(page)
            if len(page) < _PAGE:
                return [c for c in cubes if META_MESSAGE in c.metadata]

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """Every message of the session, oldest first."""
        return messages_from_dict([c.metadata[META_MESSAGE] for c in self._cubes()])

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append messages (one MemOS transaction for the whole batch)."""
        if not messages:
            return
        items = []
        for position, message in enumerate(messages):
            if not isinstance(message, BaseMessage):
                raise InvalidInputError(
                    f"message {position} is a {type(message).__name__}, not a LangChain "
                    "BaseMessage; convert it (e.g. HumanMessage(content=...)) first."
                )
            items.append({
                "text": f"{message.name or role_of(message)}: {_render(message)}",
                "role": role_of(message),
                "message_id": message.id,
                "metadata": {META_MESSAGE: message_to_dict(message)},
            })
        self.mos.add_many(
            items, user_id=self.user_id, agent_id=self.agent_id, session_id=self.session_id,
            type="episode", origin="conversation", tags=[HISTORY_TAG],
        )

    def clear(self) -> None:
        """Forget every message of this session."""
        for cube in self._cubes():
            self.mos.forget(cube.id, user_id=self.user_id, agent_id=self.agent_id,
                            reason="chat history cleared")

    async def aget_messages(self) -> list[BaseMessage]:
        """Async ``messages``: native reads in server mode (``MemOS.alist``), else a worker
        thread."""
        if not has_native_async(self.mos):
            return await asyncio.to_thread(lambda: self.messages)
        return messages_from_dict([c.metadata[META_MESSAGE] for c in await self._acubes()])

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        await asyncio.to_thread(self.add_messages, messages)

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)


def _render(message: BaseMessage) -> str:
    """Searchable text of a message; tool calls are spelled out when there is no text."""
    text = message_text(message)
    if not text and isinstance(message, AIMessage) and message.tool_calls:
        text = "; ".join(
            f"called {c['name']}({json.dumps(c.get('args', {}), ensure_ascii=False, default=str)})"
            for c in message.tool_calls
        )
    return text or "(no text)"
