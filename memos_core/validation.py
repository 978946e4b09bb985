"""Argument checks shared by the facade, the CLI and the bundle importer.

Each check raises :class:`InvalidInputError` with a message that names the argument, what was
wrong and what is accepted. They run before anything is written.
"""

from __future__ import annotations

import math
import os
import sys
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

from memos_core.config import MAX_TEXT_BYTES
from memos_core.errors import InvalidInputError, MemoryNotFoundError


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` for an error message, cut to about ``limit`` characters (a bad value
    may be megabytes long). A cut one ends with the length of the value itself (characters
    of a str, bytes of a bytes, else of its ``repr``), not of the excerpt."""
    try:
        text = repr(value) if not isinstance(value, (str, bytes)) or len(value) <= 4 * limit \
            else repr(value[:limit])
    except ValueError:  # an int of more digits than str() converts
        return f"an {type(value).__name__} too large to show"
    if len(text) <= limit:
        return text
    size = (f"{len(value):,} characters" if isinstance(value, str)
            else f"{len(value):,} bytes" if isinstance(value, bytes)
            else f"{len(text):,} characters")
    return text[:limit] + f"... ({size})"


def shown_path(path: str | os.PathLike[str]) -> str:
    """``path`` fit to print or to keep in a record: a byte of its name that is not UTF-8
    (which Python holds as a lone surrogate, ``\\udcff``) written as its escape, ``\\xff``,
    so that a strict UTF-8 stream (stdout under ``en_US.UTF-8``, an audit record) takes it.
    A valid name is returned as it is."""
    return os.fsencode(path).decode(sys.getfilesystemencoding(), "backslashreplace")


T = TypeVar("T")


def check_bool(value: object, name: str) -> bool:
    """A real bool: ``"false"`` or ``0`` would otherwise be read by their truthiness."""
    if not isinstance(value, bool):
        raise InvalidInputError(f"{name} must be True or False, got {shown(value)}.")
    return value


def check_config(value: object, cls: type[T], name: str) -> T | None:
    """``value`` if it is None or a ``cls`` (a settings object), else
    :class:`InvalidInputError` naming the class to pass."""
    if value is None or isinstance(value, cls):
        return value
    raise InvalidInputError(f"{name} must be a {cls.__name__} (or None), got "
                            f"{type(value).__name__}.")


def check_protocol(value: object, protocol: type, name: str, members: str, hint: str = "") -> None:
    """Nothing if ``value`` is None or has what the runtime-checkable ``protocol`` needs, else
    :class:`InvalidInputError` naming the argument, what was given and ``members``, the
    protocol's attributes and methods as the message shows them (``hint``: what to do
    instead). Checked when the object is passed, not when it is first used: an embedder
    given as a model name failed deep in the store's open, an extractor at every write."""
    if value is None or isinstance(value, protocol):
        return
    raise InvalidInputError(f"{name} must be an object with {members}, got "
                            f"{type(value).__name__} {shown(value)}.{hint}")


def check_text(text: object, name: str = "text", *, allow_empty: bool = False) -> str:
    """A non-empty UTF-8 string of at most 1 MB (bytes are decoded as strict UTF-8); with
    ``allow_empty`` it may be empty or blank (a chat's earlier turn without text)."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(
                f"{name} is not valid UTF-8 (byte {exc.start}: {exc.reason}); decode it first."
            ) from None
    if not isinstance(text, str):
        raise InvalidInputError(f"{name} must be a str, got {type(text).__name__}.")
    if not allow_empty and not _visible(text):
        raise InvalidInputError(f"{name} is empty (or only spaces and invisible characters); "
                                "give some text.")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInputError(
            f"{name} contains unpaired surrogates and is not valid UTF-8 text."
        ) from None
    if size > MAX_TEXT_BYTES:
        raise InvalidInputError(
            f"{name} is {size:,} bytes; the limit is {MAX_TEXT_BYTES:,}. Split it into "
            "several memories or summarise it."
        )
    if "\x00" in text:
        raise InvalidInputError(f"{name} contains a NUL character.")
    return text


def _visible(text: str) -> bool:
    """Whether ``text`` has a character that is neither whitespace nor an invisible format
    character (zero-width space, joiners, direction marks, BOM)."""
    return any(not ch.isspace() and unicodedata.category(ch) != "Cf" for ch in text)


@overload
def check_name(value: object, name: str, *, optional: Literal[False] = False) -> str: ...
@overload
def check_name(value: object, name: str, *, optional: bool) -> str | None: ...
def check_name(value: object, name: str, *, optional: bool = False) -> str | None:
    """A user/agent/session id: a non-empty str of at most 256 characters."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(
            f"{name} must be a non-empty str, got {shown(value)}."
            + ("" if optional else f" Pass {name}=... on every call.")
        )
    if len(value) > 256:
        raise InvalidInputError(f"{name} must be at most 256 characters, got {len(value):,}.")
    bad = bad_char(value)
    if bad is not None:
        raise InvalidInputError(f"{name} holds {bad}.")
    return value


def check_id(memory_id: object) -> str:
    """A memory id: a UUID string. Anything else cannot exist, so it is 'not found'."""
    if not isinstance(memory_id, str):
        raise InvalidInputError(f"memory id must be a str, got {type(memory_id).__name__}.")
    try:
        return str(uuid.UUID(memory_id))
    except ValueError:
        raise MemoryNotFoundError(
            f"No memory with id {shown(memory_id)} (memory ids are UUIDs; see `list` or `search`)."
        ) from None


def distinct_ids(values: Iterable[str], name: str) -> tuple[str, ...]:
    """``values`` (memory ids) in canonical form (:func:`check_id`), refused with
    :class:`InvalidInputError` where two name the same memory: :func:`check_id` takes every
    spelling of a UUID (upper case, braces, ``urn:uuid:``, no hyphens), so a list meant to
    name each memory once compares the memories, not the strings."""
    seen: dict[str, str] = {}
    for value in values:
        mid = check_id(value)
        if mid in seen:
            raise InvalidInputError(
                f"{name} must be distinct ids: it names memory {mid} twice (as "
                f"{shown(seen[mid])} and {shown(value)}); list each memory once.")
        seen[mid] = value
    return tuple(seen)


def check_datetime(value: object, name: str) -> datetime | None:
    """None, an aware/naive datetime (naive is taken as UTC), or an ISO 8601 string."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInputError(
                f"{name}={shown(value)} is not an ISO 8601 date/time (e.g. 2024-05-07T13:00:00)."
            ) from None
    if not isinstance(value, datetime):
        raise InvalidInputError(f"{name} must be a datetime or ISO string, got {type(value).__name__}.")
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def check_k(k: object, name: str = "k", maximum: int = 1000) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= maximum:
        raise InvalidInputError(f"{name} must be an int between 1 and {maximum}, got {shown(k)}.")
    return k


def check_strs(values: object, name: str) -> tuple[str, ...]:
    """A list/tuple of strings (a lone str is taken as one item)."""
    if values is None:
        return ()
    if isinstance(values, str):
        values = (values,)
    if not isinstance(values, Iterable) or isinstance(values, Mapping):
        raise InvalidInputError(f"{name} must be a list of str, got {type(values).__name__}.")
    out = tuple(values)
    for v in out:
        if not isinstance(v, str) or not v.strip():
            raise InvalidInputError(f"{name} must contain non-empty str values, got {shown(v)}.")
        bad = bad_char(v)
        if bad is not None:
            raise InvalidInputError(f"a value of {name} holds {bad}.")
    return out


#: Most tags (or sensitivity tags) on one memory, and the longest one: tags are labels, and
#: every version and every index payload carries them all.
MAX_TAGS, MAX_TAG_CHARS = 256, 256


def check_tags(values: object, name: str = "tags") -> tuple[str, ...]:
    """:func:`check_strs`, at most :data:`MAX_TAGS` of at most :data:`MAX_TAG_CHARS`
    characters each."""
    out = check_strs(values, name)
    if len(out) > MAX_TAGS:
        raise InvalidInputError(f"{name} has {len(out):,} values; the limit is {MAX_TAGS}.")
    for v in out:
        if len(v) > MAX_TAG_CHARS:
            raise InvalidInputError(f"{name} values must be at most {MAX_TAG_CHARS} characters, "
                                    f"got one of {len(v):,}: {shown(v)}.")
    return out


def check_enums(cls: type, values: object, name: str) -> tuple[str, ...]:
    """:func:`check_strs` whose every value is one of the str enum ``cls``'s values."""
    return tuple(check_enum(cls, v, name).value for v in check_strs(values, name))


def bad_char(text: str) -> str | None:
    """What no store can keep in ``text``: ``"a NUL character"`` (PostgreSQL's text and JSON
    types cannot store one; the embedded store refuses it too, so both accept the same) or
    ``"an unpaired surrogate"`` (not UTF-8: a command-line argument holding a byte that is
    not UTF-8 decodes to one); None when it has neither."""
    if "\x00" in text:
        return "a NUL character"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "an unpaired surrogate (text that is not valid UTF-8)"
    return None


def unstorable(value: object) -> str | None:
    """:func:`bad_char` of the first str anywhere in ``value`` (nested dicts' keys and
    values, lists, tuples) that has one; None when none has. Iterative: a hostile depth
    cannot exhaust the stack."""
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            bad = bad_char(item)
            if bad is not None:
                return bad
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return None


#: Deepest nesting of dicts/lists accepted in metadata (SQLite's JSON functions stop at 1000).
MAX_METADATA_DEPTH = 32
#: Most bytes a memory's metadata may take written as JSON (UTF-8), as much as its text:
#: every new version -- a share, a revoke, a state change -- stores another copy of it.
MAX_METADATA_BYTES = MAX_TEXT_BYTES
#: Top-level metadata keys the library writes itself, refused in a caller's metadata.
#: ``source_forgotten`` is the forget cascade's flag on a summary made from a forgotten
#: memory (:data:`memos_core.governance.derived.FLAG_KEY`): the next new text of a memory
#: carrying it scrubs every earlier version.
RESERVED_METADATA_KEYS = frozenset({"source_forgotten"})
#: Integers the store keeps exactly: SQLite's 64-bit signed range.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _metadata_depth_ok(value: object) -> bool:
    """True if ``value`` nests dicts/lists at most :data:`MAX_METADATA_DEPTH` deep (iterative:
    no recursion, so a hostile depth cannot exhaust the stack)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    seen = 0
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Iterable[object] = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth > MAX_METADATA_DEPTH:
            return False
        seen += 1
        if seen > 1_000_000:  # a reference cycle; json.dumps names it below
            return True
        stack.extend((child, depth + 1) for child in children)
    return True


def check_metadata(metadata: object, *, reserved_ok: bool = False) -> dict[str, Any]:
    """A JSON-serialisable dict with str keys, nested at most :data:`MAX_METADATA_DEPTH`
    deep, with integers in the 64-bit range, of at most :data:`MAX_METADATA_BYTES` as JSON
    (UTF-8), naming none of :data:`RESERVED_METADATA_KEYS` -- unless ``reserved_ok``, where
    the caller checks them itself against what they stand for (an update, against the
    version it follows: :func:`memos_core.governance.derived.check_passed_back`; a bundle's
    version, by the bundle's rules)."""
    import json

    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidInputError(f"metadata must be a dict, got {type(metadata).__name__}.")
    if not _metadata_depth_ok(metadata):
        raise InvalidInputError(
            f"metadata is nested more than {MAX_METADATA_DEPTH} levels deep; flatten it."
        )
    try:
        written = json.dumps(metadata, allow_nan=False, default=_no_json, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"metadata must be JSON-serialisable: {exc}.") from None
    except RecursionError:
        raise InvalidInputError("metadata holds a reference cycle or is nested too deeply.") from None
    if not _ints_in_range(metadata):
        raise InvalidInputError(
            f"metadata holds an integer outside [{INT64_MIN}, {INT64_MAX}]; store it as a str."
        )
    if not all(isinstance(key, str) for key in metadata):
        raise InvalidInputError("metadata keys must be str.")
    bad = unstorable(metadata)
    if bad is not None:
        raise InvalidInputError(f"metadata holds {bad} (in a key or a value).")
    size = len(written.encode("utf-8"))  # (no unpaired surrogate: unstorable looked)
    if size > MAX_METADATA_BYTES:
        raise InvalidInputError(
            f"metadata is {size:,} bytes as JSON (UTF-8); the limit is {MAX_METADATA_BYTES:,}. "
            "Every version of the memory keeps a copy: store large content as memories of "
            "its own, or outside the store with a reference in the metadata.")
    reserved = sorted(RESERVED_METADATA_KEYS & metadata.keys())
    if reserved and not reserved_ok:
        raise InvalidInputError(reserved_key(reserved[0]))
    return dict(metadata)


def reserved_key(key: str) -> str:
    """The message that refuses a caller's metadata naming the reserved ``key``."""
    return (f"metadata key {key!r} is reserved: the library sets it (the forget cascade's "
            "flag on a summary made from a forgotten memory; see docs/governance.md). Name "
            "your key otherwise.")


def _no_json(value: object) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _ints_in_range(value: object) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bool):
            continue
        if isinstance(item, int):
            if not INT64_MIN <= item <= INT64_MAX:
                return False
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return True


def check_int(value: object, name: str, minimum: int = INT64_MIN, maximum: int = INT64_MAX) -> int:
    """An int (not a bool) in ``[minimum, maximum]`` (by default SQLite's 64-bit range)."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise InvalidInputError(f"{name} must be an int between {minimum} and {maximum}, got {shown(value)}.")
    return value


#: the longest duration a call takes (about 317 years): a TTL added to a date stays a date
MAX_SECONDS = 10**10


def check_positive_seconds(value: object, name: str) -> float | None:
    """None, or a number of seconds greater than zero and at most :data:`MAX_SECONDS`."""
    if value is None:
        return None
    # (NaN fails both comparisons; an int too large for a float compares as an int)
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0 < value <= MAX_SECONDS:
        raise InvalidInputError(
            f"{name} must be a finite number of seconds above 0 and at most {MAX_SECONDS:,} (about "
            f"317 years), or None; got {shown(value)}.")
    return float(value)


def check_enum(cls: type, value: object, name: str) -> Any:
    """A member of the str enum ``cls``, from a member or its value."""
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(m.value for m in cls)  # type: ignore[attr-defined]
        raise InvalidInputError(f"{name}={shown(value)} is not one of: {allowed}.") from None


def check_metadata_filter(metadata: object) -> dict[str, Any]:
    """A {key: scalar} equality filter over top-level metadata keys: any str key that JSON
    writes without an escape (no double quote, backslash or control character: SQLite's JSON
    path compares the key as written, so such a key could match nothing)."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidInputError(f"metadata filter must be a dict, got {type(metadata).__name__}.")
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise InvalidInputError(f"metadata filter key {shown(key)} must be a str.")
        if any(c in '"\\' or c < " " for c in key) or bad_char(key) is not None:
            raise InvalidInputError(
                f"metadata filter key {shown(key)} holds a double quote, a backslash or a control "
                "character; filter on keys without them (keep such keys out of metadata you filter on).")
        if not isinstance(value, (str, int, float, bool)):
            raise InvalidInputError(f"metadata filter value for {key!r} must be a scalar.")
        if isinstance(value, int) and not isinstance(value, bool) \
                and not INT64_MIN <= value <= INT64_MAX:
            raise InvalidInputError(
                f"metadata filter value for {key!r} is outside [{INT64_MIN}, {INT64_MAX}]; "
                "no stored integer can equal it."
            )
        if isinstance(value, float) and not math.isfinite(value):  # add refuses them too
            raise InvalidInputError(f"metadata filter value for {key!r} is {value}, which no "
                                    "stored value can equal (metadata holds finite numbers only).")
        if isinstance(value, str) and bad_char(value) is not None:
            raise InvalidInputError(f"metadata filter value for {key!r} holds {bad_char(value)}; "
                                    "no stored value can equal it.")
    return dict(metadata)


def check_path(value: object, name: str = "path") -> Path:
    """A filesystem path (str or os.PathLike): non-empty, without NUL characters."""
    if not isinstance(value, (str, os.PathLike)):
        raise InvalidInputError(f"{name} must be a path (str or PathLike), got {type(value).__name__}.")
    text = os.fspath(value)
    if not isinstance(text, str) or not text.strip() or "\x00" in text:
        raise InvalidInputError(f"{name} must be a non-empty path without NUL characters, got {shown(text)}.")
    return Path(text)
