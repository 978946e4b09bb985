"""Writing memories over the kernel: new memories (with supersession), new versions, summaries.

Each function takes validated input and a :class:`~memos_core.store.MemoryStore`, checks no
access (the facade did) and goes through the store's one write path
(:meth:`MemoryStore.write`): vault transaction, then index and graph, then listeners.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from memos_core.cube import (
    Governance,
    MemCube,
    MemoryType,
    Namespace,
    Origin,
    Provenance,
    Span,
    State,
    utcnow,
)
from memos_core.errors import InvalidInputError
from memos_core.extraction import EntityExtractor
from memos_core.governance import access, derived
from memos_core.governance.derived import FLAG_KEY
from memos_core.governance import sensitivity as sensitivity_rules
from memos_core.lifecycle import ttl_elapsed
from memos_core.ops.share import inherit_grants, retrying
from memos_core.store import MemoryStore
from memos_core.validation import (
    MAX_SECONDS,
    check_datetime,
    check_enum,
    check_int,
    check_metadata,
    check_name,
    check_positive_seconds,
    check_tags,
    check_text,
)
from memos_core.vault import Actor, Edge, scrub

__all__ = ["CONTENT_FIELDS", "ITEM_KEYS", "add", "check_item_keys", "check_supersedable",
           "compress", "new_cube", "restored", "set_state", "write_version"]

#: What an ``add_many`` item may set, besides ``text``: the parameters of :func:`new_cube`
#: other than the principal. Its keyword defaults may also give the call's ``reason``.
ITEM_KEYS = frozenset({
    "text", "agent_id", "session_id", "occurred_at", "metadata", "type", "tags", "origin",
    "ttl_seconds", "priority", "sensitivity", "message_id", "role",
})


def check_item_keys(fields: Mapping[str, Any], where: str, *, call: bool = False) -> None:
    """Refuse keys ``add_many`` does not know (a typo would otherwise be a TypeError);
    ``call``: the call's keywords, which may also give ``reason``."""
    if "reason" in fields and not call:
        raise InvalidInputError(
            f"{where} has a 'reason'; the reason is the call's (its audit records'): pass "
            "add_many(..., reason=...) once for the batch, or add the item on its own."
        )
    unknown = sorted(str(k) for k in fields if k not in ITEM_KEYS and not (call and k == "reason"))
    if unknown:
        raise InvalidInputError(
            f"{where} has unknown keys {unknown}; allowed: {sorted(ITEM_KEYS)} "
            "(user_id is the call's principal, not an item field)."
        )


def valid_since(occurred_at: datetime | None, told_at: datetime) -> datetime:
    """When a memory starts to be true: at the event it records, or when we were told of it
    if that came first (a plan for next week is known now) or it records no time."""
    return told_at if occurred_at is None else min(occurred_at, told_at)


def moved_valid_from(cube: MemCube, occurred_at: datetime | None) -> datetime:
    """``cube``'s ``valid_from`` once its ``occurred_at`` becomes ``occurred_at``: true since
    then (or since we were told, :func:`valid_since`), up to its end if it has one (a
    superseded memory's interval stays in order)."""
    since = valid_since(occurred_at, cube.created_at)
    return min(since, cube.valid_to or since)


def new_cube(
    extractor: EntityExtractor, *, text: Any, user_id: str, agent_id: Any = None,
    session_id: Any = None, occurred_at: Any = None, metadata: Any = None, type: Any = None,
    tags: Any = (), origin: Any = None, ttl_seconds: Any = None, priority: Any = 0,
    sensitivity: Any = (), message_id: Any = None, role: Any = None,
) -> MemCube:
    """Validate the fields of a new memory and build it (version 1, entities extracted).

    Raises:
        InvalidInputError: a field is malformed (the message names it).
    """
    text = check_text(text)
    ttl_seconds = check_positive_seconds(ttl_seconds, "ttl_seconds")
    priority = check_int(priority, "priority")
    meta = check_metadata(metadata)
    if role is not None:
        meta = {**meta, "role": check_name(role, "role")}
    message_id = check_name(message_id or None, "message_id", optional=True)
    provenance = Provenance(
        source_message_ids=(message_id,) if message_id else (),
        spans=(Span(message_id=message_id, start=0, end=len(text)),) if message_id else (),
        extractor=extractor.name,
    )
    occurred = check_datetime(occurred_at, "occurred_at")
    return MemCube(
        namespace=Namespace(
            user_id=user_id,
            agent_id=check_name(agent_id, "agent_id", optional=True),
            session_id=check_name(session_id, "session_id", optional=True),
        ),
        text=text,
        occurred_at=occurred,
        valid_from=valid_since(occurred, utcnow()),
        origin=check_enum(Origin, origin or Origin.USER_INPUT, "origin"),
        type=check_enum(MemoryType, type or MemoryType.NOTE, "type"),
        tags=check_tags(tags),
        entities=tuple(extractor.extract(text)),
        provenance=provenance,
        governance=Governance(
            ttl_seconds=ttl_seconds, priority=priority,
            sensitivity=check_tags(sensitivity, "sensitivity"),
        ),
        metadata=meta,
    )


