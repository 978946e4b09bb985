"""The thread-checkpoint storage handed to the LangGraph checkpointer, each call counted.

:func:`~memos_core.integration.thread_checkpoints` returns a :class:`CountedCheckpoints`:
the vault's :class:`~memos_core.vault.base.ThreadCheckpoints`, every call of which is a call
of the MemOS (:func:`~memos_core.integration.counted.counted`), so ``close()`` waits for a
checkpoint write in flight and a call after ``close()`` raises the facade's closed error,
not the driver's. Its native async view (:func:`~memos_core.integration.async_checkpoints`,
server mode) counts its calls as asyncio tasks (:func:`~memos_core.integration.counted.acounted`).

Checkpoint calls skip the server-mode catch-up of ``MemOS._check_open``: nothing in this
process derives from checkpoint rows, and the checkpointer's forget hook calls
:meth:`CountedCheckpoints.cp_redact` from inside a running forget.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

from memos_core.integration.async_storage import AsyncThreadCheckpoints, native_view
from memos_core.integration.counted import acounted, counted
from memos_core.memos import MemOS
from memos_core.vault import CheckpointRecord, Typed

__all__ = ["CountedCheckpoints"]



class CountedCheckpoints:
    """``mos``'s vault's thread checkpoints (:class:`~memos_core.vault.base.ThreadCheckpoints`:
    the same arguments, results and errors), each call counted as a call of ``mos``; the
    closed error once ``mos`` is closed."""

    def __init__(self, mos: MemOS) -> None:
        self._mos = mos
        self._vault = mos.store.vault

    def native_async(self) -> AsyncThreadCheckpoints | None:
        """The vault's native async checkpoints (server mode), counted; None if it has none."""
        view: AsyncThreadCheckpoints | None = native_view(self._vault)
        return None if view is None else _CountedAsyncCheckpoints(self._mos, view)

    def cp_put(self, record: CheckpointRecord, blobs: Sequence[tuple[str, str, Typed]]) -> None:
        with counted(self._mos, catch_up=False):
            self._vault.cp_put(record, blobs)

    def cp_get(self, thread_id: str, checkpoint_ns: str,
               checkpoint_id: str | None) -> CheckpointRecord | None:
        with counted(self._mos, catch_up=False):
            return self._vault.cp_get(thread_id, checkpoint_ns, checkpoint_id)

    def cp_list(self, thread_id: str | None = None, checkpoint_ns: str | None = None,
                checkpoint_id: str | None = None, before: str | None = None,
                limit: int | None = None) -> list[CheckpointRecord]:
        with counted(self._mos, catch_up=False):
            return self._vault.cp_list(thread_id, checkpoint_ns, checkpoint_id, before, limit)

    def cp_blobs(self, thread_id: str, checkpoint_ns: str,
                 versions: Mapping[str, str]) -> dict[str, Typed]:
        with counted(self._mos, catch_up=False):
            return self._vault.cp_blobs(thread_id, checkpoint_ns, versions)

    def cp_put_writes(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str,
                      task_id: str, task_path: str,
                      writes: Sequence[tuple[int, str, Typed]]) -> None:
        with counted(self._mos, catch_up=False):
            self._vault.cp_put_writes(thread_id, checkpoint_ns, checkpoint_id, task_id,
                                      task_path, writes)

    def cp_writes(self, thread_id: str, checkpoint_ns: str,
                  checkpoint_id: str) -> list[tuple[str, str, Typed]]:
        with counted(self._mos, catch_up=False):
            return self._vault.cp_writes(thread_id, checkpoint_ns, checkpoint_id)

    def cp_delete_thread(self, thread_id: str) -> None:
        with counted(self._mos, catch_up=False):
            self._vault.cp_delete_thread(thread_id)

    def cp_delete_runs(self, run_ids: Sequence[str]) -> None:
        with counted(self._mos, catch_up=False):
            self._vault.cp_delete_runs(run_ids)

    def cp_copy_thread(self, source: str, target: str) -> None:
        with counted(self._mos, catch_up=False):
            self._vault.cp_copy_thread(source, target)

    def cp_any(self) -> bool:
        with counted(self._mos, catch_up=False):
            return self._vault.cp_any()

    def cp_redact(self, contains: Sequence[bytes], rewrite: Callable[[Typed], Typed | None], *,
                  skip_threads: Collection[str] = ()) -> list[str]:
        with counted(self._mos, catch_up=False):
            return self._vault.cp_redact(contains, rewrite, skip_threads=skip_threads)


