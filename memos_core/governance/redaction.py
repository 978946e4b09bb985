"""Redaction of a forgotten memory in stored chat messages: the rule every conversation log,
checkpoint and late write follows (:class:`MessageRedactor`, pure), used by the forget hooks
(:mod:`memos_core.governance.forget_hooks`) and the vaults' conversation logs.

What counts as carrying the memory (:class:`MessageRedactor`, pure): a message that is one
of the memory's source messages (``provenance.source_message_ids``) has its text replaced by
:data:`FORGOTTEN`; in every other message, each occurrence of the memory's text -- and, for a
memory made from a chat message ("speaker: content"), of the content; and, while its forget
runs, of what its earlier versions said (:func:`earlier_texts`) -- becomes
:data:`FORGOTTEN`, and so does the rest of a line that starts with the memory's id in
brackets (a memory tool's search result, ``[<id>] text``); a dict that stands for the memory
(a tool's result naming its id, the arguments of the call that stored it) also loses its
``tags``, ``entities``, ``metadata``, ``sensitivity`` and ``why``. A text or content shorter than :data:`MIN_NEEDLE` characters (``"ok"``)
only matches a whole message text, so that it does not redact words inside other messages.
Messages are kept, so the conversation's structure (roles, tool-call pairs, ids) stays valid.
Each text is also looked for as it reads the same (:func:`text_variants`): in its composed
and decomposed Unicode forms (NFC, NFD: an "é" typed on macOS is "e" and a combining accent)
and, when it has several lines, with CRLF or CR line ends -- in the pre-filters
(:meth:`MessageRedactor.patterns`, :meth:`~MessageRedactor.tokens`) and where it is replaced.
"""

from __future__ import annotations

import copy
import json
import re
import unicodedata
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from enum import Enum
from types import MappingProxyType
from typing import Any

from memos_core.cube import MemCube

#: What a redacted message says where the forgotten text was.
FORGOTTEN = "[forgotten]"
#: Shortest memory text or message content redacted where it occurs inside a longer text.
MIN_NEEDLE = 12


