"""Governance rules: access control, sensitivity, derived forms, forget hooks.

Pure rules (no I/O, testable alone): :mod:`~memos_core.governance.access` (who may read,
write, own; how grants change a memory's governance),
:mod:`~memos_core.governance.sensitivity` (what is redacted from prompts and left out of
exports) and :mod:`~memos_core.governance.derived` (how summaries of a forgotten memory are
treated) and :mod:`~memos_core.governance.redaction` (what a forgotten memory's copy in a
chat message is, and what replaces it); :mod:`~memos_core.governance.forget_hooks` is the
registry of conversation-log hooks. The operations that mutate -- sharing, forgetting, bundles -- are in
:mod:`memos_core.ops` (they take the store). See docs/governance.md.
"""

from memos_core.governance.access import (
    SCOPES,
    Operation,
    carry_shares,
    check_scope,
    contains,
    covers,
    granted,
    lingering_grant,
    overlaps,
    permits,
    require,
    revoked,
    with_grants,
)
from memos_core.governance.derived import FLAG_KEY, check_mode
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
from memos_core.vault.base import NamespaceGrant

__all__ = [
    "ALL",
    "FLAG_KEY",
    "NamespaceGrant",
    "Operation",
    "REDACTED_KEY",
    "SCOPES",
    "allowance",
    "carry_shares",
    "check_mode",
    "check_scope",
    "contains",
    "covers",
    "for_prompt",
    "granted",
    "history_sensitivity",
    "lingering_grant",
    "overlaps",
    "permits",
    "redact",
    "redacted_text",
    "require",
    "revoked",
    "with_grants",
    "withheld",
]
