"""Moving the adapters' old side files into the vault, once, on first open.

Before the vault held conversation logs and thread checkpoints, the LlamaIndex chat stores
kept ``<data_dir>/chat_history.sqlite3`` and the LangGraph checkpointer
``<data_dir>/checkpoints.sqlite3``. The first :class:`~memos_core.integration.ConversationLog`
/ :func:`~memos_core.integration.thread_checkpoints` of a data directory copies every row
into the vault (idempotent: an interrupted move is redone whole on the next open), then
deletes the file and its WAL, so no copy of a message stays outside the vault (where a
forget would not reach it). Until then, the adapters' file redactors keep redacting the
old files on forget. A file that cannot be read is left in place and the open fails,
nothing copied: a damaged or foreign one (another program's file of that name) with a
``CorruptDataError`` naming it, to be moved out of the data directory; a locked one with a
``MemOSError`` to retry (:func:`~memos_core.governance.forget_hooks.side_file_error`).
Until it is moved, every forget in the data directory fails the same way, so the open does
not go on without it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from memos_core.governance.forget_hooks import damaged_side_file, side_file_error
from memos_core.memos import MemOS
from memos_core.vault import CheckpointRecord, LogRow, Typed
from memos_core.vault.sqlite_text import undecodable

__all__ = ["CHAT_FILE", "CHECKPOINT_FILE", "migrate_chat_file", "migrate_checkpoint_file"]

CHAT_FILE = "chat_history.sqlite3"
CHECKPOINT_FILE = "checkpoints.sqlite3"
logger = logging.getLogger("memos_core.integration")
T = TypeVar("T")
#: what a file that cannot be read did not get, and what to do once it is moved
_NOT_MOVED = "its {what} were not moved into the vault (nothing was changed)"
_OPEN_AGAIN = "open the {opener} again"
_LOCK = threading.Lock()  # one move at a time in this process (the vault makes each write atomic)


def _read(path: Path, what: str, opener: str, read: Callable[[sqlite3.Connection], T]) -> T:
    """``read(db)`` on a read-only connection to ``path``, closed after. SQLite's error is
    :func:`~memos_core.governance.forget_hooks.side_file_error` (``what``: what it holds,
    ``opener``: what opened it), so a damaged file is a ``CorruptDataError`` naming it."""
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
        try:
            return read(db)
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise side_file_error(path, exc, _NOT_MOVED.format(what=what),
                              _OPEN_AGAIN.format(opener=opener),
                              ) from (None if undecodable(exc) else exc)


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _tables(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def migrate_chat_file(mos: MemOS) -> int:
    """Move ``chat_history.sqlite3`` into the vault's conversation logs; returns the rows
    moved (0 when there is no file).

    Raises:
        CorruptDataError: the file is damaged or foreign; it is left, nothing moved.
        MemOSError: it could not be read (locked, an I/O error); retry.
    """
    path = mos.data_dir / CHAT_FILE
    with _LOCK:
        if not path.is_file():
            return 0
        rows = _read(path, "messages", "chat store", lambda db: (
            db.execute("SELECT user_id, key, message_id, status, message FROM chat_messages "
                       "ORDER BY seq").fetchall() if "chat_messages" in _tables(db) else []))
        _check_chat_rows(path, rows)
        queues: dict[tuple[str, str], list[tuple[str, LogRow]]] = defaultdict(list)
        for user_id, key, message_id, status, message in rows:
            queues[(user_id, key)].append((status, (message_id, message)))
        vault = mos.store.vault
        for (user_id, key), entries in queues.items():
            runs: list[tuple[str, list[LogRow]]] = []  # consecutive rows of one status
            for status, row in entries:
                if runs and runs[-1][0] == status:
                    runs[-1][1].append(row)
                else:
                    runs.append((status, [row]))
            for i, (status, run) in enumerate(runs):  # the first replaces: a redo is whole
                if i == 0:
                    vault.log_replace(user_id, key, run, status, None)
                else:
                    vault.log_append(user_id, key, run, status)
        _remove(path)
        logger.info("Moved %d messages from %s into the vault.", len(rows), path)
        return len(rows)


def migrate_checkpoint_file(mos: MemOS) -> int:
    """Move ``checkpoints.sqlite3`` into the vault's thread checkpoints; returns the
    checkpoints moved (0 when there is no file). Raises as :func:`migrate_chat_file`."""
    path = mos.data_dir / CHECKPOINT_FILE
    with _LOCK:
        if not path.is_file():
            return 0
        checkpoints, blobs, writes = _read(path, "checkpoints", "checkpointer",
                                           _checkpoint_rows)
        _copy_checkpoints(mos, checkpoints, blobs, writes)
        _remove(path)
        logger.info("Moved %d checkpoints from %s into the vault.", len(checkpoints), path)
        return len(checkpoints)


def _checkpoint_rows(db: sqlite3.Connection) -> tuple[list[Any], list[Any], list[Any]]:
    """The rows of the old checkpointer's three tables (none for a missing table)."""
    tables = _tables(db)
    checkpoints = db.execute(
        "SELECT thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, run_id, "
        "type, checkpoint, metadata_type, metadata FROM checkpoints"
    ).fetchall() if "checkpoints" in tables else []
    blobs = db.execute("SELECT thread_id, checkpoint_ns, channel, version, type, value "
                       "FROM blobs").fetchall() if "blobs" in tables else []
    writes = db.execute(
        "SELECT thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, type, "
        "value, task_path FROM writes").fetchall() if "writes" in tables else []
    return checkpoints, blobs, writes


def _check_chat_rows(path: Path, rows: list[Any]) -> None:
    """Refuse rows the old chat store could not have written (a foreign table of the same
    name): every column text, the status one the vault takes."""
    for row in rows:
        if not all(isinstance(v, str) for v in row) or row[3] not in ("active", "archived"):
            raise damaged_side_file(
                path, "its chat_messages table holds a row the old chat store could not "
                "have written", _NOT_MOVED.format(what="messages"),
                _OPEN_AGAIN.format(opener="chat store"))


def _copy_checkpoints(mos: MemOS, checkpoints: list[Any], blobs: list[Any],
                      writes: list[Any]) -> None:
    vault = mos.store.vault
    by_space: dict[tuple[str, str], list[tuple[str, str, Typed]]] = defaultdict(list)
    for thread, ns, channel, version, vtype, value in blobs:
        by_space[(thread, ns)].append((channel, version, (vtype, value)))
    for thread, ns, cid, parent, run, ctype, cblob, mtype, mblob in checkpoints:
        record = CheckpointRecord(thread, ns, cid, parent, run, (ctype, cblob), (mtype, mblob))
        vault.cp_put(record, by_space.pop((thread, ns), []))  # a space's blobs go once
    tasks: dict[tuple[str, str, str, str, str], list[tuple[int, str, Typed]]] = defaultdict(list)
    for thread, ns, cid, task, idx, channel, vtype, value, task_path in writes:
        tasks[(thread, ns, cid, task, task_path)].append((idx, channel, (vtype, value)))
    for (thread, ns, cid, task, task_path), items in tasks.items():
        vault.cp_put_writes(thread, ns, cid, task, task_path, items)
