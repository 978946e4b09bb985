"""The graph's reads in the SQLite vault (a mixin of :class:`SQLiteVault`): one user's part of
the memory graph, by indexed queries.

A side table, kept in step with ``memories`` by triggers (every write path -- insert,
``INSERT OR REPLACE``, update, delete -- goes through them, so no writer has to know):
``memory_readers(reader, id)``, one row per reader a memory is shared with, for "the memories
this user may read". A vault made before the table existed fills it once when it is opened
(meta key ``graph_tables``).

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

SCHEMA = """
DROP TRIGGER IF EXISTS memories_graph_insert;
DROP TRIGGER IF EXISTS memories_graph_update;
DROP TRIGGER IF EXISTS memories_graph_delete;
DROP TABLE IF EXISTS memory_entities;
CREATE TABLE IF NOT EXISTS memory_readers (
    reader TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY (reader, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS memory_readers_id ON memory_readers(id);
CREATE TRIGGER IF NOT EXISTS memories_readers_insert AFTER INSERT ON memories BEGIN
    DELETE FROM memory_readers WHERE id = NEW.id;
    INSERT OR IGNORE INTO memory_readers(reader, id) SELECT value, NEW.id FROM json_each(NEW.readers);
END;
CREATE TRIGGER IF NOT EXISTS memories_readers_update AFTER UPDATE OF id, readers ON memories BEGIN
    DELETE FROM memory_readers WHERE id = OLD.id;
    INSERT OR IGNORE INTO memory_readers(reader, id) SELECT value, NEW.id FROM json_each(NEW.readers);
END;
CREATE TRIGGER IF NOT EXISTS memories_readers_delete AFTER DELETE ON memories BEGIN
    DELETE FROM memory_readers WHERE id = OLD.id;
END;
"""

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


class SQLiteGraphMixin:
    """Graph reads; uses the vault's ``_tx``, ``_query``, ``get_meta``."""

    _tx: Any
    _query: Any
    get_meta: Any

    def _fill_graph_tables(self) -> None:
        """Fill the side table from ``memories`` once (a vault from before it existed)."""
        if self.get_meta("graph_tables") == "1":
            return
        with self._tx() as db:
            db.execute("DELETE FROM memory_readers")
            db.execute("INSERT OR IGNORE INTO memory_readers(reader, id) "
                       "SELECT j.value, m.id FROM memories m, json_each(m.readers) j")
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('graph_tables', '1')")

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
