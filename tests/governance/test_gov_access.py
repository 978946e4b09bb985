"""Access control through the Memory API: user B cannot read, search, list, update, forget,
share, export or audit user A's memory; can (read, or also write) after A shares it -- one
memory or the whole namespace -- and cannot again after A revokes. Plus namespace grants
(inherited by new memories, narrowed by session / agent, persisted) and sensitivity
redaction in search and exports.

One MemOS per module; each test uses its own user ids.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from memos_core import AccessDeniedError, InvalidInputError, MemCube, MemOS, MemOSConfig

Op = Callable[[MemOS, MemCube, str, Path], Any]
DENY, HIDE, OK = "deny", "hidden", "ok"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemOS]:
    mos = MemOS(tmp_path_factory.mktemp("gov"), config=MemOSConfig(show_progress=False))
    yield mos
    mos.close()


@pytest.fixture
def users() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"alice-{tag}", f"bob-{tag}"


def _found(hits_or_cubes: list[Any], mem: MemCube) -> str:
    ids = {getattr(x, "id") for x in hits_or_cubes}
    return OK if mem.id in ids else HIDE


def _export_has(mos: MemOS, mem: MemCube, user: str, tmp: Path) -> str:
    path = mos.export(tmp / uuid.uuid4().hex, user_id=user)
    return OK if mem.id in (path / "memories.jsonl").read_text() else HIDE


#: operation -> what B gets in each phase: (before any share, read share, write share, revoked)
OPERATIONS: dict[str, tuple[Op, tuple[str, str, str, str]]] = {
    "get": (lambda m, mem, u, t: m.get(mem.id, user_id=u), (DENY, OK, OK, DENY)),
    "history": (lambda m, mem, u, t: m.history(mem.id, user_id=u), (DENY, OK, OK, DENY)),
    "get version": (lambda m, mem, u, t: m.get(mem.id, user_id=u, version=1), (DENY, OK, OK, DENY)),
    "audit of it": (lambda m, mem, u, t: m.audit_log(user_id=u, memory_id=mem.id),
                    (DENY, OK, OK, DENY)),
    "search": (lambda m, mem, u, t: _found(m.search("orchid greenhouse", user_id=u, k=10), mem),
               (HIDE, OK, OK, HIDE)),
    "list": (lambda m, mem, u, t: _found(m.list(user_id=u), mem), (HIDE, OK, OK, HIDE)),
    "update": (lambda m, mem, u, t: m.update(mem.id, "B was here: orchid greenhouse", user_id=u),
               (DENY, DENY, OK, DENY)),
    "archive": (lambda m, mem, u, t: m.set_state(mem.id, "activated", user_id=u),
                (DENY, DENY, OK, DENY)),
    "forget": (lambda m, mem, u, t: m.forget(mem.id, user_id=u), (DENY, DENY, DENY, DENY)),
    "reshare": (lambda m, mem, u, t: m.share(mem.id, with_user_id="mallory", user_id=u),
                (DENY, DENY, DENY, DENY)),
    "export": (_export_has, (HIDE, HIDE, HIDE, HIDE)),  # exports hold only one's own memories
}


def _outcome(op: Op, mos: MemOS, mem: MemCube, user: str, tmp: Path) -> str:
    try:
        result = op(mos, mem, user, tmp)
    except AccessDeniedError:
        return DENY
    return result if result in (HIDE, OK) else OK


def _grant(mos: MemOS, kind: str, mem: MemCube, owner: str, other: str, scope: str | None) -> None:
    if kind == "memory":
        if scope is None:
            mos.revoke(mem.id, with_user_id=other, user_id=owner)
        else:
            mos.share(mem.id, with_user_id=other, user_id=owner, scope=scope)
    elif scope is None:
        mos.revoke_namespace(with_user_id=other, user_id=owner)
    else:
        mos.share_namespace(with_user_id=other, user_id=owner, scope=scope)


@pytest.mark.parametrize("kind", ["memory", "namespace"])
def test_b_is_denied_until_a_shares_and_again_after_a_revokes(store, users, tmp_path, kind) -> None:
    alice, bob = users
    mem = store.add("Alice grows orchids in a greenhouse.", user_id=alice, session_id="s")
    store.add("Bob's own note about tomatoes.", user_id=bob)
    table: dict[str, list[str]] = {name: [] for name in OPERATIONS}
    for phase, scope in enumerate(["-", "read", "write", None]):
        if scope != "-":
            _grant(store, kind, mem, alice, bob, scope)
        for name, (op, _) in OPERATIONS.items():
            table[name].append(_outcome(op, store, mem, bob, tmp_path))
    wrong = {name: got for name, got in table.items() if tuple(got) != OPERATIONS[name][1]}
    assert not wrong, f"unexpected outcomes (before, read, write, revoked): {wrong}"
    assert store.get(mem.id, user_id=alice).governance.readers == ()
    ok, message = store.vault.verify_audit()
    assert ok, message


def test_namespace_grant_covers_new_memories_and_only_its_namespace(store, users) -> None:
    alice, bob = users
    s1 = store.add("Alice's trip notes: Kyoto temples.", user_id=alice, session_id="trip")
    other = store.add("Alice's diary: Kyoto dentist.", user_id=alice, session_id="diary")
    receipt = store.share_namespace(with_user_id=bob, user_id=alice, session_id="trip")
    assert (receipt.memories, receipt.scope, receipt.session_id) == (1, "read", "trip")
    later = store.add([{"role": "user", "content": "Kyoto ramen was great"}], user_id=alice,
                      session_id="trip")[0]
    bulk = store.add_many(["Kyoto train pass"], user_id=alice, session_id="trip")[0]
    summary = store.compress([s1.id, bulk.id], "Kyoto trip summary", user_id=alice)
    ids = {h.id for h in store.search("Kyoto", user_id=bob, k=20, include_archived=True)}
    assert {s1.id, later.id, bulk.id, summary.id} <= ids and other.id not in ids
    assert bob in store.get(later.id, user_id=alice).governance.readers
    assert store.history(later.id, user_id=alice)[0].governance.readers == (bob,)  # born shared


def test_namespace_grant_narrowed_to_an_agent(store, users) -> None:
    alice, bob = users
    planner = store.add("Planner agent: book the Lisbon flat.", user_id=alice, agent_id="planner")
    coder = store.add("Coder agent: Lisbon API key rotation.", user_id=alice, agent_id="coder")
    store.share_namespace(with_user_id=bob, user_id=alice, agent_id="planner", scope="write")
    assert store.update(planner.id, "Planner: book the Lisbon flat for May.", user_id=bob).version == 3
    with pytest.raises(AccessDeniedError):
        store.get(coder.id, user_id=bob)


def test_repeating_a_grant_writes_no_versions_and_a_new_scope_replaces_the_old(store, users) -> None:
    alice, bob = users
    mem = store.add("Alice's shared shopping list: oat milk.", user_id=alice)
    assert store.share_namespace(with_user_id=bob, user_id=alice, scope="write").memories == 1
    assert store.share_namespace(with_user_id=bob, user_id=alice, scope="write").memories == 0
    assert store.share_namespace(with_user_id=bob, user_id=alice, scope="read").memories == 1
    with pytest.raises(AccessDeniedError):
        store.update(mem.id, "changed", user_id=bob)
    assert store.get(mem.id, user_id=alice).version == 3
    actions = [r.action for r in store.audit_log(user_id=alice)]
    assert actions.count("share_namespace") == 3 and actions.count("share:write") == 1


def test_revoking_a_session_inside_a_whole_namespace_grant_is_refused(store, users) -> None:
    alice, bob = users
    store.add("Alice: session note.", user_id=alice, session_id="s1")
    store.share_namespace(with_user_id=bob, user_id=alice)
    with pytest.raises(InvalidInputError, match="larger namespace .* revoke that grant instead"):
        store.revoke_namespace(with_user_id=bob, user_id=alice, session_id="s1")
    store.share_namespace(with_user_id=bob, user_id=alice, session_id="s1")
    assert store.revoke_namespace(with_user_id=bob, user_id=alice).memories == 1
    assert store.vault.grants(alice) == []  # the narrower grant went with the wider one
    assert store.search("session note", user_id=bob) == []


def test_revoking_a_session_an_agents_grant_overlaps_is_refused(store, users) -> None:
    """bob's grant on the planner agent reaches the planner's memories in session trip: a
    revoke of trip that kept it would be undone by the next planner memory in trip."""
    alice, bob = users
    note = store.add("Planner: trip note.", user_id=alice, agent_id="planner", session_id="trip")
    store.share_namespace(with_user_id=bob, user_id=alice, agent_id="planner")
    with pytest.raises(InvalidInputError, match=r"overlapping namespace .*agent='planner', "
                       r"session=None.*agent='planner', session='trip'.*Revoke that grant first"):
        store.revoke_namespace(with_user_id=bob, user_id=alice, session_id="trip")
    assert store.get(note.id, user_id=bob).text == "Planner: trip note."  # nothing changed
    store.revoke_namespace(with_user_id=bob, user_id=alice, agent_id="planner")
    assert store.revoke_namespace(with_user_id=bob, user_id=alice, session_id="trip").memories == 0
    later = store.add("Planner: trip note 2.", user_id=alice, agent_id="planner", session_id="trip")
    assert later.governance.readers == () and store.vault.grants(alice) == []


def test_index_payload_follows_a_namespace_share_without_reembedding(store, users) -> None:
    alice, bob = users
    cubes = store.add_many([f"Alice fact number {i} about kites" for i in range(5)], user_id=alice)
    store.share_namespace(with_user_id=bob, user_id=alice)
    versions = store.index.versions()
    assert all(versions[c.id] == 2 for c in cubes)
    assert len(store.search("kites", user_id=bob, k=10)) == 5


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda m, a, b: m.share_namespace(with_user_id=a, user_id=a), "owns this namespace"),
        (lambda m, a, b: m.share_namespace(with_user_id=b, user_id=a, scope="admin"), "scope must"),
        (lambda m, a, b: m.share_namespace(with_user_id="", user_id=a), "with_user_id"),
        (lambda m, a, b: m.share_namespace(with_user_id=b, user_id=a, session_id=""), "session_id"),
        (lambda m, a, b: m.revoke_namespace(with_user_id=b, user_id=None), "user_id"),
    ],
)
def test_bad_namespace_grants_are_refused_before_anything_is_written(store, users, call, error) -> None:
    alice, bob = users
    before = store.vault.stats()["audit_records"]
    with pytest.raises(InvalidInputError, match=error):
        call(store, alice, bob)
    assert store.vault.stats()["audit_records"] == before


def test_grants_survive_a_restart(tmp_path) -> None:
    cfg = MemOSConfig(show_progress=False)
    with MemOS(tmp_path / "d", config=cfg) as mos:
        mos.add("Alice's recipe: saffron rice.", user_id="alice")
        mos.share_namespace(with_user_id="bob", user_id="alice")
    with MemOS(tmp_path / "d", config=cfg) as mos:
        new = mos.add("Alice's recipe: saffron buns.", user_id="alice")
        assert new.governance.readers == ("bob",)
        assert len(mos.search("saffron", user_id="bob")) == 2


# -- sensitivity ---------------------------------------------------------------------------

def test_sensitive_memories_are_redacted_in_search_unless_allowed(store, users) -> None:
    alice, bob = users
    pii = store.add("Alice's passport number is P-7781-QZ.", user_id=alice, sensitivity=["pii"])
    secret = store.add("Alice's bank passport PIN is 4455.", user_id=alice, sensitivity=["secret", "pii"])
    plain = store.add("Alice renewed her passport last year.", user_id=alice)

    def texts(user: str = alice, **kw: Any) -> dict[str, tuple[str, tuple[str, ...]]]:
        return {h.id: (h.text, h.redacted) for h in store.search("passport", user_id=user, k=10, **kw)}

    default = texts()
    assert default[pii.id] == ("[redacted: pii]", ("pii",))
    assert default[secret.id] == ("[redacted: pii, secret]", ("pii", "secret"))
    assert default[plain.id] == (plain.text, ())
    assert texts(allow_sensitive=["pii"])[pii.id] == (pii.text, ())
    assert texts(allow_sensitive=["pii"])[secret.id][1] == ("secret",)
    assert texts(allow_sensitive="*")[secret.id] == (secret.text, ())
    assert store.get(pii.id, user_id=alice).text == pii.text  # records are not prompts
    store.share(pii.id, with_user_id=bob, user_id=alice)
    assert texts(bob)[pii.id][0] == "[redacted: pii]"  # a reader gets the same rule


def test_the_config_default_allowance_reaches_every_search(tmp_path) -> None:
    with MemOS(tmp_path / "d", config=MemOSConfig(show_progress=False, allow_sensitive=("pii",))) as mos:
        pii = mos.add("Carol's phone is 555-0199.", user_id="carol", sensitivity=["pii"])
        assert mos.search("phone", user_id="carol")[0].text == pii.text
        assert mos.search("phone", user_id="carol", allow_sensitive=())[0].redacted == ("pii",)


def test_exports_leave_sensitive_memories_out_unless_asked(store, users, tmp_path) -> None:
    alice, _ = users
    pii = store.add("Alice's home address is 12 Rua Nova.", user_id=alice, sensitivity=["pii"])
    plain = store.add("Alice likes sea views.", user_id=alice)
    summary = store.compress([pii.id, plain.id], "Alice likes her sea-view home.", user_id=alice)
    default = store.export(tmp_path / "default", user_id=alice)
    manifest = json.loads((default / "manifest.json").read_text())
    body = (default / "memories.jsonl").read_text() + (default / "edges.jsonl").read_text()
    # the summary inherits its source's tag: it may repeat the address
    assert store.get(summary.id, user_id=alice).governance.sensitivity == ("pii",)
    assert manifest["withheld_sensitive"] == 2 and manifest["memories"] == 1
    assert "Rua Nova" not in body and summary.id not in body and plain.id in body
    full = store.export(tmp_path / "full", user_id=alice, include_sensitive=True)
    assert "Rua Nova" in (full / "memories.jsonl").read_text()
    assert json.loads((full / "manifest.json").read_text())["withheld_sensitive"] == 0
    record = store.audit_log(user_id=alice)[-2]
    assert record.action == "export" and record.details["withheld_sensitive"] == 2
    with pytest.raises(InvalidInputError, match="include_sensitive must be a bool"):
        store.export(tmp_path / "x", user_id=alice, include_sensitive="yes")  # type: ignore[arg-type]


def test_imported_memories_are_shared_with_nobody(tmp_path) -> None:
    cfg = MemOSConfig(show_progress=False)
    with MemOS(tmp_path / "src", config=cfg) as src:
        mem = src.add("Dana's plan: climb Pico.", user_id="dana")
        src.share(mem.id, with_user_id="mallory", user_id="dana", scope="write")
        src.export(tmp_path / "bundle", user_id="dana")
    with MemOS(tmp_path / "dst", config=cfg) as dst:
        assert dst.import_(tmp_path / "bundle", user_id="erin")["imported"] == 1
        with pytest.raises(AccessDeniedError):
            dst.get(mem.id, user_id="mallory")
        assert dst.search("Pico", user_id="mallory") == []


def test_search_trusts_the_vault_when_the_index_lags(store, users) -> None:
    """A revoke whose index update never happened (a crash between the vault commit and the
    index) must not leave the memory findable by the former reader."""
    from memos_core.governance import access as rules
    from memos_core.vault import Actor

    alice, bob = users
    mem = store.add("Alice's spare key is with the neighbour.", user_id=alice)
    shared = store.share(mem.id, with_user_id=bob, user_id=alice)
    assert store.search("spare key neighbour", user_id=bob)[0].id == mem.id
    revoked = shared.model_copy(update={
        "governance": rules.revoked(shared.governance, bob), "version": shared.version + 1})
    store.vault.put_version(revoked, shared.version, Actor(alice), "revoke")  # vault only
    assert store.index.versions()[mem.id] == shared.version  # the index still says 'bob'
    assert store.search("spare key neighbour", user_id=bob) == []
    store.reconcile()
    assert store.index.versions()[mem.id] == revoked.version


# -- shares across versions and supersession ------------------------------------------------

def _bob_sees(mos: MemOS, mem: MemCube, bob: str, query: str) -> bool:
    try:
        mos.get(mem.id, user_id=bob)
    except AccessDeniedError:
        return False
    return mem.id in {h.id for h in mos.search(query, user_id=bob, k=10)}


@pytest.mark.parametrize("scope", ["read", "write"])
def test_a_superseding_memory_keeps_the_shares_of_the_one_it_replaces(store, users, scope) -> None:
    alice, bob = users
    old = store.add("Alice's locker code is in drawer one.", user_id=alice)
    store.share(old.id, with_user_id=bob, user_id=alice, scope=scope)
    store.share(old.id, with_user_id="mallory", user_id=alice)
    store.revoke(old.id, with_user_id="mallory", user_id=alice)  # revoked: not carried
    new = store.add("Alice's locker code moved to drawer two.", user_id=alice, supersedes=old.id)
    assert _bob_sees(store, new, bob, "locker code drawer")
    assert (bob in new.governance.writers) == (scope == "write")
    assert "mallory" not in new.governance.readers
    add = store.audit_log(user_id=alice, memory_id=new.id, action="add")[0]
    assert add.details["shared_with"] == {bob: scope}
    store.revoke(new.id, with_user_id=bob, user_id=alice)
    assert not _bob_sees(store, new, bob, "locker code drawer")
    ok, message = store.vault.verify_audit()
    assert ok, message


def test_a_writer_who_supersedes_keeps_the_owner_and_readers_in(store, users) -> None:
    alice, bob = users
    old = store.add("Team wiki: the standup is at nine.", user_id=alice)
    store.share(old.id, with_user_id=bob, user_id=alice, scope="write")
    store.share(old.id, with_user_id="carol", user_id=alice)
    new = store.add("Team wiki: the standup moved to ten.", user_id=bob, supersedes=old.id)
    assert new.user_id == bob and bob not in new.governance.readers
    assert set(new.governance.writers) == {alice} and set(new.governance.readers) == {alice, "carol"}
    assert _bob_sees(store, new, alice, "standup time")


@pytest.mark.parametrize("change", ["update", "rollback"])
def test_shares_survive_update_and_rollback(store, users, change) -> None:
    alice, bob = users
    mem = store.add("Alice's bike is blue.", user_id=alice)
    store.update(mem.id, "Alice's bike is red.", user_id=alice)
    store.share(mem.id, with_user_id=bob, user_id=alice)
    store.share(mem.id, with_user_id="mallory", user_id=alice)
    store.revoke(mem.id, with_user_id="mallory", user_id=alice)  # v5: mallory was a reader at v4
    if change == "update":
        versions = [store.update(mem.id, "Alice's bike is green.", user_id=alice)]
    else:  # access is not content: rolling back neither re-grants mallory nor drops bob
        versions = [store.rollback(mem.id, v, user_id=alice) for v in (4, 1)]
    assert [v.governance.readers for v in versions] == [(bob,)] * len(versions)
    assert _bob_sees(store, versions[-1], bob, "Alice bike colour")


def test_a_summary_is_shared_with_whoever_may_read_every_source(store, users) -> None:
    """bob, a writer of alice's memory, compresses it: alice (its owner) and carol (its
    reader) keep the summary of it (they lost it before: its grants were empty). A summary
    that also repeats bob's private memory is shared with nobody: alice may not read that."""
    alice, bob = users
    carol = f"carol-{alice}"
    source = store.add("Alice's Lisbon trip: flat on Rua Augusta.", user_id=alice)
    store.share(source.id, with_user_id=bob, user_id=alice, scope="write")
    store.share(source.id, with_user_id=carol, user_id=alice)
    summary = store.compress([source.id], "Lisbon trip: Rua Augusta flat.", user_id=bob)
    assert summary.user_id == bob
    assert store.get(summary.id, user_id=alice).text == "Lisbon trip: Rua Augusta flat."
    assert store.get(summary.id, user_id=carol).id == summary.id
    assert store.update(summary.id, "Lisbon: flat on Rua Augusta.", user_id=alice).version == 2
    with pytest.raises(AccessDeniedError):
        store.update(summary.id, "x", user_id=carol)  # a reader of the source reads, no more
    private = store.add("Bob's private note: flight at 7am.", user_id=bob)
    other = store.add("Alice's Porto trip.", user_id=alice)
    store.share(other.id, with_user_id=bob, user_id=alice, scope="write")
    mixed = store.compress([other.id, private.id], "Porto trip, flight at 7am.", user_id=bob)
    assert mixed.governance.readers == () and mixed.governance.writers == ()
    with pytest.raises(AccessDeniedError):
        store.get(mixed.id, user_id=alice)


