"""Async twins of the Memory API.

Each ``a``-method runs its sync twin in a worker thread (``asyncio.to_thread``), so the event
loop never blocks on embedding, SQLite or the index. The facade is thread-safe, so many tasks
may await these at once.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from memos_core.cube import MemCube
    from memos_core.results import ForgetReceipt, SearchHit
    from memos_core.scheduler.report import ScheduleReport


class AsyncMemOSMixin:
    """``aadd``, ``asearch``, ... for :class:`memos_core.MemOS`; same arguments and results."""

    async def aadd(self, content: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self.add, content, **kwargs)  # type: ignore[attr-defined]

    async def aadd_many(self, items: Any, **kwargs: Any) -> list[MemCube]:
        return await asyncio.to_thread(self.add_many, items, **kwargs)  # type: ignore[attr-defined]

    async def asearch(self, query: str, **kwargs: Any) -> list[SearchHit]:
        return await asyncio.to_thread(self.search, query, **kwargs)  # type: ignore[attr-defined]

    async def aget(self, memory_id: str, **kwargs: Any) -> MemCube:
        return await asyncio.to_thread(self.get, memory_id, **kwargs)  # type: ignore[attr-defined]

    async def alist(self, **kwargs: Any) -> list[MemCube]:
        return await asyncio.to_thread(self.list, **kwargs)  # type: ignore[attr-defined]

    async def aupdate(self, memory_id: str, text: str | None = None, **kwargs: Any) -> MemCube:
        return await asyncio.to_thread(self.update, memory_id, text, **kwargs)  # type: ignore[attr-defined]

    async def aforget(self, memory_id: str, **kwargs: Any) -> ForgetReceipt:
        return await asyncio.to_thread(self.forget, memory_id, **kwargs)  # type: ignore[attr-defined]

    async def aforget_many(self, memory_ids: Any, **kwargs: Any) -> list[ForgetReceipt]:
        return await asyncio.to_thread(self.forget_many, memory_ids, **kwargs)  # type: ignore[attr-defined]

    async def ahistory(self, memory_id: str, **kwargs: Any) -> list[MemCube]:
        return await asyncio.to_thread(self.history, memory_id, **kwargs)  # type: ignore[attr-defined]

    async def arollback(self, memory_id: str, version: int, **kwargs: Any) -> MemCube:
        return await asyncio.to_thread(self.rollback, memory_id, version, **kwargs)  # type: ignore[attr-defined]

    async def aset_state(self, memory_id: str, state: Any, **kwargs: Any) -> MemCube:
        return await asyncio.to_thread(self.set_state, memory_id, state, **kwargs)  # type: ignore[attr-defined]

    async def acompress(self, memory_ids: Any, summary: str, **kwargs: Any) -> MemCube:
        return await asyncio.to_thread(self.compress, memory_ids, summary, **kwargs)  # type: ignore[attr-defined]

    async def ashare(self, memory_id: str, **kwargs: Any) -> MemCube:
        return await asyncio.to_thread(self.share, memory_id, **kwargs)  # type: ignore[attr-defined]

    async def arevoke(self, memory_id: str, **kwargs: Any) -> MemCube:
        return await asyncio.to_thread(self.revoke, memory_id, **kwargs)  # type: ignore[attr-defined]

    async def aexport(self, path: Any, **kwargs: Any) -> Path:
        return await asyncio.to_thread(self.export, path, **kwargs)  # type: ignore[attr-defined]

    async def aimport_(self, path: Any, **kwargs: Any) -> dict[str, int]:
        return await asyncio.to_thread(self.import_, path, **kwargs)  # type: ignore[attr-defined]

    async def achat(self, query: str | None = None, **kwargs: Any) -> Any:
        """Async ``chat``; with ``stream=True`` an ``AsyncChatStream`` (``async for``)."""
        result = await asyncio.to_thread(self.chat, query, **kwargs)  # type: ignore[attr-defined]
        if kwargs.get("stream"):
            from memos_core.chat import AsyncChatStream

            return AsyncChatStream(result)
        return result

    async def aschedule(self, **kwargs: Any) -> ScheduleReport:
        return await asyncio.to_thread(self.schedule, **kwargs)  # type: ignore[attr-defined]

    async def aconsolidate(self, **kwargs: Any) -> Any:
        """Async ``consolidate`` (training runs in a worker thread)."""
        return await asyncio.to_thread(self.consolidate, **kwargs)  # type: ignore[attr-defined]

    async def astats(self, **kwargs: Any) -> dict[str, Any]:
        return await asyncio.to_thread(self.stats, **kwargs)  # type: ignore[attr-defined]

    async def averify_audit(self, **kwargs: Any) -> tuple[bool, str]:
        return await asyncio.to_thread(self.verify_audit, **kwargs)  # type: ignore[attr-defined]

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)  # type: ignore[attr-defined]
