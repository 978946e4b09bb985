"""Argument checks shared by the facade, the CLI and the bundle importer.

Each check raises :class:`InvalidInputError` with a message that names the argument, what was
wrong and what is accepted. They run before anything is written.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, overload

from memos_core.config import MAX_TEXT_BYTES
from memos_core.errors import InvalidInputError, MemoryNotFoundError


def check_text(text: object, name: str = "text") -> str:
    """A non-empty UTF-8 string of at most 1 MB (bytes are decoded as strict UTF-8)."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(
                f"{name} is not valid UTF-8 (byte {exc.start}: {exc.reason}); decode it first."
            ) from None
    if not isinstance(text, str):
        raise InvalidInputError(f"{name} must be a str, got {type(text).__name__}.")
    if not text.strip():
        raise InvalidInputError(f"{name} is empty; a memory needs some text.")
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
            f"{name} must be a non-empty str, got {value!r}."
            + ("" if optional else f" Pass {name}=... on every call.")
        )
    if len(value) > 256 or "\x00" in value:
        raise InvalidInputError(f"{name} must be at most 256 characters without NUL.")
    return value


def check_id(memory_id: object) -> str:
    """A memory id: a UUID string. Anything else cannot exist, so it is 'not found'."""
    if not isinstance(memory_id, str):
        raise InvalidInputError(f"memory id must be a str, got {type(memory_id).__name__}.")
    try:
        return str(uuid.UUID(memory_id))
    except ValueError:
        raise MemoryNotFoundError(
            f"No memory with id {memory_id!r} (memory ids are UUIDs; see `list` or `search`)."
        ) from None


def check_datetime(value: object, name: str) -> datetime | None:
    """None, an aware/naive datetime (naive is taken as UTC), or an ISO 8601 string."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInputError(
                f"{name}={value!r} is not an ISO 8601 date/time (e.g. 2024-05-07T13:00:00)."
            ) from None
    if not isinstance(value, datetime):
        raise InvalidInputError(f"{name} must be a datetime or ISO string, got {type(value).__name__}.")
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def check_k(k: object, name: str = "k", maximum: int = 1000) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= maximum:
        raise InvalidInputError(f"{name} must be an int between 1 and {maximum}, got {k!r}.")
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
        if not isinstance(v, str) or not v:
            raise InvalidInputError(f"{name} must contain non-empty str values, got {v!r}.")
    return out


def check_metadata(metadata: object) -> dict[str, Any]:
    """A JSON-serialisable dict with str keys."""
    import json

    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidInputError(f"metadata must be a dict, got {type(metadata).__name__}.")
    try:
        json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"metadata must be JSON-serialisable: {exc}.") from None
    if not all(isinstance(key, str) for key in metadata):
        raise InvalidInputError("metadata keys must be str.")
    return dict(metadata)


def check_enum(cls: type, value: object, name: str) -> Any:
    """A member of the str enum ``cls``, from a member or its value."""
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(m.value for m in cls)  # type: ignore[attr-defined]
        raise InvalidInputError(f"{name}={value!r} is not one of: {allowed}.") from None


def check_metadata_filter(metadata: object) -> dict[str, Any]:
    """A {key: scalar} equality filter over metadata; keys are letters, digits, _ or -."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidInputError(f"metadata filter must be a dict, got {type(metadata).__name__}.")
    for key, value in metadata.items():
        if not isinstance(key, str) or not key.replace("_", "").replace("-", "").isalnum():
            raise InvalidInputError(f"metadata filter key {key!r} must be letters, digits, _ or -.")
        if not isinstance(value, (str, int, float, bool)):
            raise InvalidInputError(f"metadata filter value for {key!r} must be a scalar.")
    return dict(metadata)


def check_path(value: object, name: str = "path") -> Path:
    """A filesystem path (str or os.PathLike): non-empty, without NUL characters."""
    if not isinstance(value, (str, os.PathLike)):
        raise InvalidInputError(f"{name} must be a path (str or PathLike), got {type(value).__name__}.")
    text = os.fspath(value)
    if not isinstance(text, str) or not text.strip() or "\x00" in text:
        raise InvalidInputError(f"{name} must be a non-empty path without NUL characters, got {text!r}.")
    return Path(text)
