"""Pure mappings between llama-index types and memos-core types. No I/O, no state.

- ``ChatMessage`` <-> the JSON text the chat history file keeps (a round trip that returns a
  fresh, equal object);
- ``ChatMessage`` -> the message dicts ``MemOS.add`` takes (role, content, id);
- a stored message, or any value of a running agent's state -> the same with a forgotten
  memory redacted;
- the latest messages -> the recall query (:func:`query_text`);
- ``SearchHit`` -> prompt lines and ``NodeWithScore``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole, TextBlock
from llama_index.core.schema import NodeWithScore, TextNode
from memos_core import InvalidInputError, SearchHit
from memos_core.integration import (
    FORGOTTEN,
    MessageRedactor,
    remembered_text,
    shown_text,
)
from memos_core.integration import asked_or_answered as _asked
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError

#: Fields a ``line_template`` may use, e.g. ``"- {text} ({created_at})"``.
HIT_FIELDS = ("id", "text", "score", "type", "session_id", "created_at", "occurred_at", "owner")


def message_text(message: ChatMessage) -> str:
    """The text blocks of a message joined by newlines ("" when it has none, e.g. images)."""
    return "\n".join(b.text for b in message.blocks if isinstance(b, TextBlock))


def dump_message(message: ChatMessage, where: str) -> str:
    """A message as JSON for the chat history file (all blocks and ``additional_kwargs``).

    Text with an unpaired surrogate (pasted from a binary file) is not UTF-8, which pydantic
    refuses to write and no store keeps: such a message is written as ASCII JSON, its
    surrogates as ``\\udcff`` escapes, and comes back as it was."""
    try:
        return message.model_dump_json()
    except (PydanticSerializationError, TypeError, ValueError) as exc:
        error = exc
    try:
        return json.dumps(message.model_dump(mode="json"), ensure_ascii=True, allow_nan=False)
    except (PydanticSerializationError, TypeError, ValueError):
        raise InvalidInputError(
            f"{where} cannot be stored: {error}. Keep additional_kwargs JSON-serialisable "
            "(str, numbers, lists, dicts)."
        ) from None


def load_message(data: str) -> ChatMessage:
    """The inverse of :func:`dump_message`; each call returns a new object."""
    try:
        return ChatMessage.model_validate_json(data)
    except ValidationError as exc:
        try:  # pydantic's parser refuses the escapes of unpaired surrogates; json takes them
            return ChatMessage.model_validate(json.loads(data))
        except (ValueError, ValidationError):  # only a hand-edited or foreign file gets here
            raise InvalidInputError(
                f"A stored chat message is not a valid ChatMessage: {exc}"
            ) from None


def redact_message(data: str, redactor: MessageRedactor, source: bool) -> str | None:
    """A stored message (JSON from :func:`dump_message`) with a forgotten memory redacted, or
    None when it holds none of it. ``source``: the memory was made from this message, so every
    text block becomes ``[forgotten]``; otherwise each occurrence of the memory's text does
    (in every block field but its type, and in ``additional_kwargs``)."""
    message = load_message(data).model_dump(mode="json")
    blocks = []
    for block in message.get("blocks") or []:
        if source and block.get("block_type") == "text":
            blocks.append({**block, "text": FORGOTTEN})
        else:
            blocks.append({k: v if k == "block_type" else redactor.value(v) for k, v in block.items()})
    kwargs = message.get("additional_kwargs")
    redacted = {**message, "blocks": blocks, "additional_kwargs": redactor.value(kwargs)}
    if redacted["additional_kwargs"] is kwargs and blocks == message.get("blocks"):
        return None
    return dump_message(ChatMessage.model_validate(redacted), "a redacted message")


def to_memos_messages(
    messages: Sequence[ChatMessage],
    roles: Iterable[str],
    ids: Sequence[str] | None = None,
    *,
    questions: bool = False,
) -> list[dict[str, Any]]:
    """Messages -> ``MemOS.add`` message dicts, one per message that tells something
    (``memos_core.integration.remembered_text``: a role in ``roles``, text, not small talk
    or a request to forget; of a question, the sentences that tell, unless ``questions``
    keeps it whole).

    The content is what it tells ("My wife's name is Ana." of "My wife's name is Ana. Can
    you remind me of her birthday?"), and ``ids`` (one per message) become the memories'
    source message ids, so a forget still blanks the whole message. Tool-call requests (no
    text), images and messages a forget redacted carry nothing to keep, so they are left
    out.
    """
    keep = tuple(roles)
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        text = message_text(message)
        if FORGOTTEN in text:  # redacted by a forget: what is left must not come back
            continue
        said = remembered_text(message.role.value, text, roles=keep, questions=questions)
        if not said:
            continue
        item: dict[str, Any] = {"role": message.role.value, "content": said}
        name = message.additional_kwargs.get("name")
        if isinstance(name, str) and name.strip():
            item["name"] = name
        if ids is not None:
            item["id"] = ids[i]
        out.append(item)
    return out


#: Fields and keys whose values are structure (roles, block types, ids, tool names): never
#: redacted, as the core's log redaction leaves them (a memory whose whole text is
#: "assistant" must not turn a message's role into "[forgotten]").
_STRUCTURE = frozenset({"role", "type", "block_type", "id", "id_", "tool_id", "tool_call_id",
                        "tool_name", "name"})


def redact_value(value: Any, redactor: MessageRedactor) -> Any:
    """``value`` with a forgotten memory's text redacted wherever a string holds it: in str,
    lists, tuples and dict values, and in the fields of pydantic models (messages, their
    blocks, ReAct reasoning steps, tool results, an LLM client's tool-call objects), nested;
    never in enums or under a structure field or key (:data:`_STRUCTURE`). A changed model
    is copied (same class, private attributes kept); the same object comes back when nothing
    changed. Other objects are kept as they are."""
    return redactor.value(value, lambda v: _redact_model(v, redactor), _STRUCTURE)


def _redact_model(value: Any, redactor: MessageRedactor) -> Any:
    if not isinstance(value, BaseModel):
        return value
    fields = {name: getattr(value, name) for name in type(value).model_fields
              if name not in _STRUCTURE}
    updates = {name: v for name, old in fields.items()
               if (v := redact_value(old, redactor)) is not old}
    return value.model_copy(update=updates) if updates else value


def asked_or_answered(hit: SearchHit) -> bool:
    """A recorded question or assistant turn (ranked after statements on recall)."""
    return _asked(hit.memory)


def query_text(messages: Sequence[ChatMessage] | None) -> str:
    """What to search memory for: the latest user message's text, else the latest text.

    The latest user turn is what the model is about to answer; earlier turns are already in
    the prompt as history.
    """
    if not messages:
        return ""
    for message in reversed(messages):
        if message.role is MessageRole.USER and message_text(message).strip():
            return message_text(message)
    for message in reversed(messages):
        if message_text(message).strip():
            return message_text(message)
    return ""


def hit_fields(hit: SearchHit, viewer: str | None = None) -> dict[str, Any]:
    """The template fields of one hit (see :data:`HIT_FIELDS`) for ``viewer``'s prompt:
    ``text`` is :func:`shown_text`, ``owner`` the user the memory belongs to."""
    cube = hit.memory
    return {
        "id": cube.id,
        "text": shown_text(cube, viewer),
        "score": hit.score,
        "type": cube.type.value,
        "session_id": cube.session_id or "",
        "created_at": cube.created_at.isoformat(timespec="seconds"),
        "occurred_at": cube.occurred_at.isoformat(timespec="seconds") if cube.occurred_at else "",
        "owner": cube.user_id,
    }


def check_line_template(template: object) -> str:
    """A ``str.format`` template over :data:`HIT_FIELDS`; refused at construction if bad."""
    if not isinstance(template, str) or "{" not in template:
        raise InvalidInputError(
            f"line_template must be a str with fields such as '{{text}}', got {template!r}."
        )
    sample = dict.fromkeys(HIT_FIELDS, "x")
    try:
        template.format(**sample)
    except (KeyError, IndexError, ValueError) as exc:
        raise InvalidInputError(
            f"line_template {template!r} is not usable ({type(exc).__name__}: {exc}); it may "
            f"use {', '.join('{' + f + '}' for f in HIT_FIELDS)}."
        ) from None
    return template


def format_hits(hits: Sequence[SearchHit], template: str, viewer: str | None = None) -> str:
    """One line per hit, best first, as ``viewer``'s prompt shows them (:func:`hit_fields`)."""
    return "\n".join(template.format(**hit_fields(hit, viewer)) for hit in hits)


def hit_to_node(hit: SearchHit, viewer: str | None = None) -> NodeWithScore:
    """A search hit as a retrieval node for ``viewer``: the memory id as node id, the text
    as :func:`shown_text` gives it, its fields as metadata."""
    fields = hit_fields(hit, viewer)
    cube = hit.memory
    metadata: dict[str, Any] = {
        "memory_id": cube.id,
        "owner": fields["owner"],
        "type": fields["type"],
        "session_id": fields["session_id"],
        "created_at": fields["created_at"],
        "occurred_at": fields["occurred_at"],
        "tags": list(cube.tags),
        "version": cube.version,
        "explain": hit.explain(),
    }
    node = TextNode(
        id_=cube.id,
        text=fields["text"],
        metadata=metadata,
        # the model needs the text; the bookkeeping fields are for the caller
        excluded_llm_metadata_keys=list(metadata),
        excluded_embed_metadata_keys=list(metadata),
    )
    return NodeWithScore(node=node, score=hit.score)
