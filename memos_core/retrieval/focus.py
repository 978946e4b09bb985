"""The dense query without the names every memory carries (``dense_common_share``).

Conversation memories begin with their speaker ("[date] Caroline: ..."), so a question about
a speaker ("What books has Caroline read?") names an entity that half the memories name. For
BM25 that word is harmless (its IDF is low); for the dense embedding it is not: MiniLM pulls
the question towards the turns that *mention* the name -- the other speaker addressing
Caroline ("Caroline, that's great!") -- and away from Caroline's own statements, which name
her only in their prefix. Left out of the text that is embedded (the BM25 query and the
second stage still see it; the speaker lift still lifts her turns), the question matches
what it asks about. On the LoCoMo dev set the system's recall@10 went from 0.786 to 0.799 and
multi-hop from 0.476 to 0.502 (docs/benchmarks.md, issue 16 fourth pass).

Which names are "common" is read from the store, not from a list: an entity the query names
(:class:`~memos_core.extraction.EntityExtractor`) that at least ``share`` of the memories the
query can see name (how many memories of the principal's graph view name it, over the
view's size: other users' memories do not count, and no degree cap applies).
Numbers and dates are kept: "4 years ago" or "on 8 May, 2023" are what the question is about,
and a session date lives in the prefix of the turns that answer it.

**Dated queries keep their names** (``dense_dated_names``): a query that names a calendar date
("in June", "in April 2022", "on October 24, 2023"; :func:`names_calendar_date`) asks about a
particular day or month of the conversation, and the turns that answer it carry that date and
the speaker together ("[24 October, 2023] Audrey: ..."); for them the name and the date are one
anchor, and without the name MiniLM drifts to same-topic turns of other dates. Such queries are
embedded whole. On the LoCoMo dev set this brought back most of the temporal recall@5 the focus
had cost (0.796 -> 0.815; 0.821 without the focus) and raised recall@10 by 0.4 point
(docs/benchmarks.md, issue 16 fifth pass).

Pure functions; :class:`~memos_core.retrieval.hybrid.HybridRetriever` does the graph reads.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

__all__ = ["common_entities", "names_calendar_date", "without_terms"]

_SPACES = re.compile(r"\s+")
_WORD = re.compile(r"\w")
# a month by name ("may" only next to a day, a year or "in/on/of/since/until/by/early/late/
# mid": otherwise it is the verb), a short month before a day or year, or a year 1900-2099
_MONTHS = r"january|february|march|april|june|july|august|september|october|november|december"
_CALENDAR = re.compile(
    rf"\b(?:{_MONTHS})\b"
    r"|\b(?:in|on|of|since|until|by|early|late|mid)[ -]may\b|\bmay,? \d|\d(?:st|nd|rd|th)? may\b"
    r"|\b(?:jan|feb|mar|apr|jun|jul|aug|sept?|oct|nov|dec)\.? \d"
    r"|\b(?:19|20)\d\d\b", re.IGNORECASE)


def names_calendar_date(query: str) -> bool:
    """True if ``query`` names a calendar date: a month ("in June", "May 2023", "8 May"; "may"
    alone is the verb), a short month before a number ("Oct 24") or a year ("in 2022").
    Relative times ("last week") do not count: they name no date a turn carries.

    >>> names_calendar_date("What did Ana eat on October 24, 2023?")
    True
    >>> names_calendar_date("May I ask what Ana read last week?")
    False
    """
    return _CALENDAR.search(query) is not None


def common_entities(entities: Sequence[str], degree: Callable[[str], int], visible: int,
                    share: float) -> list[str]:
    """The ``entities`` (as given, in order, unique) that are not numbers or dates and that
    at least ``share`` of the ``visible`` memories name (``degree(entity)``); none when
    ``share`` <= 0 or nothing is visible.

    >>> degrees = {"caroline": 300, "sweden": 3, "4": 220}
    >>> common_entities(["caroline", "sweden", "4"], degrees.get, 400, 0.1)
    ['caroline']
    """
    if share <= 0 or visible <= 0:
        return []
    out: list[str] = []
    for entity in dict.fromkeys(entities):
        if not entity.strip() or any(ch.isdigit() for ch in entity):
            continue
        if degree(entity) >= share * visible:
            out.append(entity)
    return out


def without_terms(query: str, terms: Sequence[str]) -> str:
    """``query`` with every whole-word occurrence of ``terms`` left out (case-insensitive; a
    possessive "'s" goes with its word), spaces collapsed. If nothing with a letter or digit
    would be left, ``query`` itself.

    >>> without_terms("What books has Caroline read? And Caroline's dog?", ["caroline"])
    'What books has read? And dog?'
    """
    if not terms:
        return query
    alternatives = "|".join(re.escape(t) for t in sorted({t.strip() for t in terms if t.strip()},
                                                           key=len, reverse=True))
    if not alternatives:
        return query
    pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?:['’]s)?(?!\w)", re.IGNORECASE)
    out = _SPACES.sub(" ", pattern.sub(" ", query)).strip()
    out = re.sub(r"\s+([?.!,;:])", r"\1", out)
    return out if _WORD.search(out) else query
