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

from collections.abc import Callable, Collection, Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar

from memos_core.cube import Governance, MemCube, utcnow
from memos_core.errors import ConflictError, InvalidInputError, NamespaceChangedError
from memos_core.governance.access import (
    contains, covers, granted, lingering_grant, revoked, who_may, with_grants,
)
from memos_core.lifecycle import CHANGEABLE_STATES
from memos_core.results import ShareReceipt
from memos_core.store import MemoryStore
from memos_core.vault.base import Actor, ListQuery, NamespaceGrant, Vault, pages

__all__ = ["ATTEMPTS", "inherit_grants", "owned_in", "retrying", "revoke_namespace", "set_access",
           "share_namespace"]

_PAGE = 1000
#: How many times a write computed from a namespace's grants or memories is tried while
#: other processes keep changing them.
ATTEMPTS = 5
T = TypeVar("T")


def inherit_grants(vault: Vault, cubes: Sequence[MemCube]
                   ) -> tuple[list[MemCube], list[NamespaceGrant]]:
    """``cubes`` (new memories) with the namespace grants of their owners applied, and those
    grants: pass them to the vault's insert (``grants=``), which refuses the memories with
    :class:`NamespaceChangedError` if another process changed the grants in between, so a
    memory is never stored with a grant just revoked (or without one just made); the
    writes retry (:func:`retrying`)."""
    owners = {c.user_id for c in cubes}
    grants = [g for owner in sorted(owners) for g in vault.grants(owner)]
    if not grants:
        return list(cubes), grants
    return [with_grants(c, grants) for c in cubes], grants


def retrying(attempt: Callable[[], T],
             on: type[ConflictError] = NamespaceChangedError) -> T:
    """``attempt()``, again while it raises ``on`` (another process changed what it read
    before its write), at most :data:`ATTEMPTS` times; each attempt reads again."""
    for _ in range(ATTEMPTS - 1):
        try:
            return attempt()
        except on:
            continue
    return attempt()


def owned_in(vault: Vault, grant: NamespaceGrant) -> Iterator[MemCube]:
    """Every memory ``grant`` covers that can still change (tombstones are final); read
    strictly: a cascade must not skip a damaged memory."""
    query = ListQuery(user_ids=(grant.owner,), agent_id=grant.agent_id,
                      session_id=grant.session_id, states=CHANGEABLE_STATES, shared=False)
    for page in pages(vault, query, page=_PAGE):
        yield from (c for c in page if covers(grant, c))


def set_access(store: MemoryStore, cube: MemCube, other: str, scope: str, grant: bool,
               actor: Actor) -> MemCube:
    """Give ``other`` access ``scope`` to one memory (``grant``) or withdraw every grant
    ``other`` holds on it: a new version audited ``share:<scope>`` / ``revoke``, text
    unchanged (the index point keeps its vectors); nothing is written when its grants are
    that way already. Returns it as stored.

    A revoke also withdraws ``other``'s grants on the summaries made from the memory (at
    any depth) that the same owner holds -- ``compress`` shared them with whoever could
    read every source, and they may repeat it -- in the same transaction, each audited
    ``revoke``; a ``read`` grant to a writer takes their write access to those summaries
    the same way (``compress`` let whoever could change every source change them). A
    summary another user owns is theirs to share (it is left alone), but the summaries
    made from it are followed."""
    now = utcnow()

    def changed(target: MemCube) -> tuple[MemCube, int] | None:
        gov = target.governance
        return _regoverned(target, granted(gov, other, scope) if grant else revoked(gov, other),
                           now)

    targets = [cube]
    if not grant or scope == "read":
        targets += summaries_shared_with(store.vault, [cube.id], cube.user_id, other,
                                         writers_only=grant)
    # a grant as it stands already, or a revoke of a user without one, writes nothing
    changes = [change for change in map(changed, targets) if change is not None]
    if not changes:
        return cube
    action = f"share:{scope}" if grant else "revoke"

    def commit() -> list[MemCube]:
        store.vault.put_versions(changes, actor, action, {"with_user_id": other})
        return [new for new, _ in changes]

    store.write(commit, embed=False)
    first = store.as_written(changes[0][0])
    return first if first.id == cube.id else cube