def test_revoking_a_source_revokes_the_owners_summaries_made_from_it(store, users) -> None:
    """compress shared the summary with bob because he could read every source; once a
    source is revoked, so are the summaries of it its owner holds (at any depth, in the
    revoke's transaction); a summary another user made is theirs to share."""
    alice, bob = users
    carol = f"carol-{alice}"
    salary = store.add("Alice's salary is 91,400 EUR.", user_id=alice)
    bonus = store.add("Alice's bonus is 12,000 EUR.", user_id=alice)
    for m in (salary, bonus):
        store.share(m.id, with_user_id=bob, user_id=alice)
        store.share(m.id, with_user_id=carol, user_id=alice, scope="write")
    pay = store.compress([salary.id, bonus.id], "Alice earns 91,400 EUR + 12,000 EUR.",
                         user_id=alice)
    year = store.compress([pay.id], "Alice's pay this year: 103,400 EUR.", user_id=alice)
    by_carol = store.compress([bonus.id], "Alice gets a 12,000 EUR bonus.", user_id=carol)
    assert all(bob in c.governance.readers for c in (pay, year, by_carol))
    revoked = store.revoke(salary.id, with_user_id=bob, user_id=alice)
    assert revoked.id == salary.id and bob not in revoked.governance.readers
    for gone in (salary, pay, year):
        with pytest.raises(AccessDeniedError):
            store.get(gone.id, user_id=bob)
    assert pay.id not in {h.id for h in store.search(
        "Alice salary", user_id=bob, include_archived=True, k=20)}
    assert store.get(bonus.id, user_id=bob).id == bonus.id  # the other source stays shared
    assert store.get(by_carol.id, user_id=bob).id == by_carol.id  # carol's, not alice's
    assert store.get(pay.id, user_id=carol).id == pay.id  # carol's grants are untouched
    log = [(r.memory_id, r.action) for r in store.audit_log(user_id=alice, limit=50)]
    assert {(m.id, "revoke") for m in (salary, pay, year)} <= set(log)


