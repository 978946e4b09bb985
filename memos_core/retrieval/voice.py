"""Own-voice cue (``own_voice_weight``; measured in docs/benchmarks.md, issue 16 fourth pass).

When a query names one speaker ("What books has Melanie read?"), the speaker lift already
prefers that speaker's turns. Among them, the ones in the first person ("I read ...", "my
kids ...", "we went ...") are statements about the speaker; a turn of hers about the other
person ("That's so sweet, you must be proud!") is not. On the LoCoMo dev set 92% of the
evidence turns among the second stage's candidates speak in the first person against 70% of
the others. This cue multiplies the score of the named speaker's first-person turns by
``1 + weight``.

Pure functions over the candidates' texts; run in the second stage by ``MemOS.search``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from memos_core.retrieval.candidate import Candidate
from memos_core.retrieval.rerank import _PREFIX, named_turns

__all__ = ["body_of", "first_person", "own_voice"]

_FIRST_PERSON = re.compile(
    r"\b(?:i|i'm|i've|i'd|i'll|me|my|mine|myself|we|we're|we've|we'd|we'll|us|our|ours)\b",
    re.IGNORECASE)


def body_of(text: str) -> str:
    """``text`` without its optional "[date] speaker:" prefix.

    >>> body_of("[8 May, 2023] Mel: We went camping.")
    'We went camping.'
    """
    return _PREFIX.sub("", text, count=1)


def first_person(text: str) -> bool:
    """True if the body of ``text`` (after an optional "[date] speaker:" prefix) has a
    first-person pronoun.

    >>> first_person("[8 May, 2023] Mel: We went camping."), first_person("Mel: You rock!")
    (True, False)
    """
    return _FIRST_PERSON.search(body_of(text).replace("’", "'")) is not None


def own_voice(query: str, cands: Sequence[Candidate], texts: Mapping[str, str],
              weight: float) -> None:
    """Multiply by ``1 + weight``, in place, the score of every candidate that is a
    first-person turn of the one speaker ``query`` names (:func:`~memos_core.retrieval.
    rerank.named_turns`); nothing when ``weight`` <= 0 or
    the query names no speaker or several."""
    if weight <= 0:
        return
    for c in named_turns(query, cands, texts):
        if first_person(texts[c.id]):
            c.score *= 1 + weight
            c.scores["own_voice"] = 1.0
