"""The chat history file: short-term message queues, one per (user, key), in SQLite.

Message history is conversation state, not long-term memory, so it does not go into the
vault as MemCubes; it lives beside the vault in ``<data_dir>/chat_history.sqlite3`` and
shares the data directory's lifetime (and its lock: only one process opens a data dir).

Each row is one message: its queue (``user_id``, ``key``), a message id, a status
(``active`` while in the short-term queue, ``archived`` once flushed to memory blocks) and
the message as JSON. Rows are ordered by an autoincrement sequence number. The file is in
WAL mode; one connection per :class:`ChatLog`, serialised by a lock, so a log may be shared
by threads (llama-index runs sync chat-store methods in worker threads). Every mutation is
one ``BEGIN IMMEDIATE`` transaction, so a failed call changes nothing.

Forgetting: ``MemOS.forget`` reaches the file (see :mod:`memos_core.governance.forget_hooks`):
the messages holding the forgotten memory -- the one it was made from (its source message id
is the row's message id) and any other that contains its text, in the owner's queues and
those of stores without a user -- are redacted in place (the text becomes ``[forgotten]``;
the row, its role and position stay). ``secure_delete`` is on and the WAL is truncated
afterwards. While a log is open this is its forget hook (:meth:`ChatLog.forget`, its
connection); otherwise :func:`redact_files`, this package's file redactor (entry point
``memos_core.forget_hooks``), opens the file and runs the same :func:`_redact_db`.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from memos_core import MemCube, MemOS
from memos_core.governance.forget_hooks import MessageRedactor, open_log, truncate_wal
from memos_core.results import DerivedForm

from llama_index.memory.memos._convert import redact_message

FILENAME = "chat_history.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chat_messages (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    TEXT NOT NULL,
    key        TEXT NOT NULL,
    message_id TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('active', 'archived')),
    message    TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chat_messages_queue ON chat_messages (user_id, key, status, seq);
"""

#: One stored message: (message id, message JSON).
Row = tuple[str, str]


