"""Forget hooks: how stores outside the core (the framework integrations' conversation logs)
take part in ``MemOS.forget``.

A conversation log keeps the messages a conversation had, as the framework saw them; a
memory made from one of those messages is a copy of it. So when the memory is forgotten,
the log must lose that text too. The core cannot read a framework's log (it imports no
framework), so each log registers a hook with :meth:`MemOS.on_forget
<memos_core.memos.MemOS.on_forget>`; ``forget`` calls it, under the write lock and *before*
the vault's tombstone, with the memory as it was (text intact). The hook redacts the
messages that carry the memory and returns the :class:`~memos_core.results.DerivedForm` it
touched, which the receipt lists.

Logs whose adapter is not open (closed, or not constructed since a restart) are reached by
**file redactors**: each integration package declares one per file in the entry-point group
:data:`FILE_REDACTORS` (``memos_core.forget_hooks``), named by the file, relative to the data
directory, and resolving to ``redact(data_dir, memory) -> derived forms`` (a
:data:`FileRedactor`), which opens the file itself, redacts it with the same code as the live
hook and closes it. After the live hooks, :meth:`ForgetHooks.run` calls the redactor of
every such file that exists and that no live hook registered with ``path=`` covers: an
open adapter redacts through its own connection (and its own ``serde``), so a file is never
redacted twice nor written through two connections at once. An entry point is loaded only
when its file exists, so a forget imports no framework that never wrote to this directory.
Declaring one, in the integration's ``pyproject.toml``::

    [project.entry-points."memos_core.forget_hooks"]
    "checkpoints.sqlite3" = "langchain_memos.checkpoint:redact_files"

Order and failure: hooks and file redactors run before the tombstone, so one that raises
aborts the forget with the memory unchanged in the vault, index and graph (the error reaches
the caller, who may retry: redaction is idempotent); a file whose redactor cannot be loaded
(its package is broken or was removed) aborts it too, with a ``MemOSError`` that says so.
Logs redacted by earlier hooks stay redacted -- that removes only forgotten text.

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
import logging
import re
import sqlite3
import threading
import time
import unicodedata
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from enum import Enum
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

from memos_core.cube import MemCube
from memos_core.errors import InvalidInputError, MemOSError
from memos_core.results import DerivedForm
from memos_core.vault.base import Vault

logger = logging.getLogger("memos_core.governance")

#: What a redacted message says where the forgotten text was.
FORGOTTEN = "[forgotten]"
#: Shortest memory text or message content redacted where it occurs inside a longer text.
MIN_NEEDLE = 12

#: Entry-point group of the file redactors: name = a file in the data directory, object =
#: a :data:`FileRedactor`.
FILE_REDACTORS = "memos_core.forget_hooks"

#: Entry-point group of the vault redactors: name = a kind of integration storage in the
#: vault (``"checkpoints"``: :class:`~memos_core.vault.base.ThreadCheckpoints`), object =
#: a :data:`VaultRedactor`.
VAULT_REDACTORS = "memos_core.vault_redactors"

#: ``hook(memory) -> derived forms touched``; ``memory`` is the cube before the tombstone.
ForgetHook = Callable[[MemCube], Sequence[DerivedForm]]
#: ``redact(data_dir, memory) -> derived forms touched``: redacts the memory in its file under
#: ``data_dir`` (nothing if the file is missing), opening and closing the file itself.
FileRedactor = Callable[[Path, MemCube], Sequence[DerivedForm]]
#: ``redact(vault, memory) -> derived forms touched``: redacts the memory in the integration
#: storage of the vault it is named for (its values are opaque to the core).
VaultRedactor = Callable[[Vault, MemCube], Sequence[DerivedForm]]

#: Whether the vault holds anything of a kind of storage (a redactor is loaded only then).
_VAULT_KINDS: dict[str, Callable[[Vault], bool]] = {
    "checkpoints": lambda vault: bool(vault.cp_list(limit=1)),
}


class ForgetHooks:
    """The hooks of one ``MemOS``, in registration order, and the file redactors. Thread-safe.

    A bound method is held weakly (the hook goes away with its object, so a log that was
    dropped without being closed does not keep running); any other callable strongly.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hooks: list[tuple[int, Callable[[], ForgetHook | None], Path | str | None]] = []
        self._next = 0

    def add(self, hook: ForgetHook, path: Path | None = None, *,
            covers: str | None = None) -> Callable[[], None]:
        """Register ``hook``; returns a function that removes it (idempotent). ``path``: the
        file the hook redacts, whose file redactor then does not run while the hook lives;
        ``covers``: likewise, the name of the vault redactor it stands in for."""
        if not callable(hook):
            raise InvalidInputError(
                f"A forget hook must be callable as hook(memory) -> derived forms, got "
                f"{type(hook).__name__}."
            )
        ref: Callable[[], ForgetHook | None]
        if hasattr(hook, "__self__") and hasattr(hook, "__func__"):
            ref = weakref.WeakMethod(hook)
        else:
            ref = lambda: hook  # a strong reference with the weakref's interface
        target: Path | str | None = Path(path).resolve() if path is not None else covers
        with self._lock:
            key = self._next
            self._next += 1
            # a hook's owner collected without removing it (a checkpointer never closed)
            self._hooks = [h for h in self._hooks if h[1]() is not None]
            self._hooks.append((key, ref, target))

        def remove() -> None:
            with self._lock:
                self._hooks = [h for h in self._hooks if h[0] != key]

        return remove

    def __len__(self) -> int:
        with self._lock:
            return sum(1 for _, ref, _ in self._hooks if ref() is not None)

    def paths(self) -> set[Path]:
        """The files (resolved) that live hooks registered."""
        with self._lock:
            return {path for _, ref, path in self._hooks
                    if isinstance(path, Path) and ref() is not None}

    def covered_kinds(self) -> set[str]:
        """The vault redactor names that live hooks stand in for."""
        with self._lock:
            return {name for _, ref, name in self._hooks
                    if isinstance(name, str) and ref() is not None}

    def run(self, memory: MemCube, data_dir: Path | None = None,
            vault: Vault | None = None) -> list[DerivedForm]:
        """Call every live hook with ``memory``, then (with ``data_dir``) the file redactor of
        every file no live hook covers, then (with ``vault``) the vault redactor of every
        kind of integration storage the vault holds and no live hook covers; the forms they
        touched, in that order.

        An exception from a hook or redactor propagates (the caller aborts the forget). One
        that returns something other than a sequence of ``DerivedForm`` raises ``MemOSError``.
        """
        with self._lock:
            refs = [ref for _, ref, _ in self._hooks]
        forms: list[DerivedForm] = []
        for ref in refs:
            hook = ref()
            if hook is not None:
                forms.extend(_checked(hook, hook(memory)))
        if data_dir is not None:
            # the covered files are read after the hooks ran: a log closed meanwhile (its hook
            # found it closed and did nothing) is redacted from its file here
            covered = self.paths()
            for path, entry in file_redactors(data_dir):
                if path.resolve() not in covered:
                    redact = _load(entry, path)
                    forms.extend(_checked(redact, redact(Path(data_dir), memory)))
        if vault is not None:
            covered_kinds = self.covered_kinds()
            for entry in sorted(_declared(VAULT_REDACTORS), key=lambda e: e.name):
                holds = _VAULT_KINDS.get(entry.name)
                if entry.name in covered_kinds or holds is None or not holds(vault):
                    continue
                vault_redact = cast(VaultRedactor, _load(entry, Path(f"<vault {entry.name}>")))
                forms.extend(_checked(vault_redact, vault_redact(vault, memory)))
        return forms


