"""Rule-based query decomposition (``decompose``; off by default, measured in
docs/benchmarks.md, issue 16 fourth pass).

A conjunctive question asks for evidence that no single memory holds: "What do Jon and Gina
both like?" needs a turn of Jon's and one of Gina's; "What items has Audrey bought or made?"
a purchase and a craft. :func:`sub_queries` splits such questions without a language model:

- two coordinated names ("Jon and Gina", "both Jon and Gina", "Jon & Gina"): one sub-query
  per name, "both" dropped;
- otherwise the first coordinated clause or predicate (" and ", " or "): the part before it,
  and the question's head (up to its first name, or its first two words) with the part after.

:func:`interleave` fuses the candidate lists of the original query and of each sub-query
round-robin, so every sub-query gets slots near the top; the fused score keeps the order and
stays on the original's scale. Pure functions; :class:`~memos_core.retrieval.hybrid.
HybridRetriever` runs the searches.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from memos_core.retrieval.candidate import Candidate
from memos_core.retrieval.rerank import named_turns

__all__ = ["interleave", "lift_speaker", "sub_queries"]

_NAME = r"[A-Z][\w'’-]*"
_PAIR = re.compile(rf"\b(?:both\s+)?({_NAME})\s+(?:and|&)\s+({_NAME})(?:\s+both\b)?")
_CONJ = re.compile(r"\s+(?:and|or)\s+", re.IGNORECASE)
_HEAD_NAME = re.compile(rf"^(.*?\S\s+{_NAME}(?:['’]s)?)\b")
_WORDS = re.compile(r"\w+")
_MIN_WORDS = 2


def _tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip(" ,;")
    text = re.sub(r"\s+([?.!,])", r"\1", text)
    return text if text.endswith("?") else text + "?"


def sub_queries(query: str, *, limit: int = 3) -> list[str]:
    """The sub-queries of a conjunctive ``query`` (see the module docstring), at most
    ``limit``; ``[]`` when it is not conjunctive.

    >>> sub_queries("What do Jon and Gina both like?")
    ['What do Jon like?', 'What do Gina like?']
    >>> sub_queries("What items has Audrey bought or made for her dogs?")
    ['What items has Audrey bought?', 'What items has Audrey made for her dogs?']
    >>> sub_queries("What books has Melanie read?"), sub_queries("What did Mel and her kids make?")
    ([], [])
    """
    text = query.strip()
    pair = _PAIR.search(text)
    if pair is not None and pair.start() > 0:  # a name at the start is a sentence's capital
        out = []
        for name in (pair.group(1), pair.group(2)):
            out.append(_tidy(text[: pair.start()] + name + text[pair.end():]
                             .replace(" both ", " ")))
        return out[:limit]
    conj = _CONJ.search(text)
    if conj is None:
        return []
    left, right = text[: conj.start()], text[conj.end():]
    if len(_WORDS.findall(left)) < _MIN_WORDS + 1 or len(_WORDS.findall(right)) < _MIN_WORDS:
        return []
    head_match = _HEAD_NAME.match(left)
    head = head_match.group(1) if head_match else " ".join(left.split()[:2])
    if not _WORDS.search(left[len(head):]):
        return []  # "... have Melanie and her kids ...": the subject is coordinated, not a clause
    if right.lower().startswith(head.lower()):
        second = right
    else:
        second = head + " " + right
    return [_tidy(left), _tidy(second)][:limit]


def interleave(ranked: Sequence[Sequence[Candidate]]) -> dict[str, Candidate]:
    """Round-robin fusion of ranked candidate lists (best first; the original query's first):
    slot 1 of every list, then slot 2, ...; a memory already placed keeps its first slot.
    Each memory gets the score ``best * (1 - slot / (n + 1))`` (``best``: the first list's top
    score, ``n``: the memories placed) and the union of its signals and reasons."""
    order: list[str] = []
    merged: dict[str, Candidate] = {}
    depth = max((len(r) for r in ranked), default=0)
    for i in range(depth):
        for cands in ranked:
            if i >= len(cands):
                continue
            c = cands[i]
            have = merged.get(c.id)
            if have is None:
                have = merged[c.id] = Candidate(c.id, 0.0)
                order.append(c.id)
            for signal, rank in c.ranks.items():
                have.ranks.setdefault(signal, rank)
            for signal, value in c.scores.items():
                have.scores.setdefault(signal, value)
            have.reasons.extend(r for r in c.reasons if r not in have.reasons)
    first = ranked[0] if ranked else []
    best = first[0].score if first and first[0].score > 0 else 1.0
    n = len(order)
    for slot, mid in enumerate(order):
        merged[mid].score = best * (1 - slot / (n + 1))
    return merged


def lift_speaker(query: str, cands: Sequence[Candidate], texts: Mapping[str, str],
                 weight: float) -> list[Candidate]:
    """``cands`` re-sorted (best first) after the turns of the one speaker ``query`` names
    had their score multiplied by ``1 + weight`` (in place): the speaker lift of the second
    stage, for one sub-query's list."""
    if weight > 0:
        for c in named_turns(query, cands, texts):
            c.score *= 1 + weight
    return sorted(cands, key=lambda c: (-c.score, c.id))
