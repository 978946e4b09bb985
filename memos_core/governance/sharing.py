"""Sharing a whole namespace: ``MemOS.share_namespace`` / ``revoke_namespace`` carried out.

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
from typing import TYPE_CHECKING, Any

from memos_core.cube import MemCube, utcnow
from memos_core.errors import InvalidInputError
from memos_core.governance.access import broader_grant, contains, covers, granted, revoked, with_grants
from memos_core.results import ShareReceipt
from memos_core.lifecycle import CHANGEABLE_STATES, INDEXED_STATES
from memos_core.vault.base import Actor, ListQuery, NamespaceGrant, Vault

if TYPE_CHECKING:
    from memos_core.memos import MemOS

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


def share_namespace(mos: MemOS, grant: NamespaceGrant, actor: Actor) -> ShareReceipt:
    """Store ``grant`` and apply it to every memory it covers (see the module docstring)."""
    with mos._write_lock:
        changes = _changes(mos.vault, grant, lambda gov: granted(gov, grant.grantee, grant.scope))
        mos.vault.change_grants(add=[grant], changes=changes, actor=actor,
                                action=f"share:{grant.scope}", details=_details(grant))
        apply_governance_change(mos, [cube for cube, _ in changes])
    return _receipt(grant, grant.scope, len(changes))


def revoke_namespace(mos: MemOS, grant: NamespaceGrant, actor: Actor) -> ShareReceipt:
    """Delete the grants to ``grant.grantee`` inside ``grant``'s namespace and remove the
    grantee from every memory there (individual shares included).

    Raises:
        InvalidInputError: the grantee holds a grant on a larger namespace that covers this
            one (revoke that one instead: otherwise new memories here would be shared again).
    """
    with mos._write_lock:
        existing = mos.vault.grants(grant.owner)
        broader = broader_grant(existing, grant)
        if broader is not None:
            raise InvalidInputError(
                f"{grant.grantee!r} holds a grant on a larger namespace of {grant.owner!r} "
                f"(agent={broader.agent_id!r}, session={broader.session_id!r}) that covers this "
                "one; revoke that grant instead (rule: a revoke may not leave a covering grant)."
            )
        doomed = [g for g in existing if g.grantee == grant.grantee and contains(grant, g)]
        changes = _changes(mos.vault, grant, lambda gov: revoked(gov, grant.grantee))
        mos.vault.change_grants(remove=doomed or [grant], changes=changes, actor=actor,
                                action="revoke", details=_details(grant))
        apply_governance_change(mos, [cube for cube, _ in changes])
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


def apply_governance_change(mos: MemOS, cubes: Sequence[MemCube]) -> None:
    """After new versions that changed only governance (the vault has committed them): bring
    the index payloads (``readers``, ``version``; no re-embedding) and the graph up to date
    and tell the change listeners. Call under the store's write lock."""
    for cube in cubes:
        if cube.state.value not in INDEXED_STATES:
            continue
        try:
            mos.index.set_payload(cube.id, {
                "readers": list(cube.governance.readers), "version": cube.version,
            })
        except KeyError:  # the index lags the vault (e.g. before reconcile): embed it
            mos._index([cube])
    mos._graph_apply(cubes)


def _details(grant: NamespaceGrant) -> dict[str, Any]:
    return {"with_user_id": grant.grantee, "namespace": {
        "agent_id": grant.agent_id, "session_id": grant.session_id}}


def _receipt(grant: NamespaceGrant, scope: str, n: int) -> ShareReceipt:
    return ShareReceipt(owner=grant.owner, grantee=grant.grantee, scope=scope,  # type: ignore[arg-type]
                        agent_id=grant.agent_id, session_id=grant.session_id, memories=n)