class MessageRedactor:
    """Finds and removes one forgotten memory in stored chat messages (pure; see the module
    docstring for what matches)."""

    def __init__(self, memory: MemCube) -> None:
        self.memory_id = memory.id
        self.user_id = memory.user_id
        self.source_ids = frozenset(memory.provenance.source_message_ids)
        # its text now and, while its forget runs, what its earlier versions said
        texts = [memory.text, *_EARLIER.get().get(memory.id, ())]
        spoken = "role" in memory.metadata
        found = {t.strip() for t in [*texts, *(_content(t) for t in texts if spoken)]
                 if t and t.strip()}
        # each in every spelling that reads the same (a log may hold it in another Unicode
        # form, or with CRLF line ends)
        self._whole = {v for t in found for v in text_variants(t)}
        # A short text ("ok", "e") only matches a whole message: as a substring it would
        # redact words of every conversation, other users' included.
        # longest first, so that the text is replaced before the content inside it
        self._needles = sorted({v for v in self._whole if _long(v)}, key=len, reverse=True)
        self._escaped = _escaped(self._needles)
        self._nested: MessageRedactor | None = None  # see _inner
        # a memory tool's search result line ("[<id>] text", "3. [<id>] (fact, ...) text"):
        # whatever the text's length
        self._result_line = re.compile(
            r"^([ \t]*(?:\d+\.[ \t]*)?)" + re.escape(f"[{memory.id}]") + r"[^\n]*", re.M)

    def with_texts(self, texts: Iterable[str]) -> MessageRedactor:
        """A redactor that also redacts ``texts``: the contents of the memory's source
        messages, found by id, so that their copies without an id (a framework's input
        before it numbered the message) lose them too."""
        # only texts long enough to say something: a short reply ("yes") would blank every
        # message of that user that says the same
        extra = [t for t in texts if t and _long(t)]
        if not extra:
            return self
        other = copy.copy(self)
        other._whole = self._whole | {v for t in extra for v in text_variants(t.strip())}
        other._needles = sorted({*self._needles, *(v for t in extra for v in text_variants(t))},
                                key=len, reverse=True)
        other._escaped = _escaped(other._needles)
        other._nested = None
        return other

    def is_source(self, message_id: object) -> bool:
        """True if ``message_id`` names a message the memory was made from."""
        return message_id is not None and str(message_id) in self.source_ids

    def text(self, text: str) -> str:
        """``text`` with the memory redacted (the same string when it holds none of it): the
        memory's texts and contents, and the rest of any line that starts with its id in
        brackets (the memory tools' search results list hits as ``[<id>] text``)."""
        if text.strip() in self._whole:
            return FORGOTTEN
        if any(e in text for e in self._escaped) or _OTHER_ESCAPE.search(text):
            inner = self._inner()
            nested = inner._json_text(text) if text.lstrip()[:1] in ("{", "[") else None
            if nested is not None:
                return nested
            # JSON inside other text ("calling store_memory with {...}", JSON lines): each
            # string literal holding the memory is redacted, however its encoder escaped
            # it, and an escaped needle left (a literal cut short) where it stands (the
            # placeholder is JSON-safe)
            text = _JSON_STRING.sub(inner._json_string, text)
            for escaped in self._escaped:
                text = text.replace(escaped, FORGOTTEN)
        for needle in self._needles:
            if needle in text:
                text = text.replace(needle, FORGOTTEN)
        if f"[{self.memory_id}]" in text:
            text = self._result_line.sub(
                lambda m: f"{m.group(1)}[{self.memory_id}] {FORGOTTEN}", text)
        return text

    def _inner(self) -> MessageRedactor:
        """This redactor for the strings of JSON inside a message: a short text matches a
        whole message only, never a value inside one (a forgotten "Paris" does not blank
        ``"city": "Paris"`` in a tool's result)."""
        if self._nested is None:
            inner = copy.copy(self)
            inner._whole = {t for t in self._whole if _long(t)}
            inner._nested = inner
            self._nested = inner
        return self._nested

    def _json_text(self, text: str) -> str | None:
        """``text`` redacted as the JSON document it holds, written again (ASCII-escaped if
        it was ASCII), or None if it is not JSON or holds the memory in none of its values. A tool call's raw arguments, as
        OpenAI-style messages keep them, are such a document: a quote or an accent in the
        memory's text is escaped there, so the text is not found in the string as it stands."""
        try:
            data = json.loads(text)
            new = self.value(data)
        except (ValueError, RecursionError):  # not JSON, or nested deeper than we recurse:
            return None  # its string literals are redacted one by one instead
        return None if new is data else json.dumps(new, ensure_ascii=text.isascii())

    def _json_string(self, match: re.Match[str]) -> str:
        """A JSON string literal found in other text, redacted (written again as JSON)."""
        literal = match.group(0)
        if len(literal) < len(match.group(1)) + 2 or "\\" not in literal:
            return literal  # cut short, or the needle as it stands is replaced after
        try:
            decoded = json.loads(literal)
        except ValueError:
            return literal
        new = self.text(decoded)
        return literal if new == decoded else json.dumps(new, ensure_ascii=literal.isascii())

    def value(self, value: Any, other: Callable[[Any], Any] | None = None,
              structure: Collection[str] = ()) -> Any:
        """``value`` (str, or lists / tuples / dict values of them, nested) with every string
        redacted; the same object when nothing changed (so ``is`` tells). Never an enum
        member (code, not text), nor a dict value under a key in ``structure`` (roles, ids:
        a memory whose whole text is "assistant" must not rename a role). ``other`` redacts
        a value of any other type (e.g. a framework's message class) and must likewise
        return the same object when it changes nothing; without it such values are kept."""
        if isinstance(value, Enum):
            return value
        if isinstance(value, str):
            redacted = self.text(value)
            return value if redacted == value else redacted
        if type(value) in (list, tuple):  # subclasses (named tuples) go to `other`
            items = [self.value(v, other, structure) for v in value]
            if all(a is b for a, b in zip(items, value)):
                return value
            return items if isinstance(value, list) else tuple(items)
        if type(value) is dict:
            changed = {k: v if k in structure else self.value(v, other, structure)
                       for k, v in value.items()}
            if self._describes(value, changed):
                changed.update({k: copy.copy(_EMPTIED[k]) for k in _DESCRIBING & changed.keys()
                                if changed[k] != _EMPTIED[k]})
            return value if all(changed[k] is value[k] for k in value) else changed
        return value if other is None else other(value)

    def _describes(self, old: dict[Any, Any], new: dict[Any, Any]) -> bool:
        """True if the dict ``old`` (``new`` once redacted) stands for the memory: it names
        it by id (a memory tool's result, ``{"id": ..., "tags": [...], "why": ...}``, or a
        call about it, ``{"memory_id": ...}``) or its whole ``text`` is the memory's (the
        arguments of the ``store_memory`` call that made it). Its tags, entities, metadata
        and explanation describe the memory, so they go with its text."""
        if self.memory_id in (old.get("id"), old.get("memory_id")):
            return True
        text = old.get("text")
        return isinstance(text, str) and text != FORGOTTEN and new.get("text") == FORGOTTEN

    def patterns(self) -> list[bytes]:
        """Byte strings at least one of which a stored row holding the memory contains (its
        source message ids, and each text to redact, in each of its :func:`text_variants`,
        as UTF-8 and JSON-escaped): a cheap filter (SQLite ``instr``) before rows are
        decoded."""
        found: set[bytes] = {s.encode() for s in self.source_ids}
        for needle in {*self._whole, *self._needles, f"[{self.memory_id}]"}:
            found.add(needle.encode())
            for escaped in _escapes(needle):  # and JSON inside a JSON string, escaped twice
                found.update(e.encode() for e in (escaped, *_escapes(escaped)))
        for needle in self._needles:
            found.update(_unescaped_pieces(needle))
        return sorted(found)


    def tokens(self) -> tuple[tuple[str, ...], ...] | None:
        """Groups of strings, one per text to redact, per source message id and for the
        memory's id: any stored record holding the memory holds every string of one group,
        however that record's JSON escapes it (the runs of ASCII letters and digits of that
        text, in each of its :func:`text_variants` -- the decomposed form has runs the
        composed one lacks: "cafe" of a decomposed "café" -- which escaping never touches;
        ``ListQuery.contains_any``): its
        :data:`_GROUP_RUNS` longest runs, common words left out (they narrow nothing) unless
        the text has nothing else. None when one text has no such run: then nothing can be
        pre-filtered."""
        found = set()
        for text in {*self._whole, *self.source_ids, self.memory_id}:
            runs = sorted(set(_ALNUM.findall(text)), key=lambda run: (-len(run), run))
            if not runs:
                return None
            rare = [run for run in runs if run.lower() not in _COMMON] or runs[:1]
            found.add(tuple(sorted(rare[:_GROUP_RUNS])))
        return tuple(sorted(found))


