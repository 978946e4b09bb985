"""Optional recall helpers for hybrid retrieval, each off by default (weight 0) unless the
LoCoMo dev runs in docs/benchmarks.md showed it helps:

- :func:`boost_sessions`: session-level retrieval -- sessions are scored by their best
  candidates, and every candidate of a top session gains a share of its session's score
  (evidence spread over a session's turns);
- :func:`parse_time_range`: a query's explicit time ("in May 2023", "in 2022", "last week",
  "yesterday") as an interval of occurred_at timestamps, for a boost of memories inside it;
- :func:`feedback_query`: pseudo-relevance feedback for BM25 -- the query's terms plus the
  heaviest terms of the first hits (in the encoder's hashed term space, no vocabulary).

All pure functions; :class:`memos_core.retrieval.hybrid.HybridRetriever` does the I/O.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import MAXYEAR, MINYEAR, datetime, timedelta, timezone
from typing import TYPE_CHECKING

from memos_core.index.base import SparseVec

if TYPE_CHECKING:
    from memos_core.retrieval.candidate import Candidate

__all__ = ["boost_sessions", "parse_time_range", "feedback_query", "session_scores"]

_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
_MONTHS.update({name.lower(): i for i, name in enumerate(calendar.month_abbr) if name})
_MONTH_RE = re.compile(r"\b(?:in|during|on|of|since)?\s*(" + "|".join(
    sorted((m for m in _MONTHS if len(m) > 3 or m == "may"), key=len, reverse=True))
    + r")\b(?:,?\s+(\d{4}))?", re.IGNORECASE)
_YEAR_RE = re.compile(r"\b(?:in|during|of)\s+(\d{4})\b", re.IGNORECASE)
_RELATIVE = {"yesterday": (1, "day"), "last week": (1, "week"), "last month": (1, "month"),
             "last year": (1, "year")}


def session_scores(cands: Mapping[str, "Candidate"], session_of: Callable[[str], str | None],
                   *, per_session: int = 3) -> dict[str, float]:
    """Each session of the candidates scored by the sum of its ``per_session`` best fused
    scores (candidates without a session are left out)."""
    by_session: dict[str, list[float]] = {}
    for c in cands.values():
        sid = session_of(c.id)
        if sid is not None:
            by_session.setdefault(sid, []).append(c.score)
    return {sid: sum(sorted(v, reverse=True)[:per_session]) for sid, v in by_session.items()}


def boost_sessions(cands: Mapping[str, "Candidate"], session_of: Callable[[str], str | None],
                   weight: float, *, sessions: int = 3, per_session: int = 3) -> None:
    """Add to each candidate of the ``sessions`` best sessions ``weight`` times its session's
    score (the sum of its ``per_session`` best fused scores, relative to the best session).
    Scores change in place; candidates without a session are left alone."""
    if weight <= 0 or not cands:
        return
    scored = session_scores(cands, session_of, per_session=per_session)
    if not scored:
        return
    best = max(scored.values()) or 1.0
    top = dict(sorted(scored.items(), key=lambda kv: -kv[1])[:sessions])
    for c in cands.values():
        sid = session_of(c.id)
        if sid in top:
            c.score += weight * top[sid] / best
            c.scores["session"] = top[sid] / best


def parse_time_range(query: str, now: datetime) -> tuple[float, float] | None:
    """The [start, end) timestamps a query names, or None. Month names take the year given
    with them, else the latest such month not after ``now``; "in 2023" is that year;
    "yesterday", "last week/month/year" count back from ``now`` (UTC)."""
    text = query.lower()
    m = _MONTH_RE.search(query)
    if m and (m.group(1).lower() != "may" or m.group(2) or re.search(r"\bin may\b", text)):
        month = _MONTHS[m.group(1).lower()]
        year = int(m.group(2)) if m.group(2) else (now.year if month <= now.month else now.year - 1)
        if not MINYEAR <= year < MAXYEAR:  # "in December 9999" ends in a year no date has
            return None
        start = datetime(year, month, 1, tzinfo=timezone.utc)
        end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=timezone.utc)
        return start.timestamp(), end.timestamp()
    y = _YEAR_RE.search(query)
    if y:
        year = int(y.group(1))
        if not MINYEAR <= year < MAXYEAR:
            return None
        return (datetime(year, 1, 1, tzinfo=timezone.utc).timestamp(),
                datetime(year + 1, 1, 1, tzinfo=timezone.utc).timestamp())
    for phrase, (n, unit) in _RELATIVE.items():
        if phrase in text:
            span = {"day": timedelta(days=1), "week": timedelta(days=7),
                    "month": timedelta(days=31), "year": timedelta(days=366)}[unit] * n
            return (now - span).timestamp(), now.timestamp()
    return None


def feedback_query(query: SparseVec, feedback: Sequence[SparseVec], *, weight: float,
                   terms: int) -> SparseVec:
    """The query's terms (weight 1) plus the ``terms`` heaviest other terms of the feedback
    documents (summed BM25 document weights, scaled so the heaviest gets ``weight``)."""
    mass: dict[int, float] = {}
    own = set(query.indices)
    for doc in feedback:
        for i, v in zip(doc.indices, doc.values):
            if i not in own:
                mass[i] = mass.get(i, 0.0) + v
    extra = sorted(mass.items(), key=lambda kv: -kv[1])[:terms]
    top = extra[0][1] if extra else 1.0
    pairs = dict(zip(query.indices, query.values))
    for i, v in extra:
        pairs[i] = weight * v / top
    items = sorted(pairs.items())
    return SparseVec(tuple(i for i, _ in items), tuple(v for _, v in items))
