"""The graph's reads in the SQLite vault (a mixin of :class:`SQLiteVault`): one user's part of
the memory graph, by indexed queries.

A side table, kept in step with ``memories`` by triggers (every write path -- insert,
``INSERT OR REPLACE``, update, delete -- goes through them, so no writer has to know):
``memory_readers(reader, seq, id)``, one row per reader a memory is shared with, for "the
memories this user may read". Its key starts ``(reader, seq)``: a page of a reader's list
walks the memories shared with them in insertion order and stops after the page
(:func:`shared_select`). A vault made before the table existed, or with its first shape
``(reader, id)`` (before 2026-12-07; a page then read and sorted every memory shared with
the reader), gets it dropped and filled again once when it is opened (meta key
``readers_table``; ``graph_tables`` stays "1", which an older memos-core takes as "filled"
and leaves alone -- its triggers, of the same names, are not re-created over these).

Until 2026-12-05 a second table, ``memory_entities``, kept one row per entity a memory names
for the vault's store-wide entity degrees. The graph views count degrees themselves now, so
opening a vault drops that table and its triggers (``secure_delete`` zeroes the pages its
entity names were on).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from memos_core.vault.base import Edge

#: the side table of readers, its index and triggers (each one statement: the open's
#: migration runs them in its transaction); a memory's ``seq`` travels with it so that a
#: reader's rows are in insertion order
_READERS = (
    """CREATE TABLE IF NOT EXISTS memory_readers (
    reader TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL, PRIMARY KEY (reader, seq, id)
) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS memory_readers_id ON memory_readers(id)",
    """CREATE TRIGGER IF NOT EXISTS memories_readers_insert AFTER INSERT ON memories BEGIN
    DELETE FROM memory_readers WHERE id = NEW.id;
    INSERT OR IGNORE INTO memory_readers(reader, seq, id)
        SELECT value, NEW.seq, NEW.id FROM json_each(NEW.readers);
END""",
    """CREATE TRIGGER IF NOT EXISTS memories_readers_update
AFTER UPDATE OF id, seq, readers ON memories BEGIN
    DELETE FROM memory_readers WHERE id = OLD.id;
    INSERT OR IGNORE INTO memory_readers(reader, seq, id)
        SELECT value, NEW.seq, NEW.id FROM json_each(NEW.readers);
END""",
    """CREATE TRIGGER IF NOT EXISTS memories_readers_delete AFTER DELETE ON memories BEGIN
    DELETE FROM memory_readers WHERE id = OLD.id;
END""",
)
_READERS_TRIGGERS = ("memories_readers_insert", "memories_readers_update",
                     "memories_readers_delete")
#: meta ``readers_table``: the shape of ``memory_readers`` (2: with ``seq``)
_READERS_SHAPE = "2"

SCHEMA = """
DROP TRIGGER IF EXISTS memories_graph_insert;
DROP TRIGGER IF EXISTS memories_graph_update;
DROP TRIGGER IF EXISTS memories_graph_delete;
DROP TABLE IF EXISTS memory_entities;
""" + "".join(f"{statement};\n" for statement in _READERS)

#: a list for at most this many users walks each one's rows of ``memory_readers`` in ``seq``
#: order (a branch per user, merged); for more, one read of all the memories shared with them
#: is sorted (a statement of a branch per user would grow without bound)
READER_BRANCHES = 16

_COLUMNS = ("id", "seq", "user_id", "agent_id", "session_id", "version", "state", "type", "tags",
            "readers", "occurred_at", "superseded", "entities")
_SELECT = "SELECT " + ", ".join(_COLUMNS) + " FROM memories"
_CHUNK = 500  # ids per IN (...) list


def _row(r: Sequence[Any]) -> dict[str, Any]:
    row = dict(zip(_COLUMNS, r))
    for key in ("tags", "readers", "entities"):
        text = row[key]
        row[key] = [] if text == "[]" else json.loads(text)  # most tags and readers are empty
    row["superseded"] = bool(row["superseded"])
    return row


def _marks(n: int) -> str:
    return ",".join("?" * n)


