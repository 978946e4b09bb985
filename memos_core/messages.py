"""Chat messages -> memory fields: how ``MemOS.add(messages)`` reads a conversation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memos_core.errors import InvalidInputError
from memos_core.validation import check_text


def message_item(message: Any, position: int) -> dict[str, Any]:
    """A chat message (dict or object with role/content) -> keyword arguments for a cube.

    The memory text is "speaker: content" (speaker = the message's ``name``, else its role);
    the message ``id`` becomes provenance, ``occurred_at`` and ``metadata`` are kept.
    """
    get = message.get if isinstance(message, Mapping) else lambda k, d=None: getattr(message, k, d)
    role = get("role") or get("type")
    content = get("content")
    if not isinstance(role, str) or content is None:
        raise InvalidInputError(
            f"message {position} needs a str 'role' and a 'content' (got {message!r:.80})."
        )
    if isinstance(content, list):  # content blocks: keep the text parts
        content = " ".join(b.get("text", "") if isinstance(b, Mapping) else str(b) for b in content)
    content = check_text(content, f"message {position} content")
    speaker = get("name") or role
    item: dict[str, Any] = {"text": f"{speaker}: {content}", "role": role}
    if get("id"):
        item["message_id"] = str(get("id"))
    if get("occurred_at"):
        item["occurred_at"] = get("occurred_at")
    if get("metadata") is not None:
        item["metadata"] = get("metadata")
    return item


def merge_message_item(base: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    """Call-level keywords overridden by a message's own; metadata dicts are merged."""
    merged = {**base, **item}
    if isinstance(base.get("metadata"), Mapping) and isinstance(item.get("metadata"), Mapping):
        merged["metadata"] = {**base["metadata"], **item["metadata"]}
    return merged
