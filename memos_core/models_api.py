"""The local-model tiers as seen from the MemOS facade: chat, scheduling, consolidation.

Thin delegates to :mod:`memos_core.engine` (model, KV tier, LoRA tier, scheduler, chat),
which is created on first use: opening a store never imports torch or loads a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from memos_core.validation import check_name

if TYPE_CHECKING:
    from memos_core.memos import MemOS

Message = Mapping[str, Any]


class LocalModelMixin:
    """``attach_model``, ``chat``, ``schedule``, ``consolidate`` and the adapter lifecycle,
    ``start_scheduler``."""

    def attach_model(self: "MemOS", model: Any) -> None:
        """Answer and build KV caches with ``model`` (a ``memos_core.runtime.LocalModel``)
        instead of the default SmolLM2-135M-Instruct, which otherwise loads on first use."""
        from memos_core.engine import engine_for

        self._check_open()
        engine_for(self).attach_model(model)

    def chat(self: "MemOS", query: str | None = None, *, user_id: str,
             history: Sequence[Message] | None = None, messages: Sequence[Any] | None = None,
             system: str | None = None, k: int = 5, max_new_tokens: int = 128,
             stream: bool = False, kv_prefix: bool = True) -> Any:
        """Answer ``query`` on the local model with ``user_id``'s memories: their hot block
        as a cached KV prefix (as prompt text with ``kv_prefix=False``), other retrieved
        memories as text. Instead of ``query``/``history``/``system``, ``messages`` takes a
        whole chat (system, user and assistant messages; the last one is the question);
        system text opens the memory-aware system turn. Returns a
        ``memos_core.chat.ChatAnswer`` (``.text``, ``.trace``), or with ``stream=True`` a
        ``ChatStream`` of text pieces. See memos_core.chat."""
        from memos_core.engine import engine_for

        self._check_open()
        return engine_for(self).chat(query, user_id=user_id, history=history, messages=messages,
                                     system=system, k=k, max_new_tokens=max_new_tokens,
                                     stream=stream, kv_prefix=kv_prefix)

    def schedule(self: "MemOS", *, user_id: str | None = None, config: Any = None) -> Any:
        """Run the scheduler once now over every owner's memories (or ``user_id``'s):
        expire, archive, promote, demote, rebuild hot blocks; each step audited. ``config``:
        a ``SchedulerConfig``. Returns a ``memos_core.scheduler.ScheduleReport``."""
        from memos_core.engine import engine_for

        self._check_open()
        user_id = check_name(user_id, "user_id", optional=True)
        return engine_for(self).schedule(user_id=user_id, config=config)

    def consolidate(self: "MemOS", *, user_id: str, memory_ids: Sequence[str] | None = None,
                    config: Any = None, activate: bool = True, background: bool = False,
                    progress: bool = True) -> Any:
        """Train ``user_id``'s stable, hot facts and preferences and any retrain a forget
        queued (or exactly ``memory_ids``) into a LoRA adapter on the local model, evaluate it (recall, drift) and activate it if it
        passes the gate. ``config``: a ``ParametricConfig``. Returns a
        ``ConsolidationResult`` (a ``Future`` of one with ``background=True``). Adapters are
        managed with ``engine_for(mos).parametric``; see memos_core.tiers.parametric."""
        from memos_core.engine import engine_for

        self._check_open()
        user_id = check_name(user_id, "user_id")
        return engine_for(self).consolidate(user_id, memory_ids, config=config,
                                            activate=activate, background=background,
                                            progress=progress)

    def consolidate_due(self: "MemOS", candidates: Any = None, *, config: Any = None,
                        progress: bool = True) -> dict[str, Any]:
        """Start a background LoRA consolidation for every owner with at least
        ``candidates.min_candidates`` hot, stable facts/preferences (a ``ConsolidationConfig``)
        or a retrain queued by a forget; returns ``{owner: Future[ConsolidationResult]}``.
        ``start_scheduler(consolidation=...)`` calls it after every run."""
        from memos_core.engine import engine_for

        self._check_open()
        return engine_for(self).consolidate_due(candidates, config=config, progress=progress)

    def adapters(self: "MemOS", *, user_id: str) -> list[Any]:
        """``user_id``'s LoRA adapters, oldest first: each an ``AdapterManifest`` (memories
        and versions trained in, base model fingerprint, settings, evaluation, gate decision,
        status ``active`` / ``ready`` / ``rejected`` / ``retired``)."""
        from memos_core.engine import engine_for

        self._check_open()
        user_id = check_name(user_id, "user_id")
        return [m for m in engine_for(self).parametric.store.manifests() if m.owner == user_id]

    def activate_adapter(self: "MemOS", version: str, *, user_id: str,
                         reason: str = "requested") -> Any:
        """Serve adapter ``version`` in ``user_id``'s chats (replacing their active one);
        audited. Returns its manifest.

        Raises:
            AccessDeniedError: the adapter is another user's.
            InvalidInputError: unknown, rejected (failed the gate), retired, or trained on
                another base model.
        """
        from memos_core.engine import engine_for

        tier = engine_for(self).parametric
        self._own_adapter(tier, version, check_name(user_id, "user_id"))
        return tier.activate(version, reason=reason)

    def deactivate_adapter(self: "MemOS", *, user_id: str, reason: str = "requested"
                           ) -> str | None:
        """Stop serving ``user_id``'s adapter (its memories are answered from plaintext
        again); audited. Returns the version that was active, or None."""
        from memos_core.engine import engine_for

        self._check_open()
        return engine_for(self).parametric.deactivate(check_name(user_id, "user_id"),
                                                      reason=reason)

    def rollback_adapter(self: "MemOS", *, user_id: str, reason: str = "requested"
                         ) -> str | None:
        """Go back to ``user_id``'s previous usable adapter (or none); audited. Returns the
        version active now."""
        from memos_core.engine import engine_for

        self._check_open()
        return engine_for(self).parametric.rollback(check_name(user_id, "user_id"),
                                                    reason=reason)

    def retire_adapter(self: "MemOS", version: str, *, user_id: str,
                       reason: str = "requested") -> Any:
        """Parametric -> plaintext: deactivate ``version`` if active and delete its weights;
        its memories are served from plaintext again (they never left the vault). Audited.

        Raises:
            AccessDeniedError: the adapter is another user's.
            InvalidInputError: unknown version.
        """
        from memos_core.engine import engine_for

        tier = engine_for(self).parametric
        self._own_adapter(tier, version, check_name(user_id, "user_id"))
        return tier.retire(version, reason=reason)

    def _own_adapter(self: "MemOS", tier: Any, version: object, user_id: str) -> None:
        """Raise unless ``version`` names one of ``user_id``'s adapters."""
        from memos_core.errors import AccessDeniedError, InvalidInputError

        self._check_open()
        if not isinstance(version, str) or not version:
            raise InvalidInputError(f"version must be an adapter version like 'v1', got "
                                    f"{version!r}")
        manifest = tier.store.manifest(version)
        if manifest.owner != user_id:
            raise AccessDeniedError(
                f"adapter {version} belongs to another user; only its owner may change it "
                "(rule: adapters are per owner)")

    def start_scheduler(self: "MemOS", interval_s: float = 300.0, *, config: Any = None,
                        consolidation: Any = None, parametric: Any = None) -> Any:
        """Run the scheduler every ``interval_s`` seconds in a background thread until
        :meth:`close`. With ``consolidation`` (a ``ConsolidationConfig``), each run also
        starts due LoRA trainings (:meth:`consolidate_due`, with the ``ParametricConfig``
        ``parametric``). Returns its ``memos_core.scheduler.BackgroundScheduler``."""
        from memos_core.engine import engine_for

        self._check_open()
        return engine_for(self).start_scheduler(interval_s, config=config,
                                                consolidation=consolidation,
                                                parametric=parametric)