def shared_select(columns: Sequence[str], users: Sequence[str], rest: str,
                  params: Sequence[Any]) -> tuple[str, list[Any]]:
    """The ``SELECT`` (and its parameters) of the ``memories`` ``columns`` (names) of the
    memories shared with ``users`` by someone else, not forgotten (a forgotten memory is its
    owner's only, not even a gap in a reader's page), that also meet ``rest`` (conditions on
    unqualified ``memories`` columns, each after `` AND ``, with ``params``).

    One branch per user (``UNION ALL``) reads ``memory_readers`` by its ``(reader, seq)``
    key, joined to ``memories`` (``CROSS JOIN`` keeps that order of the loops), and gives
    the ``seq`` of that key: an ``ORDER BY seq`` over the result merges rows already in
    order and a ``LIMIT`` stops the walk after the page, however many memories are shared
    with the users. A memory shared with several of them comes once: in the branch of the
    first. For more than :data:`READER_BRANCHES` users: one read, sorted."""
    marks = _marks(len(users))
    if len(users) > READER_BRANCHES:
        cols = ", ".join(f"m.{c}" for c in columns)
        return (f"SELECT {cols} FROM memories m WHERE m.id IN (SELECT id FROM memory_readers "
                f"WHERE reader IN ({marks})) AND m.user_id NOT IN ({marks}) "
                f"AND m.state <> 'deleted'{rest}", [*users, *users, *params])
    cols = ", ".join("r.seq" if c == "seq" else f"m.{c}" for c in columns)
    parts: list[str] = []
    values: list[Any] = []
    for i, user in enumerate(users):
        again = (" AND NOT EXISTS (SELECT 1 FROM memory_readers e WHERE e.id = r.id "
                 f"AND e.reader IN ({_marks(i)}))") if i else ""
        parts.append(f"SELECT {cols} FROM memory_readers r CROSS JOIN memories m "
                     f"ON m.id = r.id WHERE r.reader = ? AND m.user_id NOT IN ({marks}) "
                     f"AND m.state <> 'deleted'{again}{rest}")
        values += [user, *users, *users[:i], *params]
    return " UNION ALL ".join(parts), values


class SQLiteGraphMixin:
    """Graph reads; uses the vault's ``_tx``, ``_query``, ``get_meta``."""

    _tx: Any
    _query: Any
    get_meta: Any

    def _fill_graph_tables(self) -> None:
        """Give ``memory_readers`` its current shape and fill it from ``memories``, once (a
        vault from before the table, or with its first shape): the table and its triggers
        are dropped and made again. ``secure_delete`` zeroes the dropped pages."""
        if self.get_meta("readers_table") == _READERS_SHAPE:
            return
        with self._tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key='readers_table'").fetchone()
            if row is not None and row[0] == _READERS_SHAPE:
                return  # another opener did it while this one waited for the lock
            for trigger in _READERS_TRIGGERS:
                db.execute(f"DROP TRIGGER IF EXISTS {trigger}")
            db.execute("DROP TABLE IF EXISTS memory_readers")
            for statement in _READERS:
                db.execute(statement)
            db.execute("INSERT OR IGNORE INTO memory_readers(reader, seq, id) "
                       "SELECT j.value, m.seq, m.id FROM memories m, json_each(m.readers) j")
            db.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                           [("graph_tables", "1"), ("readers_table", _READERS_SHAPE)])

    def graph_view_rows(self, user_ids: Sequence[str],
                        states: Sequence[str]) -> list[dict[str, Any]]:
        """See :meth:`memos_core.vault.base.Vault.graph_view_rows`."""
        users, states = list(dict.fromkeys(user_ids)), list(states)
        if not users or not states:
            return []
        st = _marks(len(states))
        found: dict[str, dict[str, Any]] = {}
        for r in self._query(f"{_SELECT} WHERE user_id IN ({_marks(len(users))}) "
                             f"AND state IN ({st})", [*users, *states]):
            found[r[0]] = _row(r)
        shared = self._query(
            f"{_SELECT} WHERE id IN (SELECT id FROM memory_readers WHERE reader IN "
            f"({_marks(len(users))})) AND state IN ({st})", [*users, *states])
        sessions: set[tuple[str, str]] = set()
        for r in shared:
            row = found.setdefault(r[0], _row(r))
            if row["user_id"] not in users and row["session_id"] is not None:
                sessions.add((row["user_id"], row["session_id"]))
        keys = sorted(sessions)
        for start in range(0, len(keys), _CHUNK):
            part = keys[start:start + _CHUNK]
            rows = self._query(
                f"{_SELECT} WHERE (user_id, session_id) IN (VALUES "
                f"{','.join(['(?,?)'] * len(part))}) AND state IN ({st})",
                [*(v for key in part for v in key), *states])
            for r in rows:
                found.setdefault(r[0], _row(r))
        return sorted(found.values(), key=lambda row: row["seq"])

    def graph_edges(self, memory_ids: Sequence[str]) -> list[Edge]:
        """See :meth:`memos_core.vault.base.Vault.graph_edges`."""
        ids = list(dict.fromkeys(memory_ids))
        found: dict[tuple[str, str, str], int] = {}
        for start in range(0, len(ids), _CHUNK):
            part = ids[start:start + _CHUNK]
            marks = _marks(len(part))
            for rowid, src, dst, kind in self._query(
                    f"SELECT rowid, src, dst, kind FROM edges WHERE src IN ({marks}) UNION "
                    f"SELECT rowid, src, dst, kind FROM edges WHERE dst IN ({marks})",
                    [*part, *part]):
                found[(src, dst, kind)] = rowid
        return [Edge(*key) for key, _ in sorted(found.items(), key=lambda item: item[1])]