def summaries_shared_with(vault: Vault, ids: Sequence[str], owner: str, other: str, *,
                          writers_only: bool = False) -> list[MemCube]:
    """The summaries made from the memories ``ids`` -- and from those, at any depth, through
    summaries of any owner -- that ``owner`` owns, can still change, and ``other`` may read
    (``writers_only``: change); read by batches of relations."""
    found: list[MemCube] = []
    sources, seen = list(ids), set(ids)
    while sources:
        batch, sources = set(sources[:_PAGE]), sources[_PAGE:]
        made = [e.src for e in vault.graph_edges(list(batch))
                if e.kind == "derived_from" and e.dst in batch and e.src not in seen]
        seen.update(made)
        for summary in vault.get_many(made).values():
            sources.append(summary.id)  # its own summaries hold the same text
            if summary.user_id != owner or summary.state.value not in CHANGEABLE_STATES:
                continue
            gov = summary.governance
            if other in gov.writers or (not writers_only and other in gov.readers):
                found.append(summary)
    return found


def share_namespace(store: MemoryStore, grant: NamespaceGrant, actor: Actor) -> ShareReceipt:
    """Store ``grant`` and apply it to every memory it covers (see the module docstring),
    except a summary made from a memory its grantee may not read (:func:`withheld`)."""
    with store.write_lock:
        # a writer made a reader is made one of the owner's summaries outside it too
        n = _change_grant(store, grant, lambda gov: granted(gov, grant.grantee, grant.scope),
                          actor, f"share:{grant.scope}", add=[grant], skip=withheld,
                          outside=grant.scope == "read")
    return _receipt(grant, grant.scope, n)


def withheld(vault: Vault, grant: NamespaceGrant, cubes: Sequence[MemCube]) -> set[str]:
    """The ids of the summaries among ``cubes`` (covered by ``grant``) that the grant must
    not share: one made from a memory its grantee may not read -- and that the grant does
    not share either -- may repeat it (a writer's summary of another user's memory, or the
    owner's summary of a memory she revoked from the grantee alone). Others may share such
    a summary one by one (``share``)."""
    summaries = {c.id: c for c in cubes if c.provenance.derived_from}
    if not summaries:
        return set()
    covered = {c.id: c for c in cubes}
    wanted = {s for c in summaries.values() for s in c.provenance.derived_from} - set(covered)
    outside = vault.get_many(sorted(wanted)) if wanted else {}
    shared: dict[str, bool] = {}

    def readable(cube: MemCube) -> bool:  # by the grantee once the grant is applied
        if cube.id not in shared:
            shared[cube.id] = False  # a cycle of relations shares nothing
            shared[cube.id] = all(_source_readable(s) for s in cube.provenance.derived_from)
        return shared[cube.id]

    def _source_readable(source_id: str) -> bool:
        if source_id in covered:
            return readable(covered[source_id])
        source = outside.get(source_id)
        return source is not None and grant.grantee in who_may(source)

    return {sid for sid, cube in summaries.items() if not readable(cube)}


def revoke_namespace(store: MemoryStore, grant: NamespaceGrant, actor: Actor) -> ShareReceipt:
    """Delete the grants to ``grant.grantee`` inside ``grant``'s namespace and remove the
    grantee from every memory there (individual shares included).

    Raises:
        InvalidInputError: the grantee holds a grant outside this namespace that overlaps it
            (a larger one, or one meeting it: an agent's, when a session is revoked); revoke
            that one first: otherwise new memories where they meet would be shared again.
    """
    with store.write_lock:
        existing = store.vault.grants(grant.owner)
        lingering = lingering_grant(existing, grant)
        if lingering is not None:
            raise InvalidInputError(_lingering_message(grant, lingering))
        doomed = [g for g in existing if g.grantee == grant.grantee and contains(grant, g)]
        n = _change_grant(store, grant, lambda gov: revoked(gov, grant.grantee), actor,
                          "revoke", remove=doomed or [grant], outside=True)
    return _receipt(grant, "none", n)


def _lingering_message(grant: NamespaceGrant, lingering: NamespaceGrant) -> str:
    """Why revoking ``grant`` is refused while its grantee holds ``lingering``."""
    where = (f"namespace of {grant.owner!r} (agent={lingering.agent_id!r}, "
             f"session={lingering.session_id!r})")
    if contains(lingering, grant):
        return (f"{grant.grantee!r} holds a grant on a larger {where} that covers this one; "
                "revoke that grant instead (rule: a revoke may not leave a covering grant).")
    agent = grant.agent_id or lingering.agent_id
    session = grant.session_id or lingering.session_id
    return (f"{grant.grantee!r} holds a grant on an overlapping {where}: new memories of "
            f"agent={agent!r}, session={session!r} would be shared with {grant.grantee!r} "
            "again by it. Revoke that grant first, or revoke a namespace that contains both "
            "(rule: a revoke may not leave an overlapping grant).")


