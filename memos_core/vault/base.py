"""The vault protocol: the source of truth for every MemCube version, tombstone and audit record.

The embedded implementation is :class:`memos_core.vault.sqlite.SQLiteVault`. A server database
can take its place by implementing this protocol (see docs/architecture.md).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from memos_core.cube import MemCube
from memos_core.errors import CorruptDataError, InvalidInputError
from memos_core.validation import bad_char


#: Longest ``reason`` an audit record keeps (the audit log is kept for good).
MAX_REASON = 10_000


@dataclass(frozen=True)
class Actor:
    """Who performs a mutation, and why (written to the audit record).

    Raises :class:`~memos_core.errors.InvalidInputError` for a field that is not a str (the
    ids) or None (agent and reason), holds a NUL character (no backend's audit log could
    keep the same text: PostgreSQL refuses it), or a reason longer than :data:`MAX_REASON`.
    """

    user_id: str
    agent_id: str | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        for name, value in (("user_id", self.user_id), ("agent_id", self.agent_id),
                            ("reason", self.reason)):
            if value is None and name != "user_id":
                continue
            if not isinstance(value, str):
                raise InvalidInputError(f"{name} must be a str, got {type(value).__name__}.")
            bad = bad_char(value)
            if bad is not None:
                raise InvalidInputError(f"{name} holds {bad}.")
        if self.reason is not None and len(self.reason) > MAX_REASON:
            raise InvalidInputError(
                f"reason is {len(self.reason)} characters; at most {MAX_REASON} are kept.")


@dataclass(frozen=True)
class AuditRecord:
    """One audit record. ``reason`` is None when none was given, or when a forget removed it
    (the record's memory, or the memory its operation wrote, was forgotten; see
    :mod:`memos_core.vault.audit_chain`)."""

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
    #: groups of strings: the memory's stored record (its text, metadata, tags, ...) must
    #: hold every string of at least one group as written (case-sensitive). A pre-filter
    #: for callers that then look at what they get: only ASCII letters and digits are sure
    #: to appear in the record as they are (other characters may be escaped there). ``()``
    #: selects nothing.
    contains_any: tuple[tuple[str, ...], ...] | None = None
    #: with ``user_ids``: also the memories others shared with those users (their
    #: ``governance.readers`` name one of them; not forgotten ones). False selects only the
    #: memories the users own -- for work on an owner's own memories (export, sharing a
    #: namespace, the scheduler), which would otherwise read everything shared with them
    #: only to drop it. Without ``user_ids`` it changes nothing.
    shared: bool = True

    def __post_init__(self) -> None:
        if self.contains_any is not None and any(
                not isinstance(group, (tuple, list)) for group in self.contains_any):
            raise InvalidInputError(
                "ListQuery.contains_any takes groups of strings (a tuple of tuples: every "
                "string of one group must be held), e.g. (('locker', '4417'),); got "
                f"{self.contains_any!r}.")


#: Told of each damaged memory a lenient read leaves out (``on_damaged`` of
#: :meth:`Vault.list`, :meth:`Vault.get_many`, :meth:`Vault.texts`): the error naming it
#: (``memory_id`` set), as a strict read would have raised it.
OnDamaged = Callable[[CorruptDataError], None]

#: A value serialised by its writer: ``(type name, bytes)``; the vault stores both as they
#: are and never decodes them (``bytes`` may be None, e.g. for an empty channel).
Typed = tuple[str, bytes | None]

#: One message of a conversation log: ``(message_id, message)``, the message a JSON object
#: as text (see :class:`ConversationLogs` for the fields the core redacts).
LogRow = tuple[str, str]


@dataclass(frozen=True)
class ItemKey:
    """An external key naming one memory: ``key`` within the label path ``namespace`` of
    ``user_id`` (the owner). Unique: at most one memory is bound to an ``ItemKey``.

    Labels and keys are non-empty strings without the control character U+001F (a vault
    may use it to join labels)."""

    user_id: str
    namespace: tuple[str, ...]
    key: str


@dataclass(frozen=True)
class CheckpointRecord:
    """One stored checkpoint of a thread (the channel values are stored apart, as blobs)."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    parent_checkpoint_id: str | None
    run_id: str | None
    checkpoint: Typed
    metadata: Typed


