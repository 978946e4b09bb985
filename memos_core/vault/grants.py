"""Namespace grants in the SQLite vault (a mixin of :class:`SQLiteVault`).

Table ``grants``: one row per standing share of an owner's namespace with a grantee. ``None``
agent / session (the whole namespace) is stored as ``''`` so the primary key stays unique
(SQLite treats NULLs in a key as distinct).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from memos_core.cube import MemCube, utcnow
from memos_core.vault.base import Actor, NamespaceGrant


class SQLiteGrantsMixin:
    """Grant storage; uses the vault's ``_tx``, ``_query``, ``_put_version`` and ``_audit``."""

    _tx: Any
    _query: Any
    _put_version: Any
    _audit: Any

    def grants(self, owner: str | None = None) -> list[NamespaceGrant]:
        """Standing namespace grants, of ``owner`` or of everyone, oldest first."""
        sql = "SELECT owner, grantee, scope, agent_id, session_id FROM grants"
        params: tuple[str, ...] = ()
        if owner is not None:
            sql += " WHERE owner=?"
            params = (owner,)
        rows = self._query(sql + " ORDER BY created_at, grantee", params)
        return [NamespaceGrant(o, g, s, a or None, se or None) for o, g, s, a, se in rows]

    def change_grants(self, *, add: Sequence[NamespaceGrant] = (),
                      remove: Sequence[NamespaceGrant] = (),
                      changes: Sequence[tuple[MemCube, int]] = (), actor: Actor, action: str,
                      details: dict[str, Any]) -> None:
        """Store the grants in ``add`` (replacing one with the same namespace and grantee),
        delete those in ``remove`` and write ``changes`` -- the new versions of the memories
        they cover, as ``(cube, expected_version)`` -- in one transaction, with one audit
        record per version (``action``) and one for the grants (``share_namespace`` when
        adding, else ``revoke_namespace``; no memory id)."""
        now = utcnow().timestamp()
        with self._tx() as db:
            for grant in remove:
                db.execute(
                    "DELETE FROM grants WHERE owner=? AND agent_id=? AND session_id=? AND grantee=?",
                    _key(grant),
                )
            for grant in add:
                db.execute(
                    "INSERT OR REPLACE INTO grants(owner, agent_id, session_id, grantee, scope, "
                    "created_at) VALUES (?,?,?,?,?,?)", (*_key(grant), grant.scope, now),
                )
            for cube, expected in changes:
                self._put_version(db, cube, expected, actor, action, details)
            self._audit(db, actor, "share_namespace" if add else "revoke_namespace", None, None,
                        {**details, "memories": len(changes)})


def _key(grant: NamespaceGrant) -> tuple[str, str, str, str]:
    return (grant.owner, grant.agent_id or "", grant.session_id or "", grant.grantee)