def test_revoking_a_namespace_revokes_the_summaries_made_from_it_outside_it(store, users) -> None:
    """A summary of two sessions has no session: no session grant covers it, but compress
    shared it with bob, who could read both. Revoking one session's grant revokes it too (at
    any depth); a summary of the other session alone stays shared."""
    alice, bob = users
    pin = store.add("Alice's bank PIN is 4711.", user_id=alice, session_id="s1")
    safe = store.add("Alice's safe code is 9090.", user_id=alice, session_id="s2")
    for session in ("s1", "s2"):
        store.share_namespace(with_user_id=bob, user_id=alice, session_id=session)
    both = store.compress([pin.id, safe.id], "PIN 4711, safe 9090.", user_id=alice)
    again = store.compress([both.id], "Alice's codes: 4711 and 9090.", user_id=alice)
    only_s2 = store.add("Alice's locker is 12.", user_id=alice, session_id="s2")
    locker = store.compress([only_s2.id], "Locker 12.", user_id=alice)
    assert both.session_id is None and bob in both.governance.readers
    receipt = store.revoke_namespace(with_user_id=bob, user_id=alice, session_id="s1")
    assert receipt.memories == 3  # the source, the summary and the summary of the summary
    for gone in (pin, both, again):
        with pytest.raises(AccessDeniedError):
            store.get(gone.id, user_id=bob)
    found = {h.id for h in store.search("PIN safe code", user_id=bob, include_archived=True, k=20)}
    assert not found & {pin.id, both.id, again.id}
    assert store.get(locker.id, user_id=bob).id == locker.id
    assert store.get(safe.id, user_id=bob).id == safe.id


