"""Conversation logs in the SQLite vault (a mixin of :class:`~memos_core.vault.sqlite.SQLiteVault`).

Table ``conversation_log``: one row per message, in the order appended (``seq``), with its
queue ``(user_id, log_id)``, message id, status (``active`` / ``archived``) and the message
as JSON text. Every method is one transaction (``BEGIN IMMEDIATE`` for writes).

A call that deletes messages (:meth:`~SQLiteLogMixin.log_delete`, ``log_delete_at``,
``log_replace``, ``log_take_oldest`` without archiving) truncates the WAL after its commit,
as a forget does: ``secure_delete`` zeroes the deleted text in the file, but the WAL keeps
the pages written before (the text in them) until it is truncated (by a forget, or at
close), which in a long-running process may be hours away. A chat-store delete is then gone
from the disk when it returns, unless another connection is reading the file: the
truncation does not wait for it (it is logged, and left to the next forget or close).
Deletes of messages are rare (a user clearing a conversation), so one checkpoint each costs
little; appends and archiving, the common writes, do not pay it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from memos_core.cube import utcnow
from memos_core.errors import InvalidInputError
from memos_core.vault.base import LogRow

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversation_log (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    TEXT NOT NULL,
    log_id     TEXT NOT NULL,
    message_id TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('active', 'archived')),
    message    TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS conversation_log_queue
    ON conversation_log (user_id, log_id, status, seq);
"""

STATUSES = ("active", "archived")


def _where(status: str | None) -> tuple[str, tuple[str, ...]]:
    if status is None:
        return "user_id = ? AND log_id = ?", ()
    if status not in STATUSES:
        raise InvalidInputError(f"status must be one of {STATUSES} or None, got {status!r}.")
    return "user_id = ? AND log_id = ? AND status = ?", (status,)


class SQLiteLogMixin:
    """Conversation-log storage; uses the vault's ``_tx`` and ``_query``."""

    _tx: Any
    _query: Any
    _truncate_after_delete: Callable[[int, str], None]

    def _deleted(self, count: int) -> None:
        """After a commit that deleted ``count`` messages: truncate the WAL (see the module
        docstring)."""
        self._truncate_after_delete(count, "conversation messages")

    @staticmethod
    def _log_insert(db: sqlite3.Connection, user_id: str, log_id: str, rows: Sequence[LogRow],
                    status: str) -> None:
        _where(status)
        now = utcnow().timestamp()
        db.executemany(
            "INSERT INTO conversation_log (user_id, log_id, message_id, status, message, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?)",
            [(user_id, log_id, mid, status, data, now) for mid, data in rows])

    def log_append(self, user_id: str, log_id: str, rows: Sequence[LogRow], status: str) -> None:
        with self._tx() as db:
            self._log_insert(db, user_id, log_id, rows, status)

    def log_read(self, user_id: str, log_id: str, status: str | None, limit: int | None = None,
                 offset: int = 0) -> list[LogRow]:
        where, extra = _where(status)
        rows = self._query(
            f"SELECT message_id, message FROM conversation_log WHERE {where} ORDER BY seq "
            "LIMIT ? OFFSET ?", (user_id, log_id, *extra, -1 if limit is None else limit,
                                 offset or 0))
        return [(r[0], r[1]) for r in rows]

    def log_count(self, user_id: str, log_id: str, status: str | None) -> int:
        where, extra = _where(status)
        return int(self._query(f"SELECT count(*) FROM conversation_log WHERE {where}",
                               (user_id, log_id, *extra))[0][0])

    def log_ids(self, user_id: str) -> list[str]:
        rows = self._query("SELECT log_id FROM conversation_log WHERE user_id = ? "
                           "GROUP BY log_id ORDER BY min(seq)", (user_id,))
        return [r[0] for r in rows]

    def log_replace(self, user_id: str, log_id: str, rows: Sequence[LogRow], status: str,
                    clear: str | None) -> None:
        where, extra = _where(clear)
        with self._tx() as db:
            deleted = db.execute(f"DELETE FROM conversation_log WHERE {where}",
                                 (user_id, log_id, *extra)).rowcount
            self._log_insert(db, user_id, log_id, rows, status)
        self._deleted(deleted)

    def log_delete(self, user_id: str, log_id: str, status: str | None) -> list[LogRow]:
        where, extra = _where(status)
        with self._tx() as db:
            rows = db.execute(f"SELECT message_id, message FROM conversation_log WHERE {where} "
                              "ORDER BY seq", (user_id, log_id, *extra)).fetchall()
            db.execute(f"DELETE FROM conversation_log WHERE {where}", (user_id, log_id, *extra))
        self._deleted(len(rows))
        return [(r[0], r[1]) for r in rows]

    def log_delete_at(self, user_id: str, log_id: str, idx: int,
                      status: str | None) -> LogRow | None:
        where, extra = _where(status)
        with self._tx() as db:
            seqs = [r[0] for r in db.execute(
                f"SELECT seq FROM conversation_log WHERE {where} ORDER BY seq",
                (user_id, log_id, *extra))]
            if not -len(seqs) <= idx < len(seqs):
                return None
            seq = seqs[idx]
            row = db.execute("SELECT message_id, message FROM conversation_log WHERE seq = ?",
                             (seq,)).fetchone()
            db.execute("DELETE FROM conversation_log WHERE seq = ?", (seq,))
        self._deleted(1)
        return (row[0], row[1])

    def log_take_oldest(self, user_id: str, log_id: str, n: int, *,
                        archive: bool) -> list[LogRow]:
        with self._tx() as db:
            rows = db.execute(
                "SELECT seq, message_id, message FROM conversation_log WHERE user_id = ? AND "
                "log_id = ? AND status = 'active' ORDER BY seq LIMIT ?",
                (user_id, log_id, n)).fetchall()
            seqs = [(r[0],) for r in rows]
            if archive:
                db.executemany("UPDATE conversation_log SET status = 'archived' WHERE seq = ?",
                               seqs)
            else:
                db.executemany("DELETE FROM conversation_log WHERE seq = ?", seqs)
        if not archive:
            self._deleted(len(rows))
        return [(r[1], r[2]) for r in rows]

    def log_redact(self, user_ids: Sequence[str], contains: Sequence[str],
                   message_ids: Sequence[str],
                   rewrite: Callable[[str, str], str | None]) -> list[tuple[str, str]]:
        conditions = ["instr(message, ?) > 0"] * len(contains)
        if message_ids:
            conditions.append(f"message_id IN ({','.join('?' * len(message_ids))})")
        if not conditions or not user_ids:
            return []
        users = ",".join("?" * len(user_ids))
        changed: set[tuple[str, str]] = set()
        with self._tx() as db:
            rows = db.execute(
                "SELECT seq, user_id, log_id, message_id, message FROM conversation_log "
                f"WHERE user_id IN ({users}) AND ({' OR '.join(conditions)})",
                (*user_ids, *contains, *message_ids)).fetchall()
            for seq, user_id, log_id, message_id, data in rows:
                new = rewrite(message_id, data)
                if new is not None and new != data:
                    db.execute("UPDATE conversation_log SET message = ? WHERE seq = ?", (new, seq))
                    changed.add((user_id, log_id))
        return sorted(changed)
