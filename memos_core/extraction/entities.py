"""Rule-based entity extraction: names, dates, numbers and quoted terms.

Entities link memories in the graph (two memories that mention "Caroline" or "May 2023" are
neighbours), so they are normalised to lower case. An LLM extractor can replace this one:
anything with ``extract(text) -> list[str]`` and a ``name`` satisfies ``EntityExtractor``.

Names are runs of capitalised words in any script with capitals (Latin, Greek, Cyrillic,
...): "Zoë", "Jürgen Müller", "Łukasz", "Дмитрий". Scripts without capitals (Chinese,
Japanese, Korean, Arabic, Hebrew, ...) give no names; their dates, numbers and quoted terms
still count.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable
from typing import Protocol, runtime_checkable

_MONTHS = (
    "january|february|march|april|may|june|july|august|september|october|november|december|"
    "jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec"
)
_DATE_PATTERNS = [
    re.compile(r"\b\d{4}-\d{2}-\d{2}\b"),
    re.compile(rf"\b\d{{1,2}}\s+(?:{_MONTHS})\.?,?\s+\d{{4}}\b", re.I),
    re.compile(rf"\b(?:{_MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}\b", re.I),
    re.compile(rf"\b(?:{_MONTHS})\.?\s+\d{{4}}\b", re.I),
    re.compile(r"\b\d{1,2}/\d{1,2}/\d{2,4}\b"),
]
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)?(?:\s?%)?(?!\w|[.,]\d)")
_QUOTED = re.compile(r"[\"“]([^\"”]{2,60})[\"”]")


# A run of capitalised words (allowing "of"/"de"/"van" inside): "New York", "Bank of America".
# The space after a connector is optional ("of\nAmerica" or "ofAmerica" still join), but there is
# no optional space straight after the required one: "\s+\s*" splits a run of w spaces w ways, so a
# capitalised word followed by a long run of spaces backtracked in O(w**2) (minutes for 80 KB).
# A word is a capital of any script ("rules-v1" took A-Z only, so "Zoë" was "zo", "René" "ren"
# and "Jürgen" nothing) and letters, apostrophes or hyphens.
@functools.cache
def _name_pattern() -> re.Pattern[str]:
    """The name pattern (built on first use: listing the capitals takes tens of ms)."""
    capitals = _letters(lambda c: c.isalpha() and (c.isupper() or c.istitle()))
    word = f"[{capitals}][{_letters(str.isalpha)}'’-]+"
    return re.compile(rf"\b{word}(?:\s+(?:(?:of|de|van|von|the)\s*)?{word})*")


def _letters(kind: Callable[[str], bool]) -> str:
    """The inside of a character class, as ranges, of the letters of the Basic Multilingual
    Plane (every cased script people write names in) of one ``kind`` (``\\w`` would also
    take "²")."""
    ranges: list[list[int]] = []
    for code in range(0x10000):
        if kind(chr(code)):
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])
    return "".join(re.escape(chr(a)) + ("-" + re.escape(chr(b)) if b > a else "")
                   for a, b in ranges)


# Capitalised words that are not names when they stand alone.
_STOP = frozenset(
    """a an the i i'm i've i'd i'll im it it's its he she we they you my your our their his her
    this that these those there here what when where why how who which yes no ok okay hey hi
    hello thanks thank wow oh so but and or if then also just well sure yeah great good nice
    love like really very mr mrs ms dr monday tuesday wednesday thursday friday saturday sunday
    today tomorrow yesterday last next do does did is are was were be been have has had can
    could would should will may might must let not don't didn't can't won't as at by for from
    in into of on to with about after before during since until while all any some each every
    both one two three my me""".split()
)


@runtime_checkable
class EntityExtractor(Protocol):
    """Returns the entities a text mentions, normalised (lower case, unique, in text order)."""

    name: str

    def extract(self, text: str) -> list[str]: ...


class RuleEntityExtractor:
    """Names, dates, numbers and quoted terms, by regular expression. Fast; no model."""

    name = "rules-v2"

    def __init__(self, *, max_entities: int = 32) -> None:
        self.max_entities = max_entities

    def extract(self, text: str) -> list[str]:
        if not text.isascii():  # a decomposed "Zoë" is the composed one
            text = unicodedata.normalize("NFC", text)
        found: list[tuple[int, str]] = []
        # taken[i] is 1 once character i belongs to a kept match. Checking and marking a span
        # costs its length, and one pattern's matches never overlap, so each pass is linear in
        # the text (a list of spans scanned per match made 1 MB of "1 " take hours).
        taken = bytearray(len(text))

        def add(start: int, end: int, value: str) -> None:
            if taken.find(1, start, end) != -1:
                return  # inside a longer match (a date's number, a quoted name)
            taken[start:end] = b"\x01" * (end - start)
            found.append((start, " ".join(value.lower().split())))

        for pattern in _DATE_PATTERNS:
            for m in pattern.finditer(text):
                add(m.start(), m.end(), m.group(0).replace(",", ""))
        for m in _QUOTED.finditer(text):
            add(m.start(1), m.end(1), m.group(1).strip())
        for m in _name_pattern().finditer(text):
            words = m.group(0).split()
            first, last = 0, len(words)  # slice once: pop(0) per word is quadratic in the run
            while first < last and words[first].lower().strip("'’") in _STOP:
                first += 1  # "Hey Mel" -> "Mel"; inner connectors ("Bank of America") stay
            while last > first and words[last - 1].lower().strip("'’") in _STOP:
                last -= 1
            words = words[first:last]
            if words:  # "Alice's" names Alice
                words[-1] = re.sub(r"['’]s?$", "", words[-1])
            if words and not (len(words) == 1 and len(words[0]) < 2):
                add(m.start(), m.end(), " ".join(words))
        for m in _NUMBER.finditer(text):
            add(m.start(), m.end(), m.group(0))
        found.sort()
        unique = list(dict.fromkeys(value for _, value in found if value))
        return unique[: self.max_entities]
