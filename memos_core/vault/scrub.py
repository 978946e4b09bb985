"""Scrubbing forgotten content out of stored versions, and the schema 1 -> 2 upgrade of it."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from typing import Any

from memos_core.cube import MemCube, State
from memos_core.errors import InvalidInputError

_LEGACY_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def scrub(cube: MemCube) -> MemCube:
    """A copy of ``cube`` that keeps no forgotten content: text empty; entities, tags,
    metadata, spans and sensitivity tags cleared; ``scrubbed=True``.

    Nothing derived from the text is kept either: a digest of a short secret (a PIN, a
    passport number) gives the text back to anyone who can guess candidates and hash them.
    The forget receipt hands the caller the text's SHA-256 once; the store keeps none.
    Whether a version was scrubbed is read from its ``scrubbed`` flag, never guessed from its
    text. Idempotent on flagged versions.
    """
    if cube.scrubbed:
        return cube
    return cube.model_copy(
        update={
            "text": "",
            "entities": (),
            "tags": (),
            "metadata": {},
            "provenance": cube.provenance.model_copy(update={"spans": ()}),
            "governance": cube.governance.model_copy(update={"sensitivity": ()}),
            "scrubbed": True,
        }
    )


def migrate_scrub_flags(db: sqlite3.Connection) -> None:
    """Schema 1 -> 2: set the ``scrubbed`` flag on the versions of forgotten memories.

    Schema 1 marked nothing; its scrub wrote ``sha256:<64 hex>`` texts with no entities,
    tags or metadata, so a version of a forgotten memory in exactly that form is flagged as
    it is, and any other (one that scrub skipped because its text began with ``sha256:``) is
    scrubbed now. Live memories are left alone: none of their versions was scrubbed.
    """
    deleted = [r[0] for r in db.execute("SELECT id FROM memories WHERE state=?", (State.DELETED.value,))]
    for mid in deleted:
        rows = db.execute("SELECT version, doc FROM versions WHERE id=?", (mid,)).fetchall()
        for vid, doc in rows:
            cube = MemCube.model_validate_json(doc)
            if cube.scrubbed:
                continue
            legacy = (_LEGACY_DIGEST.fullmatch(cube.text) and not cube.entities and not cube.tags
                      and not cube.metadata)
            fixed = cube.model_copy(update={"scrubbed": True}) if legacy else scrub(cube)
            db.execute("UPDATE versions SET doc=? WHERE id=? AND version=?",
                       (fixed.model_dump_json(exclude={"usage"}), mid, vid))
            current = db.execute("SELECT version FROM memories WHERE id=?", (mid,)).fetchone()
            if current and current[0] == vid:
                db.execute("UPDATE memories SET doc=?, tags='[]', entities='[]' WHERE id=?",
                           (fixed.model_dump_json(exclude={"usage"}), mid))


def migrate_drop_digests(db: sqlite3.Connection) -> int:
    """Schema 2 -> 3: empty the text of every scrubbed version and tombstone. Schema 2 kept
    ``sha256:<hex of the text>`` there, from which a short secret can be recovered by
    hashing guesses. Returns how many rows were rewritten (``secure_delete`` zeroes the old
    bytes; the caller truncates the WAL)."""
    count = 0
    for table, key in (("versions", "id, version"), ("memories", "id")):
        rows = db.execute(f"SELECT {key}, doc FROM {table} WHERE json_extract(doc, '$.scrubbed') "
                          "AND json_extract(doc, '$.text') != ''").fetchall()
        for *ids, doc in rows:
            cube = MemCube.model_validate_json(doc).model_copy(update={"text": ""})
            where = " AND ".join(f"{k.strip()}=?" for k in key.split(","))
            db.execute(f"UPDATE {table} SET doc=? WHERE {where}",
                       (cube.model_dump_json(exclude={"usage"}), *ids))
            count += 1
    return count


def rewrite_below(db: Any, mark: str, memory_id: str, below: int,
                  rewrite: Callable[[MemCube], MemCube | None], *, doc: str = "doc") -> int:
    """``redact_versions`` (and ``put_version``'s ``rewrite_earlier``) inside a transaction
    of either vault (``mark``: its placeholder; ``doc``: the SQL that reads a version's
    JSON): each version of ``memory_id`` below ``below`` rewritten in place where
    ``rewrite`` changes it; returns how many."""
    rows = db.execute(f"SELECT version, {doc} FROM versions WHERE id={mark} AND version<{mark}",
                      (memory_id, below)).fetchall()
    return sum(rewrite_version(db, mark, memory_id, v, d, rewrite) for v, d in rows)


def rewrite_version(db: Any, mark: str, memory_id: str, version: int, doc: str,
                    rewrite: Callable[[MemCube], MemCube | None]) -> bool:
    """One step of :func:`rewrite_below`: the version rewritten in place if ``rewrite``
    changes it."""
    old = MemCube.model_validate_json(doc)
    new = rewrite(old)
    if new is None:
        return False
    if (new.id, new.version) != (memory_id, version):
        raise InvalidInputError(f"a redacted version must keep its id and number, got "
                                f"{new.id} v{new.version} for {memory_id} v{version}.")
    db.execute(f"UPDATE versions SET doc={mark} WHERE id={mark} AND version={mark}",
               (new.model_dump_json(exclude={"usage"}), memory_id, version))
    return True