def add(store: MemoryStore, cubes: list[MemCube], actor: Actor,
        supersedes: MemCube | None = None) -> list[MemCube]:
    """Insert new memories in one transaction; returns them as stored.

    They inherit their namespace's grants; with ``supersedes`` (an older memory the last
    one replaces, as read under the write lock) the last one also carries its shares and
    the old one gets ``valid_to`` and ``superseded_by`` in a new version of the same
    transaction.

    Raises:
        InvalidInputError: ``supersedes`` is superseded already by a memory that was not
            forgotten (nothing is written; :func:`check_supersedable`).
    """
    if supersedes is not None:
        check_supersedable(store, supersedes)
    store.ready_embedder()

    def attempt() -> list[MemCube]:
        stored, grants = inherit_grants(store.vault, cubes)
        edges: list[Edge] = []
        replacements: list[tuple[MemCube, int]] = []
        if supersedes is not None:
            stored[-1] = access.carry_shares(stored[-1], supersedes)
            new = stored[-1]
            now = utcnow()
            edges = [Edge(new.id, supersedes.id, "supersedes")]
            replaced = supersedes.model_copy(update={
                "version": supersedes.version + 1, "updated_at": now,
                # the old one holds until the new one's time (a plan for next year ends it
                # then, though the plan is known, and valid, now)
                "valid_to": max(new.occurred_at or new.valid_from or now,
                                supersedes.valid_from or now),
                "superseded_by": new.id,
            })
            replacements = [(replaced, supersedes.version)]

        def commit() -> list[MemCube]:
            store.vault.insert(stored, actor, replacements=replacements, edges=edges,
                               grants=grants)
            return [*stored, *(r for r, _ in replacements)]

        store.write(commit, edges=edges)
        return stored

    with store.write_lock:
        return retrying(attempt)


#: What a rollback restores of an earlier version (governance too, less its grants); the
#: rest -- the lifecycle (state, valid_to, superseded_by), identity, usage -- stays current.
CONTENT_FIELDS = ("text", "type", "tags", "entities", "metadata", "occurred_at", "governance")


def restored(cube: MemCube, old: MemCube) -> dict[str, Any]:
    """The changes that roll ``cube`` (the current version) back to ``old``'s content.

    Lifecycle is not content: a superseded memory rolled back stays superseded (its
    successor's ``supersedes`` link stands), an archived or expired one stays so.
    ``valid_from`` follows a restored ``occurred_at`` as an update of it moves it, up to the
    current ``valid_to``. Access is not content either: the current grants are kept. The
    forget flag is kept by :func:`write_version`."""
    changes: dict[str, Any] = {f: getattr(old, f) for f in CONTENT_FIELDS}
    changes["governance"] = old.governance.model_copy(update={
        "readers": cube.governance.readers, "writers": cube.governance.writers})
    if old.occurred_at != cube.occurred_at:
        changes["valid_from"] = moved_valid_from(cube, old.occurred_at)
    return changes


def check_supersedable(store: MemoryStore, cube: MemCube) -> None:
    """Refuse to supersede ``cube`` if a newer memory superseded it already: its
    ``valid_to`` is that one's start, and moving it later would say that ``cube`` was still
    believed while its successor was (``search(valid_at=...)`` reads that interval), with
    the successor's ``supersedes`` link still in place. A successor that was forgotten
    since holds no claim (and its link is gone): ``cube`` may be superseded again, else
    nothing could ever replace it."""
    if cube.superseded_by is not None:
        successor = store.vault.get(cube.superseded_by)
        if successor is None or successor.state is State.DELETED:
            return
        raise InvalidInputError(
            f"Memory {cube.id} was superseded already, by {cube.superseded_by}; a memory "
            f"is superseded once (its end is its successor's start). Nothing was stored: to "
            f"replace what is believed now, supersede {cube.superseded_by} instead.")


def write_version(store: MemoryStore, cube: MemCube, changes: dict[str, Any], actor: Actor,
                  action: str, details: dict[str, Any] | None = None, *,
                  rewrite_earlier: Callable[[MemCube], MemCube | None] | None = None,
                  keep_flag: bool = True) -> MemCube:
    """Write the next version of ``cube`` with ``changes`` (re-validated); returns it as
    stored. Raises if another version was written since ``cube`` was read.
    ``rewrite_earlier``: the earlier versions rewritten in place in the same vault
    transaction (:meth:`~memos_core.vault.base.Vault.put_version`): all or nothing.
    ``keep_flag``: the new version's ``metadata["source_forgotten"]`` is ``cube``'s, present
    or absent, whatever ``changes`` says (:func:`~memos_core.governance.derived.with_flag_of`);
    only the forget cascade, which sets it, and :func:`rederive`, which clears it, pass
    False."""
    if keep_flag and "metadata" in changes:
        changes = {**changes, "metadata": derived.with_flag_of(cube.metadata, changes["metadata"])}
    new = cube.model_copy(update={**changes, "version": cube.version + 1, "updated_at": utcnow()})
    new = MemCube.model_validate(new.model_dump())  # re-validate the changed fields
    if new.text != cube.text:  # new text needs a vector: a model that cannot load stores nothing
        store.ready_embedder()

    def commit() -> list[MemCube]:
        store.vault.put_version(new, cube.version, actor, action, details,
                                rewrite_earlier=rewrite_earlier)
        return [new]

    store.write(commit)
    return store.as_written(new)


