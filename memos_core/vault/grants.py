"""Namespace grants in the SQLite vault (a mixin of :class:`SQLiteVault`).

Table ``grants``: one row per standing share of an owner's namespace with a grantee. ``None``
agent / session (the whole namespace) is stored as ``''`` so the primary key stays unique
(SQLite treats NULLs in a key as distinct).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from memos_core.cube import MemCube, utcnow
from memos_core.errors import NamespaceChangedError
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


def check_grants(db: Any, cubes: Sequence[MemCube], seen: Sequence[NamespaceGrant] | None
                 ) -> None:
    """In a write transaction (``db``, SQLite): refuse (:class:`NamespaceChangedError`) new
    memories whose owners' grants are no longer ``seen`` (None: not checked)."""
    if seen is None or not cubes:
        return
    owners = sorted({c.user_id for c in cubes})
    require_grants(owners, seen, db.execute(
        "SELECT owner, grantee, scope, agent_id, session_id FROM grants WHERE owner IN "
        f"({','.join('?' * len(owners))})", owners).fetchall())


def require_grants(owners: Iterable[str], seen: Sequence[NamespaceGrant],
                   rows: Iterable[Sequence[Any]]) -> None:
    """Raise :class:`NamespaceChangedError` unless ``rows`` (the grants of ``owners`` as the
    transaction reads them: owner, grantee, scope, agent, session) are ``seen``: the grants
    the caller applied to the new memories of ``owners``."""
    owners = set(owners)
    now = {NamespaceGrant(o, g, sc, a or None, se or None) for o, g, sc, a, se in rows}
    if now != {g for g in seen if g.owner in owners}:
        raise NamespaceChangedError(
            f"The namespace grants of {', '.join(sorted(owners))} changed while these memories "
            "were being stored (a share or revoke committed in between); nothing was stored.")
