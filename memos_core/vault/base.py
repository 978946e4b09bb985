"""The vault protocol: the source of truth for every MemCube version, tombstone and audit record.

The embedded implementation is :class:`memos_core.vault.sqlite.SQLiteVault`. A server database
can take its place by implementing this protocol (see docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from memos_core.cube import MemCube


@dataclass(frozen=True)
class Actor:
    """Who performs a mutation, and why (written to the audit record)."""

    user_id: str
    agent_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    at: datetime
    user_id: str
    agent_id: str | None
    action: str
    memory_id: str | None
    version: int | None
    reason: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class Edge:
    """An explicit relation between two memories ('supersedes', 'derived_from')."""

    src: str
    dst: str
    kind: str


@dataclass(frozen=True)
class NamespaceGrant:
    """A standing share of an owner's namespace with another user.

    Covers every memory of ``owner`` (narrowed to ``agent_id`` and/or ``session_id`` where
    they are not None), including memories written there later. ``scope`` is ``'read'`` or
    ``'write'``. The rules live in :mod:`memos_core.governance.access`.
    """

    owner: str
    grantee: str
    scope: str = "read"
    agent_id: str | None = None
    session_id: str | None = None


@dataclass(frozen=True)
class ListQuery:
    """Filters for :meth:`Vault.list`. ``None`` means no condition."""

    user_ids: tuple[str, ...] | None = None
    agent_id: str | None = None
    session_id: str | None = None
    types: tuple[str, ...] | None = None
    tags: tuple[str, ...] | None = None
    states: tuple[str, ...] | None = None
    occurred_after: datetime | None = None
    occurred_before: datetime | None = None
    include_superseded: bool = True
    limit: int = 100
    offset: int = 0
    newest_first: bool = False
    #: metadata key -> required value (str, int, float or bool), all must match
    metadata_equals: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Vault(Protocol):
    """Versioned memory storage. Every mutation is one transaction with its audit record.

    Contracts: versions of a memory are 1, 2, 3, ... with no gaps; a stored version is never
    changed except that ``tombstone`` scrubs the text of every version; ``get`` of an unknown
    id returns None; ``put_version`` raises if ``expected_version`` is not the current one.
    ``change_grants`` stores and deletes namespace grants together with the new versions
    they imply, in one transaction. ``derived_from(id)`` lists the memories
    recorded as derived from ``id`` (summaries). ``checkpoint`` makes sure no copy of
    overwritten data lingers in a journal (after a forget).
    """

    def insert(self, cubes: Sequence[MemCube], actor: Actor, action: str = "add") -> None: ...
    def put_version(self, cube: MemCube, expected_version: int, actor: Actor, action: str) -> None: ...
    def tombstone(self, memory_id: str, actor: Actor) -> MemCube: ...
    def get(self, memory_id: str) -> MemCube | None: ...
    def get_many(self, memory_ids: Sequence[str]) -> dict[str, MemCube]: ...
    def get_version(self, memory_id: str, version: int) -> MemCube | None: ...
    def get_as_of(self, memory_id: str, when: datetime) -> MemCube | None: ...
    def history(self, memory_id: str) -> list[MemCube]: ...
    def list(self, query: ListQuery) -> list[MemCube]: ...
    def count(self, query: ListQuery | None = None) -> int: ...
    def iter_current(self, batch_size: int = 1000) -> Iterator[list[MemCube]]: ...
    def record_usage(self, memory_ids: Iterable[str], now: datetime, half_life_s: float) -> None: ...
    def add_edges(self, edges: Sequence[Edge]) -> None: ...
    def edges(self) -> list[Edge]: ...
    def audit_log(self, memory_id: str | None = None, user_id: str | None = None,
                  limit: int = 100) -> list[AuditRecord]: ...
    def verify_audit(self) -> tuple[bool, str]: ...
    def grants(self, owner: str | None = None) -> list[NamespaceGrant]: ...
    def change_grants(self, *, add: Sequence[NamespaceGrant] = (),
                      remove: Sequence[NamespaceGrant] = (),
                      changes: Sequence[tuple[MemCube, int]] = (), actor: Actor, action: str,
                      details: dict[str, Any]) -> None: ...
    def derived_from(self, memory_id: str) -> list[str]: ...
    def checkpoint(self) -> None: ...
    def close(self) -> None: ...