def test_a_namespace_grant_never_hands_over_a_summary_of_an_unshared_memory(store, users) -> None:
    """bob, a writer of alice's memory, shares his namespace with carol: his summary of
    alice's memory repeats it, so carol gets it neither when the grant comes first nor when
    it comes after; bob's own memories go to carol. Likewise alice's summary of a memory she
    took back from a namespace grantee (revoke of one memory) is not shared by that grant."""
    alice, bob = users
    carol = f"carol-{alice}"
    pin = store.add("Alice's bank PIN is 4821.", user_id=alice)
    card = store.add("Alice's card PIN is 3390.", user_id=alice)
    for mine in (pin, card):
        store.share(mine.id, with_user_id=bob, user_id=alice, scope="write")
    store.share_namespace(with_user_id=carol, user_id=bob)
    before = store.compress([pin.id], "Alice's PIN: 4821.", user_id=bob)
    own = store.add("Bob's gym is on Elm Street.", user_id=bob)
    assert carol not in before.governance.readers and carol in own.governance.readers
    store.revoke_namespace(with_user_id=carol, user_id=bob)
    after = store.compress([card.id], "Alice's card PIN: 3390.", user_id=bob)
    receipt = store.share_namespace(with_user_id=carol, user_id=bob)
    for summary in (before, after):
        with pytest.raises(AccessDeniedError):
            store.get(summary.id, user_id=carol)
        assert store.get(summary.id, user_id=alice).id == summary.id
    assert store.get(own.id, user_id=carol).id == own.id
    assert receipt.memories == 1  # bob's gym, not the summaries
    assert not {h.id for h in store.search("Alice PIN", user_id=carol, include_archived=True,
                                           k=20)} & {before.id, after.id}

    house = store.add("Alice's house key is under the blue pot.", user_id=alice)
    store.share_namespace(with_user_id=carol, user_id=alice)
    store.revoke(house.id, with_user_id=carol, user_id=alice)
    summary = store.compress([house.id], "Key: under the blue pot.", user_id=alice)
    assert carol not in summary.governance.readers
    store.share_namespace(with_user_id=carol, user_id=alice)  # again: shares the memory too
    assert store.get(summary.id, user_id=carol).id == summary.id


