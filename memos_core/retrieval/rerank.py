"""Second-stage ranking over the fused candidates, once their texts are read.

Two steps, both on the candidates' texts (which the index does not hold):

- **Statements before chatter.** A memory that is only a question ("what bike do I have?")
  carries no fact; when an agent stores the user's turns, the same question asked twice
  matches a later identical query better than the statement that answers it. Pure questions
  (:func:`is_question`) get their fused score multiplied by ``question_weight``. Graph
  expansion ran before this on the undemoted scores, so the turn *after* a question (often its
  answer) keeps the credit the question earned.
- **Answer-type cue** (``when_weight``): a question asking *when* ("When did ...", "what
  year ...", "how long ago ...") lifts turns whose own text (after the "[date] speaker:"
  prefix) holds a time expression ("yesterday", "last week", "two years ago", a month,
  weekday or year): they state when something happened (:func:`asks_when`,
  :func:`has_time_expression`).
- **Per-session cap** (``session_cap``): at most that many turns of one session keep their
  place; the rest move, in order, behind the other candidates, so one session (a hit and its
  neighbouring turns) cannot fill the top k of a question whose evidence spans sessions.
- **An optional cross-encoder** (:class:`Reranker`): a user who has one locally can pass it to
  ``MemOS(reranker=...)``; its scores, min-max normalised, are mixed with the fused score.
  Nothing is downloaded: the default is no reranker.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from memos_core.retrieval.candidate import Candidate

__all__ = ["Reranker", "asks_when", "cap_sessions", "has_time_expression", "is_question",
           "rerank", "speaker_of", "named_speaker", "named_turns"]

# "[1:56 pm on 8 May, 2023] Caroline: ..." or "Caroline: ..." or "user: ..."
_PREFIX = re.compile(r"^\s*(?:\[[^\]]{0,80}\]\s*)?(?:[\w .'-]{1,40}:\s+)?")
_SENTENCE = re.compile(r"[^.!?]+[.!?]*")
_FILLER_WORDS = 4
_SPEAKER = re.compile(r"^\s*(?:\[[^\]]{0,80}\]\s*)?([^\W\d_][\w.'-]{0,30}(?: [^\W\d_][\w.'-]{0,30})?):\s")
_WORD = re.compile(r"[^\W\d_][\w'-]*")
#: characters of a turn that can hold its "[date] Name: " prefix (decomposed, a name takes more)
_SPEAKER_REACH = 400
_ASKS_WHEN = re.compile(
    r"\bwhen\b|\bwhat (?:year|month|date|day|time of year)\b|\bhow long ago\b"
    r"|\bwhich (?:year|month|day|week)\b|\bwhat time\b", re.IGNORECASE)
_UNIT = r"(?:day|night|week|weekend|month|year|summer|winter|spring|fall|autumn|semester)s?"
_DAYS = r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)s?"
_MONTH_NAMES = (r"(?:january|february|march|april|june|july|august|september|october"
                r"|november|december)")  # "may" is left out: mostly the verb
_TIME_EXPRESSION = re.compile(
    r"\b(?:yesterday|today|tonight|tomorrow|recently|lately|ago"
    rf"|(?:last|next|this|past|coming|few|couple of|other) {_UNIT}|(?:last|next|this) {_DAYS}"
    rf"|{_DAYS}|{_MONTH_NAMES}|(?:19|20)\d\d)\b", re.IGNORECASE)


@runtime_checkable
class Reranker(Protocol):
    """Scores (query, text) pairs; higher is more relevant. Any scale: scores are min-max
    normalised over one query's candidates before they are mixed in."""

    def score(self, query: str, texts: Sequence[str]) -> Sequence[float]: ...


def is_question(text: str) -> bool:
    """True if ``text`` (after an optional "[date] speaker:" prefix) is only a question:
    it ends with "?" and whatever comes before its questions is at most a short interjection
    ("Hey Mel!", "Wow,"), so it states nothing.

    >>> is_question("What bike do I have?")
    True
    >>> is_question("I ride a green gravel bike. Do you cycle?")
    False
    """
    if not text.rstrip().endswith("?"):
        return False  # the body is the end of the text: no "?" there, none at the body's end
    body = _PREFIX.sub("", text, count=1).strip()
    if not body.endswith("?"):
        return False
    stated = 0
    for sentence in _SENTENCE.findall(body):
        sentence = sentence.strip()
        if sentence and not sentence.endswith("?"):
            stated += len(sentence.split())
    return stated <= _FILLER_WORDS


def asks_when(query: str) -> bool:
    """True if ``query`` asks for a time ("When did ...", "what year ...", "how long ago").

    >>> asks_when("When did Ana move to Lisbon?"), asks_when("Where did Ana move?")
    (True, False)
    """
    return _ASKS_WHEN.search(query) is not None


def has_time_expression(text: str) -> bool:
    """True if the body of ``text`` (after an optional "[date] speaker:" prefix, whose date
    does not count) names a time: "yesterday", "last week", "two years ago", a weekday, a
    month (not "may") or a year.

    >>> has_time_expression("[8 May, 2023] Ana: We moved last week!")
    True
    >>> has_time_expression("[8 May, 2023] Ana: We love Lisbon.")
    False
    """
    return _TIME_EXPRESSION.search(_PREFIX.sub("", text, count=1)) is not None


