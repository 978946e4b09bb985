"""The audit log's hash chain and its head record (see docs/governance.md, "Audit").

Each record stores ``sha256(prev_hash + its fields)``. The chain alone cannot see its own
tail cut off, so the vault also keeps a *head record* -- ``meta['audit_head']``, the count of
records and the newest one's sequence number and hash -- rewritten in the transaction of every
audit record. :func:`verify_chain` walks the chain, compares its end with the head, and checks
that every memory's current version still has the record written with it.

**Reasons.** A record's ``reason`` is free text an agent or a model wrote, and may repeat the
memory ("user said: my passport is X99413"), so forget removes it. The chain therefore covers
a *commitment* to the reason, ``sha256(salt + json(reason))`` with a random salt per record
(``reason_salt``, ``reason_commit``), not the reason itself: forget sets ``reason`` and
``reason_salt`` to NULL and keeps the commitment, so the chain still verifies, and the digest
left behind gives nothing back (without the salt no guess can be checked against it). A record
that still has its salt is checked against its commitment, so an edited reason is detected;
one whose reason was removed is accepted only if its memory -- or the memory its operation
wrote (``details['by']``: the new fact of a supersession, the summary of a compress) -- is
forgotten.

Records written before the commitment (``reason_commit`` NULL: SQLite schema < 4, PostgreSQL
schema < 7) hash the reason itself; :func:`verify_chain` still checks them as they are, and
their reason cannot be removed without breaking the chain. The schema upgrade rewrites them
once (:func:`upgrade_chain`): when the chain verifies, every such record gets a salt and a
commitment and is hashed again (its old hash kept in ``legacy_hash``, which the new hash
covers, so a hash copied elsewhere before the upgrade still names a record), and the reasons
of memories forgotten before are removed.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from memos_core.cube import State
from memos_core.errors import CorruptDataError
from memos_core.vault.sqlite_text import damaged_row, shown

GENESIS_HASH = "0" * 64
#: meta key of the audit head: {"count", "seq", "hash"} of the newest record, rewritten in the
#: transaction of every audit record, so a chain whose tail was cut no longer matches it.
AUDIT_HEAD = "audit_head"
#: the columns that hold a record's reason commitment (SQLite schema 4, PostgreSQL 7)
REASON_COLUMNS = ("reason_salt", "reason_commit", "legacy_hash")
#: the audit table's columns, as :func:`verify_chain` and :func:`upgrade_chain` read them
COLUMNS = ("seq, at, user_id, agent_id, action, memory_id, version, reason, details, "
           "prev_hash, hash, reason_salt, reason_commit, legacy_hash")
_FORGOTTEN = State.DELETED.value

Query = Callable[..., list[tuple[Any, ...]]]
Execute = Callable[[str, Sequence[Any]], Any]


def audit_hash(prev: str, fields: dict[str, Any]) -> str:
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((prev + body).encode()).hexdigest()


def record_details(seq: int, raw: str) -> Any:
    """An audit record's details, decoded; :class:`CorruptDataError` naming the record if
    they are not JSON (a damaged or tampered row)."""
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        raise CorruptDataError(
            f"Audit record {seq} is damaged: its details are not JSON. Run verify_audit "
            "(memos audit verify) and restore the vault from a backup.") from None


def reason_commitment(salt: str, reason: str | None) -> str:
    """What the chain covers of a record's reason: ``sha256(salt + json(reason))`` (JSON, so
    that no reason and an empty one differ)."""
    return hashlib.sha256((salt + json.dumps(reason)).encode()).hexdigest()


@dataclass(frozen=True)
class Sealed:
    """A new audit record's salt, reason commitment and chain hash."""

    salt: str
    commit: str
    hash: str


def seal(prev: str, fields: dict[str, Any], reason: str | None) -> Sealed:
    """Chain a new record after ``prev``. ``fields``: its ``at``, ``user_id``, ``agent_id``,
    ``action``, ``memory_id``, ``version`` and ``details`` (the reason is passed apart: only
    its commitment under a fresh random salt is hashed)."""
    salt = secrets.token_hex(16)
    commit = reason_commitment(salt, reason)
    return Sealed(salt, commit, audit_hash(prev, {**fields, "reason_commit": commit,
                                                   "legacy_hash": None}))


def parse_head(value: str) -> dict[str, Any] | None:
    """The audit head record, or None if it is not one."""
    try:
        head = json.loads(value)
    except (TypeError, ValueError):
        return None
    if not isinstance(head, dict) or not isinstance(head.get("count"), int) \
            or not isinstance(head.get("hash"), str):
        return None
    return head


