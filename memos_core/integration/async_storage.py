"""Async access to the integration storage: native where the vault has it, else a worker thread.

A framework's async API (LangGraph's ``aget_tuple`` / ``aput`` / ``aput_writes`` and store
``abatch``, LlamaIndex's async chat store, ``MemOS.aget``) awaits storage calls on every step.
In server mode the vault provides a native async view
(``PostgresVault.native_async()``, :mod:`memos_core.vault.pg_async`): the same statements
on async connections of the running event loop's pool, so a call waits on its socket
in the loop instead of holding a worker thread. Any other vault (the embedded SQLite one)
is called in a worker thread (``asyncio.to_thread``), as before. Either way the results and
errors are those of the sync methods.

* :func:`async_checkpoints` -- the native :class:`AsyncThreadCheckpoints` of a vault's
  checkpoints, or None (then the adapter runs its sync method in a worker thread).
* :func:`native_view` -- the vault's native async view, or None; :func:`acheck_open` --
  ``MemOS._check_open`` for the native path (both from :mod:`memos_core.aio`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from memos_core.aio import acheck_open, native_view
from memos_core.vault import CheckpointRecord, ThreadCheckpoints, Typed

__all__ = ["AsyncThreadCheckpoints", "acheck_open", "async_checkpoints", "has_native_async",
           "native_view"]


def has_native_async(mos: Any) -> bool:
    """True when ``mos``'s vault serves async calls natively (server mode): an adapter then
    awaits the core's async functions call by call; otherwise it runs its whole sync method
    in one worker thread."""
    return native_view(mos.store.vault) is not None



class AsyncThreadCheckpoints(Protocol):
    """:class:`~memos_core.vault.base.ThreadCheckpoints` (less the forget-time redaction),
    awaitable: same arguments, results and errors."""

    async def cp_put(self, record: CheckpointRecord,
                     blobs: Sequence[tuple[str, str, Typed]]) -> None: ...

    async def cp_get(self, thread_id: str, checkpoint_ns: str,
                     checkpoint_id: str | None) -> CheckpointRecord | None: ...

    async def cp_list(self, thread_id: str | None = None, checkpoint_ns: str | None = None,
                      checkpoint_id: str | None = None, before: str | None = None,
                      limit: int | None = None) -> list[CheckpointRecord]: ...

    async def cp_blobs(self, thread_id: str, checkpoint_ns: str,
                       versions: Mapping[str, str]) -> dict[str, Typed]: ...

    async def cp_parts(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str,
                       versions: Mapping[str, str]
                       ) -> tuple[dict[str, Typed], list[tuple[str, str, Typed]]]:
        """``(cp_blobs(...), cp_writes(...))`` in one round of calls."""
        ...

    async def cp_load(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str | None,
                      versions_of: Callable[[CheckpointRecord], Mapping[str, str]]
                      ) -> tuple[CheckpointRecord, dict[str, Typed],
                                 list[tuple[str, str, Typed]]] | None:
        """``cp_get`` then :meth:`cp_parts` of the record found (``versions_of(record)``:
        the channel versions its checkpoint names); None if there is none."""
        ...

    async def cp_put_writes(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str,
                            task_id: str, task_path: str,
                            writes: Sequence[tuple[int, str, Typed]]) -> None: ...

    async def cp_writes(self, thread_id: str, checkpoint_ns: str,
                        checkpoint_id: str) -> list[tuple[str, str, Typed]]: ...

    async def cp_delete_thread(self, thread_id: str) -> None: ...

    async def cp_delete_runs(self, run_ids: Sequence[str]) -> None: ...

    async def cp_copy_thread(self, source: str, target: str) -> None: ...


def async_checkpoints(store: ThreadCheckpoints) -> AsyncThreadCheckpoints | None:
    """The native async checkpoint storage of ``store`` (what
    :func:`~memos_core.integration.thread_checkpoints` returned) when its vault has one
    (server mode), else None: the caller runs its sync method in a worker thread."""
    view: AsyncThreadCheckpoints | None = native_view(store)
    return view