#: the fields that describe a memory in a dict that stands for it (a tool's result or call,
#: see MessageRedactor._describes), and what they become when it is forgotten: tags and the
#: ranking's explanation ("graph (mentions ramos)") would tell what the memory said
_EMPTIED: Mapping[str, Any] = MappingProxyType(
    {"tags": [], "entities": [], "metadata": {}, "sensitivity": [], "why": FORGOTTEN})
_DESCRIBING = frozenset(_EMPTIED)
#: a run of ASCII letters and digits (see MessageRedactor.tokens)
_ALNUM = re.compile(r"[A-Za-z0-9]+")
#: most runs of one text a pre-filter asks for (any subset is correct: a long text's every
#: word would make a statement of thousands of parameters)
_GROUP_RUNS = 8
#: English words too common to narrow a search (MessageRedactor.tokens takes another run)
_COMMON = frozenset(
    "a about after all also an and any are as at be been but by can could did do does for "
    "from had has have he her him his how i if in into is it its just me my no not of on or "
    "our out she so than that the their them then there they this to up us was we were what "
    "when which who will with would you your user assistant".split())


def text_variants(text: str) -> tuple[str, ...]:
    """``text`` and its spellings that read the same, longest first: its composed and
    decomposed Unicode forms (NFC, NFD), and, for a text of several lines, each of them
    with LF, CRLF and CR line ends. A copy of a memory in a conversation log may be in
    either (macOS input is often NFD; a Windows client or an HTTP form sends CRLF), and the
    project treats them as the same text elsewhere (BM25, entity extraction). Other
    spellings (case, invisible characters, other spaces) are different text: not here."""
    forms = {text}
    for form in ("NFC", "NFD"):
        normal = unicodedata.normalize(form, text)
        forms.add(normal)
        lines = _lf(normal)
        if "\n" in lines:
            forms.update((lines, lines.replace("\n", "\r\n"), lines.replace("\n", "\r")))
    return tuple(sorted(forms, key=lambda t: (-len(t), t)))


