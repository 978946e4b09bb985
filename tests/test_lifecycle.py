"""memos_core.lifecycle: the named state sets and the one TTL predicate, at the boundary.

Search (the facade) and the scheduler policy must agree on the instant a memory's TTL ends:
both go through :func:`memos_core.lifecycle.ttl_elapsed` (``now >= created_at + ttl``).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from memos_core import lifecycle
from memos_core.cube import State
from memos_core.scheduler import UsageRecord, is_expired

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
EPS = timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("ttl", "age", "expected"),
    [
        (None, timedelta(days=999), False),  # no TTL: never over
        (60.0, timedelta(seconds=60) - EPS, False),  # just before the end
        (60.0, timedelta(seconds=60), True),  # the boundary instant itself: over
        (60.0, timedelta(seconds=60) + EPS, True),
        (0.5, timedelta(milliseconds=500), True),  # fractional seconds
        (0.5, timedelta(milliseconds=499), False),
    ],
)
def test_ttl_predicate_at_the_boundary(ttl: float | None, age: timedelta, expected: bool) -> None:
    assert lifecycle.ttl_elapsed(T0, ttl, T0 + age) is expected


@pytest.mark.parametrize("offset", [-EPS, timedelta(0), EPS])
@pytest.mark.parametrize("state", list(State))
def test_policy_expiry_is_the_lifecycle_predicate(offset: timedelta, state: State) -> None:
    record = UsageRecord(id="m", created_at=T0, updated_at=T0, last_access=T0, heat=0.0,
                         token_count=1, ttl_seconds=30.0, state=state)
    now = T0 + timedelta(seconds=30) + offset
    want = state in lifecycle.INDEXED and lifecycle.ttl_elapsed(T0, 30.0, now)
    assert is_expired(record, now) is want
    assert want is (state in lifecycle.INDEXED and offset >= timedelta(0))


def test_named_sets_are_nested_and_exclusive_where_they_must_be() -> None:
    assert lifecycle.SEARCHABLE < lifecycle.INDEXED < lifecycle.CHANGEABLE
    assert State.DELETED not in lifecycle.CHANGEABLE
    assert State.EXPIRED in lifecycle.CHANGEABLE and State.EXPIRED not in lifecycle.INDEXED
    assert State.ARCHIVED in lifecycle.INDEXED and State.ARCHIVED not in lifecycle.SEARCHABLE
    for states, values in [(lifecycle.SEARCHABLE, lifecycle.SEARCHABLE_STATES),
                           (lifecycle.INDEXED, lifecycle.INDEXED_STATES),
                           (lifecycle.CHANGEABLE, lifecycle.CHANGEABLE_STATES)]:
        assert {State(v) for v in values} == states and len(values) == len(states)


def test_search_hides_a_memory_whose_ttl_ran_out_and_the_scheduler_expires_it(mos) -> None:
    """End to end: a memory with a tiny TTL leaves search, and the scheduler (same
    predicate) moves it to ``expired``; an expired memory can still be shared (changeable)."""
    import time

    from memos_core.cube import utcnow

    short = mos.add("The locker code is 4711.", user_id="u", ttl_seconds=0.3)
    time.sleep(max(0.0, 0.35 - (utcnow() - short.created_at).total_seconds()))
    assert lifecycle.ttl_elapsed(short.created_at, 0.3, utcnow())
    assert short.id not in {h.id for h in mos.search("locker code", user_id="u", k=5)}
    mos.schedule(user_id="u")
    expired = mos.get(short.id, user_id="u")
    assert expired.state is State.EXPIRED
    assert mos.share(short.id, with_user_id="v", user_id="u").governance.readers == ("v",)
