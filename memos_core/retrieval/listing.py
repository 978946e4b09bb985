"""List questions: the named speaker's own dense hits as one more signal (``list_speaker_weight``).

A question that asks for several things about one person ("What books has Melanie read?",
"Which cities has John been to?", "How many pets does Andrew have?") is answered by several of
that person's own turns, usually spread over sessions, each about one of the things; LoCoMo's
multi-hop questions are mostly of this kind. The dense signal finds turns *about* the topic
(books, travel, pets), but its top hits mix both speakers, and in the fused ranking the named
speaker's less similar turns fall behind the other speaker's replies and their neighbours. For
such a question the dense hits that are turns of the one speaker it names (the same reading as
the speaker lift: :func:`~memos_core.retrieval.rerank.named_turns`) are fused once more as a
signal of their own, ``speaker_dense``, min-max normalised among themselves, so each of her
on-topic turns gains in proportion to how on-topic it is among *her* turns.

Only list questions (:func:`asks_for_several`): for a question after one fact the extra
signal adds the speaker's other on-topic turns to a ranking that already has the answer (on
the LoCoMo dev set, for every question that names a speaker it cost single-hop recall@10 1.2
to 2.4 points). The dense hits need their texts (the speaker is the "Name:" a turn begins
with), read for list questions only: one vault read of ``candidates`` memories.

Pure functions; :class:`~memos_core.retrieval.hybrid.HybridRetriever` does the reads and the
fusion. Measured in docs/benchmarks.md (issue 16, fifth pass).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from memos_core.index.base import ScoredId
from memos_core.retrieval.rerank import named_speaker, speaker_of

__all__ = ["asks_for_several", "speaker_hits"]

_WORDS = re.compile(r"[a-z][a-z'’-]*")
#: words ending in "s" that are not plural nouns where a list question puts its object
_NOT_PLURAL = frozenset({"does", "has", "was", "is", "goes", "says", "this", "his", "hers",
                         "its", "yours", "ours", "theirs", "whose", "always", "less", "plus"})
_KINDS = frozenset({"kinds", "types", "sorts"})
_KIND = frozenset({"kind", "type", "sort"})
_PHRASES = re.compile(r"\bhow many\b|\bboth\b|\bwhat (?:are|were)\b|\bwhat ways\b", re.IGNORECASE)


def _plural(word: str) -> bool:
    return (len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is"))
            and "'" not in word and "’" not in word and word not in _NOT_PLURAL)


def asks_for_several(query: str) -> bool:
    """True if ``query`` asks for several things: "how many ...", "... both ...", "what are /
    were ...", "in what ways ...", or "what/which" followed (after an optional "kind of" and one
    modifier) by a plural noun ("What books ...", "Which outdoor activities ...", "What kinds
    of art ..."). A guess from the words alone; a question after one fact ("What did Ana
    read?", "What kind of car does Ana drive?") is not one.

    >>> asks_for_several("What video games does Nate play?"), asks_for_several("What did Nate play?")
    (True, False)
    """
    if _PHRASES.search(query):
        return True
    words = _WORDS.findall(query.lower())
    for i, word in enumerate(words):
        if word not in ("what", "which"):
            continue
        rest = words[i + 1:i + 4]
        if rest and rest[0] in _KINDS:
            return True
        if len(rest) > 1 and rest[0] in _KIND and rest[1] == "of":
            rest = words[i + 3:i + 5]
        if any(_plural(w) for w in rest[:2]):
            return True
    return False


def speaker_hits(query: str, hits: Sequence[ScoredId], texts: Mapping[str, str]) -> list[ScoredId]:
    """The ``hits`` (in order) that are turns of the one speaker ``query`` names, among the
    speakers of the hits' ``texts`` (:func:`~memos_core.retrieval.rerank.named_speaker`); none
    when it names none or several. A hit without a text is left out."""
    speaker = {h.id: speaker_of(texts[h.id]) for h in hits if h.id in texts}
    named = named_speaker(query, {s for s in speaker.values() if s})
    return [] if named is None else [h for h in hits if speaker.get(h.id) == named]
