"""Property-based tests (hypothesis) over sequences of operations on a real store.

A state machine adds, updates, shares, revokes, archives, rolls back and forgets memories,
keeping a model of how many versions each memory must have. After every step:

* versions are monotonic and complete: a memory's history is exactly versions 1..n, with n
  the model's count, and ``updated_at`` never goes backwards;
* tombstones are final: a forgotten memory stays deleted, its history keeps no text, and
  every later change raises ``MemoryDeletedError``;
* the index agrees with the vault: one point per indexed memory, at its current version.

One store per module, one fresh user per example (examples cannot see each other's memories).
Example counts are modest so the suite stays fast.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from memos_core import MemoryDeletedError, MemOS, MemOSConfig, State
from memos_core.cube import Governance
from memos_core.governance import access
from memos_core.retrieval.filters import INDEXED_STATES

TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30,
).filter(lambda s: s.strip())


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemOS]:
    mos = MemOS(tmp_path_factory.mktemp("props"), config=MemOSConfig(show_progress=False))
    yield mos
    mos.close()


class VaultMachine(RuleBasedStateMachine):
    """Operations on one user's memories against a model of their version counts."""

    mos: MemOS
    memories = Bundle("memories")

    def __init__(self) -> None:
        super().__init__()
        self.user = f"u-{uuid.uuid4().hex[:10]}"
        self.versions: dict[str, int] = {}
        self.deleted: set[str] = set()
        self.archived: set[str] = set()
        self.peer: dict[str, str | None] = {}  # the peer's grant on each memory

    def _change(self, mid: str, call: Any, writes: bool = True) -> None:
        """Run a change (``writes``: one that makes a new version); a forgotten memory must
        refuse it and stay as it is."""
        if mid in self.deleted:
            with pytest.raises(MemoryDeletedError):
                call()
            return
        call()
        self.versions[mid] += writes

    @rule(target=memories, text=TEXT)
    def add(self, text: str) -> str:
        cube = self.mos.add(text, user_id=self.user)
        self.versions[cube.id] = 1
        return cube.id

    @rule(mid=memories, text=TEXT)
    def update(self, mid: str, text: str) -> None:
        self._change(mid, lambda: self.mos.update(mid, text, user_id=self.user))

    @rule(mid=memories, scope=st.sampled_from(["read", "write"]))
    def share(self, mid: str, scope: str) -> None:
        self._change(mid, lambda: self.mos.share(mid, with_user_id="peer", user_id=self.user,
                                                 scope=scope), self.peer.get(mid) != scope)
        if mid not in self.deleted:
            self.peer[mid] = scope

    @rule(mid=memories)
    def revoke(self, mid: str) -> None:
        self._change(mid, lambda: self.mos.revoke(mid, with_user_id="peer", user_id=self.user),
                     self.peer.get(mid) is not None)
        if mid not in self.deleted:
            self.peer[mid] = None

    @rule(mid=memories)
    def archive_or_restore(self, mid: str) -> None:
        target = "generated" if mid in self.archived else "archived"
        self._change(mid, lambda: self.mos.set_state(mid, target, user_id=self.user))
        if mid not in self.deleted:
            self.archived ^= {mid}

    @rule(mid=memories, data=st.data())
    def rollback(self, mid: str, data: st.DataObject) -> None:
        to = data.draw(st.integers(1, self.versions[mid]))
        self._change(mid, lambda: self.mos.rollback(mid, to, user_id=self.user))
        if mid not in self.deleted:  # content only: archived or not, it stays as it was
            state = self.mos.get(mid, user_id=self.user).state
            assert state is (State.ARCHIVED if mid in self.archived else State.GENERATED)

    @rule(mid=memories)
    def forget(self, mid: str) -> None:
        receipt = self.mos.forget(mid, user_id=self.user)
        if mid not in self.deleted:
            self.versions[mid] += 1
            self.deleted.add(mid)
        assert receipt.version == self.versions[mid]  # forgetting again changes nothing

    @invariant()
    def histories_are_complete_and_monotonic(self) -> None:
        for mid, n in self.versions.items():
            history = self.mos.history(mid, user_id=self.user)
            assert [c.version for c in history] == list(range(1, n + 1))
            stamps = [c.updated_at for c in history]
            assert stamps == sorted(stamps)

    @invariant()
    def tombstones_are_final_and_textless(self) -> None:
        for mid in self.deleted:
            history = self.mos.history(mid, user_id=self.user)
            assert history[-1].state is State.DELETED
            assert all(c.text == "" and c.scrubbed and not c.entities for c in history)

    @invariant()
    def index_equals_vault(self) -> None:
        wanted = {mid: v for mid, (v, state) in self.mos.vault.current_versions().items()
                  if state in INDEXED_STATES}
        assert self.mos.index.versions() == wanted


def test_operation_sequences_keep_the_vault_invariants(store: MemOS) -> None:
    machine = type("Machine", (VaultMachine,), {"mos": store})
    run_state_machine_as_test(machine, settings=settings(
        max_examples=25, stateful_step_count=15, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    ))
    assert store.vault.verify_audit()[0]


NAMES = st.sampled_from(["bob", "carol", "dave"])
GOVERNANCE = st.builds(
    Governance, readers=st.lists(NAMES, unique=True).map(tuple),
    writers=st.lists(NAMES, unique=True).map(tuple),
)


@settings(max_examples=60, deadline=None)
@given(gov=GOVERNANCE, who=NAMES, scope=st.sampled_from(["read", "write"]))
def test_grant_then_revoke_leaves_no_trace_of_the_grantee(gov: Governance, who: str, scope: str) -> None:
    shared = access.granted(gov, who, scope)
    assert who in shared.readers and (who in shared.writers) == (scope == "write")
    assert access.granted(shared, who, scope) == shared  # idempotent
    gone = access.revoked(shared, who)
    assert who not in gone.readers + gone.writers
    others = lambda g: ([r for r in g.readers if r != who], [w for w in g.writers if w != who])
    assert others(gone) == others(gov)  # nobody else's grant changed
