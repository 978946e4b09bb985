"""Second-stage ranking over the fused candidates, once their texts are read.

Two steps, both on the candidates' texts (which the index does not hold):

- **Statements before chatter.** A memory that is only a question ("what bike do I have?")
  carries no fact; when an agent stores the user's turns, the same question asked twice
  matches a later identical query better than the statement that answers it. Pure questions
  (:func:`is_question`) get their fused score multiplied by ``question_weight``. Graph
  expansion ran before this on the undemoted scores, so the turn *after* a question (often its
  answer) keeps the credit the question earned.
- **An optional cross-encoder** (:class:`Reranker`): a user who has one locally can pass it to
  ``MemOS(reranker=...)``; its scores, min-max normalised, are mixed with the fused score.
  Nothing is downloaded: the default is no reranker.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from memos_core.retrieval.candidate import Candidate

__all__ = ["Reranker", "is_question", "rerank", "speaker_of", "named_speaker"]

# "[1:56 pm on 8 May, 2023] Caroline: ..." or "Caroline: ..." or "user: ..."
_PREFIX = re.compile(r"^\s*(?:\[[^\]]{0,80}\]\s*)?(?:[\w .'-]{1,40}:\s+)?")
_SENTENCE = re.compile(r"[^.!?]+[.!?]*")
_FILLER_WORDS = 4
_SPEAKER = re.compile(r"^\s*(?:\[[^\]]{0,80}\]\s*)?([^\W\d_][\w.'-]{0,30}(?: [^\W\d_][\w.'-]{0,30})?):\s")
_WORD = re.compile(r"[^\W\d_][\w'-]*")


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
    body = _PREFIX.sub("", text, count=1).strip()
    if not body.endswith("?"):
        return False
    stated = 0
    for sentence in _SENTENCE.findall(body):
        sentence = sentence.strip()
        if sentence and not sentence.endswith("?"):
            stated += len(sentence.split())
    return stated <= _FILLER_WORDS


def speaker_of(text: str) -> str | None:
    """The speaker of a turn stored as "[date] Name: text" or "Name: text", else None."""
    m = _SPEAKER.match(text)
    return m.group(1) if m else None


def named_speaker(query: str, speakers: set[str]) -> str | None:
    """The one speaker among ``speakers`` that ``query`` names, or None (none or several).
    Names match case-insensitively, a possessive "'s" dropped, and a short form matches the
    full name it begins ("Mel" names "Melanie")."""
    words = {w.lower().removesuffix("'s").removesuffix("’s") for w in _WORD.findall(query)}
    found = set()
    for speaker in speakers:
        name = speaker.lower()
        first = name.split()[0]
        if name in words or first in words or any(
                len(w) >= 3 and (first.startswith(w) or w.startswith(first)) for w in words):
            found.add(speaker)
    return found.pop() if len(found) == 1 else None


def rerank(
    query: str,
    cands: Sequence[Candidate],
    texts: Mapping[str, str],
    *,
    question_weight: float,
    reranker: Reranker | None = None,
    reranker_weight: float = 0.5,
    speaker_weight: float = 0.0,
) -> list[Candidate]:
    """Candidates re-scored and re-sorted (best first); candidates without a text (not
    readable) keep their score. Scores are changed in place on the given candidates.

    ``speaker_weight``: when the query names exactly one of the candidates' speakers (see
    :func:`named_speaker`), that speaker's turns -- first-person statements about them --
    get their score multiplied by ``1 + speaker_weight``."""
    cands = list(cands)
    if speaker_weight > 0:
        speaker = {c.id: speaker_of(texts[c.id]) for c in cands if c.id in texts}
        named = named_speaker(query, {s for s in speaker.values() if s})
        if named is not None:
            for c in cands:
                if speaker.get(c.id) == named:
                    c.score *= 1 + speaker_weight
                    c.scores["speaker"] = 1.0
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
    return sorted(cands, key=lambda c: (-c.score, c.id))
