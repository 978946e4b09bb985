"""The vault protocol: the source of truth for every MemCube version, tombstone and audit record.

The embedded implementation is :class:`memos_core.vault.sqlite.SQLiteVault`. A server database
can take its place by implementing this protocol (see docs/architecture.md).
"""

from __future__ import annotations

import builtins
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
    """Versioned memory storage: the source of truth. Implement every method to add a backend
    (:class:`memos_core.vault.sqlite.SQLiteVault` is the embedded one); the conformance suite
    ``tests/vault/vault_conformance.py`` (:class:`VaultConformance`) checks the contracts below.

    Contracts:

    * Every mutation is one transaction together with its audit record(s): after a crash a
      change is there whole or not at all. A method returns only after its commit.
    * Versions of a memory are 1, 2, 3, ... with no gaps. A stored version never changes,
      except that :meth:`tombstone` scrubs the text of every version.
    * Optimistic concurrency: :meth:`put_version` / :meth:`put_versions` / ``replacements``
      raise :class:`~memos_core.errors.MemOSError` (and write nothing) if ``expected_version``
      is not the memory's current version; an unknown id raises
      :class:`~memos_core.errors.MemoryNotFoundError`.
    * Reads of an unknown id return None (``get``, ``get_version``, ``get_as_of``) or an empty
      result (``history``, ``derived_from``); ``get_many`` leaves unknown ids out.
    * Order: ``list`` and ``iter_current`` return memories in insertion order (``list`` newest
      first when asked); ``history`` oldest first; ``audit_log`` oldest first (the newest
      ``limit`` records); ``grants`` oldest first.
    * Usage counters (``record_usage``) and tier marks (``set_tier``) are not versions: they
      change no version number and write no audit record.
    * The audit log is append-only and hash-chained; :meth:`verify_audit` recomputes it.
    * ``list`` with ``user_ids`` returns the memories those users own *or may read* (their
      ``governance.readers`` name them).
    """

    # -- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        """Release the storage (idempotent for the caller's purposes; no call after it)."""

    def checkpoint(self) -> None:
        """Make sure no copy of overwritten data lingers in a journal (called after a forget).

        Raises:
            MemOSError: the journal could not be cleared (say what to close).
        """

    def get_meta(self, key: str) -> str | None:
        """A value of the store's own key/value table (index bookkeeping); None if unset."""

    def set_meta(self, key: str, value: str) -> None:
        """Set a key of the store's own key/value table (not audited)."""

    def stats(self) -> dict[str, Any]:
        """Store-wide counts (an admin's ``MemOS.stats``): at least ``memories``,
        ``versions`` and ``audit_records``; a backend may add its own (e.g. file size)."""

    def user_stats(self, user_id: str) -> dict[str, Any]:
        """The counts of :meth:`stats` restricted to what ``user_id`` owns or did:
        ``memories``, ``by_state``, ``versions``, ``audit_records``, ``edges`` (among their
        memories) and ``shared_with_me`` (live memories of others they may read)."""

    # -- writes -------------------------------------------------------------------------------

    def insert(self, cubes: Sequence[MemCube], actor: Actor, action: str = "add", *,
               replacements: Sequence[tuple[MemCube, int]] = (), edges: Sequence[Edge] = (),
               replacement_action: str = "supersede") -> None:
        """Store new memories (version 1 each) with optional new versions of existing ones
        (``(new_version, expected_version)``, audited as ``replacement_action``) and
        relations, in one transaction; one audit record per memory written."""

    def import_histories(self, histories: Sequence[Sequence[MemCube]], edges: Sequence[Edge],
                         actor: Actor) -> None:
        """Write whole version histories (a bundle import: each list is one memory's
        versions 1..n) and their relations in one transaction, audited as ``import``."""

    def put_version(self, cube: MemCube, expected_version: int, actor: Actor, action: str,
                    details: dict[str, Any] | None = None) -> None:
        """Write ``cube`` as the next version of its memory (audited as ``action``)."""

    def put_versions(self, changes: Sequence[tuple[MemCube, int]], actor: Actor, action: str,
                     details: dict[str, Any] | None = None) -> None:
        """Several :meth:`put_version` calls as one transaction (all or none)."""

    def tombstone(self, memory_id: str, actor: Actor) -> MemCube:
        """Forget a memory: scrub the text of every version (keeping a ``sha256:`` digest),
        write a ``deleted`` version, drop its usage counters and relations, audit ``forget``.
        Returns the tombstone; a tombstone again is returned unchanged (idempotent).

        Raises:
            MemoryNotFoundError: unknown id.
        """

    def scrub_tombstone(self, memory_id: str) -> int:
        """Scrub every version of the forgotten memory ``memory_id`` that still holds content
        (its ``scrubbed`` flag unset) and drop its relations, in one transaction; returns how
        many versions were scrubbed (0 for a proper tombstone or a memory not forgotten)."""

    def record_usage(self, memory_ids: Iterable[str], now: datetime, half_life_s: float) -> None:
        """Count a retrieval hit on each memory: access count +1, heat decayed to ``now``
        then +1. Unknown ids are ignored."""

    def set_tier(self, memory_id: str, tier: str) -> None:
        """Record which tier serves the memory (``plaintext``, ``activation``, ``parametric``)."""

    def add_edges(self, edges: Sequence[Edge]) -> None:
        """Store relations (idempotent: an existing relation is kept once)."""

    def audit(self, actor: Actor, action: str, memory_id: str | None = None,
              version: int | None = None, details: dict[str, Any] | None = None) -> None:
        """Append an audit record for an operation that changes no memory (export, schedule)."""

    # -- grants -------------------------------------------------------------------------------

    def grants(self, owner: str | None = None) -> builtins.list[NamespaceGrant]:
        """Standing namespace grants, of ``owner`` or of everyone, oldest first."""

    def change_grants(self, *, add: Sequence[NamespaceGrant] = (),
                      remove: Sequence[NamespaceGrant] = (),
                      changes: Sequence[tuple[MemCube, int]] = (), actor: Actor, action: str,
                      details: dict[str, Any]) -> None:
        """Store and delete namespace grants together with the new versions they imply
        (``(new_version, expected_version)``), in one transaction; one audit record for the
        grant plus one per version."""

    # -- reads --------------------------------------------------------------------------------

    def get(self, memory_id: str) -> MemCube | None:
        """The current version (with usage counters), tombstones included; None if unknown."""

    def get_many(self, memory_ids: Sequence[str]) -> dict[str, MemCube]:
        """``{id: current version}`` for the known ids among ``memory_ids``."""

    def get_version(self, memory_id: str, version: int) -> MemCube | None:
        """One stored version; None if the memory or the version does not exist."""

    def get_as_of(self, memory_id: str, when: datetime) -> MemCube | None:
        """The version that was current at ``when``; None if the memory did not exist yet."""

    def history(self, memory_id: str) -> builtins.list[MemCube]:
        """Every version, oldest first (empty for an unknown id)."""

    def list(self, query: ListQuery) -> builtins.list[MemCube]:
        """Current versions matching ``query``, paged by ``limit``/``offset``."""

    def count(self, query: ListQuery | None = None) -> int:
        """How many memories match ``query`` (all of them, tombstones included, for None);
        ``limit``/``offset`` are ignored."""

    def iter_current(self, batch_size: int = 1000) -> Iterator[builtins.list[MemCube]]:
        """Every memory's current version (tombstones included), in insertion order, in
        batches of at most ``batch_size``."""

    def current_versions(self) -> dict[str, tuple[int, str]]:
        """``{id: (version, state value)}`` for every memory (index reconciliation)."""

    def graph_rows(self) -> builtins.list[dict[str, Any]]:
        """For every memory, in insertion order, the fields the graph needs: ``id``, ``seq``
        (insertion number), ``user_id``, ``agent_id``, ``session_id``, ``version``,
        ``state``, ``type``, ``tags``, ``readers``, ``occurred_at`` (epoch seconds or None),
        ``superseded`` (bool) and ``entities`` -- without the text."""

    def edges(self) -> builtins.list[Edge]:
        """Every stored relation."""

    def derived_from(self, memory_id: str) -> builtins.list[str]:
        """Ids of the memories recorded as derived from ``memory_id`` (its summaries)."""

    def audit_log(self, memory_id: str | None = None, user_id: str | None = None,
                  action: str | None = None, limit: int = 100) -> builtins.list[AuditRecord]:
        """Audit records about ``memory_id`` and/or by ``user_id``, of one ``action`` if
        given: the newest ``limit``, oldest first."""

    def verify_audit(self) -> tuple[bool, str]:
        """Recompute the hash chain: ``(ok, message naming the first bad record)``."""