def cap_sessions(cands: Sequence[Candidate], session_of: Mapping[str, str | None],
                 cap: int) -> list[Candidate]:
    """``cands`` (best first) with at most ``cap`` turns per session in their place; the
    others follow in their order. Candidates without a session are never moved; ``cap`` 0
    leaves the order alone."""
    if cap <= 0:
        return list(cands)
    kept: list[Candidate] = []
    moved: list[Candidate] = []
    count: dict[str, int] = {}
    for c in cands:
        sid = session_of.get(c.id)
        if sid is not None:
            count[sid] = count.get(sid, 0) + 1
            if count[sid] > cap:
                moved.append(c)
                continue
        kept.append(c)
    return kept + moved


def _composed(text: str) -> str:
    """``text`` in Unicode's composed form (NFC): in the decomposed one (NFD, as some
    keyboards and file systems write "Zoë") an accent is a mark of its own, which ``\\w``
    does not match, so a name would end at its first accented letter."""
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def speaker_of(text: str) -> str | None:
    """The speaker of a turn stored as "[date] Name: text" or "Name: text", else None (the
    name in composed form, whichever form the turn was stored in)."""
    m = _SPEAKER.match(_composed(text[:_SPEAKER_REACH]))
    return m.group(1) if m else None


def named_speaker(query: str, speakers: set[str]) -> str | None:
    """The one speaker among ``speakers`` that ``query`` names, or None (none or several).
    Names match case-insensitively, a possessive "'s" dropped; a capitalised word and a name
    match when one begins the other ("Mel" names "Melanie"), but an ordinary word does not
    ("times" does not name "Tim")."""
    found_words = [w.removesuffix("'s").removesuffix("’s")
                   for w in _WORD.findall(_composed(query))]
    words = {w.lower() for w in found_words}
    proper = {w.lower() for w in found_words if w[0].isupper() and len(w) >= 3}
    found = set()
    for speaker in speakers:
        name = _composed(speaker).lower()
        first = name.split()[0]
        if name in words or first in words or any(
                first.startswith(w) or w.startswith(first) for w in proper):
            found.add(speaker)
    return found.pop() if len(found) == 1 else None


def named_turns(query: str, cands: Sequence[Candidate],
                texts: Mapping[str, str]) -> list[Candidate]:
    """The candidates (in their order) that are turns of the one speaker ``query`` names
    (:func:`named_speaker` over the speakers of the candidates' ``texts``); none when it
    names none or several."""
    speaker = {c.id: speaker_of(texts[c.id]) for c in cands if c.id in texts}
    named = named_speaker(query, {s for s in speaker.values() if s})
    return [] if named is None else [c for c in cands if speaker.get(c.id) == named]


def rerank(
    query: str,
    cands: Sequence[Candidate],
    texts: Mapping[str, str],
    *,
    question_weight: float,
    reranker: Reranker | None = None,
    reranker_weight: float = 0.5,
    speaker_weight: float = 0.0,
    when_weight: float = 0.0,
    session_cap: int = 0,
    sessions: Mapping[str, str | None] | None = None,
) -> list[Candidate]:
    """Candidates re-scored and re-sorted (best first); candidates without a text (not
    readable) keep their score. Scores are changed in place on the given candidates.

    ``speaker_weight``: when the query names exactly one of the candidates' speakers (see
    :func:`named_speaker`), that speaker's turns -- first-person statements about them --
    get their score multiplied by ``1 + speaker_weight``. ``when_weight``: when the query
    asks when (:func:`asks_when`), turns with a time expression of their own
    (:func:`has_time_expression`) get their score multiplied by ``1 + when_weight``.
    ``session_cap``: at most that many turns of one session (``sessions``: id -> session)
    keep their rank (:func:`cap_sessions`); 0 is off."""
    cands = list(cands)
    if speaker_weight > 0:
        for c in named_turns(query, cands, texts):
            c.score *= 1 + speaker_weight
            c.scores["speaker"] = 1.0
    if when_weight > 0 and asks_when(query):
        for c in cands:
            text = texts.get(c.id)
            if text is not None and has_time_expression(text):
                c.score *= 1 + when_weight
                c.scores["when"] = 1.0
    if question_weight != 1.0:
        for c in cands:
            text = texts.get(c.id)
            if text is not None and is_question(text):
                c.score *= question_weight
    if reranker is not None and cands:
        have = [c for c in cands if c.id in texts]
        raw = [float(s) for s in reranker.score(query, [texts[c.id] for c in have])]
        if len(raw) != len(have):
            raise ValueError(f"reranker returned {len(raw)} scores for {len(have)} texts")
        if raw:
            lo, hi = min(raw), max(raw)
            best = max(c.score for c in cands) or 1.0
            for c, s in zip(have, raw):
                norm = (s - lo) / (hi - lo) if hi > lo else 1.0
                c.score = (1 - reranker_weight) * c.score + reranker_weight * best * norm
                c.scores["rerank"] = s
    ranked = sorted(cands, key=lambda c: (-c.score, c.id))
    return cap_sessions(ranked, sessions or {}, session_cap) if session_cap > 0 else ranked
