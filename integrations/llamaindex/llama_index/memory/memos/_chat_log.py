"""The old chat history file, ``<data_dir>/chat_history.sqlite3``, until it is moved.

The chat stores now keep their history in the MemOS vault (the core's conversation logs,
which ``MemOS.forget`` redacts itself). A data directory written by an earlier version still
has this file until a chat store is first opened on it (the core then moves every message
into the vault and deletes the file: ``memos_core.integration.legacy``). Until then,
:func:`redact_files`, this package's file redactor (entry point ``memos_core.forget_hooks``),
redacts a forgotten memory in it: the messages holding the memory -- the one it was made
from (its source message id is the row's message id) and any other that contains its text,
in the owner's queues and those of stores without a user -- read ``[forgotten]``;
``secure_delete`` is on and the WAL is truncated afterwards.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from memos_core import MemCube
from memos_core.integration import CHAT_FILE, DerivedForm, MessageRedactor, open_log, truncate_wal

from llama_index.memory.memos._convert import redact_message

FILENAME = CHAT_FILE


def redact_files(data_dir: Path, memory: MemCube) -> list[DerivedForm]:
    """The file redactor (entry point ``memos_core.forget_hooks``, ``chat_history.sqlite3``):
    :func:`_redact_db` on ``<data_dir>/chat_history.sqlite3`` through a connection of its own;
    nothing if the file does not exist. ``MemOS.forget`` calls it only when no open log of
    that ``MemOS`` registered the file."""
    path = Path(data_dir) / FILENAME
    if not path.is_file():
        return []
    db = open_log(path)
    try:
        found = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'chat_messages'")
        if found.fetchone() is None:  # an empty file: no messages to redact
            return []
        return _redact_db(db, path, memory)
    finally:
        db.close()


def _redact_db(db: sqlite3.Connection, path: Path, memory: MemCube) -> list[DerivedForm]:
    """Redact ``memory`` in the queues of its owner and of stores without a user (one
    transaction; another user's conversation is theirs), then truncate the WAL; one form per
    queue changed (id ``"<file>:<user>/<key>"``). ``db`` is in autocommit mode."""
    redactor = MessageRedactor(memory)
    patterns = [p.decode() for p in redactor.patterns()]
    ids = sorted(redactor.source_ids)
    where = " OR ".join(["instr(message, ?) > 0"] * len(patterns)
                        + ([f"message_id IN ({','.join('?' * len(ids))})"] if ids else []))
    if not where:
        return []
    changed: set[tuple[str, str]] = set()
    db.execute("BEGIN IMMEDIATE")
    try:
        rows = db.execute(
            "SELECT seq, user_id, key, message_id, message FROM chat_messages"
            f" WHERE user_id IN (?, '') AND ({where})",
            (memory.user_id, *patterns, *ids),
        ).fetchall()
        for seq, user_id, key, message_id, data in rows:
            new = redact_message(data, redactor, redactor.is_source(message_id))
            if new is not None:
                db.execute("UPDATE chat_messages SET message = ? WHERE seq = ?", (new, seq))
                changed.add((user_id, key))
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    if changed:
        truncate_wal(db, path)
    return [DerivedForm(kind="conversation_log", id=f"{FILENAME}:{user}/{key}",
                        action="redacted") for user, key in sorted(changed)]
