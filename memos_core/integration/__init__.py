"""The integration surface: what framework adapters import from memos-core besides the
public package (:mod:`memos_core`). Nothing else of the core is theirs to import
(``tests/test_layering.py`` checks it).

Every storage call these functions and classes make is a call of the MemOS, as a facade
method is (:mod:`.counted`): ``close()`` waits for the ones in flight, and after it they
raise the facade's closed error, never the database driver's.

* Keyed memories (:mod:`.keyed`): :class:`ItemKey`, :func:`put_by_key`,
  :func:`get_by_key`, :func:`delete_by_key`, :func:`iter_by_prefix`, :func:`migrate_keys`.
* Conversation logs and thread checkpoints in the vault (:mod:`.logs`):
  :class:`ConversationLog`, :func:`thread_checkpoints`, :func:`on_forget_checkpoints`,
  :class:`CheckpointRecord`; old side files move in on first open (:mod:`.legacy`).
* Async storage (:mod:`.async_storage`): :func:`async_checkpoints`,
  :class:`AsyncThreadCheckpoints`, :func:`aget_by_key`, :func:`aiter_by_prefix` and the
  ``a``-methods of :class:`ConversationLog` -- native async in server mode, a worker thread
  otherwise.
* Forgets applied for a while after they ran (:mod:`.forgets`): :class:`RecentForgets`
  and its window :data:`LATE_WRITE_S` (what a running agent writes after a forget),
  :class:`LateWrite` (a write under way while a forget's pass ran; :func:`late_write`,
  :func:`alate_write`) and :func:`quoting`; the
  memories a forget must look at, pre-filtered in the vault (:func:`owned_holding`), and
  the update that redacts one, its earlier versions in the same transaction
  (:func:`update_redacting`).
* Work handed to a worker thread from async code (:func:`in_thread`): cancelling the wait
  never drops the call, as ``asyncio.to_thread`` does with one still queued. Async steps
  that must not be split (an :func:`alate_write` block: a write, then the redaction of
  what it wrote) run as one unit that cancelling the caller does not stop (:func:`whole`).
* Tool specs shared by both tool sets (:mod:`.tools`): :data:`TOOL_SPECS`.
* Rules an adapter applies as the core does: redaction of prompts (:func:`for_prompt`,
  :func:`allowance`, :func:`redacted_text`), of forgotten text (:class:`MessageRedactor`,
  :data:`FORGOTTEN`), which messages are worth remembering (and what of a turn that asks
  is: :func:`remembered_text`), the chat split, argument
  checks (:func:`check_name`, :func:`check_k`; :func:`check_text`, :func:`check_metadata`
  and :func:`check_tags`, the limits a write meets, for an adapter that must check a batch
  before its first write), and the forget receipt's
  :class:`DerivedForm`.
"""

from memos_core.calls import in_thread, whole
from memos_core.chat_prompt import split_messages
from memos_core.cube import utcnow
from memos_core.governance.forget_hooks import open_log, truncate_wal
from memos_core.governance.redaction import (
    FORGOTTEN,
    MIN_NEEDLE,
    MessageRedactor,
    redact_log_message,
)
from memos_core.governance.sensitivity import REDACTED_KEY, allowance, for_prompt, redacted_text
from memos_core.integration.async_storage import (
    AsyncThreadCheckpoints,
    async_checkpoints,
    has_native_async,
)
from memos_core.integration.counted import acounted
from memos_core.integration.forgets import (
    LATE_WRITE_S,
    LateWrite,
    RecentForgets,
    alate_write,
    late_write,
    owned_holding,
    quoting,
    update_redacting,
)
from memos_core.integration.keyed import (
    aget_by_key,
    aiter_by_prefix,
    delete_by_key,
    get_by_key,
    iter_by_prefix,
    migrate_keys,
    put_by_key,
)
from memos_core.integration.legacy import CHAT_FILE, CHECKPOINT_FILE
from memos_core.integration.recording import recall_query, remembered_text
from memos_core.integration.logs import (
    ConversationLog,
    on_forget_checkpoints,
    thread_checkpoints,
)
from memos_core.integration.tools import (
    MEMORY_KINDS,
    TOOL_NAMES,
    TOOL_SPECS,
    ToolArg,
    ToolSpec,
    forget_reply,
    redactor_before_forget,
    shown_text,
    tool_spec,
)
from memos_core.messages import asked_or_answered, worth_remembering
from memos_core.ops.forget import LOG_FORM
from memos_core.results import DerivedForm, ModelInfo
from memos_core.validation import check_k, check_metadata, check_name, check_tags, check_text
from memos_core.vault import CheckpointRecord, ItemKey, LogRow, ThreadCheckpoints, Typed

__all__ = [
    "AsyncThreadCheckpoints",
    "CHAT_FILE",
    "CHECKPOINT_FILE",
    "FORGOTTEN",
    "LATE_WRITE_S",
    "LOG_FORM",
    "MEMORY_KINDS",
    "MIN_NEEDLE",
    "REDACTED_KEY",
    "TOOL_NAMES",
    "TOOL_SPECS",
    "CheckpointRecord",
    "ConversationLog",
    "DerivedForm",
    "ItemKey",
    "LateWrite",
    "LogRow",
    "MessageRedactor",
    "ModelInfo",
    "RecentForgets",
    "ThreadCheckpoints",
    "ToolArg",
    "ToolSpec",
    "Typed",
    "acounted",
    "aget_by_key",
    "aiter_by_prefix",
    "alate_write",
    "allowance",
    "async_checkpoints",
    "asked_or_answered",
    "check_k",
    "check_metadata",
    "check_name",
    "check_tags",
    "check_text",
    "delete_by_key",
    "for_prompt",
    "forget_reply",
    "has_native_async",
    "get_by_key",
    "in_thread",
    "iter_by_prefix",
    "late_write",
    "migrate_keys",
    "on_forget_checkpoints",
    "open_log",
    "owned_holding",
    "quoting",
    "put_by_key",
    "redact_log_message",
    "redacted_text",
    "redactor_before_forget",
    "recall_query",
    "remembered_text",
    "shown_text",
    "split_messages",
    "thread_checkpoints",
    "tool_spec",
    "truncate_wal",
    "update_redacting",
    "utcnow",
    "whole",
    "worth_remembering",
]
