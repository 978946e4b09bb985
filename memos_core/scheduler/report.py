"""What a scheduler run did: one :class:`ScheduleReport` per run, one :class:`UserSchedule`
per memory owner, one :class:`StepOutcome` per plan step. Plain data, JSON-serialisable
(``report.model_dump(mode="json")``), returned by ``MemOS.schedule()`` and printed by
``memos schedule``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from memos_core.scheduler.policy import StepKind


class StepOutcome(BaseModel):
    """One plan step and what became of it."""

    model_config = ConfigDict(frozen=True)

    kind: StepKind
    memory_id: str
    version: int = Field(description="The version the policy decided on.")
    reason: str = Field(description="The policy's reason (also written to the audit log).")
    status: Literal["done", "skipped", "failed"] = Field(
        description="'done': applied and audited by this run; 'skipped': the memory changed "
        "or vanished since the plan was made, is already where the step would put it, or "
        "another thread or process changed it concurrently (nothing written); 'failed': an "
        "error, see ``detail``."
    )
    detail: str | None = Field(default=None, description="Why it was skipped or failed.")


class UserSchedule(BaseModel):
    """The part of a run that concerns one owner's memories (and that owner's KV block)."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    memories: int = Field(ge=0, description="Memories of this owner the policy looked at: "
                          "the live ones, and expired ones still marked hot (to demote them).")
    steps: tuple[StepOutcome, ...] = ()
    activation_set: tuple[str, ...] = Field(
        default=(), description="Memory ids of the owner's hot block, in block order."
    )
    activation_tokens: int = Field(default=0, ge=0, description="Tokens the policy counted.")
    block_id: str | None = Field(default=None, description="The hot block kept after the run.")
    block_tokens: int = Field(default=0, ge=0, description="Its prefix tokens (with overhead).")
    block_built: bool = Field(default=False, description="Its KV cache was computed in this run.")
    dropped_blocks: tuple[str, ...] = Field(
        default=(), description="Older blocks of this owner dropped by the run (also those "
        "evicted to make room for its new block), each audited ``schedule:drop``."
    )
    evicted_blocks: tuple[str, ...] = Field(
        default=(), description="Other owners' blocks evicted to make room for this owner's "
        "new block within the KV budget, each audited ``schedule:evict`` for its owner."
    )
    error: str | None = Field(default=None, description="Why the block could not be built.")


class ScheduleReport(BaseModel):
    """Everything one scheduler run did, owner by owner."""

    model_config = ConfigDict(frozen=True)

    now: datetime = Field(description="The time the plans were made for.")
    duration_ms: float = Field(ge=0, description="Wall time of the run.")
    users: tuple[UserSchedule, ...] = ()
    stopped: bool = Field(default=False, description="The run was asked to stop part way.")

    def counts(self) -> dict[str, int]:
        """Applied steps by kind, plus ``failed``, ``skipped`` and ``blocks_built``."""
        out = {kind.value: 0 for kind in StepKind}
        out.update(failed=0, skipped=0, blocks_built=0)
        for user in self.users:
            out["blocks_built"] += int(user.block_built)
            for step in user.steps:
                if step.status == "done":
                    out[step.kind.value] += 1
                else:
                    out[step.status] += 1
        return out

    def for_user(self, user_id: str) -> UserSchedule | None:
        """This run's part for one owner, or None if the run did not look at them."""
        return next((u for u in self.users if u.user_id == user_id), None)

    def summary(self) -> str:
        """One line, e.g. ``"2 users: promote 3, demote 0, archive 1, expire 0; 1 block built
        (alice: 3 hot, 212 tok); 41 ms"``."""
        counts = self.counts()
        steps = ", ".join(f"{k.value} {counts[k.value]}" for k in StepKind)
        hot = "; ".join(
            f"{u.user_id}: {len(u.activation_set)} hot, {u.block_tokens} tok"
            for u in self.users
            if u.block_id is not None
        )
        extra = [f"{counts['blocks_built']} block(s) built"]
        if counts["failed"]:
            extra.append(f"{counts['failed']} failed")
        if counts["skipped"]:
            extra.append(f"{counts['skipped']} skipped")
        errors = [u.user_id for u in self.users if u.error]
        if errors:
            extra.append(f"block errors for {', '.join(errors)}")
        if self.stopped:
            extra.append("stopped early")
        return (
            f"{len(self.users)} user(s): {steps}; {', '.join(extra)}"
            + (f" ({hot})" if hot else "")
            + f"; {self.duration_ms:.0f} ms"
        )
