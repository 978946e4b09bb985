"""The audit log's hash chain and its head record (see docs/governance.md, "Audit").

Each record stores ``sha256(prev_hash + its fields)``. The chain alone cannot see its own
tail cut off, so the vault also keeps a *head record* -- ``meta['audit_head']``, the count of
records and the newest one's sequence number and hash -- rewritten in the transaction of every
audit record. :func:`verify_chain` walks the chain, compares its end with the head, and checks
that every memory's current version still has the record written with it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from typing import Any

GENESIS_HASH = "0" * 64
#: meta key of the audit head: {"count", "seq", "hash"} of the newest record, rewritten in the
#: transaction of every audit record, so a chain whose tail was cut no longer matches it.
AUDIT_HEAD = "audit_head"

Query = Callable[..., list[tuple[Any, ...]]]


def audit_hash(prev: str, fields: dict[str, Any]) -> str:
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((prev + body).encode()).hexdigest()


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


def verify_chain(query: Query) -> tuple[bool, str]:
    """Recompute the chain through ``query(sql, params)``; (ok, message naming the first
    problem): an altered record, a gap, a cut tail (head mismatch), a missing head, or a
    memory version without its record."""
    prev = GENESIS_HASH
    expected_seq = None
    count = 0
    for r in query(
        "SELECT seq, at, user_id, agent_id, action, memory_id, version, reason, details, "
        "prev_hash, hash FROM audit ORDER BY seq"
    ):
        if expected_seq is not None and r[0] != expected_seq:
            return False, f"audit record(s) before seq {r[0]} were deleted"
        fields = {
            "at": r[1], "user_id": r[2], "agent_id": r[3], "action": r[4],
            "memory_id": r[5], "version": r[6], "reason": r[7], "details": json.loads(r[8]),
        }
        if r[9] != prev or audit_hash(prev, fields) != r[10]:
            return False, f"audit record {r[0]} was altered or its predecessor removed"
        prev, expected_seq = r[10], r[0] + 1
        count += 1
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
        return False, (f"memory {orphan[0][0]} v{orphan[0][1]} has no audit record: "
                       "records at the end of the log were deleted")
    return True, "audit chain intact"
