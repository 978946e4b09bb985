"""Who may do what to a memory: the access rules, as pure functions.

The rules (every surface -- facade, CLI, adapters -- goes through the facade, which calls
:func:`require` before it reads or writes):

=============  =================================================================
operation      allowed principals
=============  =================================================================
``read``       the owner, users in ``governance.readers`` or ``governance.writers``
``write``      the owner, users in ``governance.writers`` (update, rollback, archive,
               compress a source, supersede)
``own``        the owner only (share, revoke, forget, export)
=============  =================================================================

Sharing adds the grantee to ``readers`` (scope ``read``) or to ``readers`` and ``writers``
(scope ``write``); revoking removes it from both. A memory that supersedes another carries
the other's grants (:func:`carry_shares`); ``update`` and ``rollback`` keep a memory's id
and its grants. A :class:`NamespaceGrant` does the same for
every memory of an owner's namespace (optionally narrowed to an agent and/or a session),
including memories written there after the grant.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from enum import Enum

from memos_core.cube import Governance, MemCube, State, Usage
from memos_core.errors import AccessDeniedError, InvalidInputError
from memos_core.vault.base import AuditRecord, NamespaceGrant

#: Scopes a share can grant.
SCOPES = ("read", "write")


class Operation(str, Enum):
    """What a call does to a memory, as far as access control is concerned."""

    READ = "read"
    WRITE = "write"
    OWN = "own"


def permits(cube: MemCube, user_id: str, operation: Operation) -> bool:
    """True if ``user_id`` may perform ``operation`` on ``cube`` (see the module table)."""
    if cube.user_id == user_id:
        return True
    gov = cube.governance
    if operation is Operation.READ:
        return user_id in gov.readers or user_id in gov.writers
    if operation is Operation.WRITE:
        return user_id in gov.writers
    return False


def require(cube: MemCube, user_id: str, operation: Operation, action: str | None = None) -> None:
    """Raise :class:`AccessDeniedError` naming the rule unless :func:`permits`.

    ``action`` names the call in the message for owner-only operations ("forget", "share").
    The owner is named only to a principal who may read the memory (and so sees its owner
    anyway): a denial must not tell anyone else whose memory an id is.
    """
    if permits(cube, user_id, operation):
        return
    owner = (f"{cube.user_id!r}" if permits(cube, user_id, Operation.READ)
             else "another user")
    if operation is Operation.OWN:
        verb = action or "manage"
        raise AccessDeniedError(
            f"Only the owner ({owner}) may {verb} memory {cube.id} "
            f"(rule: {verb} is owner-only)."
        )
    change = operation is Operation.WRITE
    shared = ("was shared with them for reading only" if change and owner != "another user"
              else f"was not shared with {user_id!r}")
    raise AccessDeniedError(
        f"User {user_id!r} may not {'change' if change else 'read'} memory {cube.id}: it "
        f"belongs to {owner} and {shared} "
        f"(rule: owner or {'writers' if change else 'readers'} only)."
    )


def check_scope(scope: object) -> str:
    """``'read'`` or ``'write'``; anything else raises :class:`InvalidInputError`."""
    if scope not in SCOPES:
        raise InvalidInputError(f"scope must be 'read' or 'write', got {scope!r}.")
    return str(scope)


def granted(gov: Governance, grantee: str, scope: str) -> Governance:
    """``gov`` with ``grantee`` allowed to read (and for ``'write'`` also change).

    Idempotent; a ``'read'`` grant to a current writer downgrades it to a reader.
    """
    readers = [r for r in gov.readers if r != grantee] + [grantee]
    writers = [w for w in gov.writers if w != grantee]
    if scope == "write":
        writers.append(grantee)
    return gov.model_copy(update={"readers": tuple(readers), "writers": tuple(writers)})


def revoked(gov: Governance, grantee: str) -> Governance:
    """``gov`` without any grant to ``grantee`` (idempotent)."""
    return gov.model_copy(update={
        "readers": tuple(r for r in gov.readers if r != grantee),
        "writers": tuple(w for w in gov.writers if w != grantee),
    })


def covers(grant: NamespaceGrant, cube: MemCube) -> bool:
    """True if ``cube`` lies in the namespace ``grant`` names (owner, and agent / session
    where the grant names them)."""
    ns = cube.namespace
    return (
        ns.user_id == grant.owner
        and (grant.agent_id is None or ns.agent_id == grant.agent_id)
        and (grant.session_id is None or ns.session_id == grant.session_id)
    )


def contains(outer: NamespaceGrant, inner: NamespaceGrant) -> bool:
    """True if every memory ``inner``'s namespace covers is also covered by ``outer``."""
    return (
        outer.owner == inner.owner
        and (outer.agent_id is None or outer.agent_id == inner.agent_id)
        and (outer.session_id is None or outer.session_id == inner.session_id)
    )


