"""A stand-in for a memory whose stored document is damaged (a byte that is not UTF-8, JSON
cut short), so that its owner can still forget it.

A damaged document cannot be trusted or parsed, but the vault keeps the fields filters need
in plain columns beside it (owner, agent, session, version, state, type, tags, readers,
times). :func:`stand_in` builds a :class:`~memos_core.cube.MemCube` from those columns plus
whatever of the document can still be read: decoded leniently (a damaged byte becomes
U+FFFD), parsed if it parses. The columns win where the two disagree: they name the owner
that access checks use.

Only a forget uses it (:meth:`memos_core.vault.sqlite.SQLiteVault.damaged_stand_in`); every
other read of the memory raises :class:`~memos_core.errors.CorruptDataError`.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from memos_core.cube import MemCube
from memos_core.vault.sqlite_text import damaged

__all__ = ["COLUMNS", "TEXT_PARTIAL", "TEXT_UNREADABLE", "TEXT_WHOLE", "stand_in"]

#: the text of a stand-in is the memory's whole text
TEXT_WHOLE = ("its stored record is damaged; its text was read whole (from the record or "
              "the copy its version history keeps)")

#: why the text of a stand-in is not the memory's text: none of it could be read
TEXT_UNREADABLE = ("its stored record is damaged and its text could not be read, so "
                   "conversation-log copies of it could not be searched for and redacted")
#: why the text of a stand-in is not the memory's text: a damaged byte or more in it
TEXT_PARTIAL = ("its stored record is damaged and its text was read only in part, so "
                "conversation-log copies of it were searched for that part only")

#: the plain columns :func:`stand_in` takes, in this order
COLUMNS = ("id", "user_id", "agent_id", "session_id", "version", "state", "type", "tags",
           "readers", "occurred_at", "created_at", "updated_at")


#: what a stand-in takes from a readable document (the columns give the rest)
_KEPT = {"text", "provenance", "metadata", "entities", "origin", "governance", "valid_from",
         "valid_to", "superseded_by"}


def _strings(value: Any) -> tuple[str, ...]:
    """A JSON list column's strings (none if the column does not parse)."""
    try:
        items = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return ()
    return tuple(v for v in items if isinstance(v, str)) if isinstance(items, list) else ()


def _parsed(text: str) -> dict[str, Any]:
    """``text`` as a JSON object; empty if it is none (cut short)."""
    try:
        parsed = json.loads(text)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _whole(text: str | None) -> dict[str, Any] | None:
    """The fields a stand-in takes from ``text`` if it is a whole, intact MemCube."""
    if text is None or damaged(text):
        return None
    try:
        return MemCube.model_validate(_parsed(text)).model_dump(include=_KEPT)
    except ValidationError:
        return None


def stand_in(row: dict[str, Any], doc: str, copy: str | None = None) -> tuple[MemCube, str]:
    """The memory of the columns ``row`` (the keys of :data:`COLUMNS`; its times as
    datetimes) and its damaged
    document ``doc`` (read with ``surrogateescape``: :mod:`.sqlite_text`), or ``copy`` --
    the same version's document in the version history -- where that one is intact; and
    what became of its text (:data:`TEXT_WHOLE`, :data:`TEXT_PARTIAL`,
    :data:`TEXT_UNREADABLE`).

    Raises:
        ValidationError: the columns themselves do not make a memory.
    """
    fields = _whole(copy)
    why = TEXT_WHOLE
    if fields is None:
        bad_bytes = damaged(doc)
        readable = doc.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        fields = _whole(readable) or {k: v for k, v in _parsed(readable).items()
                                      if k in ("text", "provenance")}
        recovered = fields.get("text")
        if not isinstance(recovered, str):
            fields, why = {"text": ""}, TEXT_UNREADABLE
        elif bad_bytes and "\ufffd" in recovered:
            why = TEXT_PARTIAL
    namespace = {"user_id": row["user_id"], "agent_id": row["agent_id"],
                 "session_id": row["session_id"]}
    try:
        cube = MemCube.model_validate({**fields, "namespace": namespace})
    except ValidationError:  # the provenance of a JSON object that is no MemCube
        cube = MemCube.model_validate({"text": fields["text"], "namespace": namespace})
    return MemCube.model_validate({
        **cube.model_dump(),
        "id": row["id"], "version": row["version"], "state": row["state"],
        "type": row["type"], "tags": _strings(row["tags"]),
        "occurred_at": row["occurred_at"], "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "governance": {**cube.governance.model_dump(), "readers": _strings(row["readers"])},
    }), why
