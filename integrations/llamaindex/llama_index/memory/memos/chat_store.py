"""Persistent chat history for LlamaIndex, kept in a MemOS data directory.

Two views of the same history, the conversation logs the core keeps in the MemOS vault
(``memos_core.integration.ConversationLog``; ``MemOS.forget`` redacts them itself):

- :class:`MemOSChatStore` is a ``BaseChatStore`` (what ``ChatMemoryBuffer`` and other
  classic memories take as ``chat_store=``). It sees the *active* messages of a key.
- :class:`MemOSAsyncChatStore` is an ``AsyncDBChatStore`` (what ``Memory`` takes as
  ``chat_store=``): the active/archived queue that ``Memory`` flushes to its memory blocks.

History is short-term conversation state; long-term memories are MemCubes in the vault (see
:class:`~llama_index.memory.memos.MemOSMemoryBlock`). Both stores return new message
objects on every read (``Memory`` edits the messages it reads; the stored ones never change).
With ``user_id`` set, a store's keys live in that user's namespace: two users' ``"s1"`` are
two histories, and ``get_keys`` lists only that user's keys.

Messages other than the user's written in the 60 seconds after a forget of the store's user
(any user's, for a store without one) are redacted as they are written: what an agent run
held in memory when the forget came reaches the log without the forgotten text
(:mod:`._forgets`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr
from llama_index.core.storage.chat_store.base import BaseChatStore
from llama_index.core.storage.chat_store.base_db import AsyncDBChatStore, MessageStatus
from memos_core import InvalidInputError, MemOS
from memos_core.integration import ConversationLog
from memos_core.integration import LogRow as Row
from memos_core.integration import check_name, whole

from llama_index.memory.memos._checks import (
    check_chat_message,
    check_chat_messages,
    check_index,
    check_key,
    check_mos,
    check_non_negative,
    check_status,
)
from llama_index.memory.memos._convert import dump_message, load_message
from llama_index.memory.memos._forgets import (
    alate_write,
    late_redacted,
    late_write,
    watch_forgets,
)

_ACTIVE = MessageStatus.ACTIVE.value


def history_rows(messages: Sequence[ChatMessage], ids: Sequence[str] | None) -> list[Row]:
    """The log rows ``(id, JSON)`` of ``messages``; ``ids``: one per message (default: new
    random ids). Raises :class:`InvalidInputError` for a message that cannot be stored."""
    if ids is None:
        ids = [uuid.uuid4().hex for _ in messages]
    elif (isinstance(ids, (str, bytes)) or len(ids) != len(messages)
          or not all(isinstance(i, str) and i for i in ids)):
        raise InvalidInputError(
            f"ids must be a list of {len(messages)} non-empty str, one per message."
        )
    return [(mid, dump_message(m, f"messages[{i}]"))
            for i, (mid, m) in enumerate(zip(ids, messages))]


def _keep_ids(old: Sequence[Row], rows: Sequence[Row]) -> list[Row]:
    """``rows`` with each message that ``old`` holds too (the same JSON) under its old id, each
    old id used once: setting a history to messages it already has (``Memory.set``, what
    ``agent.run(chat_history=...)`` does) keeps the link from a memory to its source message."""
    free: dict[str, list[str]] = {}
    for mid, data in old:
        free.setdefault(data, []).append(mid)
    kept: list[Row] = []
    for mid, data in rows:
        same = free.get(data)
        kept.append((same.pop(0) if same else mid, data))
    return kept


def _ids(rows: Sequence[Row]) -> list[str]:
    return [mid for mid, _ in rows]


def _messages(rows: Sequence[Row]) -> list[ChatMessage]:
    return [load_message(data) for _, data in rows]


def _init_fields(owner: str, mos: object, user_id: object) -> dict[str, Any]:
    mos = check_mos(mos, owner)
    watch_forgets(mos)
    return {"mos": mos, "user_id": check_name(user_id, "user_id", optional=True)}


class MemOSChatStore(BaseChatStore):
    """A ``BaseChatStore`` over a MemOS data directory; history survives restarts.

    ``MemOSChatStore(mos=mos)`` (optionally ``user_id=...``). It reads and writes the *active*
    messages of a key: messages that :class:`MemOSAsyncChatStore` archived are not part of
    this view. Positions (``idx``) count from the oldest active message; negative positions
    count from the end. Deleting something missing returns ``None`` and does not raise.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    mos: MemOS = Field(exclude=True, description="The MemOS whose data directory holds history.")
    user_id: str | None = Field(default=None, description="Namespace of this store's keys.")
    _log: ConversationLog = PrivateAttr()

    def __init__(self, *, mos: MemOS, user_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**_init_fields("MemOSChatStore", mos, user_id), **kwargs)
        self._log = ConversationLog(self.mos)

    @classmethod
    def class_name(cls) -> str:
        return "MemOSChatStore"

    @property
    def _ns(self) -> str:
        return self.user_id or ""

    def _late(self, messages: list[ChatMessage]) -> list[ChatMessage]:
        """``messages`` with the store's user's recent forgets redacted (:mod:`._forgets`)."""
        return late_redacted(self.mos, self.user_id, messages)

    def set_messages(self, key: str, messages: list[ChatMessage]) -> None:
        """Replace the key's active messages with ``messages`` (in one transaction); a message
        equal to one it replaces keeps that one's id."""
        with late_write(self.mos) as late:
            rows = history_rows(self._late(check_chat_messages(messages)), None)
            key = check_key(key)
            rows = _keep_ids(self._log.read(self._ns, key, _ACTIVE), rows)
            self._log.replace(self._ns, key, rows, _ACTIVE, clear=_ACTIVE)
            self._log.redact(late.missed(self.user_id), _ids(rows))

    def get_messages(self, key: str) -> list[ChatMessage]:
        """The key's active messages, oldest first ([] for an unknown key); new objects."""
        return _messages(self._log.read(self._ns, check_key(key), _ACTIVE))

    def add_message(self, key: str, message: ChatMessage) -> None:
        """Append one message to the key's history."""
        with late_write(self.mos) as late:
            rows = history_rows(self._late([check_chat_message(message, "message")]), None)
            self._log.append(self._ns, check_key(key), rows, _ACTIVE)
            self._log.redact(late.missed(self.user_id), _ids(rows))

    def delete_messages(self, key: str) -> list[ChatMessage] | None:
        """Delete the key's active messages; returns them, or None if there were none."""
        rows = self._log.delete(self._ns, check_key(key), _ACTIVE)
        return _messages(rows) or None

    def delete_message(self, key: str, idx: int) -> ChatMessage | None:
        """Delete the message at position ``idx``; returns it, or None if out of range."""
        row = self._log.delete_at(self._ns, check_key(key), check_index(idx), _ACTIVE)
        return None if row is None else load_message(row[1])

    def delete_last_message(self, key: str) -> ChatMessage | None:
        """Delete the newest message; returns it, or None if the history is empty."""
        return self.delete_message(key, -1)

    def get_keys(self) -> list[str]:
        """Keys (of this store's user) that have messages, in order of first use."""
        return self._log.keys(self._ns)

    # -- async (BaseChatStore's defaults would block the loop): native in server mode ------

    @whole  # the write and its late redaction: one unit a cancel cannot split
    async def aset_messages(self, key: str, messages: list[ChatMessage]) -> None:
        """Async :meth:`set_messages`."""
        async with alate_write(self.mos) as late:
            rows = history_rows(self._late(check_chat_messages(messages)), None)
            key = check_key(key)
            rows = _keep_ids(await self._log.aread(self._ns, key, _ACTIVE), rows)
            await self._log.areplace(self._ns, key, rows, _ACTIVE, clear=_ACTIVE)
            await self._log.aredact(await late.amissed(self.user_id), _ids(rows))

    async def aget_messages(self, key: str) -> list[ChatMessage]:
        """Async :meth:`get_messages`."""
        return _messages(await self._log.aread(self._ns, check_key(key), _ACTIVE))

    @whole  # the write and its late redaction: one unit a cancel cannot split
    async def async_add_message(self, key: str, message: ChatMessage) -> None:
        """Async :meth:`add_message`."""
        async with alate_write(self.mos) as late:
            rows = history_rows(self._late([check_chat_message(message, "message")]), None)
            await self._log.aappend(self._ns, check_key(key), rows, _ACTIVE)
            await self._log.aredact(await late.amissed(self.user_id), _ids(rows))

    async def adelete_messages(self, key: str) -> list[ChatMessage] | None:
        """Async :meth:`delete_messages`."""
        return _messages(await self._log.adelete(self._ns, check_key(key), _ACTIVE)) or None

    async def adelete_message(self, key: str, idx: int) -> ChatMessage | None:
        """Async :meth:`delete_message`."""
        row = await self._log.adelete_at(self._ns, check_key(key), check_index(idx), _ACTIVE)
        return None if row is None else load_message(row[1])

    async def adelete_last_message(self, key: str) -> ChatMessage | None:
        """Async :meth:`delete_last_message`."""
        return await self.adelete_message(key, -1)

    async def aget_keys(self) -> list[str]:
        """Async :meth:`get_keys`."""
        return await self._log.akeys(self._ns)

    def close(self) -> None:
        """Nothing to close: the history lives in the MemOS vault (kept for compatibility)."""


