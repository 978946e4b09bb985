"""The vault: versioned, audited storage of MemCubes (the source of truth)."""

from memos_core.vault.base import (
    Actor,
    AuditRecord,
    CheckpointRecord,
    ConversationLogs,
    Edge,
    ItemKey,
    KeyedItems,
    ListQuery,
    LogRow,
    NamespaceGrant,
    OnDamaged,
    ThreadCheckpoints,
    Typed,
    Vault,
    pages,
)
from memos_core.vault.sqlite import SQLiteVault, scrub

__all__ = [
    "Actor", "AuditRecord", "CheckpointRecord", "ConversationLogs", "Edge", "ItemKey",
    "KeyedItems", "ListQuery", "LogRow", "NamespaceGrant", "OnDamaged", "SQLiteVault", "ThreadCheckpoints",
    "Typed", "Vault", "pages", "scrub",
]