class KeyedItems(Protocol):
    """Memories addressed by an external key (:class:`ItemKey`), e.g. LangGraph store items.

    A binding ``ItemKey -> memory id`` is stored in the vault with a UNIQUE constraint on the
    key, so two writers (threads or processes) can never bind one key to two memories; it is
    created in the same transaction as the memory's first version and lives until the memory
    is forgotten or :meth:`unbind_key` removes it.

    Forget rule: :meth:`Vault.tombstone` and :meth:`Vault.scrub_tombstone` delete every
    binding of the memory in their transaction (namespace labels and keys are user text);
    no key of a forgotten memory stays.
    """

    def put_keyed(self, item: ItemKey, cube: MemCube, expected_version: int | None,
                  actor: Actor, action: str, *,
                  grants: Sequence[NamespaceGrant] | None = None) -> None:
        """Write ``cube`` under ``item`` in one transaction, with its audit record.
        ``grants``: as for :meth:`Vault.insert`, for a new memory.

        ``expected_version=None``: ``cube`` is a new memory (version 1); it is inserted as
        :meth:`Vault.insert` would and bound to ``item``. Otherwise ``cube`` is the next
        version of the memory bound to ``item`` (its id), written as :meth:`Vault.put_version`
        would with ``expected_version``.

        Raises:
            ConflictError: ``item`` is already bound (new memory), is bound to another
                memory or to none (next version), or ``expected_version`` is stale. Nothing
                was written; read with :meth:`get_keyed` and retry.
            InvalidInputError: ``cube.namespace.user_id`` is not ``item.user_id``.
        """

    def get_keyed(self, item: ItemKey) -> MemCube | None:
        """The current version (with usage counters) of the memory bound to ``item``, in
        whatever state it is; None if the key is unbound."""

    def list_keyed(self, user_id: str, prefix: Sequence[str] = (), *, limit: int = 1000,
                   offset: int = 0) -> builtins.list[tuple[ItemKey, str]]:
        """``(item, memory id)`` of the bindings of ``user_id`` whose namespace starts with
        the labels ``prefix`` (label by label: ``("a",)`` matches ``("a", "b")``, not
        ``("ab",)``), in the order they were bound, paged."""

    def bind_key(self, item: ItemKey, memory_id: str) -> bool:
        """Bind ``item`` to the existing memory ``memory_id`` of ``item.user_id`` (adopting a
        memory written before keys existed), in one transaction, writing no version; True
        if bound now, False if the key or the memory is already bound (nothing changes).

        Raises:
            MemoryNotFoundError: no memory ``memory_id``, or it is not ``item.user_id``'s or
                it is forgotten.
        """

    def unbind_key(self, item: ItemKey, memory_id: str) -> bool:
        """Remove the binding of ``item`` if it is bound to ``memory_id`` (compare and
        delete, one transaction); True if it was. The memory itself is not changed."""


