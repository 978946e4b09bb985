"""The vault: versioned, audited storage of MemCubes (the source of truth)."""

from memos_core.vault.base import (
    Actor,
    AuditRecord,
    Edge,
    ListQuery,
    NamespaceGrant,
    Vault,
)
from memos_core.vault.sqlite import SQLiteVault, scrub, text_digest

__all__ = [
    "Actor", "AuditRecord", "Edge", "ListQuery", "NamespaceGrant", "SQLiteVault", "Vault",
    "scrub", "text_digest",
]