class MemOSAsyncChatStore(AsyncDBChatStore):
    """The ``AsyncDBChatStore`` that ``Memory`` keeps its short-term queue in, persistent.

    ``MemOSAsyncChatStore(mos=mos)`` (optionally ``user_id=...``); pass it to
    ``Memory.from_defaults(chat_store=...)``. The event loop never blocks: in server mode
    every method is native async (the vault's asyncio connection pool), on the embedded
    vault its storage call runs in a worker thread. ``delete_message``'s ``idx`` is a position among
    all of the key's messages (active and archived, oldest first). ``set_messages`` replaces
    every message of the key, whatever its status, as the llama-index SQL store does.

    Beyond the interface: :meth:`add_messages` accepts ``ids=`` and
    :meth:`get_message_ids` returns them, so a caller can link a message to the memories
    made from it; :meth:`set_messages` keeps the id of every message the key already held.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    mos: MemOS = Field(exclude=True, description="The MemOS whose data directory holds history.")
    user_id: str | None = Field(default=None, description="Namespace of this store's keys.")
    _log: ConversationLog = PrivateAttr()

    def __init__(self, *, mos: MemOS, user_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**_init_fields("MemOSAsyncChatStore", mos, user_id), **kwargs)
        self._log = ConversationLog(self.mos)

    @classmethod
    def class_name(cls) -> str:
        return "MemOSAsyncChatStore"

    @property
    def _ns(self) -> str:
        return self.user_id or ""

    def _late(self, messages: list[ChatMessage]) -> list[ChatMessage]:
        """``messages`` with the store's user's recent forgets redacted (:mod:`._forgets`)."""
        return late_redacted(self.mos, self.user_id, messages)

    async def get_messages(
        self,
        key: str,
        status: MessageStatus | None = MessageStatus.ACTIVE,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[ChatMessage]:
        """The key's messages of ``status`` (None: all), oldest first, paged; new objects."""
        args = (self._ns, check_key(key), check_status(status, optional=True),
                check_non_negative(limit, "limit", optional=True),
                check_non_negative(offset, "offset", optional=True))
        return _messages(await self._log.aread(*args))

    async def get_message_ids(
        self, key: str, status: MessageStatus | None = MessageStatus.ACTIVE
    ) -> list[str]:
        """The ids of the key's messages of ``status``, in the order of :meth:`get_messages`."""
        return [mid for mid, _ in await self._id_messages(key, status)]

    async def _id_messages(
        self, key: str, status: MessageStatus | None = MessageStatus.ACTIVE
    ) -> list[tuple[str, ChatMessage]]:
        """``(id, message)`` of the key's messages of ``status``, read at once."""
        args = (self._ns, check_key(key), check_status(status, optional=True))
        return [(mid, load_message(data)) for mid, data in await self._log.aread(*args)]

    async def count_messages(
        self, key: str, status: MessageStatus | None = MessageStatus.ACTIVE
    ) -> int:
        """How many messages of ``status`` (None: all) the key has."""
        args = (self._ns, check_key(key), check_status(status, optional=True))
        return await self._log.acount(*args)

    async def add_message(
        self, key: str, message: ChatMessage, status: MessageStatus = MessageStatus.ACTIVE
    ) -> None:
        """Append one message with ``status``."""
        await self.add_messages(key, [check_chat_message(message, "message")], status)

    @whole  # the write and its late redaction: one unit a cancel cannot split
    async def add_messages(
        self,
        key: str,
        messages: list[ChatMessage],
        status: MessageStatus = MessageStatus.ACTIVE,
        *,
        ids: Sequence[str] | None = None,
    ) -> None:
        """Append messages in order, in one transaction. ``ids``: one id per message
        (default: new random ids)."""
        async with alate_write(self.mos) as late:
            rows = history_rows(self._late(check_chat_messages(messages)), ids)
            args = (self._ns, check_key(key), rows, check_status(status, optional=False))
            await self._log.aappend(*args)
            await self._log.aredact(await late.amissed(self.user_id), _ids(rows))

    @whole  # the write and its late redaction: one unit a cancel cannot split
    async def set_messages(
        self, key: str, messages: list[ChatMessage], status: MessageStatus = MessageStatus.ACTIVE
    ) -> None:
        """Replace all of the key's messages (any status) with ``messages`` of ``status``; a
        message equal to one it replaces keeps that one's id (so memories made from it still
        name it as their source)."""
        async with alate_write(self.mos) as late:
            rows = history_rows(self._late(check_chat_messages(messages)), None)
            key, state = check_key(key), check_status(status, optional=False)
            rows = _keep_ids(await self._log.aread(self._ns, key, None), rows)
            await self._log.areplace(self._ns, key, rows, state, None)
            await self._log.aredact(await late.amissed(self.user_id), _ids(rows))

    async def delete_message(self, key: str, idx: int) -> ChatMessage | None:
        """Delete the message at position ``idx`` among all the key's messages; returns it,
        or None if out of range."""
        args = (self._ns, check_key(key), check_index(idx), None)
        row = await self._log.adelete_at(*args)
        return None if row is None else load_message(row[1])

    async def delete_messages(self, key: str, status: MessageStatus | None = None) -> None:
        """Delete the key's messages of ``status`` (None: all). A missing key is a no-op."""
        args = (self._ns, check_key(key), check_status(status, optional=True))
        await self._log.adelete(*args)

    async def delete_oldest_messages(self, key: str, n: int) -> list[ChatMessage]:
        """Delete the ``n`` oldest active messages; returns them, oldest first."""
        args = (self._ns, check_key(key), check_non_negative(n, "n"))
        return _messages(await self._log.atake_oldest(*args, archive=False))

    async def archive_oldest_messages(self, key: str, n: int) -> list[ChatMessage]:
        """Mark the ``n`` oldest active messages archived; returns them, oldest first."""
        args = (self._ns, check_key(key), check_non_negative(n, "n"))
        return _messages(await self._log.atake_oldest(*args, archive=True))

    async def get_keys(self) -> list[str]:
        """Keys (of this store's user) that have messages, in order of first use."""
        return await self._log.akeys(self._ns)

    def close(self) -> None:
        """Nothing to close: the history lives in the MemOS vault (kept for compatibility)."""
