"""IndexFilter semantics, decided once for every backend.

:func:`plan_filter` turns an :class:`~memos_core.index.base.IndexFilter` into a small
engine-neutral plan built from four primitives; each backend only maps the primitives to
its own condition types. So the meaning of a filter (sharing through ``readers``,
inclusive time bounds, fail-closed empty tuples) lives here and cannot drift between
backends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from memos_core.index.base import IndexFilter


@dataclass(frozen=True)
class AnyOf:
    """The keyword field ``key`` (or, for a list field, one of its items) is in ``values``."""

    key: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class IsTrue:
    """The bool field ``key`` is true (missing or null is not true)."""

    key: str


@dataclass(frozen=True)
class Between:
    """The float field ``key`` lies in ``[gte, lte]`` (a ``None`` bound is open).

    A point whose field is missing or null fails.
    """

    key: str
    gte: float | None
    lte: float | None


@dataclass(frozen=True)
class Either:
    """At least one of ``options`` holds."""

    options: tuple[Condition, ...]


Condition = Union[AnyOf, IsTrue, Between, Either]


@dataclass(frozen=True)
class FilterPlan:
    """Points pass if every ``must`` condition holds and no ``must_not`` condition does."""

    must: tuple[Condition, ...] = ()
    must_not: tuple[Condition, ...] = ()

    @property
    def is_empty(self) -> bool:
        """True if the plan has no condition (every point passes)."""
        return not self.must and not self.must_not


def _any_of(key: str, values: tuple[str, ...] | None) -> list[Condition]:
    return [] if values is None else [AnyOf(key, tuple(values))]


def plan_filter(flt: IndexFilter) -> FilterPlan | None:
    """The plan for ``flt``, or ``None`` if no point can pass (an empty any-of tuple).

    Raises ``ValueError`` if ``flt`` is not an :class:`IndexFilter` or a tuple field holds
    something other than strings.
    """
    if not isinstance(flt, IndexFilter):
        raise ValueError(f"expected an IndexFilter, got {type(flt).__name__}")
    for name in ("user_ids", "types", "tags", "states"):
        values = getattr(flt, name)
        if values is None:
            continue
        if isinstance(values, str) or not all(isinstance(v, str) for v in values):
            raise ValueError(f"IndexFilter.{name} must be a tuple of strings, got {values!r}")
        if len(values) == 0:
            return None
    must: list[Condition] = []
    if flt.user_ids is not None:
        owners = tuple(flt.user_ids)
        must.append(Either((AnyOf("user_id", owners), AnyOf("readers", owners))))
    if flt.agent_id is not None:
        must.append(AnyOf("agent_id", (flt.agent_id,)))
    if flt.session_id is not None:
        must.append(AnyOf("session_id", (flt.session_id,)))
    must += _any_of("type", flt.types)
    must += _any_of("tags", flt.tags)
    must += _any_of("state", flt.states)
    if flt.occurred_after is not None or flt.occurred_before is not None:
        must.append(Between("occurred_at", flt.occurred_after, flt.occurred_before))
    must_not: tuple[Condition, ...] = () if flt.include_superseded else (IsTrue("superseded"),)
    return FilterPlan(tuple(must), must_not)


def _holds(cond: Condition, payload: dict[str, Any]) -> bool:
    if isinstance(cond, Either):
        return any(_holds(option, payload) for option in cond.options)
    value = payload.get(cond.key)
    if isinstance(cond, AnyOf):
        if isinstance(value, (list, tuple)):
            return any(item in cond.values for item in value)
        return value in cond.values
    if isinstance(cond, IsTrue):
        return value is True
    return value is not None and (cond.gte is None or value >= cond.gte) and (
        cond.lte is None or value <= cond.lte)


def plan_matches(plan: FilterPlan | None, payload: dict[str, Any]) -> bool:
    """The plan evaluated on one payload in Python: the same meaning the engines give it.

    Used for candidates that do not come from an index query (graph expansion)."""
    if plan is None:
        return False
    return all(_holds(c, payload) for c in plan.must) and not any(
        _holds(c, payload) for c in plan.must_not)


def idf_corpus(flt: IndexFilter) -> FilterPlan | None:
    """The points whose statistics weigh a BM25 search under ``flt``: those its principals
    own or read (any state, superseded included), so that other users' memories never
    change a user's scores -- BM25's IDF counted over the whole index would tell a user how
    many memories of others hold a word. ``None`` when ``flt`` names no principal (a
    store-wide search): the whole index. The other conditions of ``flt`` (session, type,
    time) do not narrow it, so a narrower search weighs words as the principal's wider ones do.
    An empty principal tuple gives a plan no point passes (searches with it return nothing)."""
    if flt.user_ids is None:
        return None
    owners = tuple(flt.user_ids)
    return FilterPlan((Either((AnyOf("user_id", owners), AnyOf("readers", owners))),), ())
