"""Payloads and filters: the fields a memory is filtered on, and the one predicate over them.

The index backends translate :class:`IndexFilter` into Qdrant conditions; :func:`matches` is
the same rule in Python, used for candidates that come from the graph rather than the index.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from memos_core.cube import MemCube
from memos_core.index.base import IndexFilter
from memos_core.index.filters import plan_filter, plan_matches
from memos_core.lifecycle import INDEXED_STATES, SEARCHABLE_STATES

__all__ = ["INDEXED_STATES", "SEARCHABLE_STATES", "build_filter", "graph_row", "matches",
           "payload_of"]  # the state sets live in memos_core.lifecycle; re-exported here


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


def graph_row(cube: MemCube) -> dict[str, Any]:
    """A memory as a graph node: its payload and entities. ``seq`` None: the graph numbers
    new memories after every one it has (insertion order)."""
    return {"id": cube.id, "seq": None, **payload_of(cube), "entities": list(cube.entities)}


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
    """True if a payload passes the filter: the index backends' own rule
    (:func:`memos_core.index.filters.plan_filter`), evaluated in Python."""
    return plan_matches(plan_filter(flt), payload)
