"""The parametric tier of one store: train, gate, activate, roll back and retire adapters.

One :class:`ParametricTier` per open store (the engine makes it). An adapter belongs to one
owner: it is trained only from that owner's memories and serves only that owner's chats, so
no user's memories reach another user's answers through the weights.

Lifecycle (each step audited with ``parametric:<action>``, naming the adapter and the
``[id, version]`` of its memories; each memory's tier move is audited on the memory too,
``parametric:promote`` / ``parametric:demote``: see :meth:`ParametricTier._mark`):

* :meth:`consolidate` -- train on the owner's fact/preference memories, evaluate, gate; an
  adapter that passes is activated (unless ``activate=False``), one that fails is kept as
  ``rejected`` with its manifest (weights deleted).
* :meth:`activate` / :meth:`deactivate` / :meth:`rollback` -- switch the owner's active
  adapter. Active memories are marked ``tier == parametric``; deactivating marks them
  ``plaintext`` again (the text never left the vault).
* :meth:`retire_holding` -- a forgotten memory retires every adapter holding it at once:
  deactivated, weights deleted, and a retrain without the memory queued
  (:meth:`run_queue` runs it). The engine calls it from ``mos.on_change`` for tombstones;
  the forget cascade calls it too, so it also works when no engine is running.
* An expired memory retires its adapters the same way, and so does a memory updated to
  another text (the weights would still answer with the old one: a changed PIN); the retrain
  queued then takes the memory at its new text. :meth:`settle` catches up with what a
  process did not hear of, and until then :meth:`serving` does not serve such an adapter.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict

from memos_core.cube import MemCube, MemoryType, State, Tier, utcnow
from memos_core.errors import CorruptDataError, InvalidInputError
from memos_core.governance.sensitivity import NEVER_IN_WEIGHTS, allowance, withheld
from memos_core.lifecycle import ttl_elapsed
from memos_core.results import DerivedForm
from memos_core.runtime.errors import ModelLoadError
from memos_core.tiers.parametric.adapted import (
    adapter_tag,
    chat_form,
    in_context_form,
    load_adapted,
)
from memos_core.tiers.parametric.config import ParametricConfig
from memos_core.tiers.parametric.data import (
    CONTROL_PROMPTS,
    REPLAY_PROMPTS,
    Example,
    cloze,
    memory_examples,
    neighbour,
    replay_examples,
)
from memos_core.tiers.parametric.evaluation import (
    Evaluation,
    GateDecision,
    base_control_answers,
    evaluate,
    gate,
    greedy_completion,
    in_context_answers,
    scrubbed,
)
from memos_core.tiers.parametric.store import (
    AdapterManifest,
    AdapterStore,
    MemoryRef,
    RetrainRequest,
)
from memos_core.tiers.parametric.trainer import TrainingReport, require_peft, train_lora
from memos_core.vault import Actor
from memos_core.vault.base import ListQuery, pages

if TYPE_CHECKING:
    from memos_core.store import MemoryStore
    from memos_core.runtime import LocalModel

logger = logging.getLogger("memos_core.parametric")

AGENT = "parametric"
CONSOLIDATABLE = frozenset({MemoryType.FACT, MemoryType.PREFERENCE})
_CONSOLIDATABLE_TYPES = tuple(sorted(t.value for t in CONSOLIDATABLE))
_LIVE_STATES = (State.GENERATED.value, State.ACTIVATED.value)
#: compare-and-set attempts of one tier move (:meth:`ParametricTier._move`): each failed one
#: means another writer changed the tier in the instant between its read and its write
_MOVE_TRIES = 3


class ConsolidationResult(BaseModel):
    """What :meth:`ParametricTier.consolidate` produced."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    manifest: AdapterManifest
    activated: bool


class _Training(NamedTuple):
    """One training run of :meth:`ParametricTier.consolidate`, before anything is written."""

    base_model_id: str
    base_digest: str
    peft_model: Any
    report: TrainingReport
    evaluation: Evaluation
    decision: GateDecision


def consolidatable(cube: MemCube) -> bool:
    """Live (its TTL not run out), current, a fact or preference, with a cloze form (see
    ``data.cloze``)."""
    return (cube.state in (State.GENERATED, State.ACTIVATED) and cube.valid_to is None
            and not ttl_elapsed(cube.created_at, cube.governance.ttl_seconds, utcnow())
            and cube.type in CONSOLIDATABLE and cloze(cube.text) is not None)


def untrainable(cube: MemCube, allowed: frozenset[str],
                never: Iterable[str] = NEVER_IN_WEIGHTS) -> str | None:
    """Why ``cube`` is never trained into an adapter, or None when it may be: it is not
    :func:`consolidatable`; or it has a sensitivity tag the store's prompt allowance
    (``allowed``) does not cover (search hands it out redacted, and weights cannot redact
    what they learned) or one in ``never``."""
    if not consolidatable(cube):
        return (f"only live, current facts and preferences of three words or more are trained "
                f"(it is a {cube.type.value}, {cube.state.value}"
                f"{', superseded' if cube.valid_to is not None else ''})")
    hidden = withheld(cube.governance.sensitivity, allowed)
    if hidden:
        return (f"its sensitivity tags {list(hidden)} are not in allow_sensitive: search hands "
                "it out redacted, and weights cannot redact what they learned")
    banned = sorted(set(never).intersection(cube.governance.sensitivity))
    if banned:
        return f"its sensitivity tags {banned} are never trained into weights"
    return None