def chain_tail(db: sqlite3.Connection) -> dict[str, Any]:
    """The head record of the audit log as it is now."""
    count = int(db.execute("SELECT COUNT(*) FROM audit").fetchone()[0])
    last = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    return {"count": count, "seq": last[0] if last else 0, "hash": last[1] if last else GENESIS_HASH}


def _base_fields(r: Sequence[Any]) -> dict[str, Any] | None:
    """The fields every record of row ``r`` (:data:`COLUMNS`) hashes, whatever its format;
    None if its details are not JSON (altered)."""
    try:
        details = json.loads(r[8])
    except (TypeError, ValueError):
        return None
    return {"at": r[1], "user_id": r[2], "agent_id": r[3], "action": r[4],
            "memory_id": r[5], "version": r[6], "details": details}


def _fields(r: Sequence[Any]) -> dict[str, Any] | None:
    """What row ``r`` hashes, in its format; None if its details or its reason do not hold
    together (altered)."""
    fields = _base_fields(r)
    reason, salt, commit = r[7], r[11], r[12]
    if fields is None:
        return None
    if commit is None:  # written before the commitment: the hash covers the reason itself
        return {**fields, "reason": reason}
    if salt is None and reason is not None:  # a reason whose salt went cannot be checked
        return None
    if salt is not None and reason_commitment(salt, reason) != commit:
        return None
    return {**fields, "reason_commit": commit, "legacy_hash": r[13]}


def _owners(fields: dict[str, Any]) -> set[str]:
    """The memories whose forget removes a record's reason: its own, and the one its
    operation wrote (``details['by']``)."""
    details = fields["details"]
    by = details.get("by") if isinstance(details, dict) else None
    return {m for m in (fields["memory_id"], by) if isinstance(m, str)}


def _forgotten(query: Query, ids: Iterable[str]) -> set[str]:
    """The forgotten ones among ``ids``."""
    wanted = sorted(set(ids))
    found: set[str] = set()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start:start + 500]
        found |= {r[0] for r in query(
            f"SELECT id FROM memories WHERE state=? AND id IN ({','.join('?' * len(chunk))})",
            (_FORGOTTEN, *chunk))}
    return found


def verify_chain(query: Query) -> tuple[bool, str]:
    """Recompute the chain through ``query(sql, params)``; (ok, message naming the first
    problem): an altered record (a reason that no longer matches its commitment included), a
    gap, a reason removed from a record of a memory that is not forgotten, a cut tail (head
    mismatch), a missing head, or a memory version without its record. The message also
    says how many records still hash their reason itself, if any: forget cannot remove
    those reasons."""
    ok, message = _verify(query)
    legacy = int(query("SELECT COUNT(*) FROM audit WHERE reason_commit IS NULL")[0][0])
    if legacy:
        message += (f" ({legacy} record(s) hash their reason itself, so forget cannot remove "
                    "it: written before the reason commitment and not converted by the "
                    "upgrade, which converts a chain only if it verifies, or by an older "
                    "memos-core)")
    return ok, message


