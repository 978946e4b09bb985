"""A namespace grant and a write into its namespace from two processes at once.

In server mode each process's write lock is its own, so a memory could be stored with a grant
that another process had just revoked (its grants were read before the revoke committed), or
be missed by a revoke (stored between the revoke's listing and its commit): the grantee kept
reading it, and nothing repaired it. The vault now checks, inside the write's transaction,
that the grants a new memory inherited and the memories a grant change covers are still what
the caller read (:class:`NamespaceChangedError` otherwise), and the operations retry.

Here the other process is played by direct vault writes at the moment between the read and
the write, so the race is deterministic; the vault's checks run against PostgreSQL in the
vault conformance suite (tests/vault).
"""

from __future__ import annotations

from typing import Any

import pytest

from memos_core import MemOS
from memos_core.errors import AccessDeniedError
from memos_core.governance import access
from memos_core.vault import Actor
from memos_core.vault.base import NamespaceGrant


def _once(obj: Any, name: str, after: Any) -> None:
    """Make ``obj.name(...)`` call ``after(result)`` once, right after its first call
    returns (the other process's write, between this process's read and its write)."""
    real = getattr(obj, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        setattr(obj, name, real)
        result = real(*args, **kwargs)
        after(result)
        return result

    setattr(obj, name, wrapped)


def test_a_memory_stored_while_its_grant_is_revoked_does_not_inherit_it(mos: MemOS) -> None:
    mos.share_namespace(with_user_id="bob", user_id="alice", session_id="s1")
    grant = NamespaceGrant("alice", "bob", "read", None, "s1")
    # another process revokes right after this one read alice's grants
    _once(mos.vault, "grants", lambda _: mos.vault.change_grants(
        remove=[grant], actor=Actor("alice"), action="revoke", details={}))
    note = mos.add("The vault code is 4471.", user_id="alice", session_id="s1")
    assert mos.vault.grants("alice") == []
    assert "bob" not in mos.get(note.id, user_id="alice").governance.readers
    with pytest.raises(AccessDeniedError):
        mos.get(note.id, user_id="bob")


def test_a_memory_stored_during_a_revoke_is_revoked_too(mos: MemOS) -> None:
    mos.share_namespace(with_user_id="bob", user_id="alice", session_id="s1")
    first = mos.add("Alice's first note.", user_id="alice", session_id="s1")
    grant = NamespaceGrant("alice", "bob", "read", None, "s1")
    late: list[str] = []

    real_list = mos.vault.list

    def listing_then_other_process_adds(query: Any) -> Any:
        page = real_list(query)
        if not page and not late:  # the revoke's listing is done; it has not written yet
            from memos_core.cube import MemCube

            cube = access.with_grants(MemCube.model_validate({  # it had read the grant
                "namespace": {"user_id": "alice", "session_id": "s1"},
                "text": "Alice's late note: the safe code is 9931."}), [grant])
            mos.vault.insert([cube], Actor("alice"))
            late.append(cube.id)
        return page

    mos.vault.list = listing_then_other_process_adds  # type: ignore[method-assign]
    receipt = mos.revoke_namespace(with_user_id="bob", user_id="alice", session_id="s1")
    assert receipt.memories == 2  # the retry saw the late memory
    for memory_id in (first.id, *late):
        assert "bob" not in mos.vault.get(memory_id).governance.readers  # type: ignore[union-attr]


def test_a_share_made_between_the_revokes_passes_stands(mos: MemOS) -> None:
    """Another process shares session s1 with bob right after this revoke of the whole
    namespace committed: the revoke's second pass (for memories stored meanwhile) must not
    strip what that share gave, as if the share came after the revoke."""
    mos.share_namespace(with_user_id="bob", user_id="alice")
    trip = mos.add("Alice's trip starts on Monday.", user_id="alice", session_id="s1")
    home = mos.add("Alice's home alarm code is 2231.", user_id="alice", session_id="s2")
    _once(mos.vault, "change_grants", lambda _: mos.share_namespace(
        with_user_id="bob", user_id="alice", session_id="s1"))
    mos.revoke_namespace(with_user_id="bob", user_id="alice")
    assert mos.vault.grants("alice") == [NamespaceGrant("alice", "bob", "read", None, "s1")]
    assert mos.get(trip.id, user_id="bob").text == trip.text
    with pytest.raises(AccessDeniedError):
        mos.get(home.id, user_id="bob")
    later = mos.add("Alice packed the tent.", user_id="alice", session_id="s1")
    assert mos.get(later.id, user_id="bob").text == later.text