def test_a_revoke_reaches_the_owners_summaries_beyond_another_users_summary(store, users) -> None:
    """alice summarises bob's summary of her memory; revoking carol from the memory also
    revokes her from that summary two steps down, though the step between is bob's."""
    alice, bob = users
    carol = f"carol-{alice}"
    code = store.add("Alice's locker code is 7731.", user_id=alice)
    store.share(code.id, with_user_id=bob, user_id=alice, scope="write")
    store.share(code.id, with_user_id=carol, user_id=alice)
    by_bob = store.compress([code.id], "Locker code 7731.", user_id=bob)
    by_alice = store.compress([by_bob.id], "Alice's locker: 7731.", user_id=alice)
    assert carol in by_alice.governance.readers
    store.revoke(code.id, with_user_id=carol, user_id=alice)
    with pytest.raises(AccessDeniedError):
        store.get(by_alice.id, user_id=carol)
    assert store.get(by_bob.id, user_id=carol).id == by_bob.id  # bob's to share


def test_a_read_grant_to_a_writer_takes_write_from_the_summaries_too(store, users) -> None:
    """compress let bob change alice's summary because he could change its source; making
    him a reader of the source (one memory, or a namespace) makes him a reader of it."""
    alice, bob = users
    trip = store.add("Alice flies to Oslo on 3 May.", user_id=alice, session_id="s1")
    store.share(trip.id, with_user_id=bob, user_id=alice, scope="write")
    summary = store.compress([trip.id], "Oslo, 3 May.", user_id=alice)
    assert bob in summary.governance.writers
    store.share(trip.id, with_user_id=bob, user_id=alice, scope="read")
    with pytest.raises(AccessDeniedError):
        store.update(summary.id, "Bob rewrote this.", user_id=bob)
    assert store.get(summary.id, user_id=bob).text == "Oslo, 3 May."

    hotel = store.add("Alice's hotel in Oslo is the Grand.", user_id=alice, session_id="s2")
    taxi = store.add("Alice's taxi is booked for 9am.", user_id=alice, session_id="s3")
    for session in ("s2", "s3"):
        store.share_namespace(with_user_id=bob, user_id=alice, session_id=session, scope="write")
    both = store.compress([hotel.id, taxi.id], "Grand hotel, taxi 9am.", user_id=alice)
    assert both.session_id is None and bob in both.governance.writers  # outside s2
    store.share_namespace(with_user_id=bob, user_id=alice, session_id="s2", scope="read")
    with pytest.raises(AccessDeniedError):
        store.update(both.id, "Bob rewrote this.", user_id=bob)
    assert store.get(both.id, user_id=bob).id == both.id