class ConversationLogs(Protocol):
    """Conversation logs the core owns: ordered message queues, one per ``(user_id,
    log_id)`` (``user_id`` may be ``""`` for a log of no particular user).

    Each row is ``(message_id, message)`` with a status, ``"active"`` or ``"archived"``;
    rows keep the order in which they were appended (across statuses). Every method is one
    transaction; ``status=None`` means every status. A message is a JSON object as text; the
    core redacts it on forget (:func:`memos_core.governance.redaction.redact_log_message`:
    string values, and for the memory's source message every ``content``/``text`` string).

    Forget rule: ``MemOS.forget`` calls :meth:`log_redact` before the tombstone, on the
    logs of the memory's owner and on those of ``""``; rows deleted or rewritten leave no
    copy once :meth:`Vault.checkpoint` returns (SQLite: ``secure_delete`` + WAL truncation).
    Delete rule: a call that deletes rows (``log_delete``, ``log_delete_at``, ``log_replace``,
    ``log_take_oldest`` without ``archive``) leaves no copy of them when it returns, as after
    a forget (SQLite truncates the WAL, or logs a warning while another connection holds it;
    PostgreSQL keeps dead tuples and WAL until VACUUM and WAL expiry, as for a forget:
    docs/scale_out.md).
    """

    def log_append(self, user_id: str, log_id: str, rows: Sequence[LogRow],
                   status: str) -> None:
        """Append ``rows`` (in order) after every row of the log, with ``status``."""

    def log_read(self, user_id: str, log_id: str, status: str | None, limit: int | None = None,
                 offset: int = 0) -> builtins.list[LogRow]:
        """Rows of ``status``, oldest first, paged (``limit`` None: all); [] for no log."""

    def log_count(self, user_id: str, log_id: str, status: str | None) -> int:
        """How many rows of ``status`` the log has."""

    def log_ids(self, user_id: str) -> builtins.list[str]:
        """The log ids of ``user_id`` that hold at least one row, by their oldest row."""

    def log_replace(self, user_id: str, log_id: str, rows: Sequence[LogRow], status: str,
                    clear: str | None) -> None:
        """Delete the rows of status ``clear`` (None: all), then append ``rows``."""

    def log_delete(self, user_id: str, log_id: str,
                   status: str | None) -> builtins.list[LogRow]:
        """Delete the rows of ``status``; returns them, oldest first."""

    def log_delete_at(self, user_id: str, log_id: str, idx: int,
                      status: str | None) -> LogRow | None:
        """Delete the row at position ``idx`` among the rows of ``status`` (negative: from
        the end); returns it, or None when ``idx`` is out of range."""

    def log_take_oldest(self, user_id: str, log_id: str, n: int, *,
                        archive: bool) -> builtins.list[LogRow]:
        """The ``n`` oldest active rows, marked archived (``archive``) or deleted; returns
        them, oldest first."""

    def log_redact(self, user_ids: Sequence[str], contains: Sequence[str],
                   message_ids: Sequence[str],
                   rewrite: Callable[[str, str], str | None]) -> builtins.list[tuple[str, str]]:
        """In one transaction, call ``rewrite(message_id, message)`` on every row of the
        logs of ``user_ids`` whose message contains one of ``contains`` (plain substring)
        or whose id is in ``message_ids``, and store what it returns (None: unchanged).
        Returns the ``(user_id, log_id)`` pairs changed, sorted."""


