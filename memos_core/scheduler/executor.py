"""The scheduler's executor: usage from the vault -> the pure policy's plan -> applied, audited.

A run works owner by owner (``cube.namespace.user_id``): every owner gets their own plan and
their own hot block, so a KV block never mixes two users' memories. For each owner:

1. **Read** the owner's live memories (generated, activated, archived) -- and expired ones
   still marked ``tier == activation``, which the policy demotes
   (:meth:`SchedulerExecutor.working_set`) -- with their usage counters and make
   :class:`~memos_core.scheduler.policy.UsageRecord` s. A memory's size in a block
   (``KVCacheTier.memory_tokens``) is only counted for memories the policy could put in the
   block (:func:`~memos_core.scheduler.policy.may_activate`: hot enough, not expiring or
   archived, of an activated type, no barred sensitivity tag) that are also current and
   prompt-safe, so a run with no promotion candidate never loads the model or its tokenizer.
2. **Plan** with :func:`~memos_core.scheduler.policy.plan_schedule`.
3. **Apply**, in plan order, each step audited:

   * ``expire`` -> :func:`memos_core.ops.writes.set_state` to ``expired`` (a new version
     audited ``state:expired`` with the policy's reason; the store's write path drops it
     from the index, and its change listeners drop any KV block holding it);
   * ``archive`` -> likewise to ``archived`` (``state:archived``);
   * ``demote`` / ``promote`` -> ``vault.set_tier(id, "plaintext" | "activation")`` plus an
     audit record ``schedule:demote`` / ``schedule:promote``. Promotion deliberately does not
     write a new version (nor the ``activated`` lifecycle state): a new version would
     invalidate the very block being built.

   A step whose memory changed since the plan was made (another version, forgotten,
   already where the step would put it, or, for a promotion or demotion, served by an
   adapter the parametric tier activated meanwhile: :func:`needless`, checked again under
   the store's write lock) is skipped, not forced; so is one whose write lost a race with
   another thread or process (a :class:`~memos_core.errors.ConflictError`: nothing was
   written). Two runs at once (two processes in server mode) thus report each change
   ``done`` once, by the run that wrote it. A promotion or demotion is not versioned: its
   write is a compare-and-set on the tier read under the lock (``vault.set_tier(...,
   expected=)``), so of two processes that both passed the check one writes and audits it,
   the other reports ``skipped``; so does a run whose memory an adapter took in between
   (the parametric tier's moves are compare-and-sets too).
4. **Block**: the owner's hot memories (:meth:`SchedulerExecutor.hot_memories`) are composed
   into one block and its KV cache built or reused (``tier.get_or_build``); the owner's older
   blocks are dropped (audited as ``schedule:build`` / ``schedule:drop``, also those the
   build evicted to make room), and other owners' blocks it evicted are audited
   ``schedule:evict`` in their owner's log.

Correctness never depends on the executor racing well with writers: a block is addressed by
its memories' ids *and versions*, so a block made from an old version is simply never found
again by chat, and the change listener drops it. A block the run had to build (also one that
was kept when the run looked, then dropped by a forget before the build) is checked against
the hot set afterwards (:meth:`SchedulerExecutor.still_hot`) and dropped if a member changed
meanwhile: the forget's purge may have run before the file was written.

Audit records of expiry, archiving, promotion, demotion and blocks name the owner as user
and :data:`SCHEDULER_AGENT` as agent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from memos_core.cube import MemCube, State, Tier, utcnow
from memos_core.errors import ConflictError, InvalidInputError, MemOSError
from memos_core.governance.access import SCHEDULER_REASON
from memos_core.governance.sensitivity import allowance, withheld
from memos_core.lifecycle import (
    CHANGEABLE_STATES,
    INDEXED,
    INDEXED_STATES,
    SEARCHABLE,
    ttl_elapsed,
)
from memos_core.ops.writes import set_state
from memos_core.scheduler.policy import (
    Plan,
    PlanStep,
    SchedulerConfig,
    StepKind,
    UsageRecord,
    may_activate,
    plan_schedule,
    with_half_life,
)
from memos_core.scheduler.report import ScheduleReport, StepOutcome, UserSchedule
from memos_core.vault import Actor, ListQuery, pages

if TYPE_CHECKING:
    from memos_core.store import MemoryStore
    from memos_core.tiers.activation import KVBlock, KVBlockInfo, KVCacheTier

logger = logging.getLogger(__name__)

#: Agent id written in the audit records of the scheduler's own actions.
SCHEDULER_AGENT = "memos-scheduler"

#: ``provider(create)`` -> the KV tier. With ``create=False`` it returns the tier only if it
#: already exists (None otherwise), so the executor never loads a model just to look.
TierProvider = Callable[[bool], "KVCacheTier | None"]


_PAGE = 1000


def prompt_safe(cube: MemCube, allowed: frozenset[str]) -> bool:
    """Whether every sensitivity tag of ``cube`` is in the store's prompt allowance
    (``MemOSConfig.allow_sensitive``): search would return it unredacted, so its text may sit
    in a KV prefix too. Others never enter a block (search hands them out redacted)."""
    return not withheld(cube.governance.sensitivity, allowed)


def is_hot_candidate(cube: MemCube, user_id: str, allowed: frozenset[str] = frozenset(),
                     now: datetime | None = None) -> bool:
    """Whether ``cube`` may be served from ``user_id``'s hot block right now: owned by that
    user, generated/activated, not superseded, its TTL not run out at ``now`` (default: the
    current time; search hides it from then on, so chat must too), marked as being in the
    activation tier, and :func:`prompt_safe` under ``allowed``."""
    return (
        cube.user_id == user_id
        and cube.state in SEARCHABLE
        and cube.valid_to is None
        and not ttl_elapsed(cube.created_at, cube.governance.ttl_seconds, now or utcnow())
        and cube.usage.tier is Tier.ACTIVATION
        and prompt_safe(cube, allowed)
    )


def in_working_set(cube: MemCube) -> bool:
    """Whether the scheduler plans for ``cube``: a live memory (generated, activated,
    archived), or an expired one still marked as in the activation tier (to demote it)."""
    return cube.state in INDEXED or (cube.state is State.EXPIRED
                                     and cube.usage.tier is Tier.ACTIVATION)


def block_order(cubes: Sequence[MemCube]) -> list[MemCube]:
    """Cubes in block order ``(created_at, id)``: the policy's activation-set order."""
    return sorted(cubes, key=lambda c: (c.created_at, c.id))


