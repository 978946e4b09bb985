"""Memories addressed by an external key (:class:`~memos_core.vault.base.ItemKey`): the
atomic put behind :func:`memos_core.integration.put_by_key`.

A put reads the key's binding, then writes in ONE vault transaction either a new memory
bound to the key or the next version of the bound one (:meth:`Vault.put_keyed`). If another
writer -- a thread, or another process on the same database -- bound the key or wrote a
version in between, the vault refuses with :class:`~memos_core.errors.ConflictError` and
writes nothing; the put then reads again and retries. No lock outside the vault is needed
for correctness (the store's write lock only keeps this process's index in step).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from memos_core.cube import MemCube, utcnow
from memos_core.errors import ConflictError
from memos_core.governance.derived import with_flag_of
from memos_core.lifecycle import INDEXED
from memos_core.ops.share import inherit_grants
from memos_core.store import MemoryStore
from memos_core.vault import Actor, ItemKey
from memos_core.vault.base import NamespaceGrant

__all__ = ["live_keyed", "put_keyed"]

#: How often a put re-reads and retries after a conflict before giving up.
ATTEMPTS = 8


def live_keyed(store: MemoryStore, item: ItemKey) -> MemCube | None:
    """The memory bound to ``item`` if it is live (an indexed state), else None."""
    cube = store.vault.get_keyed(item)
    return cube if cube is not None and cube.state in INDEXED else None


def put_keyed(store: MemoryStore, item: ItemKey, fresh: Callable[[], MemCube],
              changes: dict[str, Any], actor: Actor) -> MemCube:
    """Write under ``item``: a new memory ``fresh()`` if the key is unbound, else the next
    version of the bound memory with ``changes``; returns it as stored.

    A key bound to a memory that is no longer live (expired) is released first: that
    memory keeps its history, and the key names the new one.

    Raises:
        ConflictError: the key kept changing under concurrent writers for
            :data:`ATTEMPTS` tries (nothing of this put was written).
    """
    store.ready_embedder()
    for _ in range(ATTEMPTS):
        existing = store.vault.get_keyed(item)
        if existing is not None and existing.state not in INDEXED:
            store.vault.unbind_key(item, existing.id)
            continue
        grants: list[NamespaceGrant] | None = None
        if existing is None:
            (cube,), grants = inherit_grants(store.vault, [fresh()])
            expected = None
            action = "add"
        else:
            kept = dict(changes)
            if "metadata" in kept:  # the forget flag stays, as in every new version
                kept["metadata"] = with_flag_of(existing.metadata, kept["metadata"])  # (write_version)
            cube = existing.model_copy(update={**kept, "version": existing.version + 1,
                                               "updated_at": utcnow()})
            cube = MemCube.model_validate(cube.model_dump())  # re-validate the changed fields
            expected = existing.version
            action = "update"

        def commit(cube: MemCube = cube, expected: int | None = expected,
                   action: str = action,
                   grants: list[NamespaceGrant] | None = grants) -> list[MemCube]:
            store.vault.put_keyed(item, cube, expected, actor, action, grants=grants)
            return [cube]

        try:
            store.write(commit)
        except ConflictError:
            continue
        return store.as_written(cube)
    raise ConflictError(
        f"Key {item.key!r} in {item.namespace!r} kept changing under concurrent writers; "
        "nothing was written. Retry the put.")
