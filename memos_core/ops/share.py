"""Sharing: ``MemOS.share`` / ``revoke`` (one memory) and ``share_namespace`` /
``revoke_namespace`` carried out over the kernel; the facade has checked access.

A namespace grant is stored in the vault and *materialised* into the memories it covers:
each covered memory gets a new version whose ``governance.readers`` (and for scope
``write`` ``writers``) names the grantee, and memories written into the namespace later
inherit the grant when they are stored (:func:`inherit_grants`). Reads therefore need no
extra lookup: the access rule, the index filter and the graph filter stay the per-memory
ones, and a grant on 100k memories costs nothing at search time.

Cost of a grant: one vault transaction with one new version (and audit record) per covered
memory that changes, plus one audit record for the grant; the index gets a payload update
per memory (``readers``, ``version``) -- no re-embedding. Memories already shared that way
are left alone, so repeating a grant writes nothing but its audit record.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from memos_core.cube import MemCube, utcnow
from memos_core.errors import InvalidInputError
from memos_core.governance.access import broader_grant, contains, covers, granted, revoked, with_grants
from memos_core.lifecycle import CHANGEABLE_STATES
from memos_core.results import ShareReceipt
from memos_core.store import MemoryStore
from memos_core.vault.base import Actor, ListQuery, NamespaceGrant, Vault

__all__ = ["inherit_grants", "owned_in", "revoke_namespace", "set_access", "share_namespace"]

_PAGE = 1000


def inherit_grants(vault: Vault, cubes: Sequence[MemCube]) -> list[MemCube]:
    """``cubes`` (new memories) with the namespace grants of their owners applied.

    Call it under the store's write lock, just before the vault insert, so a memory stored
    while a grant is being made either is covered by the grant's transaction or inherits it.
    """
    owners = {c.user_id for c in cubes}
    grants = [g for owner in sorted(owners) for g in vault.grants(owner)]
    if not grants:
        return list(cubes)
    return [with_grants(c, grants) for c in cubes]


def owned_in(vault: Vault, grant: NamespaceGrant) -> Iterator[MemCube]:
    """Every memory ``grant`` covers that can still change (tombstones are final)."""
    offset = 0
    while True:
        page = vault.list(ListQuery(
            user_ids=(grant.owner,), agent_id=grant.agent_id, session_id=grant.session_id,
            states=CHANGEABLE_STATES, limit=_PAGE, offset=offset,
        ))
        if not page:
            return
        offset += len(page)
        yield from (c for c in page if covers(grant, c))  # list() also returns shared ones


def set_access(store: MemoryStore, cube: MemCube, other: str, scope: str, grant: bool,
               actor: Actor) -> MemCube:
    """Give ``other`` access ``scope`` to one memory (``grant``) or withdraw every grant
    ``other`` holds on it: a new version audited ``share:<scope>`` / ``revoke``, text
    unchanged (the index point keeps its vectors). Returns it as stored."""
    gov = cube.governance
    new_gov = granted(gov, other, scope) if grant else revoked(gov, other)
    action = f"share:{scope}" if grant else "revoke"
    new = cube.model_copy(update={
        "governance": new_gov, "version": cube.version + 1, "updated_at": utcnow()})

    def commit() -> list[MemCube]:
        store.vault.put_version(new, cube.version, actor, action, {"with_user_id": other})
        return [new]

    store.write(commit, embed=False)
    return store.vault.get(new.id) or new


def share_namespace(store: MemoryStore, grant: NamespaceGrant, actor: Actor) -> ShareReceipt:
    """Store ``grant`` and apply it to every memory it covers (see the module docstring)."""
    with store.write_lock:
        changes = _changes(store.vault, grant, lambda gov: granted(gov, grant.grantee, grant.scope))

        def commit() -> list[MemCube]:
            store.vault.change_grants(add=[grant], changes=changes, actor=actor,
                                      action=f"share:{grant.scope}", details=_details(grant))
            return [cube for cube, _ in changes]

        store.write(commit, embed=False)
    return _receipt(grant, grant.scope, len(changes))


def revoke_namespace(store: MemoryStore, grant: NamespaceGrant, actor: Actor) -> ShareReceipt:
    """Delete the grants to ``grant.grantee`` inside ``grant``'s namespace and remove the
    grantee from every memory there (individual shares included).

    Raises:
        InvalidInputError: the grantee holds a grant on a larger namespace that covers this
            one (revoke that one instead: otherwise new memories here would be shared again).
    """
    with store.write_lock:
        existing = store.vault.grants(grant.owner)
        broader = broader_grant(existing, grant)
        if broader is not None:
            raise InvalidInputError(
                f"{grant.grantee!r} holds a grant on a larger namespace of {grant.owner!r} "
                f"(agent={broader.agent_id!r}, session={broader.session_id!r}) that covers this "
                "one; revoke that grant instead (rule: a revoke may not leave a covering grant)."
            )
        doomed = [g for g in existing if g.grantee == grant.grantee and contains(grant, g)]
        changes = _changes(store.vault, grant, lambda gov: revoked(gov, grant.grantee))

        def commit() -> list[MemCube]:
            store.vault.change_grants(remove=doomed or [grant], changes=changes, actor=actor,
                                      action="revoke", details=_details(grant))
            return [cube for cube, _ in changes]

        store.write(commit, embed=False)
    return _receipt(grant, "none", len(changes))


def _changes(vault: Vault, grant: NamespaceGrant, rule: Any) -> list[tuple[MemCube, int]]:
    """New versions for the covered memories whose governance ``rule`` changes."""
    now = utcnow()
    out = []
    for cube in owned_in(vault, grant):
        gov = rule(cube.governance)
        if gov != cube.governance:
            new = cube.model_copy(update={
                "governance": gov, "version": cube.version + 1, "updated_at": now,
            })
            out.append((new, cube.version))
    return out


def _details(grant: NamespaceGrant) -> dict[str, Any]:
    return {"with_user_id": grant.grantee, "namespace": {
        "agent_id": grant.agent_id, "session_id": grant.session_id}}


def _receipt(grant: NamespaceGrant, scope: str, n: int) -> ShareReceipt:
    return ShareReceipt(owner=grant.owner, grantee=grant.grantee, scope=scope,  # type: ignore[arg-type]
                        agent_id=grant.agent_id, session_id=grant.session_id, memories=n)
