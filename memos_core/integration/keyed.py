"""Memories addressed by an external key, for adapters that keep key/value items (the
LangGraph store): an indexed, unique ``(user, namespace, key) -> memory`` binding in the
vault (:class:`~memos_core.vault.base.KeyedItems`), written atomically.

The principal is ``item.user_id``: a keyed memory belongs to the user its key names, and
only that user reads or writes it through these functions. Each function's storage calls
are calls of the MemOS (:mod:`memos_core.integration.counted`): ``close()`` waits for them,
and once the MemOS is closed they raise its closed error.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any

from memos_core.cube import MemCube
from memos_core.integration.async_storage import native_view
from memos_core.integration.counted import acounted, counted
from memos_core.lifecycle import INDEXED_STATES
from memos_core.memos import MemOS
from memos_core.ops import keyed as keyed_ops
from memos_core.ops.keyed import StateOf
from memos_core.ops import writes
from memos_core.validation import check_metadata, check_name, check_tags, check_text
from memos_core.vault import Actor, ItemKey

__all__ = ["aget_by_key", "aiter_by_prefix", "delete_by_key", "get_by_key", "iter_by_prefix",
           "migrate_keys", "put_by_key"]

_BATCH = 500


def _item(item: ItemKey) -> ItemKey:
    if not isinstance(item, ItemKey):
        raise TypeError(f"Expected a memos_core.integration.ItemKey, got {type(item).__name__}.")
    check_name(item.user_id, "user_id")
    return item


def put_by_key(mos: MemOS, item: ItemKey, text: str, *, metadata: Mapping[str, Any] | None = None,
               tags: Sequence[str] = (), type: str | None = None, sensitivity: Sequence[str] = (),
               agent_id: str | None = None, reason: str | None = None,
               state: StateOf | None = None) -> MemCube:
    """Store ``text`` under ``item``: a new memory (version 1, with ``type`` and
    ``sensitivity``) if the key names no live memory, else the next version of the one it
    names, with ``text``, ``metadata`` and ``tags`` replaced (type and sensitivity kept).
    Atomic (one vault transaction), also with other processes on the same database: two
    concurrent puts of a new key make one memory and a second version. Returns the memory
    as stored.

    ``state(current)``: the lifecycle state of the version written -- generated, activated
    or archived; None keeps the state (a new memory: generated) -- chosen from the version
    it replaces (``current``; None for a new memory). It is part of the put: one version,
    one audit record (``add`` or ``update``), decided on the version the put's transaction
    replaces (re-decided if a concurrent put makes it retry). Without it the state stays
    as it is.

    ``metadata`` may not name the reserved key ``source_forgotten`` (the forget cascade's
    flag), except to pass back exactly what the memory it replaces holds there.

    Raises:
        InvalidInputError: a bad field, or ``state`` chose expired or deleted (nothing was
            written). ConflictError: the key kept changing (retry).
    """
    with counted(mos):
        item = _item(item)
        text = check_text(text)
        # the forget flag may be passed back as stored (checked on the version replaced);
        # a new memory's metadata is checked again, where it may not name it
        meta = check_metadata(metadata, reserved_ok=True)
        tag_list = check_tags(tags)
        store = mos.store
        actor = Actor(item.user_id, check_name(agent_id, "agent_id", optional=True), reason)

        def fresh() -> MemCube:
            return writes.new_cube(store.extractor, text=text, user_id=item.user_id,
                                   agent_id=actor.agent_id, metadata=meta, type=type, tags=tag_list,
                                   sensitivity=sensitivity)

        changes = {"text": text, "entities": tuple(store.extractor.extract(text)), "metadata": meta,
                   "tags": tag_list}
        return keyed_ops.put_keyed(store, item, fresh, changes, actor, state)


def get_by_key(mos: MemOS, item: ItemKey) -> MemCube | None:
    """The live memory (generated, activated or archived) ``item`` names, else None."""
    with counted(mos):
        return keyed_ops.live_keyed(mos.store, _item(item))


def delete_by_key(mos: MemOS, item: ItemKey, *, agent_id: str | None = None,
                  reason: str | None = None) -> bool:
    """Forget the memory ``item`` names (``MemOS.forget``: everywhere, the key included);
    False if it names none (nothing happens)."""
    cube = get_by_key(mos, item)
    if cube is None:
        return False
    mos.forget(cube.id, user_id=item.user_id, agent_id=agent_id, reason=reason)
    return True


def iter_by_prefix(mos: MemOS, user_id: str, prefix: Sequence[str] = ()
                   ) -> Iterator[tuple[ItemKey, MemCube]]:
    """``(item, memory)`` for every live keyed memory of ``user_id`` whose namespace starts
    with the labels ``prefix``, in the order the keys were first bound (read in batches)."""
    offset = 0
    while True:
        page, cubes = _page(mos, user_id, prefix, offset)
        for item, mid in page:
            cube = cubes.get(mid)
            if cube is not None and cube.state.value in INDEXED_STATES:
                yield item, cube
        if len(page) < _BATCH:
            return
        offset += _BATCH


def _page(mos: MemOS, user_id: str, prefix: Sequence[str], offset: int
          ) -> tuple[list[tuple[ItemKey, str]], dict[str, MemCube]]:
    """One page of :func:`iter_by_prefix`: the keys and their memories (one counted call;
    the first catches up with other processes)."""
    with counted(mos, catch_up=offset == 0):
        user = check_name(user_id, "user_id")
        page = mos.store.vault.list_keyed(user, tuple(prefix), limit=_BATCH, offset=offset)
        return page, mos.store.vault.get_many([mid for _, mid in page],
                                              on_damaged=mos.store.report_damaged)


async def aget_by_key(mos: MemOS, item: ItemKey) -> MemCube | None:
    """Async :func:`get_by_key`: native in server mode, else in a worker thread."""
    view = native_view(mos.store.vault)
    if view is None:
        return await asyncio.to_thread(get_by_key, mos, item)
    async with acounted(mos, view):
        cube: MemCube | None = await view.get_keyed(_item(item))
    return cube if cube is not None and cube.state.value in INDEXED_STATES else None


async def aiter_by_prefix(mos: MemOS, user_id: str, prefix: Sequence[str] = ()
                          ) -> AsyncIterator[tuple[ItemKey, MemCube]]:
    """Async :func:`iter_by_prefix` (the same pairs in the same order): native in server
    mode, else each page read in a worker thread."""
    view = native_view(mos.store.vault)
    offset = 0
    while True:
        if view is None:
            page, cubes = await asyncio.to_thread(_page, mos, user_id, prefix, offset)
        else:
            async with acounted(mos, view, catch_up=offset == 0):
                user = check_name(user_id, "user_id")
                page = await view.list_keyed(user, tuple(prefix), limit=_BATCH, offset=offset)
                cubes = await view.get_many([mid for _, mid in page])
        for item, mid in page:
            cube = cubes.get(mid)
            if cube is not None and cube.state.value in INDEXED_STATES:
                yield item, cube
        if len(page) < _BATCH:
            return
        offset += _BATCH


def migrate_keys(mos: MemOS, marker: str, key_of: Callable[[MemCube], ItemKey | None]) -> int:
    """Bind the memories written before keys existed, once per data directory and
    ``marker``: ``key_of(memory)`` names the key of each live memory (None: not keyed); the
    newest memory per key wins (as the old lookups read it). Returns how many were bound."""
    with counted(mos):
        vault = mos.store.vault
        flag = f"keys_migrated:{marker}"
        if vault.get_meta(flag) is not None:
            return 0
        newest: dict[ItemKey, str] = {}
        for batch in vault.iter_current(on_damaged=mos.store.report_damaged):
            for cube in batch:
                if cube.state.value in INDEXED_STATES:
                    item = key_of(cube)
                    if item is not None and item.user_id == cube.user_id:
                        newest[item] = cube.id
        bound = sum(1 for item, mid in newest.items() if vault.bind_key(item, mid))
        vault.set_meta(flag, "1")
        return bound
