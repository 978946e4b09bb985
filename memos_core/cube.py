"""The MemCube: one memory's payload plus its metadata, as DESIGN.md lays it out.

A MemCube is immutable once stored: every change makes a new version in the vault, and the
object you hold is a snapshot of one version. Use ``cube.model_copy(update=...)`` to derive
the next version's value; the vault assigns ``version`` and ``updated_at``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from memos_core.errors import InvalidInputError


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (every timestamp in the system is UTC)."""
    return datetime.now(timezone.utc)


def new_id() -> str:
    """A fresh memory id: a UUID4 string (Qdrant accepts UUIDs as point ids)."""
    return str(uuid.uuid4())


#: A memory id's only form: a UUID, lower-case hex with hyphens. The index and every API call
#: normalise ids to it, so a stored id in another spelling of the same UUID (upper case, no
#: hyphens, braces) would share another memory's index point and be unreachable by its own
#: id. The vaults refuse to write one (:func:`require_canonical_ids`); reading is not
#: checked, so a store written before this rule still opens.
_CANONICAL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_canonical_id(value: object) -> bool:
    """Whether ``value`` is a memory id in its one stored form (see :data:`_CANONICAL_ID`)."""
    return isinstance(value, str) and _CANONICAL_ID.fullmatch(value) is not None


def require_canonical_ids(cubes: Iterable[MemCube]) -> None:
    """Raise :class:`InvalidInputError` if a memory's id (or ``superseded_by``) is not a
    canonical UUID string: every write path of the vaults calls this."""
    for cube in cubes:
        for value in (cube.id, cube.superseded_by):
            if value is not None and not is_canonical_id(value):
                raise InvalidInputError(f"memory ids are canonical UUID strings (lower case, "
                                        f"with hyphens), got {value[:80]!r}.")


def _require_aware(value: datetime | None, name: str) -> None:
    if value is not None and value.utcoffset() is None:
        raise InvalidInputError(
            f"{name} must be a timezone-aware datetime (use UTC), got {value!r}"
        )


def decayed_heat(
    old_heat: float, last_access: datetime | None, now: datetime, half_life_s: float
) -> float:
    """``old_heat`` halved for every ``half_life_s`` seconds between ``last_access`` and ``now``.

    A memory never accessed (``last_access is None``) keeps ``old_heat``; a ``now`` before
    ``last_access`` (clock skew) decays nothing. Never negative for a non-negative input.

    Raises:
        InvalidInputError: a naive datetime, or a non-positive half-life.
    """
    if half_life_s <= 0:
        raise InvalidInputError(f"half_life_s must be positive, got {half_life_s}")
    _require_aware(now, "now")
    _require_aware(last_access, "last_access")
    if last_access is None or old_heat <= 0:
        return max(old_heat, 0.0)
    elapsed = max(0.0, (now - last_access).total_seconds())
    return float(old_heat * 0.5 ** (elapsed / half_life_s))


def bump_heat(
    old_heat: float,
    last_access: datetime | None,
    now: datetime,
    half_life_s: float,
    weight: float = 1.0,
) -> float:
    """The heat after one hit at ``now``: decay to ``now``, then add ``weight``."""
    if weight < 0:
        raise InvalidInputError(f"a hit's weight must be non-negative, got {weight}")
    return decayed_heat(old_heat, last_access, now, half_life_s) + weight


class State(str, Enum):
    """Lifecycle state. ``generated -> activated -> archived -> expired``; ``deleted`` is final."""

    GENERATED = "generated"
    ACTIVATED = "activated"
    ARCHIVED = "archived"
    EXPIRED = "expired"
    DELETED = "deleted"


class Origin(str, Enum):
    """Where a memory came from."""

    USER_INPUT = "user_input"
    CONVERSATION = "conversation"
    EXTRACTION = "extraction"
    IMPORT = "import"
    CONSOLIDATION = "consolidation"


class MemoryType(str, Enum):
    """Semantic type; consolidation and retrieval filters read it."""

    FACT = "fact"
    PREFERENCE = "preference"
    EPISODE = "episode"
    TASK_PROMPT = "task_prompt"
    SUMMARY = "summary"
    NOTE = "note"