#: What each step moves its memory to: a lifecycle state (a new version) or a tier.
STEP_TARGET: Mapping[StepKind, State | Tier] = {
    StepKind.EXPIRE: State.EXPIRED,
    StepKind.ARCHIVE: State.ARCHIVED,
    StepKind.DEMOTE: Tier.PLAINTEXT,
    StepKind.PROMOTE: Tier.ACTIVATION,
}


def needless(step: PlanStep, current: MemCube | None) -> str | None:
    """Why ``step`` must not write to its memory as it is now (``current``, None when
    unknown), or None when it should. Its memory was forgotten; or it is already where the
    step would put it (another thread or process applied the same step, or a user changed
    it): writing would add a second ``expired`` version or ``schedule:promote`` record, or
    report as done a write someone else made; or, for a promotion or demotion, an adapter
    serves it now (``tier == parametric``: the parametric tier activated one holding it
    after the plan was made, and its tier is the parametric tier's to set -- overwriting it
    would put the memory in a KV block and offer it to consolidation again while the adapter
    answers with it); or it is at another version than the plan decided on (except for a
    demotion, which is right for any version: the policy demotes a memory this same plan
    may have just expired or archived)."""
    if current is None or current.state is State.DELETED:
        return "forgotten since planned"
    target = STEP_TARGET[step.kind]
    if isinstance(target, State) and current.state is target:
        return f"already {target.value}"
    if isinstance(target, Tier) and current.usage.tier is target:
        return f"already in the {target.value} tier"
    if isinstance(target, Tier) and current.usage.tier is Tier.PARAMETRIC:
        return "served by an adapter (the parametric tier)"
    if current.version != step.version and step.kind is not StepKind.DEMOTE:
        return f"now at version {current.version}; decided on {step.version}"
    return None