class _CountedAsyncCheckpoints:
    """A native :class:`AsyncThreadCheckpoints`, each call counted as an asyncio task of
    ``mos``; the closed error once ``mos`` is closed."""

    def __init__(self, mos: MemOS, view: AsyncThreadCheckpoints) -> None:
        self._mos = mos
        self._view = view

    async def cp_put(self, record: CheckpointRecord,
                     blobs: Sequence[tuple[str, str, Typed]]) -> None:
        async with acounted(self._mos, self._view, catch_up=False):
            await self._view.cp_put(record, blobs)

    async def cp_get(self, thread_id: str, checkpoint_ns: str,
                     checkpoint_id: str | None) -> CheckpointRecord | None:
        async with acounted(self._mos, self._view, catch_up=False):
            return await self._view.cp_get(thread_id, checkpoint_ns, checkpoint_id)

    async def cp_list(self, thread_id: str | None = None, checkpoint_ns: str | None = None,
                      checkpoint_id: str | None = None, before: str | None = None,
                      limit: int | None = None) -> list[CheckpointRecord]:
        async with acounted(self._mos, self._view, catch_up=False):
            return await self._view.cp_list(thread_id, checkpoint_ns, checkpoint_id, before,
                                            limit)

    async def cp_blobs(self, thread_id: str, checkpoint_ns: str,
                       versions: Mapping[str, str]) -> dict[str, Typed]:
        async with acounted(self._mos, self._view, catch_up=False):
            return await self._view.cp_blobs(thread_id, checkpoint_ns, versions)

    async def cp_parts(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str,
                       versions: Mapping[str, str]
                       ) -> tuple[dict[str, Typed], list[tuple[str, str, Typed]]]:
        async with acounted(self._mos, self._view, catch_up=False):
            return await self._view.cp_parts(thread_id, checkpoint_ns, checkpoint_id, versions)

    async def cp_load(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str | None,
                      versions_of: Callable[[CheckpointRecord], Mapping[str, str]]
                      ) -> tuple[CheckpointRecord, dict[str, Typed],
                                 list[tuple[str, str, Typed]]] | None:
        async with acounted(self._mos, self._view, catch_up=False):
            return await self._view.cp_load(thread_id, checkpoint_ns, checkpoint_id, versions_of)

    async def cp_put_writes(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str,
                            task_id: str, task_path: str,
                            writes: Sequence[tuple[int, str, Typed]]) -> None:
        async with acounted(self._mos, self._view, catch_up=False):
            await self._view.cp_put_writes(thread_id, checkpoint_ns, checkpoint_id, task_id,
                                           task_path, writes)

    async def cp_writes(self, thread_id: str, checkpoint_ns: str,
                        checkpoint_id: str) -> list[tuple[str, str, Typed]]:
        async with acounted(self._mos, self._view, catch_up=False):
            return await self._view.cp_writes(thread_id, checkpoint_ns, checkpoint_id)

    async def cp_delete_thread(self, thread_id: str) -> None:
        async with acounted(self._mos, self._view, catch_up=False):
            await self._view.cp_delete_thread(thread_id)

    async def cp_delete_runs(self, run_ids: Sequence[str]) -> None:
        async with acounted(self._mos, self._view, catch_up=False):
            await self._view.cp_delete_runs(run_ids)

    async def cp_copy_thread(self, source: str, target: str) -> None:
        async with acounted(self._mos, self._view, catch_up=False):
            await self._view.cp_copy_thread(source, target)