def test_a_share_or_revoke_that_changes_nothing_writes_nothing(store, users) -> None:
    """Revoking a user who holds no grant, or repeating a grant, wrote a new version and an
    audit record each time."""
    alice, bob = users
    memory = store.add("Alice's spare key is with the neighbour.", user_id=alice)
    assert store.revoke(memory.id, with_user_id=bob, user_id=alice).version == 1
    assert store.share(memory.id, with_user_id=bob, user_id=alice).version == 2
    assert store.share(memory.id, with_user_id=bob, user_id=alice).version == 2
    assert store.share(memory.id, with_user_id=bob, user_id=alice, scope="write").version == 3
    assert store.revoke(memory.id, with_user_id=bob, user_id=alice).version == 4
    assert store.revoke(memory.id, with_user_id=bob, user_id=alice).version == 4
    actions = [r.action for r in store.audit_log(user_id=alice, memory_id=memory.id)]
    assert actions == ["add", "share:read", "share:write", "revoke"]


def test_a_namespace_revoke_takes_the_summaries_outside_in_its_own_transaction(
        store, users, monkeypatch: pytest.MonkeyPatch) -> None:
    """The summaries outside the namespace were changed in a second transaction: a process
    killed between the two left the grantee reading them, and no other process finished it.
    Now one write carries the grant, the namespace's memories and those summaries."""
    alice, bob = users
    hotel = store.add("Alice's hotel is the Grand.", user_id=alice, session_id="s1")
    taxi = store.add("Alice's taxi is at 9am.", user_id=alice, session_id="s2")
    for session in ("s1", "s2"):
        store.share_namespace(with_user_id=bob, user_id=alice, session_id=session, scope="write")
    both = store.compress([hotel.id, taxi.id], "Grand hotel, taxi 9am.", user_id=alice)
    assert both.session_id is None and bob in both.governance.writers
    writes = []
    real = store.store.write
    monkeypatch.setattr(store.store, "write", lambda *a, **kw: writes.append(1) or real(*a, **kw))
    assert store.share_namespace(with_user_id=bob, user_id=alice, session_id="s1").memories == 2
    assert len(writes) == 1 and bob not in store.get(both.id, user_id=alice).governance.writers
    writes.clear()
    assert store.revoke_namespace(with_user_id=bob, user_id=alice, session_id="s1").memories == 2
    assert len(writes) == 1
    with pytest.raises(AccessDeniedError):
        store.get(both.id, user_id=bob)


def test_a_summary_lives_no_longer_than_its_sources(store, users) -> None:
    import time

    alice, _ = users
    brief = store.add("Alice's one-time code is 93017.", user_id=alice, ttl_seconds=60)
    lasting = store.add("Alice banks with Nordbank.", user_id=alice)
    summary = store.compress([brief.id, lasting.id], "Alice's Nordbank code 93017.", user_id=alice)
    assert 0 < summary.governance.ttl_seconds <= 60  # from the summary's own creation
    gone = store.add("Alice's door code is 4410.", user_id=alice, ttl_seconds=0.2)
    time.sleep(0.3)
    with pytest.raises(InvalidInputError, match="expired"):
        store.compress([gone.id], "Alice's door code 4410.", user_id=alice)
    assert store.get(gone.id, user_id=alice).state.value == "generated"  # untouched