class Tier(str, Enum):
    """Which form the memory is served from now (plaintext is always kept as the source)."""

    PLAINTEXT = "plaintext"
    ACTIVATION = "activation"
    PARAMETRIC = "parametric"


class Namespace(BaseModel):
    """Owner of a memory: the user, optionally the agent and the session."""

    model_config = ConfigDict(frozen=True)

    user_id: str = Field(description="Owning user; the principal that may read and write it.")
    agent_id: str | None = Field(default=None, description="Agent the memory belongs to.")
    session_id: str | None = Field(default=None, description="Conversation or thread.")


class Span(BaseModel):
    """A character span of a source message that the memory text came from."""

    model_config = ConfigDict(frozen=True)

    message_id: str
    start: int = Field(ge=0)
    end: int = Field(ge=0)


class Provenance(BaseModel):
    """Where the text came from: source messages, spans, the extractor that produced it."""

    model_config = ConfigDict(frozen=True)

    source_message_ids: tuple[str, ...] = ()
    spans: tuple[Span, ...] = ()
    extractor: str | None = Field(default=None, description="Name of the extractor, if any.")
    derived_from: tuple[str, ...] = Field(
        default=(), description="Memory ids this one was derived from (e.g. a summary's sources)."
    )


class Governance(BaseModel):
    """Access, lifespan, priority and sensitivity rules of one memory."""

    model_config = ConfigDict(frozen=True)

    ttl_seconds: float | None = Field(
        default=None, gt=0, description="Expire this long after creation; None keeps forever."
    )
    priority: int = Field(default=0, description="Higher is kept longer and injected first.")
    sensitivity: tuple[str, ...] = Field(
        default=(), description="Tags such as 'pii' or 'secret' that restrict exports/prompts."
    )
    readers: tuple[str, ...] = Field(default=(), description="Users granted read access.")
    writers: tuple[str, ...] = Field(default=(), description="Users granted write access.")


class Usage(BaseModel):
    """Behavioural counters, updated on every retrieval hit (not versioned)."""

    model_config = ConfigDict(frozen=True)

    access_count: int = 0
    last_access: datetime | None = None
    heat: float = Field(default=0.0, description="Exponentially decayed access count.")
    tier: Tier = Tier.PLAINTEXT


class MemCube(BaseModel):
    """One memory: text (the source of truth) plus identifiers, governance, usage and state."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=new_id)
    namespace: Namespace
    text: str
    version: int = Field(default=1, ge=1)
    created_at: datetime = Field(default_factory=utcnow)
    #: a new memory's first version is recorded at its creation (``as_of=created_at`` reads it)
    updated_at: datetime = Field(default_factory=lambda data: data["created_at"])
    occurred_at: datetime | None = Field(
        default=None, description="When the remembered event happened (not when it was stored)."
    )
    origin: Origin = Origin.USER_INPUT
    type: MemoryType = MemoryType.NOTE
    tags: tuple[str, ...] = ()
    entities: tuple[str, ...] = ()
    provenance: Provenance = Field(default_factory=Provenance)
    governance: Governance = Field(default_factory=Governance)
    usage: Usage = Field(default_factory=Usage)
    state: State = State.GENERATED
    valid_from: datetime | None = None
    valid_to: datetime | None = Field(
        default=None, description="Set when a newer memory supersedes this one."
    )
    superseded_by: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    scrubbed: bool = Field(
        default=False,
        description="True once forget removed this version's content: its text, entities, "
        "tags, metadata, spans and sensitivity are then empty (no digest of the text is "
        "kept). Set only by the vault's scrub (an imported value is never trusted).",
    )

    @property
    def user_id(self) -> str:
        return self.namespace.user_id

    @property
    def session_id(self) -> str | None:
        return self.namespace.session_id

    @property
    def agent_id(self) -> str | None:
        return self.namespace.agent_id

    @property
    def is_live(self) -> bool:
        """True unless the memory is deleted or expired."""
        return self.state not in (State.DELETED, State.EXPIRED)

    @property
    def is_superseded(self) -> bool:
        return self.valid_to is not None

    def is_valid_at(self, when: datetime) -> bool:
        """True if ``when`` lies in the validity interval ``[valid_from, valid_to)``."""
        start = self.valid_from or self.created_at
        return start <= when and (self.valid_to is None or when < self.valid_to)
