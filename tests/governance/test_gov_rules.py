"""The pure governance rules (memos_core.governance.access / .sensitivity), as case tables.

No store, no model: these are the rules every surface inherits through the facade.
"""

from __future__ import annotations

import pytest

import memos_core.governance as governance
from memos_core.cube import Governance, MemCube, Namespace
from memos_core.errors import AccessDeniedError, InvalidInputError
from memos_core.governance import NamespaceGrant, Operation
from memos_core.governance import access, sensitivity


def cube(owner: str = "alice", *, readers: tuple[str, ...] = (), writers: tuple[str, ...] = (),
         agent: str | None = None, session: str | None = None,
         tags: tuple[str, ...] = ()) -> MemCube:
    return MemCube(
        namespace=Namespace(user_id=owner, agent_id=agent, session_id=session),
        text="Alice's passport is X123.", entities=("Alice",), metadata={"k": "v"},
        governance=Governance(readers=readers, writers=writers, sensitivity=tags),
    )


def test_public_surface_is_sorted() -> None:
    assert governance.__all__ == sorted(governance.__all__)
    assert all(hasattr(governance, name) for name in governance.__all__)


@pytest.mark.parametrize(
    "readers, writers, user, read, write, own",
    [
        ((), (), "alice", True, True, True),          # the owner may do everything
        ((), (), "bob", False, False, False),         # a stranger nothing
        (("bob",), (), "bob", True, False, False),    # a reader reads
        (("bob",), ("bob",), "bob", True, True, False),  # a writer reads and writes
        ((), ("bob",), "bob", True, True, False),     # writers imply read
        (("carol",), ("carol",), "bob", False, False, False),  # someone else's grant
    ],
)
def test_permission_table(readers, writers, user, read, write, own) -> None:
    c = cube(readers=readers, writers=writers)
    got = tuple(access.permits(c, user, op) for op in (Operation.READ, Operation.WRITE, Operation.OWN))
    assert got == (read, write, own)


@pytest.mark.parametrize(
    "operation, action, message",
    [
        (Operation.READ, None, "may not read .* belongs to another user .*rule: owner or readers only"),
        (Operation.WRITE, None, "may not change .*rule: owner or writers only"),
        (Operation.OWN, "forget", r"Only the owner \(another user\) may forget .*rule: forget is owner-only"),
        (Operation.OWN, "share", r"rule: share is owner-only"),
    ],
)
def test_denials_name_the_rule(operation, action, message) -> None:
    with pytest.raises(AccessDeniedError, match=message) as info:
        access.require(cube(), "bob", operation, action)
    assert isinstance(info.value, PermissionError)


def test_only_a_reader_is_told_the_owner() -> None:
    """A reader sees the owner in the memory itself, so a denial may name it; anyone else
    learns nothing about whose memory an id is."""
    with pytest.raises(AccessDeniedError, match=r"Only the owner \('alice'\) may forget"):
        access.require(cube(readers=("bob",)), "bob", Operation.OWN, "forget")
    with pytest.raises(AccessDeniedError, match="may not change .* belongs to 'alice'"):
        access.require(cube(readers=("bob",)), "bob", Operation.WRITE)
    with pytest.raises(AccessDeniedError) as denied:
        access.require(cube(), "bob", Operation.WRITE)
    assert "alice" not in str(denied.value)


def test_a_reader_who_asks_to_forget_or_change_is_told_the_rule_that_applies(mos) -> None:
    """Forget is owner-only: a reader is told that, not the writers' rule (nor that the
    memory "was not shared" with them); a change names the read-only share."""
    note = mos.add("The kayak is in the boathouse.", user_id="alice")
    mos.share(note.id, with_user_id="bob", user_id="alice")
    for forget in (lambda: mos.forget(note.id, user_id="bob"),
                   lambda: mos.forget_many([note.id], user_id="bob")):
        with pytest.raises(AccessDeniedError, match=r"Only the owner \('alice'\) may forget"):
            forget()
    with pytest.raises(AccessDeniedError, match="shared with them for reading only") as denied:
        mos.update(note.id, "Bob was here.", user_id="bob")
    assert "not shared" not in str(denied.value)
    with pytest.raises(AccessDeniedError, match="not shared with 'mallory'"):
        mos.forget(note.id, user_id="mallory")
    assert mos.get(note.id, user_id="alice").text == "The kayak is in the boathouse."


@pytest.mark.parametrize(
    "start_r, start_w, op, scope, end_r, end_w",
    [
        ((), (), "grant", "read", ("bob",), ()),
        ((), (), "grant", "write", ("bob",), ("bob",)),
        (("bob",), ("bob",), "grant", "read", ("bob",), ()),       # downgrade
        (("bob",), (), "grant", "read", ("bob",), ()),             # idempotent
        (("bob", "carol"), ("bob",), "revoke", None, ("carol",), ()),
        ((), (), "revoke", None, (), ()),                          # idempotent
    ],
)
def test_grant_and_revoke_transform_governance(start_r, start_w, op, scope, end_r, end_w) -> None:
    gov = Governance(readers=start_r, writers=start_w)
    out = access.granted(gov, "bob", scope) if op == "grant" else access.revoked(gov, "bob")
    assert (out.readers, out.writers) == (end_r, end_w)


