"""What of a chat turn the adapters record as a searched memory, and search for.

:func:`~memos_core.messages.worth_remembering` decides for a whole turn, and a turn that
asks is left out whole. But a question often tells something first: "My wife's name is Ana.
Can you remind me of her birthday?", "I'm vegetarian, what should I cook tonight?".
:func:`remembered_text` keeps what a turn tells, sentence by sentence, and leaves the
asking out. :func:`recall_query` is what a recall searches for: the adapters' recall is best
effort, and a message the core would refuse as a query must not fail the turn.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

# the sentence boundary of is_question's one-sentence rule (titles and abbreviations such as
# "Dr." and "e.g." do not end a sentence); one rule for both
from memos_core.messages import _SENTENCE_END, is_forget_request, is_phatic, is_question
from memos_core.config import MAX_TEXT_BYTES
from memos_core.errors import InvalidInputError
from memos_core.messages import worth_remembering
from memos_core.validation import check_text

__all__ = ["recall_query", "remembered_text"]

logger = logging.getLogger(__name__)

#: Words a clause about the speaker opens with ("I'm vegetarian, what should I cook?").
_FIRST_PERSON = frozenset(
    "i i'm im i've i'd i'll my mine we we're we've we'd our me".split())
#: Words after "I" / "my" that make the clause part of the asking ("I wonder, what...",
#: "My question is, can you..."), not something the speaker tells.
_HEDGES = frozenset(
    "think guess wonder wondering wondered mean suppose bet hope question curious asking".split())
_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")


def remembered_text(role: str, text: str, *, roles: Iterable[str] = ("user",),
                    questions: bool = False) -> str | None:
    """The part of a chat turn to store as a memory, or None when nothing of it is.

    A turn of ``roles`` that is not small talk or a request to forget as a whole
    (:func:`~memos_core.messages.is_phatic`, :func:`~memos_core.messages.is_forget_request`;
    a request to forget stays out whole: its next sentence may restate the fact it asks to
    drop) is read sentence by sentence: the sentences that :func:`worth_remembering` takes
    on their own -- not questions, small talk, requests to forget or to be told what is
    remembered -- are what it tells. All of them: the turn as given. Some: those, as
    written, joined by a space ("My wife's name is Ana. Can you remind me of her birthday?"
    -> "My wife's name is Ana."). In a question, a clause about the speaker before the
    comma that opens the asking counts as a sentence ("I'm vegetarian, what should I cook
    tonight?" -> "I'm vegetarian"): it opens with I / my / we / our (after any greeting)
    and is not a hedge ("I wonder, ..."). Other clauses ("Since I live in Porto, which
    airport is closest?") are not taken apart.

    With ``questions``, the turn is taken whole, as :func:`worth_remembering` takes it.
    """
    if questions or not text.strip():
        return text if worth_remembering(role, text, roles=roles, questions=questions) else None
    if role not in set(roles) or is_phatic(text) or is_forget_request(text):
        return None
    sentences = _sentences(text)
    told = []
    for sentence in sentences:
        if worth_remembering(role, sentence, roles=roles):
            told.append(sentence)
        else:
            clause = _told_before_question(sentence)
            if clause is not None:
                told.append(clause)
    if told == sentences:
        return text
    return " ".join(told) or None


def _sentences(text: str) -> list[str]:
    """The sentences of ``text``, each with its closing punctuation."""
    found, start = [], 0
    for end in _SENTENCE_END.finditer(text):
        found.append(text[start:end.start() + 1].strip())
        start = end.end()
    found.append(text[start:].strip())
    return [s for s in found if s]


def _told_before_question(sentence: str) -> str | None:
    """The clause about the speaker before the comma that opens a question, if any."""
    head, sep, rest = sentence.partition(", ")
    while sep:
        # the question opens here when its words alone ask ("what should I cook tonight")
        if is_question(rest.rstrip("?").strip()) and not is_question(head):
            parts = head.split(", ")
            while parts and is_phatic(parts[0]):  # "Hey, I'm Bob, ..." -> "I'm Bob"
                parts.pop(0)
            clause = ", ".join(parts)
            words = [w.lower().replace("\u2019", "'") for w in _WORD.findall(clause)]
            if (len(words) >= 2 and words[0] in _FIRST_PERSON and words[1] not in _HEDGES
                    and not is_phatic(clause)):
                return clause
            return None
        more, sep, rest = rest.partition(", ")
        head = f"{head}, {more}"
    return None


def recall_query(text: str) -> str | None:
    """``text`` as a recall search takes it, or None when nothing of it is searchable.

    A user message ``MemOS.search`` refuses as a query -- one holding a NUL character or an
    unpaired surrogate (pasted from a binary file), or over the text limit
    (:data:`~memos_core.config.MAX_TEXT_BYTES`, a pasted document) -- is searched without
    those characters and cut to the limit at a character boundary, with a warning in the
    log (never the text)."""
    cleaned = text.replace("\x00", "")
    cleaned = cleaned.encode("utf-8", "ignore")[:MAX_TEXT_BYTES].decode("utf-8", "ignore")
    if cleaned != text:
        logger.warning("recall: the message held NUL characters, unpaired surrogates or more "
                       "than %s bytes, which MemOS does not search for; searching for the rest",
                       f"{MAX_TEXT_BYTES:,}")
    try:
        return check_text(cleaned, "query")
    except InvalidInputError:  # nothing visible left
        return None
