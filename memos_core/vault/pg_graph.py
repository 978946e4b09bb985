"""The graph's reads in the PostgreSQL vault (a mixin of
:class:`~memos_core.vault.postgres.PostgresVault`): one user's part of the memory graph, by
indexed queries (``memories_user``, the GIN index on ``readers``, ``memories_session``, the
edge keys). Entity degrees are counted in the graph views, not here: schema migration 5
drops the GIN index on ``entities`` that migration 4 made for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from memos_core.vault.base import Edge

_COLUMNS = ("id", "seq", "user_id", "agent_id", "session_id", "version", "state", "type", "tags",
            "readers", "occurred_at", "superseded", "entities")
_SELECT = "SELECT " + ", ".join(_COLUMNS) + " FROM memories"


class PgGraphMixin:
    """Graph reads; uses the vault's ``_query``."""

    _query: Any

    def graph_view_rows(self, user_ids: Sequence[str],
                        states: Sequence[str]) -> list[dict[str, Any]]:
        """See :meth:`memos_core.vault.base.Vault.graph_view_rows`."""
        users, states = list(dict.fromkeys(user_ids)), list(states)
        if not users or not states:
            return []
        rows = self._query(
            f"WITH mine AS ({_SELECT} WHERE state = ANY(%s) "
            "AND (user_id = ANY(%s) OR readers ?| %s)) "
            "SELECT * FROM mine UNION "
            f"{_SELECT} WHERE state = ANY(%s) AND (user_id, session_id) IN "
            "(SELECT DISTINCT user_id, session_id FROM mine "
            " WHERE session_id IS NOT NULL AND NOT user_id = ANY(%s)) ORDER BY seq",
            (states, users, users, states, users))
        return [dict(zip(_COLUMNS, r)) for r in rows]

    def graph_edges(self, memory_ids: Sequence[str]) -> list[Edge]:
        """See :meth:`memos_core.vault.base.Vault.graph_edges` (stored order: the heap's)."""
        ids = list(dict.fromkeys(memory_ids))
        if not ids:
            return []
        rows = self._query("SELECT src, dst, kind FROM edges WHERE src = ANY(%s) OR dst = ANY(%s) "
                           "ORDER BY ctid", (ids, ids))
        return [Edge(*r) for r in rows]