class ParametricTier:
    """Adapters of one store on top of one base model (see the module docstring).

    Args:
        kernel: the memory store (vault for memories, audit and tier marks).
        model: returns the base :class:`LocalModel` (called only when a model is needed).
        config: default training/gate settings.
    """

    def __init__(self, kernel: MemoryStore, model: Callable[[], LocalModel],
                 config: ParametricConfig | None = None) -> None:
        self.kernel = kernel
        self.store = AdapterStore(Path(kernel.data_dir) / "adapters")
        self.config = config or ParametricConfig()
        self._base = model
        self._lock = threading.RLock()
        self._loaded: dict[str, LocalModel] = {}  # adapter tag -> merged model
        #: (memory id, version an adapter learned, current version) -> other text? (_rewritten)
        self._rewritten_at: dict[tuple[str, int, int], bool] = {}
        # base model replay examples and control answers, per model and config
        self._answers: dict[str, tuple[list[Example], list[tuple[str, str]]]] = {}
        self._stopping = threading.Event()  # set by stop(): trainings end at their next step
        #: (adapter version, base model digest) not served on that base model, logged once
        self._other_base: set[tuple[str, str]] = set()

    def stop(self) -> None:
        """Make every running and later :meth:`consolidate` end at its next step (training,
        evaluation) with :class:`InvalidInputError`, saving nothing: the store is closing."""
        self._stopping.set()

    def _stop_if_closing(self) -> None:
        if self._stopping.is_set():
            raise InvalidInputError("The MemOS was closed while an adapter was being trained; "
                                    "nothing was saved. Open the data directory again and "
                                    "consolidate again.")

    @classmethod
    def without_model(cls, kernel: MemoryStore) -> ParametricTier:
        """A tier for bookkeeping only (retire, deactivate, queue): any call that needs the
        model raises :class:`InvalidInputError`."""

        def no_model() -> LocalModel:
            raise InvalidInputError("this parametric tier has no model; use the engine's")

        return cls(kernel, no_model)

    # ------------------------------------------------------------------ training

    def _base_data(self, base: LocalModel, config: ParametricConfig
                   ) -> tuple[list[Example], list[tuple[str, str]]]:
        """Replay examples and ``(control prompt, answer)`` of the base model (computed, then
        cached per model and config)."""
        key = base.fingerprint.digest + config.model_dump_json()
        if key not in self._answers:
            stop = self._stop_if_closing  # a close ends it at the next token
            replay = [base.tokenizer.decode(greedy_completion(base.model, base.tokenizer, p,
                                                               config.replay_tokens, stop))
                      for p in REPLAY_PROMPTS]
            controls = base_control_answers(base.model, base.tokenizer, CONTROL_PROMPTS, config,
                                            stop)
            self._answers[key] = (replay_examples(REPLAY_PROMPTS, replay), controls)
        return self._answers[key]

    def _neighbours(self, base: LocalModel, cubes: Sequence[MemCube],
                    config: ParametricConfig) -> list[Example]:
        """Replay examples of the memories' :func:`neighbour` prompts: the base model's
        greedy completions of each (distinct) prompt."""
        prompts = sorted({p for c in cubes if (p := neighbour(base.escape(c.text))) is not None})
        completions = [base.tokenizer.decode(greedy_completion(
            base.model, base.tokenizer, p, config.replay_tokens, self._stop_if_closing))
            for p in prompts]
        return replay_examples(prompts, completions)

    def candidates(self, owner: str, memory_ids: Sequence[str] | None = None, *,
                   never: Iterable[str] = NEVER_IN_WEIGHTS) -> list[MemCube]:
        """The owner's consolidatable memories (all, or among ``memory_ids``), in text order
        (then id): a run's prompts and example order follow from the memories' content and
        the config's seed, never from their random ids, so the same memories train the same
        adapter. A memory with a sensitivity tag the store's prompt allowance
        (``allow_sensitive``) does not cover is never trained: search hands it out redacted,
        and weights cannot redact what they learned; nor is one with a tag in ``never`` (the
        consolidation policy's ``never_sensitivity``; by default ``"secret"``), even when
        allowed."""
        if memory_ids is None:  # the owner's own live memories only, not the whole store
            query = ListQuery(user_ids=(owner,), shared=False, include_superseded=False,
                              states=_LIVE_STATES, types=_CONSOLIDATABLE_TYPES)
            cubes = [c for batch in pages(self.kernel.vault, query, self.kernel.report_damaged)
                     for c in batch]
        else:
            cubes = list(self.kernel.vault.get_many(list(memory_ids)).values())
        allowed = allowance(getattr(self.kernel.config, "allow_sensitive", ()))
        never = frozenset(never)
        return sorted((c for c in cubes
                       if c.user_id == owner and untrainable(c, allowed, never) is None),
                      key=lambda c: (c.text, c.id))

    def consolidate(self, owner: str, memory_ids: Sequence[str] | None = None, *,
                    config: ParametricConfig | None = None, activate: bool = True,
                    progress: bool = True,
                    never: Iterable[str] = NEVER_IN_WEIGHTS) -> ConsolidationResult:
        """Train, evaluate and gate an adapter on ``owner``'s memories (see
        :meth:`candidates`, which ``never`` goes to); activate it if it passes and
        ``activate`` is True.

        Raises:
            InvalidInputError: no consolidatable memory among those given.
        """
        self._stop_if_closing()
        config = config or self.config
        cubes = self.candidates(owner, memory_ids, never=never)
        if not cubes:
            raise InvalidInputError(
                f"no consolidatable memory for {owner!r}: only live facts and preferences of "
                "three words or more are trained into an adapter"
            )
        require_peft()  # before the minutes of generation that precede training
        run = self._train(cubes, config, progress)
        manifest, gone = self._record(owner, cubes, config, run)
        if gone:
            return self._retired_while_training(owner, manifest, gone, run.decision.passed)
        activated = False
        if run.decision.passed and activate:
            try:
                self.activate(manifest.version, reason="passed the gate after training")
                activated = True
            except InvalidInputError:  # retired by a forget between the check and now
                logger.info("adapter %s was retired before it could be activated",
                            manifest.version)
        return ConsolidationResult(manifest=self.store.manifest(manifest.version),
                                   activated=activated)

    def _train(self, cubes: Sequence[MemCube], config: ParametricConfig,
               progress: bool) -> _Training:
        """Train an adapter on ``cubes`` over the base model, evaluate it and gate it (every
        step stops early when the store closes)."""
        base = self._base()
        self._stop_if_closing()  # (loading the model is not interrupted)
        replay, controls = self._base_data(base, config)
        self._stop_if_closing()
        if config.replay_neighbours:
            replay = replay + self._neighbours(base, cubes, config)
            self._stop_if_closing()

        def chat(q: str) -> tuple[str, str]:
            return chat_form(base, q)

        def in_context(q: str) -> str:
            return in_context_form(base, cubes, q)

        # the text as every prompt carries it (LocalModel.escape): a memory holding
        # "<|im_end|>" must teach the adapter those characters, never the control token, and
        # is judged (cloze prompts and answers) on the same text it was trained on
        memories = [(c.id, base.escape(c.text)) for c in cubes]
        base_in_context = None
        if config.check_in_context:
            base_in_context = in_context_answers(base.model, base.tokenizer, memories,
                                                 in_context, config, self._stop_if_closing)

        examples = [e for memory_id, text in memories for e in memory_examples(
            memory_id, text, statement=config.train_statements,
            chat=chat if config.train_questions else None)]
        peft_model, report = train_lora(base.model, base.tokenizer, examples, replay, config,
                                        progress=progress, stop=self._stop_if_closing)
        evaluation = evaluate(peft_model, base.tokenizer, memories,
                              controls, config, chat=lambda q: chat(q)[0],
                              stop=self._stop_if_closing,
                              context=in_context if config.check_in_context else None,
                              base_in_context=base_in_context)
        decision = gate(evaluation.recall, evaluation.control_regressions, config,
                        controls=evaluation.controls,
                        context_regressions=evaluation.context_regressions,
                        context_right=evaluation.context_right)
        return _Training(base_model_id=base.model_id, base_digest=base.fingerprint.digest,
                         peft_model=peft_model, report=report, evaluation=evaluation,
                         decision=decision)

    def _record(self, owner: str, cubes: Sequence[MemCube], config: ParametricConfig,
                run: _Training) -> tuple[AdapterManifest, list[str]]:
        """Write the trained adapter's manifest (and, if it passed the gate, its weights) and
        audit the training; returns the manifest and the trained memories forgotten while it
        trained (then only a retired record without texts was written)."""
        decision, evaluation = run.decision, run.evaluation
        with self._lock:
            self._stop_if_closing()  # nothing reaches the disk of a closing store
            manifest = AdapterManifest(
                version=self.store.next_version(), owner=owner, base_model_id=run.base_model_id,
                base_fingerprint=run.base_digest,
                memories=tuple(MemoryRef(id=c.id, version=c.version) for c in cubes),
                settings=config.model_dump(mode="json"), training=run.report,
                evaluation=evaluation, decision=decision,
                status="ready" if decision.passed else "rejected",
            )
            # a memory forgotten while it trained (a forget's cascade, which takes this lock,
            # did not see this adapter): only a retired record without texts is written
            gone = self._forgotten_since(manifest)
            if gone:
                manifest = manifest.model_copy(update={
                    "status": "retired", "retired_reason": f"memory {gone[0]} forgotten",
                    "evaluation": scrubbed(evaluation)})
            # a failed adapter: nothing will ever serve it, so its weights never reach the disk
            self.store.save(run.peft_model if decision.passed and not gone else None, manifest)
        self._audit(owner, "train", manifest.version, {
            "memories": _refs(manifest), "recall": round(evaluation.recall, 4),
            "control_regressions": evaluation.control_regressions,
            "context_regressions": evaluation.context_regressions, "passed": decision.passed,
            "train_s": round(run.report.seconds, 2)})
        return manifest, gone

    def _retired_while_training(self, owner: str, manifest: AdapterManifest,
                                gone: Sequence[str], passed: bool) -> ConsolidationResult:
        """An adapter one of whose memories was forgotten while it trained: audited as
        retired, and, if it had passed, its other memories queued for a new adapter (as a
        forget of a live adapter's memory does)."""
        self._audit(owner, "retire", manifest.version, {"memories": _refs(manifest)},
                    manifest.retired_reason or "")
        if passed and (rest := tuple(sorted(manifest.memory_ids - set(gone)))):
            self.store.enqueue(RetrainRequest(
                owner=owner, memory_ids=rest, replaces=manifest.version,
                reason=f"memory {gone[0]} forgotten while it trained"))
        return ConsolidationResult(manifest=self.store.manifest(manifest.version),
                                   activated=False)

    # ------------------------------------------------------------------ activation

    def activate(self, version: str, *, reason: str = "requested") -> AdapterManifest:
        """Serve ``version`` for its owner (replacing the owner's active adapter).

        Raises:
            InvalidInputError: unknown, rejected, retired, other base model, or no weights.
        """
        with self._lock:
            manifest = self.store.manifest(version)
            if manifest.status in ("rejected", "retired") or not manifest.decision.passed:
                raise InvalidInputError(
                    f"adapter {version} is {manifest.status} and cannot be activated")
            if not self.store.has_weights(version):
                raise InvalidInputError(f"adapter {version} has no weights on disk")
            barred = self._unservable(manifest)
            if barred:  # a change this process missed, a narrower allowance
                raise InvalidInputError(
                    f"adapter {version} holds memory {barred[0]}, which was forgotten, has "
                    "expired, was updated to another text, or has a sensitivity tag the "
                    "store's allow_sensitive no longer covers; it cannot be activated "
                    "(retrain it)")
            base = self._base()
            if manifest.base_fingerprint != base.fingerprint.digest:
                raise InvalidInputError(
                    f"adapter {version} was trained on another base model; retrain it")
            previous = self.store.active(manifest.owner)
            if previous is not None and previous != version:
                before = self.store.manifest(previous)
                if before.owner == manifest.owner:  # (else state.json was damaged: not theirs)
                    self._set_status(previous, "ready")
                    self._mark(before, Tier.PLAINTEXT, reason, keep=manifest.memory_ids)
            self.store.set_active(manifest.owner, version)
            manifest = self._set_status(version, "active")
            self._mark(manifest, Tier.PARAMETRIC, reason)
        self._audit(manifest.owner, "activate", version,
                    {"previous": previous, "memories": _refs(manifest)}, reason)
        return manifest

    def deactivate(self, owner: str, *, reason: str = "requested") -> str | None:
        """Stop serving ``owner``'s adapter; returns its version (None: none was active).
        Its memories are marked plaintext again. Idempotent. Where ``state.json`` names an
        adapter that is not the owner's, or whose manifest is damaged or gone
        (:meth:`active_manifest` refuses to serve it), only the entry is cleared: the way
        out that error names; another owner's adapter is left as it is."""
        with self._lock:
            version = self.store.active(owner)
            if version is None:
                return None
            self.store.set_active(owner, None)
            try:
                manifest = self.store.manifest(version)
            except (CorruptDataError, InvalidInputError) as exc:
                manifest = None
                logger.warning("adapter %s: %s; cleared it from %r's state entry", version,
                               exc, owner)
            details: dict[str, Any] = {}
            if manifest is not None and manifest.owner == owner:
                self._mark(self._set_status(version, "ready"), Tier.PLAINTEXT, reason)
                details["memories"] = _refs(manifest)
        self._audit(owner, "deactivate", version, details, reason)
        return version

    def rollback(self, owner: str, *, reason: str = "requested") -> str | None:
        """Activate the adapter ``owner`` had before the current one (the newest earlier one
        still usable); with none, just deactivate. Returns the version now active."""
        with self._lock:
            current = self.store.active(owner)
            earlier = [v for v in self.store.history(owner) if v != current]
            for version in reversed(earlier):
                try:
                    manifest = self.store.manifest(version)
                except (CorruptDataError, InvalidInputError):
                    continue  # damaged or gone: it cannot be activated
                if (manifest.owner == owner and manifest.status == "ready"
                        and self.store.has_weights(version)
                        and not self._unservable(manifest)):
                    self.activate(version, reason=f"rollback from {current}: {reason}")
                    self._audit(owner, "rollback", version, {"from": current}, reason)
                    return version
            self.deactivate(owner, reason=f"rollback: {reason}")
            self._audit(owner, "rollback", None, {"from": current}, reason)
            return None

    def retire(self, version: str, *, reason: str, scrub: bool = False) -> AdapterManifest:
        """Deactivate ``version`` if active, delete its weights, mark it retired. Its
        memories return to plaintext (they never left the vault). Idempotent.

        ``scrub`` (a forget): the manifest also loses every text its evaluation kept (the
        cloze prompts and answers, the completions, the chat questions and answers, the
        control answers), keeping ids, counts and recalled yes/no."""
        with self._lock:
            manifest = self.store.manifest(version)
            if self.store.active(manifest.owner) == version:
                self.deactivate(manifest.owner, reason=reason)
            for other, active in self.store.active_all().items():
                if active == version:  # a damaged state.json named it for another owner
                    self.store.set_active(other, None)
            self.store.delete_weights(version)
            update: dict[str, Any] = {"status": "retired", "retired_reason": reason}
            if scrub:
                update["evaluation"] = scrubbed(manifest.evaluation)
            manifest = manifest.model_copy(update=update)
            self.store.write_manifest(manifest)
            self._unload(version)
        self._audit(manifest.owner, "retire", version, {"memories": _refs(manifest)}, reason)
        return manifest

    def retire_stale(self, owner: str, *, now: datetime, min_current: float = 0.5,
                     idle_s: float | None = None) -> str | None:
        """Parametric -> plaintext when the owner's active adapter is stale: retire it if
        fewer than ``min_current`` of its memories are still live at the version trained in
        (outdated), or if ``idle_s`` is given and none of them was used for that long (rarely
        used). Its memories are served from plaintext again; nothing is lost. Returns the
        retired version, or None; also when the owner's entry or adapter is damaged (logged:
        it is not served, and the owner's chats say what to do)."""
        try:
            manifest = self.active_manifest(owner)
        except CorruptDataError as exc:  # (the scheduler goes on with the other owners)
            logger.warning("not checked for staleness: %s", exc)
            return None
        if manifest is None or not manifest.memories:
            return None
        current, damaged = self._current([m.id for m in manifest.memories])
        live = [current[m.id] for m in manifest.memories if m.id in current
                and current[m.id].version == m.version and consolidatable(current[m.id])]
        share = (len(live) + len(damaged)) / len(manifest.memories)  # damage is no change
        reason = None
        if share < min_current:
            reason = (f"outdated: {len(manifest.memories) - len(live)} of "
                      f"{len(manifest.memories)} memories changed or forgotten")
        elif idle_s is not None:
            used = [c.usage.last_access or manifest.created_at for c in live]
            if all((now - t).total_seconds() >= idle_s for t in used):
                reason = f"rarely used: none of its memories used in {idle_s:.0f} s"
        if reason is None:
            return None
        self.retire(manifest.version, reason=reason)
        return manifest.version

    # ------------------------------------------------------------------ forgetting

    def retire_holding(self, memory_id: str) -> list[str]:
        """Retire every adapter (not yet retired) that holds ``memory_id`` and queue a retrain
        of the rest of its memories; returns the retired versions. Idempotent. For a forget:
        the records of every adapter that held it, retired now or before, lose their texts."""
        return self._retire_unretired(memory_id, f"memory {memory_id} forgotten", scrub=True)

    def _drop_leftovers(self) -> list[str]:
        """Delete what crashes left in the adapters directory (:meth:`AdapterStore.leftovers`:
        a half-written adapter or JSON file, a version directory without its manifest);
        returns their paths in the adapters directory. Which memories they hold is unknown, and nothing can load
        them, so nothing that works is lost."""
        with self._lock:
            dropped = [where.relative_to(self.store.root).as_posix()
                       for where in self.store.leftovers() if self.store.discard(where)]
            for name in dropped:
                self._unload(name)
                logger.warning("adapters: deleted %s, which a crash left", name)
        return dropped

    def _drop_unreadable(self) -> list[str]:
        """Delete every adapter whose manifest cannot be parsed (its directory: the weights,
        and the manifest, which may hold memories' texts in its evaluation) and deactivate
        it; returns the versions deleted. Which memories such an adapter holds is unknown,
        so a forget cannot rule it out; and without a manifest it cannot be loaded anyway,
        so nothing that works is lost."""
        with self._lock:
            _, corrupt = self.store.readable_manifests()
            dropped = [v for v in corrupt if self.store.discard(self.store.path(v))]
            for version in corrupt:
                self._unload(version)
            for version in dropped:
                logger.warning("adapter %s: its manifest cannot be read, so a forget deleted it",
                               version)
        return dropped

    def _retire_unretired(self, memory_id: str, reason: str, *, scrub: bool) -> list[str]:
        """Retire each adapter not yet retired that holds ``memory_id``; queue a retrain of
        the rest of a live one's memories. Returns the versions retired. ``scrub`` (a
        forget): every record that held it loses its texts, also one retired before."""
        retired = []
        with self._lock:
            for manifest in self.store.readable_manifests()[0]:
                if memory_id not in manifest.memory_ids:
                    continue
                if manifest.status == "retired":
                    clean = scrubbed(manifest.evaluation) if scrub else manifest.evaluation
                    if clean != manifest.evaluation:  # its record may hold the text
                        self.store.write_manifest(manifest.model_copy(update={"evaluation": clean}))
                    # retired by another tier object (server mode's feed purger): the merged
                    # model this one loaded must go too
                    self._unload(manifest.version)
                    continue
                was_live = manifest.status in ("active", "ready")
                self.retire(manifest.version, reason=reason, scrub=scrub)
                rest = tuple(sorted(manifest.memory_ids - {memory_id}))
                if was_live and rest:
                    self.store.enqueue(RetrainRequest(
                        owner=manifest.owner, memory_ids=rest, replaces=manifest.version,
                        reason=reason))
                retired.append(manifest.version)
        return retired

    def retired_for(self, memory_id: str) -> list[tuple[str, Literal["deleted", "redacted"]]]:
        """Retire what holds ``memory_id`` (if not done yet) and return ``(version,
        action)`` for every adapter that held it: ``"deleted"`` for those retired because
        it was forgotten, and those deleted now because their manifest cannot be read
        (:meth:`_drop_unreadable`) or a crash left them without one (:meth:`_drop_leftovers`;
        named by their directory); ``"redacted"`` for those retired before for another
        reason (an update, an expiry), whose manifest has now lost the memory's texts. The
        forget purger's call. Idempotent: a second call returns the same list (less those
        deleted)."""
        self.retire_holding(memory_id)
        # either might hold the memory: they go
        dropped = self._drop_unreadable() + self._drop_leftovers()
        reason = f"memory {memory_id} forgotten"
        return [(m.version, "deleted" if m.retired_reason == reason else "redacted")
                for m in self.store.readable_manifests()[0]
                if memory_id in m.memory_ids and m.status == "retired"] + [
            (version, "deleted") for version in dropped]

    def settle(self, *, marks: bool = True) -> None:
        """Catch up with forgets, expiries and updates this process did not hear of (it was
        closed, or killed between a tombstone and its purge; in server mode another process
        made them), and with crashes: what a crash left in the adapters directory is deleted
        (:meth:`_drop_leftovers`), adapters holding a forgotten memory are retired and
        scrubbed, those holding an expired one, or one updated to another text, retired;
        manifests written before manifests carried a seal are sealed
        (:meth:`AdapterStore.adopt`); then the manifests' status, and with ``marks`` the
        memories' tiers, are brought in line with ``state.json`` (:meth:`_reconcile_serving`). Server mode passes
        ``marks=False``: the tier marks live in the shared database while each process has
        its own adapters, so one process's state cannot say what another serves. Cheap when
        nothing changed (reads the manifests three times, and the vault's current versions
        of their memories twice)."""
        self._drop_leftovers()
        for version in self.store.adopt():  # manifests written before they carried a seal
            logger.info("adapter %s: its manifest was sealed (manifest_sha256)", version)
        readable, _ = self.store.readable_manifests()
        ids = sorted({mid for manifest in readable for mid in manifest.memory_ids})
        current = self._current(ids)[0] if ids else {}
        gone = (State.DELETED, State.EXPIRED)
        self.on_change([c for c in current.values() if c.state in gone])
        self._retire_rewritten({i: c for i, c in current.items() if c.state not in gone})
        self._reconcile_serving(marks=marks)

    def _reconcile_serving(self, *, marks: bool = True) -> None:
        """Bring the manifests' status and the memories' tier in line with ``state.json``,
        which chat serves by: a kill inside :meth:`activate` or :meth:`deactivate` (they
        write the state, then the manifest, then each memory's tier) left ``adapters()``
        saying ``ready`` for the adapter chat serves, or some of its memories marked
        plaintext, which the scheduler may then promote to a KV block."""
        with self._lock:
            active = self.store.active_all()
            readable, _ = self.store.readable_manifests()
            served: dict[str, str] = {}  # memory id -> the version serving it
            for manifest in readable:
                on = active.get(manifest.owner) == manifest.version
                if on and manifest.status in ("ready", "active"):
                    served.update(dict.fromkeys(manifest.memory_ids, manifest.version))
                    if manifest.status == "ready":
                        self._set_status(manifest.version, "active")
                elif manifest.status == "active":
                    self._set_status(manifest.version, "ready")
            ids = sorted({mid for manifest in readable for mid in manifest.memory_ids})
            if not (marks and ids):
                return
            for memory_id, cube in self._current(ids)[0].items():
                parametric = cube.usage.tier is Tier.PARAMETRIC
                if cube.state is not State.DELETED and parametric != (memory_id in served):
                    tier = Tier.PARAMETRIC if memory_id in served else Tier.PLAINTEXT
                    self._move(cube, tier, served.get(memory_id), "settled with state.json")

    def on_change(self, cubes: Sequence[MemCube]) -> None:
        """``mos.on_change`` listener: tombstones retire the adapters holding them (their
        records scrubbed), and so does a memory whose TTL ran out (search no longer returns
        it, so its adapter must not answer with it; a retrain of the rest is queued). A
        memory updated to another text retires the adapters that learned an earlier one
        (:meth:`_retire_rewritten`). An archived memory keeps its adapter: archiving is the
        scheduler's tiering of cold memories, and their adapters age out by
        ``retire_stale``."""
        for cube in cubes:
            if cube.state is State.DELETED:
                self.retire_holding(cube.id)
            elif cube.state is State.EXPIRED:
                self._retire_unretired(cube.id, f"memory {cube.id} expired", scrub=False)
        # a first version is in no adapter yet: an add reads no manifest
        changed = {c.id: c for c in cubes if c.version > 1
                   and c.state not in (State.DELETED, State.EXPIRED)}
        if changed:
            self._retire_rewritten(changed)

    def _retire_rewritten(self, current: dict[str, MemCube]) -> list[str]:
        """Retire each active or ready adapter that learned a memory in ``current`` (id ->
        its current version) at a version with another text (:meth:`_rewritten`), and queue
        a retrain of all its memories (the changed one at its new text); returns the
        versions retired. An update is often how a fact is taken back (a changed PIN), and
        chat must not keep answering with the old one from the weights. The record is not
        scrubbed: the owner still reads the old text in the memory's history."""
        retired = []
        with self._lock:
            for manifest in self.store.readable_manifests()[0]:
                if manifest.status not in ("active", "ready"):
                    continue
                changed = [m.id for m in manifest.memories
                           if m.id in current and self._rewritten(m, current[m.id])]
                if not changed:
                    continue
                reason = f"memory {changed[0]} updated"
                self.retire(manifest.version, reason=reason)
                self.store.enqueue(RetrainRequest(
                    owner=manifest.owner, memory_ids=tuple(sorted(manifest.memory_ids)),
                    replaces=manifest.version, reason=reason))
                retired.append(manifest.version)
        return retired

    def run_queue(self, owner: str | None = None, *, progress: bool = True,
                  ) -> list[ConsolidationResult]:
        """Run the queued retrains (all owners, or ``owner``'s); a request whose memories are
        all gone is dropped. Returns what each retrain produced."""
        results = []
        owners = [r.owner for r in self.store.queue() if owner in (None, r.owner)]
        for who in owners:
            request = self.store.pending(who)
            if request is None:
                continue
            if self.candidates(who, request.memory_ids):
                results.append(self.consolidate(who, request.memory_ids, progress=progress))
            self.store.done(request)  # (only once it ran: an interrupted one runs again)
        return results

    # ------------------------------------------------------------------ serving

    def active_manifest(self, owner: str) -> AdapterManifest | None:
        """The manifest of the adapter ``state.json`` names as ``owner``'s active one, or
        None. Every path that picks an adapter by owner (serving, :meth:`held`,
        :meth:`model_for`, :meth:`retire_stale`) goes through here.

        Raises:
            CorruptDataError: the manifest is damaged, or is another owner's: ``state.json``
                was damaged or edited, and weights trained on another user's memories must
                never answer this one's chats.
        """
        version = self.store.active(owner)
        if version is None:
            return None
        try:
            manifest = self.store.manifest(version)
        except CorruptDataError as exc:
            raise CorruptDataError(
                f"{exc} Adapter {version}, {owner!r}'s active one, is not served: "
                f"mos.deactivate_adapter(user_id={owner!r}) stops looking for it (chats run "
                "on the base model), and the next forget deletes it; its memories are all "
                "still in the vault.") from None
        if manifest.owner != owner:
            raise CorruptDataError(
                f"{self.store.root / 'state.json'} names adapter {version} as {owner!r}'s "
                f"active adapter, but it is {manifest.owner!r}'s (damaged or edited on disk); "
                f"it is not served. mos.deactivate_adapter(user_id={owner!r}) clears the "
                f"entry (adapter {version} itself is left as it is), and {owner!r}'s chats "
                "run on the base model.")
        return manifest

    def serving(self, owner: str) -> AdapterManifest | None:
        """``owner``'s active adapter if it may answer now: none of its memories is
        forgotten, expired or past its TTL (the scheduler marks those expired only at its
        next run, and search stops returning them at once), updated to another text since
        it was trained (a process that did not hear of the update has not retired it yet),
        or has a sensitivity tag the store's ``allow_sensitive`` no longer covers (the store
        was opened with a narrower allowance than it was trained under). Otherwise None: a
        chat runs on the base model with every memory in the prompt, until the adapter is
        retired or the allowance covers it again."""
        manifest = self.active_manifest(owner)
        if manifest is None or self._unservable(manifest):
            return None
        return manifest

    def held(self, owner: str) -> frozenset[str]:
        """Ids of ``owner``'s memories the serving adapter (:meth:`serving`) holds at their
        current version (a newer version with the same text -- re-tagged, say -- is not
        held either; one with another text stops the adapter serving) and answered right
        when asked in a chat at evaluation, if it was trained with ``leave_out_held``
        (:class:`ParametricConfig`; else none); ``MemOS.chat`` leaves these out of the
        prompt. The rest of its memories are still put in the prompt as plaintext."""
        manifest = self.active_manifest(owner)
        if manifest is None or not manifest.settings.get("leave_out_held", False):
            return frozenset()  # (adapters trained before the setting existed: not left out)
        current = self._current([m.id for m in manifest.memories])[0]
        if self._unservable(manifest, current):  # not served: see serving()
            return frozenset()
        answered = manifest.evaluation.answered_in_chat()
        return frozenset(m.id for m in manifest.memories
                         if m.id in answered and m.id in current
                         and current[m.id].version == m.version
                         and consolidatable(current[m.id]))

    def model_for(self, owner: str) -> LocalModel | None:
        """The base model with ``owner``'s serving adapter (:meth:`serving`) merged in
        (loaded once per adapter), or None when the owner has none, or when it was trained
        on another base model than the one attached (its manifest's ``base_fingerprint``:
        :meth:`activate` refuses it the same way). Its weights and ``adapter_config.json``
        are checked against the SHA-256 its manifest recorded on every call.

        Raises:
            CorruptDataError: the manifest or ``state.json`` (see :meth:`active_manifest`),
                or an adapter file, is damaged.
        """
        with self._lock:
            manifest = self.serving(owner)
            if manifest is None:
                return None
            version = manifest.version
            base = self._base()
            if manifest.base_fingerprint != base.fingerprint.digest:
                if (version, base.fingerprint.digest) not in self._other_base:  # once each
                    self._other_base.add((version, base.fingerprint.digest))
                    logger.warning("adapter %s of %r was trained on another base model than the "
                                   "one attached: not served (retrain it)", version, owner)
                return None
            try:
                digest = self.store.weights_sha256(version)
                if manifest.weights_sha256 not in (None, digest):
                    raise CorruptDataError(  # (wrapped below with what to do)
                        "its weights file does not match the SHA-256 its manifest recorded "
                        "when it was saved (damaged on disk)")
                if manifest.config_sha256 not in (None, self.store.config_sha256(version)):
                    raise CorruptDataError(
                        "its adapter_config.json does not match the SHA-256 its manifest "
                        "recorded when it was saved (damaged or edited on disk)")
                tag = adapter_tag(version, digest)
                if tag not in self._loaded:
                    self._loaded[tag] = load_adapted(base, self.store.path(version), tag)
            except ModelLoadError:
                raise  # peft missing, or the base model itself
            except Exception as exc:  # noqa: BLE001 - a damaged file: the library's own error
                raise CorruptDataError(
                    f"adapter {version} of {owner!r} in {self.store.path(version)} cannot be "
                    f"loaded ({type(exc).__name__}: {exc}). Its memories are all still in the "
                    f"vault: retire it (mos.retire_adapter({version!r}, user_id={owner!r})) "
                    "and chat answers from them on the base model; mos.consolidate trains a "
                    "new one.") from exc
            return self._loaded[tag]

    # ------------------------------------------------------------------ helpers

    def _unload(self, version: str) -> None:
        """Drop the merged model(s) of adapter ``version`` this tier holds in memory."""
        self._loaded = {k: m for k, m in self._loaded.items() if not k.startswith(version + "@")}

    def _forgotten_since(self, manifest: AdapterManifest) -> list[str]:
        """Ids in ``manifest`` that are tombstones, expired (or gone) now; a damaged one is
        none of these (its owner may forget it: then it is)."""
        current, damaged = self._current([m.id for m in manifest.memories])
        return sorted(m.id for m in manifest.memories if m.id not in damaged and (
            m.id not in current or current[m.id].state in (State.DELETED, State.EXPIRED)))

    def _current(self, ids: Sequence[str]) -> tuple[dict[str, MemCube], set[str]]:
        """The vault's current versions of ``ids`` and the ids whose record is damaged (left
        out and logged by the store): an adapter is not served with such a memory (it
        cannot be checked), but the memory is not taken for changed or forgotten either."""
        damaged: set[str] = set()

        def left_out(error: CorruptDataError) -> None:
            self.kernel.report_damaged(error)
            if error.memory_id:
                damaged.add(error.memory_id)

        return self.kernel.vault.get_many(list(ids), on_damaged=left_out), damaged

    def _unservable(self, manifest: AdapterManifest,
                    current: dict[str, MemCube] | None = None) -> list[str]:
        """Ids in ``manifest`` that must not be answered from weights now: tombstones,
        expired or gone, past their TTL, updated to another text (:meth:`_rewritten`), or
        with a sensitivity tag the store's ``allow_sensitive`` does not cover. ``current``:
        the vault's current versions of its memories, if the caller has read them."""
        if current is None:  # (a damaged memory is left out: barred)
            current = self._current([m.id for m in manifest.memories])[0]
        allowed = allowance(getattr(self.kernel.config, "allow_sensitive", ()))
        now = utcnow()

        def barred(ref: MemoryRef, cube: MemCube | None) -> bool:
            return (cube is None or cube.state in (State.DELETED, State.EXPIRED)
                    or ttl_elapsed(cube.created_at, cube.governance.ttl_seconds, now)
                    or bool(withheld(cube.governance.sensitivity, allowed))
                    or self._rewritten(ref, cube))

        return sorted(m.id for m in manifest.memories if barred(m, current.get(m.id)))

    def _rewritten(self, ref: MemoryRef, cube: MemCube) -> bool:
        """Whether ``cube``, the current version of memory ``ref.id``, has another text than
        the version ``ref`` an adapter learned. A newer version with the same text (archived,
        re-tagged) has not; a learned version the vault no longer has counts as rewritten."""
        if cube.version == ref.version:
            return False
        key = (ref.id, ref.version, cube.version)  # versions never change: asked once
        known = self._rewritten_at.get(key)
        if known is None:
            learned = self.kernel.vault.get_version(ref.id, ref.version)
            known = learned is None or learned.text != cube.text
            if len(self._rewritten_at) >= 10_000:
                self._rewritten_at.clear()
            self._rewritten_at[key] = known
        return known

    def _set_status(self, version: str, status: str) -> AdapterManifest:
        manifest = self.store.manifest(version).model_copy(update={"status": status})
        self.store.write_manifest(manifest)
        return manifest

    def _mark(self, manifest: AdapterManifest, tier: Tier, reason: str, *,
              keep: frozenset[str] = frozenset()) -> None:
        """Record which tier serves the adapter's memories (those not forgotten), each move
        audited on its memory (:meth:`_move`). A memory already in ``tier`` is left as it
        is, and so is one in ``keep`` (the memories of the adapter that replaces this one,
        which stay parametric), and, moving out of the parametric tier, one that is not in
        it: only real moves are written and audited."""
        current = self._current([m.id for m in manifest.memories])[0]
        for ref in manifest.memories:
            cube = current.get(ref.id)
            if (cube is not None and cube.state is not State.DELETED
                    and ref.id not in keep and cube.usage.tier is not tier):
                self._move(cube, tier, manifest.version, reason)

    def _move(self, cube: MemCube, tier: Tier, adapter: str | None, reason: str) -> None:
        """Set ``cube``'s tier and audit the move on the memory, as the scheduler audits
        its own (``schedule:promote``): ``parametric:promote`` into the parametric tier,
        ``parametric:demote`` out of it, with the memory's current version and the adapter
        (None: a settle found no adapter serving it), so ``audit_log(memory_id=)`` tells
        when a memory was answered from weights. A tier is usage: only the owner reads
        these records (:func:`memos_core.governance.access.audit_read_by`).

        The write is a compare-and-set on the tier ``cube`` was read with
        (``vault.set_tier(expected=)``), as the scheduler's are: the scheduler may promote or
        demote the memory (plaintext <-> activation) between that read and this write, in
        this process or another. Into the parametric tier the move is then tried again from
        the tier read anew -- the adapter serves the memory whatever tier the scheduler gave
        it, and from then on the scheduler leaves it alone
        (:func:`memos_core.scheduler.executor.needless`). Out of the parametric tier only a
        memory still in it moves: a tier someone else set since is theirs."""
        current: MemCube | None = cube
        for _ in range(_MOVE_TRIES):
            if (current is None or current.state is State.DELETED
                    or current.usage.tier is tier
                    or Tier.PARAMETRIC not in (tier, current.usage.tier)):
                return
            if self.kernel.vault.set_tier(cube.id, tier.value,
                                          expected=current.usage.tier.value):
                action = "promote" if tier is Tier.PARAMETRIC else "demote"
                self.kernel.vault.audit(
                    Actor(cube.user_id, AGENT, reason), f"parametric:{action}",
                    memory_id=cube.id, version=current.version,
                    details={"adapter": adapter, "tier": tier.value})
                return
            current = self._current([cube.id])[0].get(cube.id)
        logger.warning("the tier of memory %s kept changing while it was moved to %s; "
                       "settle() marks it when the store is next opened", cube.id, tier.value)

    def _audit(self, owner: str, action: str, version: str | None, details: dict[str, Any],
               reason: str | None = None) -> None:
        self.kernel.vault.audit(Actor(owner, AGENT, reason), f"parametric:{action}",
                             details={"adapter": version, **details})


def _refs(manifest: AdapterManifest) -> list[list[str | int]]:
    """The ``[id, version]`` of each memory ``manifest`` was trained on, as an audit record's
    ``memories`` (the shape of ``schedule:build``'s): ids and versions, never a text."""
    return [[m.id, m.version] for m in manifest.memories]


def adapter_purger(kernel: MemoryStore) -> Callable[[str], Callable[[], list[DerivedForm]]]:
    """The store's derived-form purger for adapters (:data:`memos_core.store.DerivedPurger`):
    after a forget's tombstone, every adapter trained on the memory is retired (deactivated,
    weights deleted, a retrain without it queued -- by the engine's change listener if one
    runs, else here). Reads only ``<data_dir>/adapters``; loads no model."""

    def start(memory_id: str) -> Callable[[], list[DerivedForm]]:
        def finish() -> list[DerivedForm]:
            if not (Path(kernel.data_dir) / "adapters").is_dir():
                return []
            versions = ParametricTier.without_model(kernel).retired_for(memory_id)
            return [DerivedForm(kind="adapter", id=v, action=action) for v, action in versions]

        return finish

    return start