#: The actions deferred until a memory's tombstone is committed, by memory id, in the forget
#: pass running in this thread (None: none runs).
_AFTER_PASS: ContextVar[dict[str, list[Callable[[], None]]] | None] = ContextVar(
    "forget_after_pass", default=None)


def after_pass(memory_id: str, action: Callable[[], None]) -> None:
    """Run ``action`` once the forget of ``memory_id`` running in this thread has committed
    its tombstone (every hook ran without error, and no later one aborted the forget),
    before a write waiting for the pass goes on; now if no forget runs. For a hook that
    remembers the forget (an adapter's recent forgets): an aborted forget is not kept."""
    deferred = _AFTER_PASS.get()
    if deferred is None:
        action()
    else:
        deferred.setdefault(memory_id, []).append(action)


class ForgetPasses:
    """A forget's passes over stored conversations (the core's log redaction and the hooks,
    :func:`memos_core.ops.forget.redact_logs`) and the adapters' writes racing them.

    An adapter's write looks for recent forgets (its late redaction), then commits. A forget
    whose pass runs in between misses the write, and the write missed the forget: the text
    lands after the forget. A sync write that may hold this lock across its commit does
    (:meth:`excluding`); any other write reads :meth:`ended` before it looks, and after its
    commit, if :meth:`overlapped` says a pass ran meanwhile, waits for the passes
    (:meth:`wait`) and redacts again what the forgets that began since may have missed.
    Thread-safe."""

    def __init__(self) -> None:
        self._running = threading.RLock()  # held by a pass
        self._count = threading.Lock()
        self._begun = 0
        self._ended = 0

    @contextmanager
    def running(self) -> Iterator[None]:
        """A forget (or several, ``forget_many``): its passes over the stored conversations
        and its tombstones. Re-entrant: a pass inside a running one is part of it. What the
        hooks deferred with :func:`after_pass` runs when :meth:`forgotten` says the memory's
        tombstone is committed; what is left when the outermost ends is dropped (a hook or
        the tombstone failed: the memory was not forgotten)."""
        with self._running:
            with self._count:
                self._begun += 1
            outer = _AFTER_PASS.get()
            token = _AFTER_PASS.set({}) if outer is None else None
            try:
                yield
            finally:
                if token is not None:
                    _AFTER_PASS.reset(token)
                with self._count:
                    self._ended += 1

    def forgotten(self, memory_id: str) -> None:
        """The tombstone of ``memory_id`` is committed (in a running pass): run what the
        hooks deferred for it."""
        deferred = _AFTER_PASS.get()
        for action in deferred.pop(memory_id, []) if deferred is not None else []:
            action()

    @contextmanager
    def excluding(self) -> Iterator[None]:
        """No pass runs while this is held (the caller must not wait for a write lock of
        the store inside: a pass runs under it)."""
        with self._running:
            yield

    def ended(self) -> int:
        """How many passes have ended: read before a write looks for recent forgets."""
        with self._count:
            return self._ended

    def overlapped(self, ended: int) -> bool:
        """Whether a pass ran since :meth:`ended` returned ``ended`` (one that had begun
        then, or began since)."""
        with self._count:
            return self._begun != ended

    def wait(self) -> None:
        """Return once no pass runs (at once when none does)."""
        with self._running:
            pass


