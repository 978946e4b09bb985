"""``MemOSChatMessageHistory``: a LangChain chat history kept as MemOS episodic memories.

For chains built on ``RunnableWithMessageHistory`` (deprecated upstream in favour of
LangGraph persistence, still widely used). Each message is one episodic memory of the user
in the given session: its text is ``"speaker: content"`` (so the conversation is searchable
from any other component) and its metadata holds the serialised LangChain message, so the
history returns exactly the messages that were added.

Forgetting: a forgotten message leaves the history (its memory is a tombstone). A history is
also a conversation log, so forgetting any memory of its user redacts the user's history
messages that quote it (the rule of the checkpointer and the LlamaIndex chat store:
``memos_core.integration.MessageRedactor``): the history's forget hook, registered once per
``MemOS`` when a history is built on it, writes a new version of each such message, its text
and its serialised message both redacted, and takes the text out of the message's earlier
versions in place, in the same transaction (``memos_core.integration.update_redacting``: a
crash leaves the message whole or redacted throughout, never its current version redacted
and an earlier one not, which a retried forget would not find again). A chain that read the memory before the forget
may add its turn after it: for a minute (``memos_core.integration.LATE_WRITE_S``) the
messages added to the user's histories come without the text, except the user's own
(``HumanMessage``: new input), and a batch written while the forget ran is redacted again
right after (``memos_core.integration.LateWrite``).
"""

from __future__ import annotations

import asyncio
import json
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    message_to_dict,
    messages_from_dict,
)
from memos_core import resolve_memos
from memos_core import InvalidInputError, MemCube, MemOS
from memos_core.integration import (
    in_thread,
    FORGOTTEN,
    MIN_NEEDLE,
    DerivedForm,
    LateWrite,
    MessageRedactor,
    RecentForgets,
    check_name,
    late_write,
    has_native_async,
    owned_holding,
    redact_log_message,
    update_redacting,
)

from langchain_memos._shared import message_text, role_of

#: Tag on every memory written by a chat history (other episodic memories may share the
#: session, e.g. turns recorded by the middleware; the history reads only its own).
HISTORY_TAG = "lc.chat_history"
META_MESSAGE = "lc_message"
#: A receipt's id of a redacted chat history: ``"chat_history:<session id>"``.
FORM = "chat_history"
_LIVE_STATES = ("generated", "activated", "archived")
_PAGE = 1000


class MemOSChatMessageHistory(BaseChatMessageHistory):
    """The messages of one session of one user, stored in MemOS.

    Contracts: ``messages`` returns the added messages in the order they were added, equal
    to the originals (type, content, ids, tool calls, additional kwargs) -- except that a
    message whose memory was given new text since (``mos.update``, the ``update_memory``
    tool, or a forget that redacted it) has that text as its content; a message that was
    forgotten in MemOS is gone from the history. Only the user's own memories are its
    messages (not memories other users shared with them). ``add_messages`` stores a batch in
    one transaction; a message that cannot be stored (content that is not JSON-serialisable)
    raises ``InvalidInputError`` and stores nothing. ``clear`` forgets every message of the
    session (``MemOS.forget_many``: every id is checked before any is forgotten; tombstones
    stay in the audit log). ``aget_messages`` is native async in server mode; the other
    async twins (writes: embedding, the memory write path) run in a worker thread.
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
        _watch(mos)

    def _page(self, offset: int) -> dict[str, Any]:
        """``MemOS.list`` arguments of one page of the history."""
        return {"user_id": self.user_id, "session_id": self.session_id, "tags": [HISTORY_TAG],
                "states": _LIVE_STATES, "limit": _PAGE, "offset": offset}

    def _cubes(self) -> list[MemCube]:
        cubes: list[MemCube] = []
        while True:
            page = self.mos.list(**self._page(len(cubes)))
            cubes.extend(page)
            if len(page) < _PAGE:
                return _own_messages(cubes, self.user_id)

    async def _acubes(self) -> list[MemCube]:
        cubes: list[MemCube] = []
        while True:
            page = await self.mos.alist(**self._page(len(cubes)))
            cubes.extend(page)
            if len(page) < _PAGE:
                return _own_messages(cubes, self.user_id)

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """Every message of the session, oldest first."""
        return [_message(c) for c in self._cubes()]

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append messages (one MemOS transaction for the whole batch)."""
        if not messages:
            return
        recent = _RECENT.get(self.mos)
        with late_write(self.mos, recent) as late:  # before it looks at the recent forgets
            self._add(messages, recent.redactors(self.user_id) if recent is not None else [],
                      late)

    def _add(self, messages: Sequence[BaseMessage], redactors: Sequence[MessageRedactor],
             late: LateWrite) -> None:
        """:meth:`add_messages`, with the user's recent forgets (``redactors``)."""
        items = []
        for position, message in enumerate(messages):
            if not isinstance(message, BaseMessage):
                raise InvalidInputError(
                    f"message {position} is a {type(message).__name__}, not a LangChain "
                    "BaseMessage; convert it (e.g. HumanMessage(content=...)) first."
                )
            if redactors and not isinstance(message, HumanMessage):
                message = _late_redacted(message, redactors)
            items.append({
                "text": _memory_text(message),
                "role": role_of(message),
                "message_id": message.id,
                "metadata": {META_MESSAGE: message_to_dict(message)},
            })
        added = self.mos.add_many(
            items, user_id=self.user_id, agent_id=self.agent_id, session_id=self.session_id,
            type="episode", origin="conversation", tags=[HISTORY_TAG],
        )
        missed = late.missed(self.user_id)  # a forget ran while this was written
        for redactor in missed:  # in what this wrote, as the forget's pass would have
            _redact_histories(self.mos, redactor, added)
        if missed:
            self.mos.vault.checkpoint()  # and out of the journal, as after a forget

    def clear(self) -> None:
        """Forget every message of this session (one ``MemOS.forget_many``)."""
        ids = [c.id for c in self._cubes()]
        if not ids:
            return
        with _forgetting(ids):  # they go: the forget hook need not redact them first
            self.mos.forget_many(ids, user_id=self.user_id, agent_id=self.agent_id,
                                 reason="chat history cleared")

    async def aget_messages(self) -> list[BaseMessage]:
        """Async ``messages``: native reads in server mode (``MemOS.alist``), else a worker
        thread."""
        if not has_native_async(self.mos):
            return await asyncio.to_thread(lambda: self.messages)
        return [_message(c) for c in await self._acubes()]

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        await in_thread(self.add_messages, messages)

    async def aclear(self) -> None:
        await in_thread(self.clear)


