"""The lifecycle rules: which states a memory may be in for each purpose, and when its TTL
has run out. Pure: no I/O, imports only :mod:`memos_core.cube`.

A memory moves ``generated -> activated -> archived -> expired`` and ends as a ``deleted``
tombstone. Each named set below answers one question; callers use the set, never their own
list of states:

=================  ================================  ==============================================
set                states                            question
=================  ================================  ==============================================
``SEARCHABLE``     generated, activated              does default search return it?
``INDEXED``        generated, activated, archived    does it have an index point and a graph node?
                                                     (also: does the scheduler manage it?)
``CHANGEABLE``     every state but deleted           may it get a new version (share, revoke,
                                                     update)? A tombstone is final.
=================  ================================  ==============================================

The ``*_STATES`` tuples hold the same sets as state values (strings), the form the vault's
queries and the index payloads use.

TTL: a memory with ``governance.ttl_seconds = t`` lives for ``t`` seconds: at
``created_at + t`` and after, :func:`ttl_elapsed` is True (search hides it from that instant,
the scheduler expires it). Both use this one predicate.
"""

from __future__ import annotations

from datetime import datetime

from memos_core.cube import State

__all__ = [
    "CHANGEABLE",
    "CHANGEABLE_STATES",
    "INDEXED",
    "INDEXED_STATES",
    "SEARCHABLE",
    "SEARCHABLE_STATES",
    "ttl_elapsed",
]

#: States a default search returns.
SEARCHABLE: frozenset[State] = frozenset({State.GENERATED, State.ACTIVATED})
#: States that have an index point and a graph node; the scheduler's working set.
INDEXED: frozenset[State] = frozenset({State.GENERATED, State.ACTIVATED, State.ARCHIVED})
#: States that may still get a new version (a tombstone is final).
CHANGEABLE: frozenset[State] = frozenset(s for s in State if s is not State.DELETED)


def _values(states: frozenset[State]) -> tuple[str, ...]:
    return tuple(s.value for s in State if s in states)  # in lifecycle order


SEARCHABLE_STATES: tuple[str, ...] = _values(SEARCHABLE)
INDEXED_STATES: tuple[str, ...] = _values(INDEXED)
CHANGEABLE_STATES: tuple[str, ...] = _values(CHANGEABLE)


def ttl_elapsed(created_at: datetime, ttl_seconds: float | None, now: datetime) -> bool:
    """True when a memory created at ``created_at`` with lifespan ``ttl_seconds`` (None: no
    TTL) is over at ``now``: ``now >= created_at + ttl_seconds``. Both datetimes are aware."""
    return ttl_seconds is not None and (now - created_at).total_seconds() >= ttl_seconds