def rederive(store: MemoryStore, cube: MemCube, changes: dict[str, Any], actor: Actor) -> MemCube:
    """Write a new text for ``cube``, a summary flagged because a memory it was made from was
    forgotten (``metadata["source_forgotten"]``): the new version drops the flag (the only
    write that does; with the metadata ``changes`` sets, if any, else ``cube``'s), and every
    earlier version is scrubbed as a forget scrubs them (:func:`~memos_core.vault.scrub`),
    since each may repeat the forgotten text, in the same vault transaction (a crash leaves
    both or neither); then the journal is cleared. Audited ``update`` with
    ``details["rederived"]``: the forgotten ids."""
    forgotten = cube.metadata[FLAG_KEY]
    changes = {**changes, "metadata": derived.unflagged(changes.get("metadata", cube.metadata))}
    new = write_version(store, cube, changes, actor, "update", {"rederived": forgotten},
                        rewrite_earlier=lambda old: None if old.scrubbed else scrub(old),
                        keep_flag=False)
    store.vault.checkpoint()
    return new


def set_state(store: MemoryStore, cube: MemCube, target: State, actor: Actor) -> MemCube:
    """Move ``cube`` to lifecycle state ``target`` (a new version audited ``state:<target>``);
    returns it unchanged if it is there already."""
    if cube.state is target:
        return cube
    return write_version(store, cube, {"state": target}, actor, f"state:{target.value}")


def compress(store: MemoryStore, sources: Sequence[MemCube], summary: MemCube,
             actor: Actor) -> MemCube:
    """Store ``summary`` (a new memory) as derived from ``sources`` and archive them, in one
    transaction. The summary may repeat any source, so it carries every sensitivity tag of
    its sources, lives no longer than the first of them to expire, is kept as long as the
    most protected of them (their highest priority: the scheduler's ``protect_priority``
    would otherwise archive the summary of protected memories, which compress archived
    already, and the fact would leave default search), and is shared with
    whoever may read every source (:func:`~memos_core.governance.access.shared_as_sources`);
    it also inherits its namespace's grants, to the grantees who may read every source
    (:func:`~memos_core.governance.access.only_readers_of`). A source whose TTL has run out is refused
    (:class:`~memos_core.errors.InvalidInputError`). Returns the summary as stored."""
    now = utcnow()
    lifespans = []  # seconds from the summary's creation to each source's end
    for source in sources:
        if source.governance.ttl_seconds is not None:
            if ttl_elapsed(source.created_at, source.governance.ttl_seconds, now):
                raise InvalidInputError(
                    f"memory {source.id} has expired (its TTL ran out): it cannot be "
                    "compressed.")
            # (a store may hold a TTL from before the limit: any longer is as good as it)
            lifespan = min(source.governance.ttl_seconds, MAX_SECONDS)
            # in seconds, not as a datetime: an end past the year 9999 has no datetime
            lifespans.append((source.created_at - summary.created_at).total_seconds() + lifespan)
    store.ready_embedder()
    with store.write_lock:
        tags = sensitivity_rules.history_sensitivity(list(sources))
        ttl = summary.governance.ttl_seconds
        if lifespans:  # counted from the summary's creation
            left = min(lifespans)
            ttl = left if ttl is None else min(ttl, left)
        summary = access.shared_as_sources(summary, sources)
        summary = summary.model_copy(update={
            "governance": summary.governance.model_copy(update={
                "sensitivity": tuple(dict.fromkeys([*summary.governance.sensitivity, *tags])),
                "ttl_seconds": ttl,
                "priority": max(s.governance.priority for s in sources)}),
            "provenance": summary.provenance.model_copy(
                update={"derived_from": tuple(s.id for s in sources)}),
        })
        archived = [
            (s.model_copy(update={"state": State.ARCHIVED, "version": s.version + 1,
                                  "updated_at": now}), s.version)
            for s in sources
        ]
        edges = [Edge(summary.id, s.id, "derived_from") for s in sources]

        def attempt() -> MemCube:
            (inherited,), grants = inherit_grants(store.vault, [summary])
            stored = access.only_readers_of(inherited, sources)

            def commit() -> list[MemCube]:
                store.vault.insert([stored], actor, "compress", replacements=archived,
                                   edges=edges, replacement_action="archive", grants=grants)
                return [stored, *(a for a, _ in archived)]

            store.write(commit, edges=edges)
            return stored

        return retrying(attempt)
