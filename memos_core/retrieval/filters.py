"""Payloads and filters: the fields a memory is filtered on, and the one predicate over them.

The index backends translate :class:`IndexFilter` into Qdrant conditions; :func:`matches` is
the same rule in Python, used for candidates that come from the graph rather than the index.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from memos_core.cube import MemCube, State
from memos_core.index.base import IndexFilter

#: States a default search sees: not archived, expired or deleted.
SEARCHABLE_STATES = (State.GENERATED.value, State.ACTIVATED.value)
#: States that have an index entry at all.
INDEXED_STATES = (State.GENERATED.value, State.ACTIVATED.value, State.ARCHIVED.value)


def payload_of(cube: MemCube) -> dict[str, Any]:
    """The index payload of a memory: filter fields only, never its text."""
    return {
        "user_id": cube.namespace.user_id,
        "agent_id": cube.namespace.agent_id,
        "session_id": cube.namespace.session_id,
        "type": cube.type.value,
        "tags": list(cube.tags),
        "state": cube.state.value,
        "occurred_at": cube.occurred_at.timestamp() if cube.occurred_at else None,
        "superseded": cube.valid_to is not None,
        "version": cube.version,
        "readers": list(cube.governance.readers),
    }


def build_filter(
    user_ids: tuple[str, ...],
    *,
    agent_id: str | None = None,
    session_id: str | None = None,
    types: tuple[str, ...] | None = None,
    tags: tuple[str, ...] | None = None,
    states: tuple[str, ...] | None = None,
    occurred_after: datetime | None = None,
    occurred_before: datetime | None = None,
    include_superseded: bool = False,
) -> IndexFilter:
    return IndexFilter(
        user_ids=user_ids,
        agent_id=agent_id,
        session_id=session_id,
        types=types,
        tags=tags if tags else None,
        states=states,
        occurred_after=occurred_after.timestamp() if occurred_after else None,
        occurred_before=occurred_before.timestamp() if occurred_before else None,
        include_superseded=include_superseded,
    )


def matches(payload: dict[str, Any], flt: IndexFilter) -> bool:
    """True if a payload passes the filter (the same rule the index backends apply)."""
    if flt.user_ids is not None:
        owners = set(flt.user_ids)
        if payload["user_id"] not in owners and not owners.intersection(payload["readers"]):
            return False
    if flt.agent_id is not None and payload["agent_id"] != flt.agent_id:
        return False
    if flt.session_id is not None and payload["session_id"] != flt.session_id:
        return False
    if flt.types is not None and payload["type"] not in flt.types:
        return False
    if flt.tags is not None and not set(flt.tags).intersection(payload["tags"]):
        return False
    if flt.states is not None and payload["state"] not in flt.states:
        return False
    if not flt.include_superseded and payload["superseded"]:
        return False
    when = payload["occurred_at"]
    if flt.occurred_after is not None and (when is None or when < flt.occurred_after):
        return False
    if flt.occurred_before is not None and (when is None or when > flt.occurred_before):
        return False
    return True