@pytest.mark.parametrize("scope", ["admin", "", None, "READ"])
def test_bad_scopes_are_refused(scope) -> None:
    with pytest.raises(InvalidInputError, match="scope must be 'read' or 'write'"):
        access.check_scope(scope)


@pytest.mark.parametrize(
    "grant, agent, session, covered",
    [
        (NamespaceGrant("alice", "bob"), None, None, True),
        (NamespaceGrant("alice", "bob"), "a1", "s1", True),
        (NamespaceGrant("alice", "bob", session_id="s1"), None, "s1", True),
        (NamespaceGrant("alice", "bob", session_id="s1"), None, "s2", False),
        (NamespaceGrant("alice", "bob", session_id="s1"), None, None, False),
        (NamespaceGrant("alice", "bob", agent_id="a1"), "a1", "s9", True),
        (NamespaceGrant("alice", "bob", agent_id="a1"), "a2", "s9", False),
        (NamespaceGrant("carol", "bob"), None, None, False),
    ],
)
def test_which_memories_a_namespace_grant_covers(grant, agent, session, covered) -> None:
    assert access.covers(grant, cube(agent=agent, session=session)) is covered


def test_new_memories_inherit_covering_grants_only() -> None:
    grants = [NamespaceGrant("alice", "bob", "write", session_id="s1"),
              NamespaceGrant("alice", "carol", "read")]
    inside = access.with_grants(cube(session="s1"), grants)
    outside = access.with_grants(cube(session="s2"), grants)
    assert (inside.governance.readers, inside.governance.writers) == (("bob", "carol"), ("bob",))
    assert (outside.governance.readers, outside.governance.writers) == (("carol",), ())
    plain = cube(owner="dave")
    assert access.with_grants(plain, grants) is plain


@pytest.mark.parametrize(
    "held, target, broader",
    [
        ([NamespaceGrant("alice", "bob")], NamespaceGrant("alice", "bob", session_id="s1"), True),
        ([NamespaceGrant("alice", "bob", session_id="s1")], NamespaceGrant("alice", "bob"), False),
        ([NamespaceGrant("alice", "bob", session_id="s1")],
         NamespaceGrant("alice", "bob", session_id="s1"), False),
        ([NamespaceGrant("alice", "carol")], NamespaceGrant("alice", "bob", session_id="s1"), False),
        ([NamespaceGrant("alice", "bob", agent_id="a")],
         NamespaceGrant("alice", "bob", agent_id="a", session_id="s"), True),
        # overlapping, neither inside the other: the agent's memories in that session
        ([NamespaceGrant("alice", "bob", agent_id="a")],
         NamespaceGrant("alice", "bob", session_id="s"), True),
        ([NamespaceGrant("alice", "bob", session_id="s")],
         NamespaceGrant("alice", "bob", agent_id="a"), True),
        ([NamespaceGrant("alice", "bob", agent_id="a", session_id="t")],
         NamespaceGrant("alice", "bob", session_id="s"), False),  # another session: apart
        ([NamespaceGrant("alice", "bob", agent_id="b")],
         NamespaceGrant("alice", "bob", agent_id="a", session_id="s"), False),
        ([NamespaceGrant("alice", "bob", agent_id="a", session_id="s")],
         NamespaceGrant("alice", "bob", session_id="s"), False),  # inside: revoked with it
        ([NamespaceGrant("alice", "carol", agent_id="a")],
         NamespaceGrant("alice", "bob", session_id="s"), False),
    ],
)
def test_a_revoke_a_kept_grant_would_undo_is_detected(held, target, broader) -> None:
    assert (access.lingering_grant(held, target) is not None) is broader


@pytest.mark.parametrize(
    "allow, tags, withheld",
    [
        (None, ("pii",), ("pii",)),
        ((), ("pii", "secret"), ("pii", "secret")),
        (("pii",), ("pii",), ()),
        (("pii",), ("secret", "pii"), ("secret",)),
        ("pii", ("pii",), ()),                       # a lone str is one tag
        ("*", ("pii", "secret"), ()),
        ((), (), ()),
    ],
)
def test_sensitivity_allowance_table(allow, tags, withheld) -> None:
    assert sensitivity.withheld(tags, sensitivity.allowance(allow)) == withheld


@pytest.mark.parametrize("allow", [[1], [""], [None]])
def test_bad_allowances_are_refused(allow) -> None:
    with pytest.raises(InvalidInputError, match="allow_sensitive"):
        sensitivity.allowance(allow)


def test_redaction_drops_the_text_and_everything_derived_from_it() -> None:
    secret = cube(tags=("secret", "pii"))
    shown, tags = sensitivity.for_prompt(secret, sensitivity.allowance(()))
    assert tags == ("pii", "secret")
    assert shown.text == "[redacted: pii, secret]" and "X123" not in shown.model_dump_json()
    assert shown.entities == () and shown.metadata == {sensitivity.REDACTED_KEY: ["pii", "secret"]}
    assert (shown.id, shown.version, shown.governance) == (secret.id, secret.version, secret.governance)
    same, none = sensitivity.for_prompt(secret, sensitivity.allowance("*"))
    assert same is secret and none == ()


def test_history_sensitivity_is_the_union_over_versions() -> None:
    versions = [cube(), cube(tags=("pii",)), cube(tags=("secret",))]
    assert sensitivity.history_sensitivity(versions) == ("pii", "secret")
    assert sensitivity.history_sensitivity([cube()]) == ()