def file_redactors(data_dir: Path) -> list[tuple[Path, EntryPoint]]:
    """(file, entry point) of every declared file redactor whose file exists in ``data_dir``,
    sorted by file; nothing is imported. An entry point whose name is not a plain file name
    is skipped with a warning (it cannot name a file of the data directory)."""
    found = []
    for entry in _declared(FILE_REDACTORS):
        name = entry.name
        if name in ("", ".", "..") or Path(name).name != name or "\\" in name:
            logger.warning("Ignoring forget redactor %s = %s: its name must be a file name in "
                           "the data directory.", name, entry.value)
            continue
        path = Path(data_dir) / name
        if path.is_file():
            found.append((path, entry))
    return sorted(found, key=lambda item: (item[0].name, item[1].value))


#: (group, lookup) -> (when read, entry points): reading the installed packages' metadata
#: takes about 5 ms, and every forget asks twice
_DECLARED: dict[tuple[str, object], tuple[float, tuple[EntryPoint, ...]]] = {}
#: how long a reading serves (a package installed into a running process is seen after it)
DECLARED_TTL_S = 60.0


def _declared(group: str) -> tuple[EntryPoint, ...]:
    """The entry points of ``group``, read at most once per :data:`DECLARED_TTL_S`."""
    key = (group, entry_points)  # a test's stand-in for entry_points is read anew
    now = time.monotonic()
    cached = _DECLARED.get(key)
    if cached is None or now - cached[0] > DECLARED_TTL_S:
        cached = _DECLARED[key] = (now, tuple(entry_points(group=group)))
    return cached[1]


def _load(entry: EntryPoint, path: Path) -> FileRedactor:
    try:
        redact = entry.load()
    except Exception as exc:  # an import error of a broken or half-removed package
        raise MemOSError(
            f"Cannot redact {path}: its forget redactor {entry.value} does not load ({exc}). "
            "Reinstall the package that declares it, or delete the file, then forget again."
        ) from exc
    if not callable(redact):
        raise MemOSError(
            f"Cannot redact {path}: the forget redactor {entry.value} is not callable as "
            "redact(data_dir, memory). Fix or reinstall the package that declares it."
        )
    return redact  # type: ignore[no-any-return]


def _checked(hook: object, touched: Sequence[DerivedForm] | None) -> list[DerivedForm]:
    forms = list(touched or ())
    if not all(isinstance(f, DerivedForm) for f in forms):
        raise MemOSError(
            f"Forget hook {hook!r} returned {forms!r:.200}; it must return a list "
            "of memos_core.results.DerivedForm."
        )
    return forms


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


def truncate_wal(db: sqlite3.Connection, path: Path) -> None:
    """Copy the WAL of ``db`` into its file and truncate the WAL to zero bytes, so page
    images written before a redaction leave the disk. The connection should have
    ``PRAGMA secure_delete=ON`` (freed space zeroed) and no open transaction.

    Raises:
        MemOSError: another connection is reading the file, so the WAL could not be
            truncated; retry the forget when it is idle.
    """
    busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if busy:
        raise MemOSError(
            f"Could not truncate the WAL of {path}: another connection is reading it. Finish "
            "or close that reader and forget again (forgetting again is safe)."
        )


def open_log(path: Path) -> sqlite3.Connection:
    """A connection to the existing SQLite file ``path``, for a file redactor: it never creates
    the file, runs in autocommit mode (transactions are explicit), has ``secure_delete`` on
    (freed space zeroed) and waits up to 5 s for another writer. The caller closes it."""
    db = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=rw", uri=True,
                         isolation_level=None, timeout=5.0, check_same_thread=False)
    db.execute("PRAGMA secure_delete=ON")
    wal = Path(f"{path}-wal")
    if wal.is_file() and wal.stat().st_size > 0:
        # a redactor killed before its truncation left the old pages there
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return db
