"""Conversation logs and thread checkpoints the core keeps for the adapters, in the vault.

:class:`ConversationLog` is a message queue store over the vault's conversation-log table
(:class:`~memos_core.vault.base.ConversationLogs`): the LlamaIndex chat stores keep their
history there, and ``MemOS.forget`` redacts it itself. :func:`thread_checkpoints` is the
vault's checkpoint storage (:class:`~memos_core.vault.base.ThreadCheckpoints`) for the
LangGraph checkpointer, whose values only the adapter can decode: it redacts them in its
forget hook (:func:`on_forget_checkpoints`) or, when closed, in the vault redactor its
package declares.

Both work unchanged whatever the vault's backend. The ``a``-prefixed methods of
:class:`ConversationLog` (and :func:`~memos_core.integration.async_storage.async_checkpoints`)
are native async in server mode (:mod:`memos_core.integration.async_storage`), a worker
thread otherwise. Files the adapters kept before
(``chat_history.sqlite3``, ``checkpoints.sqlite3``) are moved into the vault on first open
(:mod:`memos_core.integration.legacy`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from memos_core.calls import in_thread
from memos_core.governance.forget_hooks import ForgetHook
from memos_core.governance.redaction import MessageRedactor
from memos_core.integration.async_storage import native_view
from memos_core.integration.checkpoints import CountedCheckpoints
from memos_core.integration.counted import acounted, counted
from memos_core.memos import MemOS
from memos_core.ops.forget import redact_conversation_logs
from memos_core.vault import LogRow, ThreadCheckpoints, Vault

T = TypeVar("T")

__all__ = ["ConversationLog", "on_forget_checkpoints", "thread_checkpoints"]


class ConversationLog:
    """Message queues, one per ``(user_id, log_id)``, in ``mos``'s vault. Thread-safe.

    Rows are ``(message_id, message JSON)``; ``status`` is ``"active"``, ``"archived"`` or
    None (every status). The methods are those of
    :class:`~memos_core.vault.base.ConversationLogs` without the redaction (the core's).
    Callers validate their arguments (user ids, keys); each call is one transaction, and a
    call of ``mos`` (:mod:`memos_core.integration.counted`): ``close()`` waits for it, and
    once ``mos`` is closed it raises the facade's closed error.
    """

    def __init__(self, mos: MemOS) -> None:
        self._mos = mos
        from memos_core.integration.legacy import migrate_chat_file

        with counted(mos):
            migrate_chat_file(mos)

    def _run(self, call: Callable[[Vault], T]) -> T:
        """``call(vault)``, counted (after the checks of ``MemOS._check_open``)."""
        with counted(self._mos):
            return call(self._mos.store.vault)

    def read(self, user_id: str, log_id: str, status: str | None, limit: int | None = None,
             offset: int | None = None) -> list[LogRow]:
        """Rows of ``status``, oldest first, paged."""
        return self._run(lambda v: list(v.log_read(user_id, log_id, status, limit, offset or 0)))

    def count(self, user_id: str, log_id: str, status: str | None) -> int:
        return self._run(lambda v: int(v.log_count(user_id, log_id, status)))

    def keys(self, user_id: str) -> list[str]:
        """Log ids of ``user_id`` with at least one row, in order of their first row."""
        return self._run(lambda v: list(v.log_ids(user_id)))

    def append(self, user_id: str, log_id: str, rows: Sequence[LogRow], status: str) -> None:
        self._run(lambda v: v.log_append(user_id, log_id, rows, status))

    def replace(self, user_id: str, log_id: str, rows: Sequence[LogRow], status: str,
                clear: str | None) -> None:
        self._run(lambda v: v.log_replace(user_id, log_id, rows, status, clear))

    def delete(self, user_id: str, log_id: str, status: str | None) -> list[LogRow]:
        return self._run(lambda v: list(v.log_delete(user_id, log_id, status)))

    def delete_at(self, user_id: str, log_id: str, idx: int, status: str | None) -> LogRow | None:
        return self._run(lambda v: v.log_delete_at(user_id, log_id, idx, status))

    def take_oldest(self, user_id: str, log_id: str, n: int, *, archive: bool) -> list[LogRow]:
        return self._run(lambda v: list(v.log_take_oldest(user_id, log_id, n, archive=archive)))

    def redact(self, redactors: Sequence[MessageRedactor], message_ids: Collection[str]) -> None:
        """Redact each redactor's memory in the messages ``message_ids`` (those a write
        stored) as its forget's pass did in the logs, then clear the journal: for a write
        that pass may have missed (:class:`~memos_core.integration.forgets.LateWrite`).
        Nothing when ``redactors`` is empty."""
        if not redactors:
            return
        ids = frozenset(message_ids)

        def redact(vault: Vault) -> None:
            for redactor in redactors:
                redact_conversation_logs(vault, redactor, only=ids)
            vault.checkpoint()

        self._run(redact)

    async def aredact(self, redactors: Sequence[MessageRedactor],
                      message_ids: Collection[str]) -> None:
        """Async :meth:`redact` (in a worker thread: it runs only after a rare race)."""
        if redactors:
            await in_thread(self.redact, redactors, message_ids)

    # -- async twins: native in server mode, else the sync method in a worker thread ---------

    @asynccontextmanager
    async def _av(self) -> AsyncIterator[Any | None]:
        """The vault's native async view for one counted call (after the checks of
        :meth:`_run`); None: use a thread (the sync method counts itself there)."""
        view = native_view(self._mos.store.vault)
        if view is None:
            yield None
            return
        async with acounted(self._mos, view):
            yield view

    async def aread(self, user_id: str, log_id: str, status: str | None, limit: int | None = None,
                    offset: int | None = None) -> list[LogRow]:
        """Async :meth:`read`."""
        async with self._av() as view:
            if view is None:
                return await asyncio.to_thread(self.read, user_id, log_id, status, limit, offset)
            return list(await view.log_read(user_id, log_id, status, limit, offset or 0))

    async def acount(self, user_id: str, log_id: str, status: str | None) -> int:
        """Async :meth:`count`."""
        async with self._av() as view:
            if view is None:
                return await asyncio.to_thread(self.count, user_id, log_id, status)
            return int(await view.log_count(user_id, log_id, status))

    async def akeys(self, user_id: str) -> list[str]:
        """Async :meth:`keys`."""
        async with self._av() as view:
            if view is None:
                return await asyncio.to_thread(self.keys, user_id)
            return list(await view.log_ids(user_id))

    async def aappend(self, user_id: str, log_id: str, rows: Sequence[LogRow], status: str) -> None:
        """Async :meth:`append`."""
        async with self._av() as view:
            if view is None:
                return await in_thread(self.append, user_id, log_id, rows, status)
            await view.log_append(user_id, log_id, rows, status)

    async def areplace(self, user_id: str, log_id: str, rows: Sequence[LogRow], status: str,
                       clear: str | None) -> None:
        """Async :meth:`replace`."""
        async with self._av() as view:
            if view is None:
                return await in_thread(self.replace, user_id, log_id, rows, status, clear)
            await view.log_replace(user_id, log_id, rows, status, clear)

    async def adelete(self, user_id: str, log_id: str, status: str | None) -> list[LogRow]:
        """Async :meth:`delete`."""
        async with self._av() as view:
            if view is None:
                return await in_thread(self.delete, user_id, log_id, status)
            return list(await view.log_delete(user_id, log_id, status))

    async def adelete_at(self, user_id: str, log_id: str, idx: int,
                         status: str | None) -> LogRow | None:
        """Async :meth:`delete_at`."""
        async with self._av() as view:
            if view is None:
                return await in_thread(self.delete_at, user_id, log_id, idx, status)
            row: LogRow | None = await view.log_delete_at(user_id, log_id, idx, status)
            return row

    async def atake_oldest(self, user_id: str, log_id: str, n: int, *,
                           archive: bool) -> list[LogRow]:
        """Async :meth:`take_oldest`."""
        async with self._av() as view:
            if view is None:
                return await in_thread(self.take_oldest, user_id, log_id, n,
                                       archive=archive)
            return list(await view.log_take_oldest(user_id, log_id, n, archive=archive))


def thread_checkpoints(mos: MemOS) -> ThreadCheckpoints:
    """The checkpoint storage of ``mos``'s vault (legacy ``checkpoints.sqlite3`` moved in
    first). Each of its calls is a call of ``mos`` (:mod:`memos_core.integration.counted`):
    ``close()`` waits for it, and once ``mos`` is closed it raises the facade's closed
    error; so are those of its native async view (:func:`~memos_core.integration.async_checkpoints`)."""
    from memos_core.integration.legacy import migrate_checkpoint_file

    with counted(mos):
        migrate_checkpoint_file(mos)
    return CountedCheckpoints(mos)


def on_forget_checkpoints(mos: MemOS, hook: ForgetHook) -> Callable[[], None]:
    """Register the checkpointer's forget hook: while it lives, the ``checkpoints`` vault
    redactor (the entry point used when no checkpointer is open) does not run. Returns
    the function that unregisters it."""
    return mos.store.on_forget(hook, covers="checkpoints")
