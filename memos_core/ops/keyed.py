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

from memos_core.cube import MemCube, State, utcnow
from memos_core.errors import ConflictError, InvalidInputError
from memos_core.governance.derived import check_passed_back, with_flag_of
from memos_core.lifecycle import INDEXED
from memos_core.ops.share import inherit_grants
from memos_core.store import MemoryStore
from memos_core.validation import check_enum
from memos_core.vault import Actor, ItemKey
from memos_core.vault.base import NamespaceGrant

__all__ = ["StateOf", "live_keyed", "put_keyed"]

#: How often a put re-reads and retries after a conflict before giving up.
ATTEMPTS = 8

#: A put's choice of the lifecycle state of the version it writes, from the version it
#: replaces (None: the key names no memory yet); None keeps the state (a new memory: generated).
StateOf = Callable[[MemCube | None], State | None]


def live_keyed(store: MemoryStore, item: ItemKey) -> MemCube | None:
    """The memory bound to ``item`` if it is live (an indexed state), else None."""
    cube = store.vault.get_keyed(item)
    return cube if cube is not None and cube.state in INDEXED else None


def put_keyed(store: MemoryStore, item: ItemKey, fresh: Callable[[], MemCube],
              changes: dict[str, Any], actor: Actor, state: StateOf | None = None) -> MemCube:
    """Write under ``item``: a new memory ``fresh()`` if the key is unbound, else the next
    version of the bound memory with ``changes``; returns it as stored.

    ``state``: the lifecycle state of the version written, chosen from the version it
    replaces on each try -- so it is decided on the version this put's transaction checks
    (``expected_version``), never on one another writer put there since (that writer's
    own choice decides for its version).

    A key bound to a memory that is no longer live (expired) is released first: that
    memory keeps its history, and the key names the new one.

    Raises:
        ConflictError: the key kept changing under concurrent writers for
            :data:`ATTEMPTS` tries (nothing of this put was written).
        InvalidInputError: ``changes["metadata"]`` names the forget flag otherwise than
            the bound memory holds it (:func:`~memos_core.governance.derived.check_passed_back`),
            or ``fresh()`` refused its fields.
    """
    store.ready_embedder()
    for _ in range(ATTEMPTS):
        existing = store.vault.get_keyed(item)
        if existing is not None and existing.state not in INDEXED:
            store.vault.unbind_key(item, existing.id)
            continue
        grants: list[NamespaceGrant] | None = None
        target = _chosen_state(state, existing)
        if existing is None:
            new = fresh()
            if target is not None:
                new = new.model_copy(update={"state": target})
            (cube,), grants = inherit_grants(store.vault, [new])
            expected = None
            action = "add"
        else:
            kept = dict(changes) if target is None else {**changes, "state": target}
            if "metadata" in kept:  # the forget flag stays, as in every new version
                check_passed_back(existing.metadata, kept["metadata"])  # (MemOS.update)
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


def _chosen_state(state: StateOf | None, existing: MemCube | None) -> State | None:
    """``state``'s choice for the version replacing ``existing``; only a live state (a put
    neither expires nor deletes a memory)."""
    target = None if state is None else state(existing)
    if target is not None and not isinstance(target, State):
        target = check_enum(State, target, "the state a keyed put chose")  # "archived" too
    if target is not None and target not in INDEXED:
        raise InvalidInputError(
            f"A keyed put cannot leave its memory {target.value!r}; choose generated, "
            "activated or archived (expire or forget it with their own calls).")
    return target