class ThreadCheckpoints(Protocol):
    """Agent-framework thread state (LangGraph checkpoints): checkpoints, channel-value
    blobs and pending writes, stored as the framework serialised them (:data:`Typed`).

    Keys: a checkpoint is ``(thread_id, checkpoint_ns, checkpoint_id)``; a blob
    ``(thread_id, checkpoint_ns, channel, version)``; a write ``(thread_id, checkpoint_ns,
    checkpoint_id, task_id, idx)``. Every method is one transaction.

    Forget rule: the values are opaque to the core, so the integration that wrote them
    redacts them through :meth:`cp_redact` (its forget hook, or its vault redactor entry
    point when it is not open: :mod:`memos_core.governance.forget_hooks`); rows deleted or
    rewritten leave no copy once :meth:`Vault.checkpoint` returns.
    """

    def cp_put(self, record: CheckpointRecord,
               blobs: Sequence[tuple[str, str, Typed]]) -> None:
        """Store a checkpoint (replacing one with the same key) and the blobs
        ``(channel, version, value)`` written with it (replacing any with the same key)."""

    def cp_get(self, thread_id: str, checkpoint_ns: str,
               checkpoint_id: str | None) -> CheckpointRecord | None:
        """The named checkpoint, or (``checkpoint_id`` None) the thread's latest in
        ``checkpoint_ns`` by id; None if there is none."""

    def cp_list(self, thread_id: str | None = None, checkpoint_ns: str | None = None,
                checkpoint_id: str | None = None, before: str | None = None,
                limit: int | None = None) -> builtins.list[CheckpointRecord]:
        """Checkpoints newest first (by checkpoint id, descending); each argument that is
        not None narrows (``before``: ids strictly smaller)."""

    def cp_blobs(self, thread_id: str, checkpoint_ns: str,
                 versions: Mapping[str, str]) -> dict[str, Typed]:
        """``{channel: value}`` for the ``{channel: version}`` pairs stored."""

    def cp_put_writes(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str,
                      task_id: str, task_path: str,
                      writes: Sequence[tuple[int, str, Typed]]) -> None:
        """Store pending writes ``(idx, channel, value)`` of a task: a write whose ``idx``
        is negative (a special channel) replaces the stored one; another is kept if one
        with its key exists (idempotent)."""

    def cp_writes(self, thread_id: str, checkpoint_ns: str,
                  checkpoint_id: str) -> builtins.list[tuple[str, str, Typed]]:
        """``(task_id, channel, value)`` of a checkpoint's writes, ordered by task path,
        task id and idx."""

    def cp_delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, blob and write of a thread (missing: no-op)."""

    def cp_delete_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints with one of ``run_ids``, and their writes; then the blobs
        and writes of each (thread, namespace) left with no checkpoint (no checkpoint can
        load them, and a forget could not tell whose they are)."""

    def cp_copy_thread(self, source: str, target: str) -> None:
        """Copy every checkpoint, blob and write of ``source`` to ``target`` (replacing
        rows with the same key)."""

    def cp_any(self) -> bool:
        """Whether any checkpoint, blob or write is stored (a forget runs the checkpoint
        redactor only then)."""

    def cp_redact(self, contains: Sequence[bytes],
                  rewrite: Callable[[Typed], Typed | None], *,
                  skip_threads: Collection[str] = ()) -> builtins.list[str]:
        """In one transaction, call ``rewrite(value)`` on every stored checkpoint,
        metadata, blob and write value whose bytes contain one of ``contains`` (except in
        the threads ``skip_threads`` names), and store what it returns (None: unchanged).
        Returns the thread ids changed, sorted.

        First (with ``contains`` not empty) it deletes the blobs of every (thread,
        namespace) that has no checkpoint -- left by the ``cp_delete_runs`` of earlier
        versions; no checkpoint can load them, and no checkpoint says whose they are --
        so they are neither searched nor reported (a transaction of its own before the
        rewriting one, on PostgreSQL, holding puts off only while it runs). Writes are
        kept: a run's writes may be stored before the checkpoint they belong to."""