def _verify(query: Query) -> tuple[bool, str]:
    prev = GENESIS_HASH
    expected_seq = None
    count = 0
    removed: list[tuple[int, set[str]]] = []
    for r in query(f"SELECT {COLUMNS} FROM audit ORDER BY seq"):
        if expected_seq is not None and r[0] != expected_seq:
            return False, f"audit record(s) before seq {r[0]} were deleted"
        if damaged_row(r):  # read with surrogate escapes (SQLite: sqlite_text.lenient_rows)
            return False, (f"audit record {r[0]} is unreadable: a stored text of it is not "
                           "valid UTF-8 (a byte of it was damaged on disk)")
        fields = _fields(r)
        if fields is None or r[9] != prev or audit_hash(prev, fields) != r[10]:
            return False, f"audit record {r[0]} was altered or its predecessor removed"
        if r[12] is not None and r[11] is None:  # its reason was removed
            removed.append((r[0], _owners(fields)))
        prev, expected_seq = r[10], r[0] + 1
        count += 1
    # a reason goes only with a forget: removed from a live memory's record, it was tampered
    # with (the commitment it left cannot tell what it said)
    forgotten = _forgotten(query, (m for _, owners in removed for m in owners))
    for seq, owners in removed:
        if not forgotten.intersection(owners):
            return False, (f"the reason of audit record {seq} was removed, but "
                           f"{' / '.join(sorted(owners)) or 'no memory'} is not forgotten: only a "
                           "forget removes reasons, so it was altered outside memos-core")
    # The chain cannot see its own tail cut off: the head record (rewritten with every
    # record, in its transaction) names the count and the newest hash.
    head_row = query("SELECT value FROM meta WHERE key=?", (AUDIT_HEAD,))
    head = parse_head(head_row[0][0]) if head_row else None
    if head is None:
        return False, ("the audit head record (meta 'audit_head') is missing or unreadable: "
                       "the log's tail cannot be checked, it was deleted or damaged")
    if head["count"] != count or head["hash"] != prev:
        if head["count"] > count:
            return False, (f"the last {head['count'] - count} audit record(s) were deleted "
                           f"(records at the end of the log): the head says {head['count']} "
                           f"records ending at seq {head['seq']}, the log has {count}")
        return False, (f"the audit log ({count} records) does not end where its head "
                       f"record says ({head['count']} records, seq {head['seq']}): records "
                       "were added, replaced or deleted outside memos-core")
    # Every memory's current version must still have the audit record written in the
    # same transaction (a cut tail that someone also rewound the head for).
    orphan = query(
        "SELECT id, version FROM memories m WHERE NOT EXISTS (SELECT 1 FROM audit a "
        "WHERE a.memory_id = m.id AND a.version = m.version) LIMIT 1"
    )
    if orphan:
        return False, (f"memory {shown(orphan[0][0])} v{orphan[0][1]} has no audit record: "
                       "records at the end of the log were deleted")
    return True, "audit chain intact"


def upgrade_chain(query: Query, execute: Execute) -> tuple[int, str | None]:
    """Schema upgrade: give every record written before the reason commitment a salt and a
    commitment, chain every record again, rewrite the head, and remove the reasons of the
    records of forgotten memories (see the module docstring). ``query``/``execute`` take
    ``?`` placeholders; the caller runs this in one transaction, under the write lock.

    Returns (how many records were converted, None), or ``(0, problem)`` without changing
    anything when the chain does not verify (:func:`verify_chain`'s message): a broken
    chain is not blessed by hashing it again, and its old records keep their reasons.
    """
    if not query("SELECT 1 FROM audit WHERE reason_commit IS NULL LIMIT 1"):
        return 0, None
    ok, message = verify_chain(query)
    if not ok:
        return 0, message
    forgotten = {r[0] for r in query("SELECT id FROM memories WHERE state=?", (_FORGOTTEN,))}
    prev, count, converted, last_seq = GENESIS_HASH, 0, 0, 0
    for r in query(f"SELECT {COLUMNS} FROM audit ORDER BY seq"):
        fields = cast("dict[str, Any]", _base_fields(r))  # verified above: JSON details
        reason, salt, commit, legacy = r[7], r[11], r[12], r[13]
        if commit is None:
            salt, legacy = secrets.token_hex(16), r[10]
            commit = reason_commitment(salt, reason)
            converted += 1
        if salt is not None and forgotten & _owners(fields):
            reason = salt = None
        digest = audit_hash(prev, {**fields, "reason_commit": commit, "legacy_hash": legacy})
        if (reason, salt, commit, legacy, prev, digest) != (r[7], *r[11:14], r[9], r[10]):
            execute("UPDATE audit SET reason=?, reason_salt=?, reason_commit=?, legacy_hash=?, "
                    "prev_hash=?, hash=? WHERE seq=?",
                    (reason, salt, commit, legacy, prev, digest, r[0]))
        prev, count, last_seq = digest, count + 1, r[0]
    execute("UPDATE meta SET value=? WHERE key=?",
            (json.dumps({"count": count, "seq": last_seq, "hash": prev}), AUDIT_HEAD))
    return converted, None


def upgrade_sqlite(db: sqlite3.Connection) -> tuple[int, str | None]:
    """SQLite schema 3 -> 4, in the caller's transaction: the audit table's
    :data:`REASON_COLUMNS`, then :func:`upgrade_chain`."""
    have = {r[1] for r in db.execute("PRAGMA table_info(audit)")}
    for column in REASON_COLUMNS:
        if column not in have:
            db.execute(f"ALTER TABLE audit ADD COLUMN {column} TEXT")
    return upgrade_chain(lambda sql, params=(): db.execute(sql, params).fetchall(), db.execute)