class ChatLog:
    """Message queues in ``<mos.data_dir>/chat_history.sqlite3``. Thread-safe; opens the file
    on first use.

    ``status`` arguments are ``'active'``, ``'archived'`` or ``None`` (every status).
    Callers validate their arguments; this class only stores and orders rows. From
    construction to :meth:`close` (and again from the next call on) :meth:`forget` is one of
    ``mos``'s forget hooks.
    """

    def __init__(self, mos: MemOS) -> None:
        self.path = mos.data_dir / FILENAME
        self._mos = mos
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._unhook = mos.on_forget(self.forget, path=self.path)

    # -- connection ---------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._unhook is None:  # reopened after close(): forgets reach this file again
            self._unhook = self._mos.on_forget(self.forget, path=self.path)
        if self._db is None:
            db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=5.0
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable across process crashes
            db.execute("PRAGMA secure_delete=ON")  # deleted and redacted text is zeroed on disk
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    @staticmethod
    @contextmanager
    def _begin(db: sqlite3.Connection, write: bool) -> Iterator[sqlite3.Connection]:
        db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @contextmanager
    def _tx(self, write: bool) -> Iterator[sqlite3.Connection]:
        with self._lock, self._begin(self._connect(), write) as db:
            yield db

    def close(self) -> None:
        """Close the connection and leave ``MemOS.forget`` (later forgets redact the file
        through :func:`redact_files`); a later call reopens both. Idempotent."""
        with self._lock:
            if self._unhook is not None:
                self._unhook()
                self._unhook = None
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- forgetting ---------------------------------------------------------------------

    def forget(self, memory: MemCube) -> list[DerivedForm]:
        """The forget hook: :func:`_redact_db` through this log's connection. A closed log
        does nothing (the file redactor, which runs after the hooks, takes over)."""
        with self._lock:
            if self._unhook is None:
                return []
            return _redact_db(self._connect(), self.path, memory)

    # -- reads --------------------------------------------------------------------------

    @staticmethod
    def _where(status: str | None) -> tuple[str, tuple[str, ...]]:
        if status is None:
            return "user_id = ? AND key = ?", ()
        return "user_id = ? AND key = ? AND status = ?", (status,)

    def read(
        self, user_id: str, key: str, status: str | None,
        limit: int | None = None, offset: int | None = None,
    ) -> list[Row]:
        """Rows of a queue, oldest first; ``limit``/``offset`` page through them."""
        where, extra = self._where(status)
        sql = f"SELECT message_id, message FROM chat_messages WHERE {where} ORDER BY seq"
        sql += " LIMIT ? OFFSET ?"
        page = (-1 if limit is None else limit, offset or 0)
        with self._tx(write=False) as db:
            return [tuple(r) for r in db.execute(sql, (user_id, key, *extra, *page))]

    def count(self, user_id: str, key: str, status: str | None) -> int:
        where, extra = self._where(status)
        with self._tx(write=False) as db:
            row = db.execute(f"SELECT count(*) FROM chat_messages WHERE {where}",
                             (user_id, key, *extra)).fetchone()
        return int(row[0])

    def keys(self, user_id: str) -> list[str]:
        """Keys with at least one message, in order of their first message."""
        with self._tx(write=False) as db:
            rows = db.execute(
                "SELECT key FROM chat_messages WHERE user_id = ? GROUP BY key ORDER BY min(seq)",
                (user_id,),
            )
            return [r[0] for r in rows]

    # -- writes -------------------------------------------------------------------------

    @staticmethod
    def _insert(db: sqlite3.Connection, user_id: str, key: str, rows: Sequence[Row],
                status: str) -> None:
        now = datetime.now(timezone.utc).isoformat()
        db.executemany(
            "INSERT INTO chat_messages (user_id, key, message_id, status, message, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(user_id, key, mid, status, data, now) for mid, data in rows],
        )

    def append(self, user_id: str, key: str, rows: Sequence[Row], status: str) -> None:
        """Add rows after every existing row of the queue, in the given order."""
        with self._tx(write=True) as db:
            self._insert(db, user_id, key, rows, status)

    def replace(self, user_id: str, key: str, rows: Sequence[Row], status: str,
                clear: str | None) -> None:
        """Delete the queue's rows of status ``clear`` (``None``: all), then add ``rows``."""
        where, extra = self._where(clear)
        with self._tx(write=True) as db:
            db.execute(f"DELETE FROM chat_messages WHERE {where}", (user_id, key, *extra))
            self._insert(db, user_id, key, rows, status)

    def delete(self, user_id: str, key: str, status: str | None) -> list[Row]:
        """Delete the queue's rows of ``status``; returns them, oldest first."""
        where, extra = self._where(status)
        with self._tx(write=True) as db:
            rows = db.execute(
                f"SELECT message_id, message FROM chat_messages WHERE {where} ORDER BY seq",
                (user_id, key, *extra),
            ).fetchall()
            db.execute(f"DELETE FROM chat_messages WHERE {where}", (user_id, key, *extra))
        return [tuple(r) for r in rows]

    def delete_at(self, user_id: str, key: str, idx: int, status: str | None) -> Row | None:
        """Delete the row at position ``idx`` (negative: from the end); None if out of range."""
        where, extra = self._where(status)
        with self._tx(write=True) as db:
            seqs = [r[0] for r in db.execute(
                f"SELECT seq FROM chat_messages WHERE {where} ORDER BY seq", (user_id, key, *extra)
            )]
            if not -len(seqs) <= idx < len(seqs):
                return None
            seq = seqs[idx]
            row = db.execute("SELECT message_id, message FROM chat_messages WHERE seq = ?",
                             (seq,)).fetchone()
            db.execute("DELETE FROM chat_messages WHERE seq = ?", (seq,))
        return (row[0], row[1])

    def take_oldest(self, user_id: str, key: str, n: int, *, archive: bool) -> list[Row]:
        """The ``n`` oldest active rows, archived (``archive``) or deleted; returns them."""
        with self._tx(write=True) as db:
            rows = db.execute(
                "SELECT seq, message_id, message FROM chat_messages"
                " WHERE user_id = ? AND key = ? AND status = 'active' ORDER BY seq LIMIT ?",
                (user_id, key, n),
            ).fetchall()
            seqs = [(r[0],) for r in rows]
            if archive:
                db.executemany("UPDATE chat_messages SET status = 'archived' WHERE seq = ?", seqs)
            else:
                db.executemany("DELETE FROM chat_messages WHERE seq = ?", seqs)
        return [(r[1], r[2]) for r in rows]


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
    with ChatLog._begin(db, write=True):
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
    if changed:
        truncate_wal(db, path)
    return [DerivedForm(kind="conversation_log", id=f"{FILENAME}:{user}/{key}",
                        action="redacted") for user, key in sorted(changed)]