@runtime_checkable
class Vault(KeyedItems, ConversationLogs, ThreadCheckpoints, Protocol):
    """Versioned memory storage: the source of truth. Implement every method to add a backend
    (:class:`memos_core.vault.sqlite.SQLiteVault` is the embedded one); the conformance suite
    ``tests/vault/vault_conformance.py`` (:class:`VaultConformance`) checks the contracts below.

    Contracts:

    * Every mutation is one transaction together with its audit record(s): after a crash a
      change is there whole or not at all. A method returns only after its commit.
    * Versions of a memory are 1, 2, 3, ... with no gaps. A stored version never changes,
      except that :meth:`tombstone` scrubs the text of every version.
    * Optimistic concurrency: :meth:`put_version` / :meth:`put_versions` / ``replacements``
      raise :class:`~memos_core.errors.ConflictError` (a ``MemOSError``; and write nothing)
      if ``expected_version`` is not the memory's current version; an unknown id raises
      :class:`~memos_core.errors.MemoryNotFoundError`.
    * Reads of an unknown id return None (``get``, ``get_version``, ``get_as_of``) or an empty
      result (``history``, ``derived_from``); ``get_many`` leaves unknown ids out.
    * Order: ``list`` and ``iter_current`` return memories in insertion order (``list`` newest
      first when asked); ``history`` oldest first; ``audit_log`` oldest first (the newest
      ``limit`` records); ``grants`` oldest first.
    * Usage counters (``record_usage``) and tier marks (``set_tier``) are not versions: they
      change no version number and write no audit record.
    * The audit log is append-only and hash-chained; :meth:`verify_audit` recomputes it.
    * ``list`` and ``count`` with ``user_ids`` select the memories those users own *or may
      read* (their ``governance.readers`` name them; a forgotten memory only its owner's);
      with ``ListQuery.shared=False``, only those they own.
    * The integration storage -- keyed items (:class:`KeyedItems`), conversation logs
      (:class:`ConversationLogs`), thread checkpoints (:class:`ThreadCheckpoints`) -- is
      part of the vault, in the same database and transactions, so that it works unchanged
      on every backend and with several processes on one database. Their forget rules are
      stated on each.
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

    def meta_items(self, prefix: str) -> builtins.list[tuple[str, str]]:
        """The ``(key, value)`` pairs of the key/value table whose key starts with ``prefix``,
        by key."""

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
               replacement_action: str = "supersede",
               grants: Sequence[NamespaceGrant] | None = None) -> None:
        """Store new memories (version 1 each) with optional new versions of existing ones
        (``(new_version, expected_version)``, audited as ``replacement_action``) and
        relations, in one transaction; one audit record per memory written. ``grants``: the
        namespace grants of the memories' owners that the caller applied to them
        (``ops.share.inherit_grants``); if the owners' grants differ when the transaction
        runs (another process shared or revoked in between), :class:`NamespaceChangedError`
        and nothing is written."""

    def import_histories(self, histories: Sequence[Sequence[MemCube]], edges: Sequence[Edge],
                         actor: Actor, keys: Sequence[tuple[ItemKey, str]] = ()) -> int:
        """Write whole version histories (a bundle import: each list is one memory's
        versions 1..n), their relations and the key bindings ``keys`` (``(item, memory
        id)``, each memory one of ``histories``, live and ``item.user_id``'s, else
        :class:`InvalidInputError` and nothing is written) in one transaction, audited as
        ``import``. A key that is bound already keeps its memory; returns how many keys
        were bound."""

    def put_version(self, cube: MemCube, expected_version: int, actor: Actor, action: str,
                    details: dict[str, Any] | None = None, *,
                    rewrite_earlier: Callable[[MemCube], MemCube | None] | None = None) -> None:
        """Write ``cube`` as the next version of its memory (audited as ``action``).

        ``rewrite_earlier``: in the same transaction, rewrite in place each earlier version
        (numbered below ``cube.version``) for which it returns a new cube, as
        :meth:`redact_versions` does -- for a write whose old text must not stay in history
        (a forget's redaction of a conversation message, a summary re-derived after a
        source was forgotten). All or nothing: if it raises, neither the new version nor
        any rewrite is stored, and a crash leaves either both or neither."""

    def put_versions(self, changes: Sequence[tuple[MemCube, int]], actor: Actor, action: str,
                     details: dict[str, Any] | None = None) -> None:
        """Several :meth:`put_version` calls as one transaction (all or none)."""

    def tombstone(self, memory_id: str, actor: Actor,
                  details: dict[str, Any] | None = None) -> MemCube:
        """Forget a memory: scrub every version (its text emptied, nothing derived kept),
        write a ``deleted`` version, drop its usage counters, key bindings
        (:class:`KeyedItems`) and relations -- but for its summaries' ``derived_from``
        relations, which the forget's cascade reads once this commits and then drops
        (:meth:`drop_relations`) -- and audit ``forget`` (with ``details``: no text). The
        reasons of the memory's audit records (the forget's own included) and of those its
        writing operation made (``details['by']``) are removed, their commitments kept, so
        the chain still verifies (:mod:`memos_core.vault.audit_chain`). Returns the
        tombstone; a tombstone again is returned unchanged (idempotent).

        Raises:
            MemoryNotFoundError: unknown id.
        """

    def drop_relations(self, memory_id: str) -> None:
        """Delete every relation left to or from ``memory_id`` (a tombstone keeps its
        summaries' ``derived_from`` relations until its forget's cascade has read them)."""

    def unfinished_forgets(self) -> builtins.list[str]:
        """Ids of the tombstones whose summaries' ``derived_from`` relations are still there:
        forgets stopped between the tombstone and the cascade (a crash), to be finished."""

    def scrub_tombstone(self, memory_id: str) -> int:
        """Scrub every version of the forgotten memory ``memory_id`` that still holds content
        (its ``scrubbed`` flag unset), remove the reasons its audit records still hold, and
        drop what :meth:`tombstone` drops, in one transaction; returns how many versions were
        scrubbed (0 for a proper tombstone or a memory not forgotten)."""

    def redact_versions(self, memory_id: str, rewrite: Callable[[MemCube], MemCube | None], *,
                        below: int) -> int:
        """Rewrite in place, in one transaction, each version of ``memory_id`` numbered below
        ``below`` for which ``rewrite`` returns a new cube (the same id and version number);
        returns how many. For text that history would otherwise keep (``secure_delete``, and
        a forget's WAL truncation, leave no page with it). Not audited apart. A caller that
        also writes a new version passes the rewrite to :meth:`put_version`
        (``rewrite_earlier``) instead: one transaction, so no crash between the two can
        leave the earlier versions unredacted."""

    def record_usage(self, memory_ids: Iterable[str], now: datetime, half_life_s: float) -> None:
        """Count a retrieval hit on each memory: access count +1, heat decayed to ``now``
        then +1. Unknown ids are ignored."""

    def set_tier(self, memory_id: str, tier: str, *, expected: str | None = None) -> bool:
        """Record which tier serves the memory (``plaintext``, ``activation``, ``parametric``);
        with ``expected``, only while its tier is still that one (a compare-and-set in one
        statement: of two processes' schedulers promoting the same memory, one writes).
        Returns whether the tier was written (False: an unknown id, or another tier than
        ``expected``)."""

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

    def get_many(self, memory_ids: Sequence[str], *,
                 on_damaged: OnDamaged | None = None) -> dict[str, MemCube]:
        """``{id: current version}`` for the known ids among ``memory_ids``.

        A memory whose stored record is damaged raises
        :class:`~memos_core.errors.CorruptDataError` naming it (``memory_id``), or with
        ``on_damaged`` is passed to it and left out: for reads that show many memories
        (list, search, export), never for one that changes what it reads (a cascade must not
        skip a memory it should change). A backend whose records cannot be damaged that way
        (PostgreSQL checks text and JSON on input) takes the argument and never calls it."""

    def texts(self, memory_ids: Sequence[str], *,
              on_damaged: OnDamaged | None = None) -> dict[str, str]:
        """``{id: text of the current version}`` for the known ids among ``memory_ids`` (a
        tombstone's is its tombstone text): what :meth:`get_many` gives as ``cube.text``,
        without decoding the memories or reading their usage counters (the ranking stages
        read texts only). ``on_damaged`` as for :meth:`get_many`."""

    def damaged_stand_in(self, memory_id: str) -> tuple[MemCube, str] | None:
        """For a memory whose stored record is damaged, so that its owner can forget it: a
        stand-in built from what the backend can still read of it (the owner, namespace,
        version, state, type, tags and readers it keeps apart from the record; the text if
        it can be read), and a sentence saying what became of its text (read whole, in part,
        not at all). None for an unknown id, or where the backend keeps no damaged
        records (PostgreSQL checks text and JSON on input). :meth:`tombstone` takes a damaged memory as
        its stand-in and scrubs its damaged versions too."""

    def get_version(self, memory_id: str, version: int) -> MemCube | None:
        """One stored version; None if the memory or the version does not exist."""

    def get_as_of(self, memory_id: str, when: datetime) -> MemCube | None:
        """The version that was current at ``when``; None if the memory did not exist yet."""

    def history(self, memory_id: str) -> builtins.list[MemCube]:
        """Every version, oldest first (empty for an unknown id)."""

    def list(self, query: ListQuery, *,
             on_damaged: OnDamaged | None = None) -> builtins.list[MemCube]:
        """Current versions matching ``query``, paged by ``limit``/``offset``;
        ``on_damaged`` as for :meth:`get_many` (a memory left out still takes its place in
        the page: ``offset`` counts it)."""

    def count(self, query: ListQuery | None = None) -> int:
        """How many memories match ``query`` (all of them, tombstones included, for None);
        ``limit``/``offset`` are ignored."""

    def iter_current(self, batch_size: int = 1000, *,
                     on_damaged: OnDamaged | None = None) -> Iterator[builtins.list[MemCube]]:
        """Every memory's current version (tombstones included), in insertion order, in
        batches of at most ``batch_size``; ``on_damaged`` as for :meth:`get_many` (a batch
        may then hold fewer)."""

    def current_versions(self) -> dict[str, tuple[int, str]]:
        """``{id: (version, state value)}`` for every memory (index reconciliation)."""

    def graph_rows(self) -> builtins.list[dict[str, Any]]:
        """For every memory, in insertion order, the fields the graph needs: ``id``, ``seq``
        (insertion number), ``user_id``, ``agent_id``, ``session_id``, ``version``,
        ``state``, ``type``, ``tags``, ``readers``, ``occurred_at`` (epoch seconds or None),
        ``superseded`` (bool) and ``entities`` -- without the text."""

    def edges(self) -> builtins.list[Edge]:
        """Every stored relation."""

    def graph_view_rows(self, user_ids: Sequence[str],
                        states: Sequence[str]) -> builtins.list[dict[str, Any]]:
        """One principal's part of the memory graph (:mod:`memos_core.graph.views`), as
        :meth:`graph_rows` rows in insertion order, each memory once: the memories in
        ``states`` that one of ``user_ids`` owns or reads (``readers``), and every memory in
        ``states`` of a session (owner, session id) of another user that holds one of those
        (its neighbouring turns). Indexed queries: by owner, by reader, by session."""

    def graph_edges(self, memory_ids: Sequence[str]) -> builtins.list[Edge]:
        """The stored relations with ``src`` or ``dst`` among ``memory_ids``, each once, in
        the order they were stored."""

    def derived_from(self, memory_id: str) -> builtins.list[str]:
        """Ids of the memories recorded as derived from ``memory_id`` (its summaries)."""

    def audit_log(self, memory_id: str | None = None, user_id: str | None = None,
                  action: str | None = None, limit: int = 100) -> builtins.list[AuditRecord]:
        """Audit records about ``memory_id`` and/or by ``user_id``, of one ``action`` if
        given: the newest ``limit``, oldest first."""

    def verify_audit(self) -> tuple[bool, str]:
        """Recompute the hash chain: ``(ok, message naming the first bad record)``."""


def pages(vault: Vault, query: ListQuery, on_damaged: OnDamaged | None = None,
          page: int = 500) -> Iterator[builtins.list[MemCube]]:
    """Every memory ``query`` selects (its ``limit`` and ``offset`` are ignored), in pages of
    at most ``page``. With ``on_damaged`` a damaged memory is passed to it and left out, and
    still counts for the next page's offset (a page that held only damaged memories does not
    end the walk, nor does one short by a damaged memory read a memory twice). Without it
    the read is strict: a damaged memory raises, as ``vault.list`` does."""
    skipped = 0

    def left_out(error: CorruptDataError) -> None:
        nonlocal skipped
        skipped += 1
        if on_damaged is not None:
            on_damaged(error)

    offset = 0
    while True:
        skipped = 0
        window = replace(query, limit=page, offset=offset)
        found = (vault.list(window) if on_damaged is None
                 else vault.list(window, on_damaged=left_out))
        if not found and not skipped:
            return
        offset += len(found) + skipped
        if found:
            yield found