class SchedulerExecutor:
    """Carries out the scheduler's plans on one MemOS and its KV tier.

    Args:
        store: the memory store (its vault is read; lifecycle changes go through
            :mod:`memos_core.ops.writes`).
        tier: the :class:`KVCacheTier`, or a :data:`TierProvider` so the model loads only when
            a block must actually be built.
        config: the policy's knobs; default ``SchedulerConfig``. Heat half-life: the
            store's (so the policy decays heat the way the vault bumps it) unless the config
            sets its own; likewise for a config passed to a run.
        clock: returns "now" (an aware datetime); tests pass a fixed or advancing clock.

    Thread-safe: runs are serialised by a lock; :meth:`hot_memories` may be called at any time.
    """

    def __init__(
        self,
        store: MemoryStore,
        tier: KVCacheTier | TierProvider,
        config: SchedulerConfig | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._provider: TierProvider = tier if callable(tier) else (lambda _create: tier)
        self.config = with_half_life(config or SchedulerConfig(), store.config.heat_half_life_s)
        self._clock = clock
        self._run_lock = threading.Lock()
        self._state_lock = threading.Lock()
        #: memory id -> (owner, version, model digest, tokens): one entry per live memory
        #: (each run drops the others: _drop_counts)
        self._tokens: dict[str, tuple[str, int, str, int]] = {}
        self._hot: dict[str, tuple[str, ...]] = {}  # owner -> ids last marked hot

    # ------------------------------------------------------------------ reading


    def configured(self, config: SchedulerConfig | None) -> SchedulerConfig:
        """``config`` (default: this executor's) with the store's heat half-life unless it
        sets its own (:func:`~memos_core.scheduler.policy.with_half_life`)."""
        if config is None:
            return self.config
        return with_half_life(config, self._store.config.heat_half_life_s)
    def owned_cubes(self, user_id: str | None = None) -> Iterator[list[MemCube]]:
        """Live memories (generated, activated, archived) in batches, of one owner or of all.

        Memories merely shared with ``user_id`` are not theirs and are left out, and so is a
        damaged one (logged: the scheduler cannot change it, and it must not stop the pass
        for every other memory).
        """
        return self._owned(user_id, INDEXED_STATES, lambda c: c.state in INDEXED)

    def working_set(self, user_id: str | None = None) -> Iterator[list[MemCube]]:
        """What a run plans for, in batches: :meth:`owned_cubes`, and the owner's expired
        memories still marked ``tier == activation`` (expired by hand, or by a run stopped
        between its expire and demote steps), which the policy demotes. Left marked, such a
        memory would be hot again the moment it is restored, with no ``schedule:promote``
        record after its expiry."""
        return self._owned(user_id, CHANGEABLE_STATES, in_working_set)

    def _owned(self, user_id: str | None, states: tuple[str, ...],
               keep: Callable[[MemCube], bool]) -> Iterator[list[MemCube]]:
        vault, damaged = self._store.vault, self._store.report_damaged
        if user_id is None:
            for batch in vault.iter_current(_PAGE, on_damaged=damaged):
                yield [c for c in batch if keep(c)]
            return
        for batch in pages(vault, ListQuery(user_ids=(user_id,), states=states, shared=False),
                           damaged, _PAGE):
            yield [c for c in batch if keep(c)]

    def _grouped(self, user_id: str | None) -> dict[str, list[MemCube]]:
        groups: dict[str, list[MemCube]] = {}
        for batch in self.working_set(user_id):
            for cube in batch:
                groups.setdefault(cube.user_id, []).append(cube)
        return groups

    def _token_count(self, cube: MemCube) -> int:
        """Tokens of ``cube`` in a block (loads the model on first use; cached per version)."""
        tier = self._provider(True)
        if tier is None:  # pragma: no cover - a provider must create when asked to
            raise MemOSError("the KV tier provider returned no tier; the model failed to load")
        digest = tier.model.fingerprint.digest
        with self._state_lock:
            cached = self._tokens.get(cube.id)
        if cached is not None and cached[1:3] == (cube.version, digest):
            return cached[3]
        tokens = tier.memory_tokens(cube.text)
        with self._state_lock:  # replaces the count of an earlier version
            self._tokens[cube.id] = (cube.user_id, cube.version, digest, tokens)
        return tokens

    def records(
        self, cubes: Sequence[MemCube], now: datetime, config: SchedulerConfig | None = None
    ) -> list[UsageRecord]:
        """The policy's view of ``cubes`` at ``now``. ``token_count`` stays 0 -- and the model
        is not touched -- for a memory that cannot enter a block anyway: one the policy would
        not activate (:func:`may_activate`), a superseded one, or one whose sensitivity the
        store's prompt allowance does not cover (search redacts it, so its text must not sit
        in a KV cache)."""
        config = self.configured(config)
        allowed = self._allowed()
        records = []
        for cube in cubes:
            record = UsageRecord.from_cube(cube, token_count=0)
            if (cube.valid_to is None and prompt_safe(cube, allowed)
                    and may_activate(record, now, config)):
                record = record.model_copy(update={"token_count": self._token_count(cube)})
            records.append(record)
        return records

    def _drop_counts(self, groups: Mapping[str, Sequence[MemCube]], user_id: str | None) -> None:
        """Keep token counts for live memories only: drop those of the owners a run covers
        (all, or ``user_id``) for memories not among ``groups`` (forgotten, expired or
        archived since, also every memory of an owner with none left)."""
        live = {c.id for cubes in groups.values() for c in cubes if c.state in INDEXED}
        with self._state_lock:
            gone = [mid for mid, (owner, *_) in self._tokens.items()
                    if mid not in live and user_id in (None, owner)]
            for mid in gone:
                del self._tokens[mid]

    def plan(
        self,
        user_id: str | None = None,
        *,
        now: datetime | None = None,
        config: SchedulerConfig | None = None,
    ) -> dict[str, Plan]:
        """The plan for each owner (all owners, or just ``user_id``); changes nothing."""
        now = now or self._clock()
        config = self.configured(config)
        return {
            owner: plan_schedule(self.records(cubes, now, config), config, now)
            for owner, cubes in self._grouped(user_id).items()
        }

    # ------------------------------------------------------------------ the hot set

    def _allowed(self) -> frozenset[str]:
        return allowance(getattr(self._store.config, "allow_sensitive", ()))

    def hot_memories(self, user_id: str) -> list[MemCube]:
        """``user_id``'s hot memories as they are now, in block order: the memories chat
        serves from the KV prefix. Current versions only; expired, archived, forgotten,
        superseded, other users' memories and memories whose sensitivity tags the store's
        prompt allowance does not cover never appear.

        The ids come from the last run (or, after a restart, from one scan of the owner's
        memories for those marked ``tier == activation``); the cubes are re-read each call.
        """
        allowed = self._allowed()
        now = self._clock()
        with self._state_lock:
            ids = self._hot.get(user_id)
        if ids is None:
            ids = tuple(
                c.id
                for batch in self.owned_cubes(user_id)
                for c in batch
                if is_hot_candidate(c, user_id, allowed, now)
            )
            with self._state_lock:
                self._hot.setdefault(user_id, ids)
        # a damaged one is left out (logged): chat must not fail for the user's others
        cubes = self._store.vault.get_many(list(ids), on_damaged=self._store.report_damaged)
        return block_order([c for c in cubes.values()
                            if is_hot_candidate(c, user_id, allowed, now)])

    def still_hot(self, user_id: str, hot: Sequence[MemCube]) -> bool:
        """Whether ``hot`` is still ``user_id``'s hot set, version for version, read under the
        store's write lock. A forget holds that lock until its purge is done, so a KV block
        built from ``hot`` and found current here was on disk before any later forget looks
        for it; found stale, the block must be dropped (a forget may have purged before the
        block was written)."""
        with self._store.write_lock:
            now = self.hot_memories(user_id)
        return [(c.id, c.version) for c in now] == [(c.id, c.version) for c in hot]

    def forget_hot_sets(self) -> None:
        """Drop the cached hot ids (they are re-read from the vault on next use)."""
        with self._state_lock:
            self._hot.clear()

    # ------------------------------------------------------------------ running

    def run(
        self,
        user_id: str | None = None,
        *,
        now: datetime | None = None,
        config: SchedulerConfig | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> ScheduleReport:
        """Plan and apply for every owner (or only ``user_id``'s memories); see the module
        docstring. Errors of single steps or blocks are reported, not raised (any error
        building one owner's block is that owner's ``error``; the run goes on with the next
        owner); ``should_stop`` is polled between steps and owners, and a stopped run reports
        ``stopped=True``.

        Raises:
            InvalidInputError: a naive ``now``.
        """
        if now is not None and now.utcoffset() is None:
            raise InvalidInputError("now must be a timezone-aware datetime (use UTC)")
        stop = should_stop or (lambda: False)
        with self._run_lock:
            started = time.perf_counter()
            now = now or self._clock()
            config = self.configured(config)
            users: list[UserSchedule] = []
            stopped = False
            groups = self._grouped(user_id)
            self._drop_counts(groups, user_id)
            for owner, cubes in sorted(groups.items()):
                if stop():
                    stopped = True
                    break
                users.append(self._run_owner(owner, cubes, now, config, stop))
                stopped = stop()
            if user_id is not None and not users and not stopped:
                users.append(self._run_owner(user_id, [], now, config, stop))
            return ScheduleReport(
                now=now,
                duration_ms=1000.0 * (time.perf_counter() - started),
                users=tuple(users),
                stopped=stopped,
            )

    def _run_owner(
        self,
        owner: str,
        cubes: list[MemCube],
        now: datetime,
        config: SchedulerConfig,
        stop: Callable[[], bool],
    ) -> UserSchedule:
        plan = plan_schedule(self.records(cubes, now, config), config, now)
        outcomes: list[StepOutcome] = []
        for step in plan.steps:
            if stop():
                break
            outcomes.append(self._apply(step, owner))
        with self._state_lock:
            self._hot[owner] = plan.activation_set
        block: dict[str, Any] = {}
        if not stop():
            block = self._sync_block(owner, {c.id for c in cubes})
        return UserSchedule(
            user_id=owner,
            memories=len(cubes),
            steps=tuple(outcomes),
            activation_set=plan.activation_set,
            activation_tokens=plan.activation_tokens,
            **block,
        )

    # ------------------------------------------------------------------ steps

    def _apply(self, step: PlanStep, owner: str) -> StepOutcome:
        """Apply one step; never raises for a memory that changed, vanished or failed.

        A step whose memory needs no write any more (:func:`needless`: forgotten, another
        version, already in the step's target state or tier, served by an adapter) is
        ``skipped``, checked again under the store's write lock just before the write; one
        whose write lost a race with another thread or process
        (:class:`~memos_core.errors.ConflictError`: nothing was written) is ``skipped`` too.
        Only a write this step made is ``done``.
        """
        def outcome(status: Literal["done", "skipped", "failed"],
                    detail: str | None = None) -> StepOutcome:
            return StepOutcome(kind=step.kind, memory_id=step.memory_id, version=step.version,
                               reason=step.reason, status=status, detail=detail)

        vault = self._store.vault
        why = needless(step, vault.get(step.memory_id))
        if why is not None:
            return outcome("skipped", why)
        try:
            with self._store.write_lock:  # read and write the same version
                current = vault.get(step.memory_id)
                why = needless(step, current)
                if why is not None or current is None:  # (needless names a vanished one)
                    return outcome("skipped", why)
                self._write_step(step, owner, current)
        except ConflictError:  # another process wrote first: what the plan decided is moot
            why = needless(step, vault.get(step.memory_id))
            return outcome("skipped", f"changed concurrently: {why or 'another write came first'}")
        except MemOSError as exc:
            return outcome("failed", str(exc))
        return outcome("done")

    def _write_step(self, step: PlanStep, owner: str, current: MemCube) -> None:
        """The write of one step on ``current`` (its memory as read under the write lock)."""
        reason = f"{SCHEDULER_REASON}{step.reason}"
        target = STEP_TARGET[step.kind]
        if isinstance(target, State):
            set_state(self._store, current, target, Actor(owner, SCHEDULER_AGENT, reason))
            return
        if not self._store.vault.set_tier(step.memory_id, target.value,
                                          expected=current.usage.tier.value):
            raise ConflictError(f"the tier of {step.memory_id} changed since it was read")
        self._store.vault.audit(
            Actor(owner, SCHEDULER_AGENT, reason), f"schedule:{step.kind.value}",
            memory_id=step.memory_id, version=current.version,
            details={"heat": round(step.heat, 6), "tier": target.value},
        )

    def _sync_block(self, owner: str, owned_ids: set[str]) -> dict[str, Any]:
        """Build (or reuse) ``owner``'s hot block and drop the owner's other blocks.

        Every block the run removes is audited and reported: the owner's older blocks
        ``schedule:drop`` (``dropped_blocks``) -- also those the build evicted to make room
        for the new one -- and other owners' blocks the build evicted ``schedule:evict``, in
        their owner's log (``evicted_blocks``). A build that fails keeps the owner's older
        blocks but those it evicted."""
        hot = self.hot_memories(owner)
        tier = self._provider(bool(hot))
        if tier is None:  # nothing hot and no model loaded: there is no block to keep
            return {}
        stale = [
            b.block_id for b in tier.blocks() if any(mid in owned_ids for mid, _ in b.memories)
        ]
        keep = tier.block_id_for(hot) if hot else None
        evicted: list[KVBlockInfo] = []
        result = (self._build_block(owner, tier, hot, [b for b in stale if b != keep], evicted)
                  if hot else {})
        gone = {info.block_id for info in evicted}
        dropped = tuple(bid for bid in stale if bid != keep and (
            bid in gone or ("error" not in result and tier.drop(bid))))
        for bid in dropped:
            self._audit_block(owner, "schedule:drop", bid, {})
        others = [info for info in evicted if info.block_id not in stale]
        for info in others:
            self.audit_eviction(info)
        return {**result, "dropped_blocks": dropped,
                "evicted_blocks": tuple(info.block_id for info in others)}

    def _build_block(self, owner: str, tier: KVCacheTier, hot: list[MemCube],
                     evict_first: list[str], evicted: list[KVBlockInfo]) -> dict[str, Any]:
        """Get or build the block of ``hot`` (audited ``schedule:build`` when built); what
        it evicted to make room is appended to ``evicted``, also when it fails. Returns the
        report's block fields, or ``{"error": ...}``."""
        # whether this call built the block comes from get_or_build itself: the block may
        # be kept when we look and dropped by a forget before get_or_build runs, which then
        # writes the forgotten text again from the cubes read above
        fresh: list[KVBlock] = []
        try:
            block = tier.get_or_build(hot, evict_first=evict_first, on_build=fresh.append,
                                      on_evict=evicted.append)
        except (MemOSError, ValueError) as exc:  # budget, unsupported cache, boundary
            return {"error": f"{type(exc).__name__}: {exc}"}
        except Exception as exc:  # noqa: BLE001 - one owner's block must not stop the run
            # an error no one foresaw (a disk error writing the file, a library's own
            # exception): reported for this owner, logged with its cause, and the owners
            # after them are still scheduled (chat, building the block itself, sends it
            # as text after a disk error; another error reaches the chat's caller)
            logger.exception("building the hot block of %s failed", owner)
            return {"error": f"{type(exc).__name__}: {exc}"}
        built = bool(fresh)
        if built and not self.still_hot(owner, hot):  # changed while it was built
            tier.drop(block.block_id)
            return {"error": "the hot memories changed while their block was built"}
        if built:
            self._audit_block(owner, "schedule:build", block.block_id,
                              {"memories": [list(m) for m in block.memories],
                               "tokens": block.num_tokens})
        return {"block_id": block.block_id, "block_tokens": block.num_tokens,
                "block_built": built}

    def audit_eviction(self, info: KVBlockInfo, action: str = "schedule:evict",
                       agent: str = SCHEDULER_AGENT) -> None:
        """Audit ``action`` (``schedule:evict``; chat's builds: ``chat:evict``) of a block
        evicted to make room, in its owner's log (a block holds one owner's memories; its
        file, now deleted, held their text)."""
        cubes = self._store.vault.get_many([mid for mid, _ in info.memories],
                                           on_damaged=self._store.report_damaged)
        owner = next((c.user_id for c in cubes.values()), None)
        if owner is None:  # pragma: no cover - its memories' records are gone or damaged
            logger.warning("KV block %s was evicted to make room; no owner of its memories "
                           "could be read, so it is not audited", info.block_id)
            return
        self._store.vault.audit(Actor(owner, agent, _EVICTED), action,
                                details={"block_id": info.block_id})

    def _audit_block(self, owner: str, action: str, block_id: str, details: dict[str, Any]) -> None:
        self._store.vault.audit(
            Actor(owner, SCHEDULER_AGENT, _BLOCK_REASONS[action]), action,
            details={"block_id": block_id, **details},
        )


#: The reason of an eviction record (``schedule:evict``, ``chat:evict``).
_EVICTED = "evicted to make room within the KV budget for another hot block"
#: The reason of each block record of the scheduler's.
_BLOCK_REASONS = {
    "schedule:build": "hot block rebuilt",
    "schedule:drop": "hot block superseded",
}

__all__ = [
    "SCHEDULER_AGENT",
    "STEP_TARGET",
    "SchedulerExecutor",
    "TierProvider",
    "block_order",
    "in_working_set",
    "is_hot_candidate",
    "needless",
    "prompt_safe",
]
