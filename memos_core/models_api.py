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
    """``attach_model``, ``chat``, ``schedule``, ``consolidate``, ``start_scheduler``."""


    def attach_model(self: "MemOS", model: Any) -> None:
        """Answer and build KV caches with ``model`` (a ``memos_core.runtime.LocalModel``)
        instead of the default SmolLM2-135M-Instruct, which otherwise loads on first use."""
        from memos_core.engine import engine_for

        self._check_open()
        engine_for(self).attach_model(model)

    def chat(self: "MemOS", query: str, *, user_id: str, history: Sequence[Message] | None = None,
             k: int = 5, max_new_tokens: int = 128, stream: bool = False,
             kv_prefix: bool = True) -> Any:
        """Answer ``query`` on the local model with ``user_id``'s memories: their hot block
        as a cached KV prefix (as prompt text with ``kv_prefix=False``), other retrieved
        memories as text. Returns a ``memos_core.chat.ChatAnswer`` (``.text``, ``.trace``),
        or with ``stream=True`` a ``ChatStream`` of text pieces. See memos_core.chat."""
        from memos_core.engine import engine_for

        self._check_open()
        return engine_for(self).chat(query, user_id=user_id, history=history, k=k,
                                     max_new_tokens=max_new_tokens, stream=stream,
                                     kv_prefix=kv_prefix)

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

    def start_scheduler(self: "MemOS", interval_s: float = 300.0, *, config: Any = None) -> Any:
        """Run the scheduler every ``interval_s`` seconds in a background thread until
        :meth:`close`. Returns its ``memos_core.scheduler.BackgroundScheduler``."""
        from memos_core.engine import engine_for

        self._check_open()
        return engine_for(self).start_scheduler(interval_s, config=config)
