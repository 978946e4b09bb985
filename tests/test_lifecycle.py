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


def test_memories_left_out_by_ttl_or_valid_at_do_not_crowd_out_the_others(mos, monkeypatch) -> None:
    """The index does not know that a TTL ran out (until a scheduler run expires the
    memory) nor what ``valid_at`` asks: they are checked on the candidates. Forty such
    memories ranked above the one that counts must not leave the search empty: it looks
    deeper until it has ``k`` hits or the index has no more."""

    live = mos.add("Alice's home address is 12 Rue de Rivoli, Paris.", user_id="u",
                   occurred_at="2020-01-01T00:00:00Z")
    brief = mos.add_many([
        {"text": f"Alice's home address note {i}: she asked about addresses in city {i}.",
         "ttl_seconds": 600, "occurred_at": "2024-06-01T00:00:00Z"} for i in range(40)],
        user_id="u")
    query = "What is Alice's home address?"
    order = [h.id for h in mos.search(query, user_id="u", k=50, record_usage=False)]
    assert order.index(live.id) >= 40  # every short-lived note ranks above it
    # valid_at: the notes began to be valid in 2024, the address in 2020
    assert [h.id for h in mos.search(query, user_id="u", k=5, valid_at="2021-01-01")] == [live.id]
    later = brief[-1].created_at + timedelta(seconds=601)  # the notes' TTL has run out
    monkeypatch.setattr("memos_core.ops.search.utcnow", lambda: later)
    assert [h.id for h in mos.search(query, user_id="u", k=5)] == [live.id]