def _lf(text: str) -> str:
    """``text`` with LF line ends (CRLF and CR become LF)."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _long(text: str) -> bool:
    """Whether ``text`` is long enough (:data:`MIN_NEEDLE`) to be redacted inside a longer
    text: counted stripped, composed and with LF line ends, so that all its
    :func:`text_variants` agree (an NFD copy of a short text is not a needle either)."""
    return len(_lf(unicodedata.normalize("NFC", text)).strip()) >= MIN_NEEDLE


def _escapes(text: str) -> tuple[str, ...]:
    r"""``text`` as the inside of a JSON string, as encoders write it: ASCII-escaped with
    lower- and upper-case hex digits (.NET writes ``\u00E9``), as UTF-8, and each of these
    with ``/`` escaped (PHP writes ``\/``)."""
    ascii_escaped = json.dumps(text)[1:-1]
    forms = {ascii_escaped, json.dumps(text, ensure_ascii=False)[1:-1],
             _HEX_ESCAPE.sub(lambda m: "\\u" + m.group(1).upper(), ascii_escaped)}
    return tuple(sorted(forms | {form.replace("/", "\\/") for form in forms}))


#: a JSON escape that json.dumps never writes for the needles (any \uXXXX of an encoder
#: that escapes more, or upper-case hex; an escaped "/"): MessageRedactor.text decodes the
#: JSON around it
_OTHER_ESCAPE = re.compile(r"\\(?:u[0-9a-fA-F]{4}|/)")
#: a JSON string literal inside other text; its body (group 1) is matched atomically (a
#: lookahead does not backtrack), so a literal cut short ends at its line's end in linear
#: time (the closing quote is then missing)
_JSON_STRING = re.compile(r'"(?=((?:[^"\\\n]|\\.)*))\1"?')
#: a lower-case \uXXXX escape (json.dumps writes those)
_HEX_ESCAPE = re.compile(r"\\u([0-9a-f]{4})")
#: characters some JSON encoder escapes (json.dumps: quote, backslash, controls, and all
#: outside ASCII unless told not to; PHP: "/"; Go: "<>&"; .NET: also "'+`"; Gson: also
#: "="), and the shortest piece between them that narrows a search enough
#: (:func:`_unescaped_pieces`)
_ESCAPABLE_OR_OTHER = re.compile("[\"\\\\/<>&'+`=\x00-\x1f\x7f-\U0010ffff]")
_MIN_PIECE = 4


def _unescaped_pieces(needle: str) -> set[bytes]:
    """Byte strings one of which a stored row holding ``needle`` contains, however a JSON
    encoder escaped it, and however often (MessageRedactor.patterns: an encoder may escape
    more than json.dumps, in either case of hex digits, and some of the letters outside ASCII
    but not others: .NET's relaxed encoder escapes emoji only): its longest piece of ASCII
    that no encoder escapes, or, when it has none long enough to narrow anything (Cyrillic,
    Chinese), the empty string, which every row contains (the forget then decodes all of its
    owner's rows)."""
    plain = max(_ESCAPABLE_OR_OTHER.split(needle), key=len)
    return {plain.encode()} if len(plain.strip()) >= _MIN_PIECE else {b""}


def _escaped(needles: Iterable[str]) -> tuple[str, ...]:
    """The needles as the inside of a JSON string, where that differs from the needle,
    longest first (replaced before what they contain)."""
    return tuple(sorted({e for n in needles for e in _escapes(n) if e != n}, key=len,
                        reverse=True))


#: Keys whose string values are structure (roles, block types, ids), never redacted.
_STRUCTURE_KEYS = frozenset({"role", "type", "block_type", "id"})
#: Keys whose string values are a message's text: a source message loses all of them.
_TEXT_KEYS = frozenset({"content", "text"})


def redact_log_message(message: str, redactor: MessageRedactor, source: bool) -> str | None:
    """A conversation-log message (a JSON object as text) with a forgotten memory redacted,
    or None when it holds none of it (the rule of
    :class:`~memos_core.vault.base.ConversationLogs`): every string value but those under
    ``role``/``type``/``block_type``/``id`` has the memory's text replaced by
    :data:`FORGOTTEN`; with ``source`` (the memory was made from this message) every string
    under ``content`` or ``text`` becomes :data:`FORGOTTEN` whole. A message that is not
    JSON is redacted as one string."""
    try:
        data = json.loads(message)
    except ValueError:
        redacted = FORGOTTEN if source else redactor.text(message)
        return None if redacted == message else redacted
    new = _redact_json(data, redactor, source, None)
    # written as it was: an ASCII document may escape what UTF-8 cannot hold (a lone
    # surrogate pasted from a binary file), which the vault could not store unescaped
    return None if new is data else json.dumps(new, ensure_ascii=message.isascii())


def _redact_json(value: Any, redactor: MessageRedactor, source: bool, key: str | None) -> Any:
    """``value`` redacted; the same object when nothing changed."""
    if isinstance(value, str):
        if key in _STRUCTURE_KEYS:
            return value
        new = FORGOTTEN if source and key in _TEXT_KEYS else redactor.text(value)
        return value if new == value else new
    if isinstance(value, list):
        items = [_redact_json(v, redactor, source, key) for v in value]
        return value if all(a is b for a, b in zip(items, value)) else items
    if isinstance(value, dict):
        changed = {k: _redact_json(v, redactor, source, k) for k, v in value.items()}
        return value if all(changed[k] is value[k] for k in value) else changed
    return value


def _content(text: str) -> str | None:
    """The content of a chat message's memory text ("speaker: content" -> content)."""
    return text.split(": ", 1)[1] if ": " in text else None


#: While a forget runs its redactors: memory id -> the texts its earlier versions held (see
#: :func:`earlier_texts`).
_EARLIER: ContextVar[Mapping[str, tuple[str, ...]]] = ContextVar(
    "memos_forget_earlier", default=MappingProxyType({}))


@contextmanager
def earlier_texts(memory_id: str, texts: Sequence[str]) -> Iterator[None]:
    """Within this block, every :class:`MessageRedactor` of ``memory_id`` also redacts
    ``texts`` (what its earlier versions said: a conversation may still quote the memory as
    it was before an update). ``forget`` sets it around the redaction of the logs, so the
    hooks and redactors need no other argument and run once per memory."""
    token = _EARLIER.set({**_EARLIER.get(), memory_id: tuple(texts)})
    try:
        yield
    finally:
        _EARLIER.reset(token)