def _summaries_outside(vault: Vault, grant: NamespaceGrant, rule: Any, inside: Collection[str],
                       *, writers_only: bool) -> list[tuple[MemCube, int]]:
    """New versions (``rule`` applied) of the owner's summaries outside ``grant``'s namespace
    that were made (at any depth) from a memory inside it and that its grantee may read --
    may change, with ``writers_only`` (a ``read`` grant: a writer made a reader) -- but not
    of the memories ``inside`` (changed with the namespace). ``compress`` shared them as
    their sources, e.g. a summary of two sessions when a session's grant is revoked (as
    :func:`set_access` does for one memory)."""
    found = summaries_shared_with(vault, [c.id for c in owned_in(vault, grant)], grant.owner,
                                  grant.grantee, writers_only=writers_only)
    now = utcnow()
    changes = (_regoverned(s, rule(s.governance), now) for s in found if s.id not in inside)
    return [change for change in changes if change is not None]


def _change_grant(store: MemoryStore, grant: NamespaceGrant, rule: Any, actor: Actor,
                  action: str, *, add: Sequence[NamespaceGrant] = (),
                  remove: Sequence[NamespaceGrant] = (),
                  skip: Callable[[Vault, NamespaceGrant, Sequence[MemCube]], set[str]] | None = None,
                  outside: bool = False) -> int:
    """Store the grant change with the new versions ``rule`` gives the memories of the
    namespace (with ``outside``, and the owner's summaries outside it made from them:
    :func:`_summaries_outside`), in one transaction; then fix the memories another process stored there between the listing and
    the commit, with the grants as they were (a memory stored after the commit gets the new
    ones: the vault checks a new memory's grants in its own transaction). The second pass
    changes no grant, and leaves a memory alone where the grantee's grants as they are now
    (another process may have shared or revoked since) say otherwise. Each pass lists again
    if a memory changed meanwhile (:class:`ConflictError`). Returns how many memories
    changed."""
    def first() -> int:
        changes = _changes(store.vault, grant, rule, skip)
        if outside:
            changes += _summaries_outside(store.vault, grant, rule,
                                          {cube.id for cube, _ in changes}, writers_only=bool(add))

        def commit() -> list[MemCube]:
            store.vault.change_grants(add=add, remove=remove, changes=changes, actor=actor,
                                      action=action, details=_details(grant))
            return [cube for cube, _ in changes]

        store.write(commit, embed=False)
        return len(changes)

    def late() -> int:
        now = [g for g in store.vault.grants(grant.owner) if g.grantee == grant.grantee]
        if bool(add) != any(g == grant for g in now):
            return 0  # the grant was revoked (or shared) again since: that call's to settle
        covered_now = set(now) - set(add)
        changes = [(new, version) for new, version in _changes(store.vault, grant, rule, skip)
                   if not any(covers(g, new) for g in covered_now)]
        if not changes:
            return 0

        def commit() -> list[MemCube]:
            store.vault.put_versions(changes, actor, action, {**_details(grant), "late": True})
            return [cube for cube, _ in changes]

        store.write(commit, embed=False)
        return len(changes)

    return retrying(first, on=ConflictError) + retrying(late, on=ConflictError)


def _changes(vault: Vault, grant: NamespaceGrant, rule: Any,
             skip: Callable[[Vault, NamespaceGrant, Sequence[MemCube]], set[str]] | None,
             ) -> list[tuple[MemCube, int]]:
    """New versions for the covered memories whose governance ``rule`` changes, but those
    ``skip`` names."""
    now = utcnow()
    out = []
    cubes = list(owned_in(vault, grant))
    left_out = skip(vault, grant, cubes) if skip is not None else set()
    for cube in cubes:
        if cube.id in left_out:
            continue
        change = _regoverned(cube, rule(cube.governance), now)
        if change is not None:
            out.append(change)
    return out


def _regoverned(cube: MemCube, gov: Governance, now: datetime) -> tuple[MemCube, int] | None:
    """The next version of ``cube`` with governance ``gov``, and the version it replaces;
    None when ``gov`` is what it has already (nothing to write)."""
    if gov == cube.governance:
        return None
    return cube.model_copy(update={"governance": gov, "version": cube.version + 1,
                                   "updated_at": now}), cube.version


def _details(grant: NamespaceGrant) -> dict[str, Any]:
    return {"with_user_id": grant.grantee, "namespace": {
        "agent_id": grant.agent_id, "session_id": grant.session_id}}


def _receipt(grant: NamespaceGrant, scope: str, n: int) -> ShareReceipt:
    return ShareReceipt(owner=grant.owner, grantee=grant.grantee, scope=scope,  # type: ignore[arg-type]
                        agent_id=grant.agent_id, session_id=grant.session_id, memories=n)
