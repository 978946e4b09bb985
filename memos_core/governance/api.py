"""Sharing and revoking, per memory and per namespace: the part of the MemOS facade that
grants other principals access. The rules live in :mod:`memos_core.governance.access` and
:mod:`memos_core.governance.sharing`; this mixin validates arguments and audits."""

from __future__ import annotations

from typing import TYPE_CHECKING

from memos_core.cube import MemCube, utcnow
from memos_core.errors import InvalidInputError
from memos_core.governance import access, sharing
from memos_core.results import ShareReceipt
from memos_core.validation import check_name
from memos_core.vault import Actor, NamespaceGrant

if TYPE_CHECKING:
    from memos_core.memos import MemOS


class SharingMixin:
    """``share``, ``revoke``, ``share_namespace``, ``revoke_namespace`` of :class:`MemOS`."""

    def share(self: "MemOS", memory_id: str, *, with_user_id: str, user_id: str,
              scope: str = "read", reason: str | None = None) -> MemCube:
        """Let another user read (``scope='read'``) or also change (``'write'``) a memory."""
        return self._set_access(memory_id, with_user_id, user_id, scope, True, reason)

    def revoke(self: "MemOS", memory_id: str, *, with_user_id: str, user_id: str,
               reason: str | None = None) -> MemCube:
        """Withdraw every grant ``share`` gave ``with_user_id`` on this memory."""
        return self._set_access(memory_id, with_user_id, user_id, "write", False, reason)

    def _set_access(self: "MemOS", memory_id: str, other: str, user_id: str, scope: str, grant: bool,
                    reason: str | None) -> MemCube:
        self._check_open()
        user_id = check_name(user_id, "user_id")
        other = check_name(other, "with_user_id")
        scope = access.check_scope(scope)
        with self._write_lock:
            cube = self._load(memory_id, user_id)
            access.require(cube, user_id, access.Operation.OWN, "share")
            gov = cube.governance
            new_gov = access.granted(gov, other, scope) if grant else access.revoked(gov, other)
            action = f"share:{scope}" if grant else "revoke"
            new = cube.model_copy(update={
                "governance": new_gov, "version": cube.version + 1, "updated_at": utcnow()})
            self.vault.put_version(new, cube.version, Actor(user_id, None, reason), action,
                                   {"with_user_id": other})
            sharing.apply_governance_change(self, [new])  # text unchanged: no re-embedding
            return self.vault.get(new.id) or new

    def share_namespace(self: "MemOS", *, with_user_id: str, user_id: str, agent_id: str | None = None,
                        session_id: str | None = None, scope: str = "read",
                        reason: str | None = None) -> ShareReceipt:
        """Share every memory of ``user_id``'s namespace -- narrowed to ``agent_id`` and/or
        ``session_id`` when given -- with ``with_user_id``, now and for memories written there
        later. One transaction: a new version per memory that changes (audited ``share:*``)
        and one ``share_namespace`` audit record. Repeating it is harmless; a new scope
        replaces the old one. See :mod:`memos_core.governance.sharing`."""
        grant = self._grant(with_user_id, user_id, agent_id, session_id, scope)
        return sharing.share_namespace(self, grant, Actor(grant.owner, None, reason))

    def revoke_namespace(self: "MemOS", *, with_user_id: str, user_id: str, agent_id: str | None = None,
                         session_id: str | None = None, reason: str | None = None) -> ShareReceipt:
        """Withdraw the namespace grants ``with_user_id`` holds inside this namespace and
        every per-memory grant on its memories. Raises ``InvalidInputError`` if a grant on a
        larger namespace covers this one (revoke that one instead)."""
        grant = self._grant(with_user_id, user_id, agent_id, session_id, "read")
        return sharing.revoke_namespace(self, grant, Actor(grant.owner, None, reason))

    def _grant(self: "MemOS", other: str, user_id: str, agent_id: str | None, session_id: str | None,
               scope: str) -> NamespaceGrant:
        self._check_open()
        owner = check_name(user_id, "user_id")
        grantee = check_name(other, "with_user_id")
        if grantee == owner:
            raise InvalidInputError(f"{owner!r} owns this namespace; share it with another user.")
        return NamespaceGrant(
            owner=owner, grantee=grantee, scope=access.check_scope(scope),  # type: ignore[arg-type]
            agent_id=check_name(agent_id, "agent_id", optional=True),
            session_id=check_name(session_id, "session_id", optional=True),
        )