def _own_messages(cubes: Sequence[MemCube], user_id: str) -> list[MemCube]:
    """The history messages among ``cubes`` that are ``user_id``'s own: ``MemOS.list`` also
    returns memories other users shared with them (a shared session is not their
    conversation, and they may not forget it)."""
    return [c for c in cubes if c.user_id == user_id and META_MESSAGE in c.metadata]


def _message(cube: MemCube) -> BaseMessage:
    """The LangChain message of a history memory: the one that was added, with the memory's
    current text as its content when the memory was given new text since (a version after
    the first whose text is not the added message's)."""
    [message] = messages_from_dict([cube.metadata[META_MESSAGE]])
    if cube.version == 1 or cube.text == _memory_text(message):
        return message
    speaker = f"{message.name or role_of(message)}: "
    text = cube.text[len(speaker):] if cube.text.startswith(speaker) else cube.text
    content = message.content
    if isinstance(content, list):  # keep the blocks that are not text (images, files)
        others = [b for b in content if isinstance(b, dict) and b.get("type") != "text"]
        return message.model_copy(update={"content": [{"type": "text", "text": text}, *others]})
    return message.model_copy(update={"content": text})


def _memory_text(message: BaseMessage) -> str:
    """The memory text of a history message: ``"speaker: content"``."""
    return f"{message.name or role_of(message)}: {_render(message)}"


def _render(message: BaseMessage) -> str:
    """Searchable text of a message; tool calls are spelled out when there is no text."""
    text = message_text(message)
    if not text and isinstance(message, AIMessage) and message.tool_calls:
        text = "; ".join(
            f"called {c['name']}({json.dumps(c.get('args', {}), ensure_ascii=False, default=str)})"
            for c in message.tool_calls
        )
    return text or "(no text)"


# -- forgetting: the histories of a forgotten memory's owner ---------------------------------

#: Memories a ``clear`` is forgetting (the hook does not redact what is about to go).
_CLEARING: ContextVar[frozenset[str]] = ContextVar("lc_history_clearing", default=frozenset())
#: The MemOS instances whose forgets reach the chat histories (the hook's unregister function).
_WATCHED: weakref.WeakKeyDictionary[MemOS, Callable[[], None]] = weakref.WeakKeyDictionary()
#: Their recent forgets (kept by the hook), redacted in the messages added after them.
_RECENT: weakref.WeakKeyDictionary[MemOS, RecentForgets] = weakref.WeakKeyDictionary()
_WATCH_LOCK = threading.Lock()


@contextmanager
def _forgetting(memory_ids: Sequence[str]) -> Iterator[None]:
    token = _CLEARING.set(_CLEARING.get() | frozenset(memory_ids))
    try:
        yield
    finally:
        _CLEARING.reset(token)


def _watch(mos: MemOS) -> None:
    """Register the chat histories' forget hook on ``mos``, once (it lives as long as
    ``mos``, whatever becomes of the history objects, which chains build per call)."""
    with _WATCH_LOCK:
        if mos in _WATCHED:
            return
        ref = weakref.ref(mos)
        recent = RecentForgets()

        def hook(memory: MemCube) -> list[DerivedForm]:
            live = ref()
            if live is None or not _quotable(memory):
                return []
            forms = _redact_histories(live, MessageRedactor(memory))
            recent.add(memory)  # for the messages a running chain adds after the forget
            return forms

        _WATCHED[mos] = mos.on_forget(hook)
        _RECENT[mos] = recent