def with_grants(cube: MemCube, grants: Iterable[NamespaceGrant]) -> MemCube:
    """``cube`` with every namespace grant that covers it applied (a new memory inherits the
    grants of the namespace it is written to). Returns ``cube`` itself if none applies."""
    gov = cube.governance
    for grant in grants:
        if covers(grant, cube):
            gov = granted(gov, grant.grantee, grant.scope)
    return cube if gov == cube.governance else cube.model_copy(update={"governance": gov})


def carry_shares(new: MemCube, old: MemCube) -> MemCube:
    """``new``, which supersedes ``old``, shared the way ``old`` is now: whoever may read
    ``old`` may read ``new`` and whoever may change ``old`` may change ``new``, so replacing a
    shared fact does not take it away from the people it was shared with (a grant revoked
    from ``old`` is not in ``old`` any more, so it is not carried). When a writer supersedes
    someone else's memory, ``new`` is the writer's and ``old``'s owner becomes a writer of it.

    Never narrows what ``new`` already grants (e.g. a namespace grant it was born with);
    returns ``new`` itself if nothing changes.
    """
    gov = new.governance
    writers = [*gov.writers, *old.governance.writers]
    if old.user_id != new.user_id:
        writers.append(old.user_id)
    readers = [*gov.readers, *old.governance.readers, *writers]

    def others(users: list[str]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(u for u in users if u != new.user_id))

    carried = gov.model_copy(update={"readers": others(readers), "writers": others(writers)})
    return new if carried == gov else new.model_copy(update={"governance": carried})


def who_may(cube: MemCube, read: bool = True) -> set[str]:
    """Who may read (``read``) or change ``cube``: its owner and the users it names."""
    gov = cube.governance
    return {cube.user_id, *gov.writers, *(gov.readers if read else ())}


def shared_as_sources(new: MemCube, sources: Sequence[MemCube]) -> MemCube:
    """``new``, made from ``sources`` (a ``compress`` summary), shared with whoever may read
    every source (and changeable by whoever may change every one): it may repeat them all,
    so nobody gains a text they could not read, and the owner of a source another user
    compressed keeps the summary of her memory. Never narrows what ``new`` grants."""
    readers = set.intersection(*(who_may(s, True) for s in sources)) - {new.user_id}
    writers = set.intersection(*(who_may(s, False) for s in sources)) - {new.user_id}
    gov = new.governance
    shared = gov.model_copy(update={
        "readers": tuple(dict.fromkeys([*gov.readers, *sorted(readers | writers)])),
        "writers": tuple(dict.fromkeys([*gov.writers, *sorted(writers)]))})
    return new if shared == gov else new.model_copy(update={"governance": shared})


def only_readers_of(new: MemCube, sources: Sequence[MemCube]) -> MemCube:
    """``new`` (a summary of ``sources``) without any grant to a user who may not read every
    source: a namespace grant of the summary's owner must not hand its grantees the text of
    a memory that was never shared with them. Returns ``new`` itself if nothing changes."""
    allowed = set.intersection(*(who_may(s, True) for s in sources))
    gov = new.governance
    kept = gov.model_copy(update={
        "readers": tuple(r for r in gov.readers if r in allowed),
        "writers": tuple(w for w in gov.writers if w in allowed)})
    return new if kept == gov else new.model_copy(update={"governance": kept})


def overlaps(a: NamespaceGrant, b: NamespaceGrant) -> bool:
    """True if some memory (written now or later) could lie in both namespaces: the same
    owner, and neither names another agent nor another session than the other does."""
    return (
        a.owner == b.owner
        and (a.agent_id is None or b.agent_id is None or a.agent_id == b.agent_id)
        and (a.session_id is None or b.session_id is None or a.session_id == b.session_id)
    )


