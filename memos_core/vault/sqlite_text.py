"""Stored text that is not valid UTF-8 in the SQLite vault (a damaged byte on disk).

SQLite does not check that TEXT is UTF-8, and ``PRAGMA integrity_check`` does not either, so
a vault with one damaged byte in a memory's document or an audit record's hash opens; the
Python driver then fails the whole query that reads it with ``OperationalError: Could not
decode to UTF-8 column ... with text '...'``, a message that quotes the damaged record whole.

Two ways out, both used by :class:`~memos_core.vault.sqlite.SQLiteVault`:

* Where the vault can name the damaged record (a memory, an audit record), it reads with
  :func:`lenient_rows` after that error: text is decoded with ``surrogateescape``, so every
  row arrives, and :func:`damaged` finds the escaped bytes in the damaged one. Valid text
  decodes exactly as with the default decoder. No valid stored text holds a surrogate (the
  driver cannot encode an unpaired one, and the API refuses them on input), so a surrogate
  read back always means a damaged byte.
* Elsewhere :func:`undecodable` recognises the driver's error, which the vault turns into a
  :class:`~memos_core.errors.CorruptDataError` naming the column, never the text.

The default decoder stays in place for every other read: it runs in C, and a Python
``text_factory`` on every cell would slow the common, undamaged case.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["damaged", "damaged_row", "lenient_rows", "shown", "undecodable"]

#: surrogate code points: ``surrogateescape`` maps each undecodable byte to U+DC80..U+DCFF
_SURROGATE = re.compile(r"[\ud800-\udfff]")
#: the driver's message (CPython's ``_sqlite/cursor.c``) for text that is not UTF-8
_DRIVER_ERROR = re.compile(r"Could not decode to UTF-8 column '(.*?)' with text '", re.DOTALL)


def undecodable(exc: BaseException) -> str | None:
    """The column named by the driver's error for stored text that is not valid UTF-8, or
    None when ``exc`` is another error. Only the column's name (from the query, never from
    the data) is returned: the rest of the message is the damaged text."""
    if not isinstance(exc, sqlite3.OperationalError):
        return None
    match = _DRIVER_ERROR.match(str(exc))
    return match.group(1) if match else None


def damaged(text: str) -> bool:
    """Whether ``text``, read by :func:`lenient_rows`, held bytes that are not UTF-8."""
    return not text.isascii() and _SURROGATE.search(text) is not None


def damaged_row(row: Iterable[Any]) -> bool:
    """Whether any text value of ``row`` is :func:`damaged`."""
    return any(isinstance(value, str) and damaged(value) for value in row)


def shown(text: str) -> str:
    """``text`` fit for a message: a damaged byte as its ``\\udcXX`` escape (a surrogate
    cannot be written to a log or a terminal)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _decode_lenient(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def lenient_rows(db: sqlite3.Connection, sql: str,
                 params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
    """The rows of ``sql``, with text that is not valid UTF-8 decoded with surrogate escapes
    instead of failing the query. The caller holds ``db`` for itself (the vault's lock): the
    decoder is the connection's until this returns."""
    db.text_factory = _decode_lenient
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.text_factory = str
