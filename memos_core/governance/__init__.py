"""Governance: access control, sharing, sensitivity and forgetting.

Pure rules (no I/O, testable alone): :mod:`~memos_core.governance.access` (who may read,
write, own; how grants change a memory's governance) and
:mod:`~memos_core.governance.sensitivity` (what is redacted from prompts and left out of
exports). Operations that the facade delegates to (they take the open ``MemOS``):
:mod:`~memos_core.governance.sharing` (namespace grants) and
:mod:`~memos_core.governance.forgetting` (the forget cascade). See docs/governance.md.
"""

from memos_core.governance.access import (
    SCOPES,
    Operation,
    broader_grant,
    carry_shares,
    check_scope,
    contains,
    covers,
    granted,
    permits,
    require,
    revoked,
    with_grants,
)
from memos_core.governance.forgetting import FLAG_KEY, check_mode, forget_one, kv_files_holding
from memos_core.governance.sensitivity import (
    ALL,
    REDACTED_KEY,
    allowance,
    for_prompt,
    history_sensitivity,
    redact,
    redacted_text,
    withheld,
)
from memos_core.governance.sharing import (
    apply_governance_change,
    inherit_grants,
    revoke_namespace,
    share_namespace,
)
from memos_core.vault.base import NamespaceGrant

__all__ = [
    "ALL",
    "FLAG_KEY",
    "NamespaceGrant",
    "Operation",
    "REDACTED_KEY",
    "SCOPES",
    "allowance",
    "apply_governance_change",
    "broader_grant",
    "carry_shares",
    "check_mode",
    "check_scope",
    "contains",
    "covers",
    "for_prompt",
    "forget_one",
    "granted",
    "history_sensitivity",
    "inherit_grants",
    "kv_files_holding",
    "permits",
    "redact",
    "redacted_text",
    "require",
    "revoke_namespace",
    "revoked",
    "share_namespace",
    "with_grants",
    "withheld",
]