def lingering_grant(grants: Sequence[NamespaceGrant],
                    target: NamespaceGrant) -> NamespaceGrant | None:
    """A grant to the same grantee that revoking ``target`` would keep (it is not inside
    ``target``) but that overlaps it, if any: a grant on a larger namespace (the whole user
    namespace, when a session is revoked) or on one that shares memories with it (an agent
    when a session is revoked: the agent's memories in that session).

    The next memory written where both meet would be shared with the grantee again by that
    grant, undoing the revoke, so the facade refuses it and names this grant.
    """
    for grant in grants:
        if grant.grantee == target.grantee and overlaps(grant, target) and not contains(target, grant):
            return grant
    return None


_NO_USAGE = Usage()


def as_read_by(cube: MemCube, user_id: str) -> MemCube:
    """``cube`` as ``user_id`` reads it: its usage counters (when and how often it was
    retrieved, by anyone) are its owner's alone -- to a reader they would tell when the
    owner last searched for it."""
    if cube.user_id == user_id or cube.usage == _NO_USAGE:
        return cube
    return cube.model_copy(update={"usage": _NO_USAGE})


#: how every reason the scheduler records starts (:mod:`memos_core.scheduler.executor`)
SCHEDULER_REASON = "scheduler: "


#: the actions of tier moves, usage only the owner reads (:func:`audit_read_by`)
_TIER_MOVES = ("schedule:", "parametric:")


def audit_read_by(records: Iterable[AuditRecord], owner: str, user_id: str) -> list[AuditRecord]:
    """The audit records of one of ``owner``'s memories as ``user_id`` reads them. The
    owner gets them all. Anyone else gets no record of the owner's usage (as
    :func:`as_read_by` withholds the counters and the tier): tier moves are left out, the
    scheduler's (``schedule:*``: the memory became hot or cold) and the parametric tier's
    (``parametric:*``: it went into the owner's adapter, chosen for being hot, or left it);
    the scheduler's other records (a state change to ``expired`` or ``archived``, whose
    reason names the heat and how long the memory was idle) keep their action, time and
    version but show no reason and no details. A record is the scheduler's by its action or
    by the start of its reason (:data:`SCHEDULER_REASON`); another principal's reason that
    starts so is only hidden."""
    if user_id == owner:
        return list(records)
    shown: list[AuditRecord] = []
    for record in records:
        if record.action.startswith(_TIER_MOVES):
            continue
        if (record.reason or "").startswith(SCHEDULER_REASON):
            record = replace(record, reason=None, details={})
        shown.append(record)
    return shown


def read_by(cubes: Iterable[MemCube], user_id: str) -> list[MemCube]:
    """:func:`as_read_by` of each cube."""
    return [as_read_by(c, user_id) for c in cubes]


def listed_by(cubes: list[MemCube], user_id: str) -> list[MemCube]:
    """``cubes`` as ``user_id`` may list them: without the tombstones of other users'
    memories (a former reader learns nothing from when or that a memory was forgotten;
    ``MemOS`` refuses them its versions too; the versions hold no content, nor a digest of
    it, since schema 3, 6 on PostgreSQL), each as :func:`as_read_by` gives it."""
    return [as_read_by(c, user_id) for c in cubes
            if c.state is not State.DELETED or c.user_id == user_id]


def shown_text(cube: MemCube, viewer: str | None) -> str:
    """A memory's text as ``viewer``'s prompt or tool output shows it: as stored for the
    viewer's own memories; for one another user shared, with that user named, so the model
    does not take it for something the viewer said: a turn recorded by role ("user: I'm
    allergic to peanuts.") reads "alice: I'm allergic to peanuts.", any other memory ends
    with "(shared by alice)"."""
    if viewer is None or cube.user_id == viewer:
        return cube.text
    owner = cube.user_id
    role = cube.metadata.get("role")
    if isinstance(role, str) and cube.text.startswith(f"{role}: "):
        return f"{owner}: {cube.text[len(role) + 2:]}"
    return f"{cube.text} (shared by {owner})"