def recent_forgets(mos: MemOS) -> RecentForgets:
    """The recent forgets of ``mos``'s users that a message may quote, kept by the chat
    histories' forget hook (registered now if it was not yet)."""
    _watch(mos)
    return _RECENT[mos]


def _quotable(memory: MemCube) -> bool:
    """Whether other history messages may quote ``memory``: not when ``clear()`` forgets it
    (the session's own messages go, nothing else quoted them alone), nor when it is a short
    history message ("ok thanks"), which would match every message that says the same, in
    every session: the message itself goes, no other is a quote of it."""
    if memory.id in _CLEARING.get():
        return False
    return not (META_MESSAGE in memory.metadata
                and len(memory.text.split(": ", 1)[-1]) < MIN_NEEDLE)


def _late_redacted(message: BaseMessage, redactors: Sequence[MessageRedactor]) -> BaseMessage:
    """``message`` with the memories of ``redactors`` redacted (the same object when it
    holds none of them)."""
    raw = json.dumps(message_to_dict(message), ensure_ascii=False)
    new = raw
    for redactor in redactors:
        new = redact_log_message(new, redactor, redactor.is_source(message.id)) or new
    return message if new == raw else messages_from_dict([json.loads(new)])[0]


def _redact_histories(mos: MemOS, redactor: MessageRedactor,
                      written: Sequence[MemCube] | None = None) -> list[DerivedForm]:
    """Redact the memory of ``redactor`` (its text, and what its earlier versions said) in
    every chat-history message of its owner (``written``: in these only), each a new version
    of its memory (text and serialised message redacted) written, with its earlier versions
    redacted in place, in one transaction (``update_redacting``); one form per session
    changed.

    The forget hook, and after a write that the forget may have missed. The hook writes
    through the ``MemOS`` whose forget runs it, which a hook normally must not do: this
    runs in the forget's thread, before its tombstone and outside any vault transaction,
    and the store's write lock is re-entrant. A write that fails aborts the forget
    (messages redacted before it stay redacted: that removes only forgotten text)."""
    skip = _CLEARING.get() | {redactor.memory_id}
    # what a message holding the memory contains (its texts, as written and JSON-escaped; the
    # source message ids): a cheap filter before a message is decoded and redacted
    patterns = [p.decode() for p in redactor.patterns()]
    sessions: set[str] = set()
    if written is None:
        written = owned_holding(mos, redactor.user_id, redactor, tags=[HISTORY_TAG],
                                states=_LIVE_STATES)
    for cube in written:
        if cube.id in skip or META_MESSAGE not in cube.metadata:  # tagged, not a message
            continue
        raw = json.dumps(cube.metadata[META_MESSAGE], ensure_ascii=False)
        if not any(p in raw or p in cube.text for p in patterns):
            continue
        redacted = _redacted(cube, raw, redactor)
        if redacted is None:
            continue
        text, data = redacted
        # out of the message's earlier versions too, in place and in the same transaction:
        # history would keep the text, and a crash between two commits would keep it for
        # good (a retried forget no longer selects a message whose current version is redacted)
        update_redacting(mos, cube.id, text, user_id=redactor.user_id,
                         metadata={**cube.metadata, META_MESSAGE: data},
                         reason=f"chat history: memory {redactor.memory_id} forgotten",
                         rewrite_earlier=lambda old: _redacted_version(old, redactor))
        sessions.add(cube.session_id or "")
    return [DerivedForm(kind="conversation_log", id=f"{FORM}:{s}", action="redacted")
            for s in sorted(sessions)]


def _redacted_version(old: MemCube, redactor: MessageRedactor) -> MemCube | None:
    """An earlier version of a history message with the memory redacted (its entities go
    too: they were read from the text), or None when it holds none of it."""
    if META_MESSAGE not in old.metadata:
        return None
    redacted = _redacted(old, json.dumps(old.metadata[META_MESSAGE], ensure_ascii=False),
                         redactor)
    if redacted is None:
        return None
    text, data = redacted
    return old.model_copy(update={"text": text, "entities": (),
                                  "metadata": {**old.metadata, META_MESSAGE: data}})


def _redacted(cube: MemCube, raw: str, redactor: MessageRedactor
              ) -> tuple[str, dict[str, Any]] | None:
    """(text, serialised message) of a history message (``raw``: its serialised message as
    JSON) with the memory redacted, or None when it holds none of it. The message the memory
    was made from (by id) loses all its text; any other loses each occurrence of the
    memory's text. A memory text that renders the message is rendered again from the
    redacted message (tool-call arguments are JSON there); one given other text since is
    redacted as it stands."""
    data = cube.metadata[META_MESSAGE]
    [message] = messages_from_dict([data])
    source = redactor.is_source(message.id)
    new = redact_log_message(raw, redactor, source)
    redacted = json.loads(new) if new is not None else data
    if cube.text == _memory_text(message):
        text = _memory_text(messages_from_dict([redacted])[0])
    elif source:
        text = f"{message.name or role_of(message)}: {FORGOTTEN}"
    else:
        text = redactor.text(cube.text)
    if new is None and text == cube.text:
        return None
    return text, redacted
