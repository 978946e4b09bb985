"""The prompt text of :meth:`memos_core.chat.MemoryChat.ask`: the user turn holding the
retrieved memories, the system turn, and the one rule that reads a whole chat (LangChain's,
LlamaIndex's or plain dicts) as ``(query, history, system)`` for every adapter.

Kept apart from :mod:`memos_core.chat`, which runs the model, so that the adapters and the
benchmarks that compose the same prompts need not read the chat engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from memos_core.errors import InvalidInputError
from memos_core.governance.access import shown_text
from memos_core.tiers.activation.compose import bullet
from memos_core.validation import check_text

if TYPE_CHECKING:
    from memos_core.cube import MemCube

__all__ = ["PLAINTEXT_HEADER", "QUESTION_LEAD", "SplitMessages", "check_history",
           "split_messages", "system_turn", "user_turn"]

PLAINTEXT_HEADER = "Here are some facts you remember:"
QUESTION_LEAD = "Using these facts, answer: "
_HISTORY_ROLES = frozenset({"user", "assistant"})


def user_turn(query: str, memories: Sequence[MemCube], viewer: str | None = None) -> str:
    """The last user message: retrieved plaintext memories (if any), then the question. A
    memory another user shared with ``viewer`` names its owner (:func:`shown_text`): the
    model must not take it for something the viewer said. The text is composed raw:
    :meth:`LocalModel.render` breaks control-token strings in it, so a memory cannot close
    this turn and open another."""
    if not memories:
        return query
    lines = [PLAINTEXT_HEADER, *(bullet(shown_text(m, viewer)) for m in memories), "",
             QUESTION_LEAD + query]
    return "\n".join(lines)


_SYSTEM_ROLES = frozenset({"system", "developer"})
_ROLE_ALIASES = {"human": "user", "ai": "assistant", "model": "assistant", "chatbot": "assistant"}


@dataclass(frozen=True)
class SplitMessages:
    """A conversation read the way :meth:`MemoryChat.ask` answers it: see
    :func:`split_messages`."""

    query: str
    history: list[dict[str, str]]
    system: str | None


def split_messages(messages: Sequence[Any]) -> SplitMessages:
    """The one rule every adapter uses to turn a chat into ``(query, history, system)``.

    ``messages``: dicts (or objects) with ``role`` (or LangChain's ``type``) and ``content``
    (a str, or a list of text blocks). Roles ``system`` and ``developer`` anywhere are the
    caller's instructions: their texts, in order, joined by blank lines, become ``system``
    (merged into the memory-aware system turn). ``user``/``human`` and
    ``assistant``/``ai`` messages before the last one are the history (ones without text,
    e.g. an assistant turn that only held a tool call, are left out). The last message must
    be a user message with text: the question.

    Every message's text is checked as a query's is (valid UTF-8, no NUL, at most
    ``MAX_TEXT_BYTES``; an earlier one may be empty), before any search or model runs.

    Raises:
        InvalidInputError: no messages, a message without role or text content, a tool or
            other role, non-text content blocks, a text that fails those checks (naming
            the message), or a last message that is not the user's.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise InvalidInputError("messages must be a list of {'role', 'content'} messages")
    if not messages:
        raise InvalidInputError("messages is empty: pass at least one user message")
    read = [_read_message(m, i) for i, m in enumerate(messages)]
    *earlier, (last_role, last_text) = read
    if last_role != "user":
        raise InvalidInputError(
            f"the last message must be the user's question (role 'user'), got {last_role!r}")
    if not last_text.strip():
        raise InvalidInputError("the last user message has no text: there is nothing to answer")
    system = [text for role, text in earlier if role in _SYSTEM_ROLES and text.strip()]
    history = [{"role": role, "content": text} for role, text in earlier
               if role in _HISTORY_ROLES and text.strip()]
    return SplitMessages(query=last_text.strip(), history=history,
                         system="\n\n".join(t.strip() for t in system) or None)


def _read_message(message: Any, index: int) -> tuple[str, str]:
    """``(role, text)`` of one message, its text checked; see :func:`split_messages`."""
    role, text = _message_parts(message, index)
    return role, check_text(text, f"messages[{index}]", allow_empty=True)


def _message_parts(message: Any, index: int) -> tuple[str, str]:
    """``(role, text)`` of one message as given; see :func:`split_messages`."""
    def get(key: str) -> Any:
        if isinstance(message, Mapping):
            return message.get(key)
        return getattr(message, key, None)

    role = get("role") or get("type")
    role = getattr(role, "value", role)  # enums (llama-index MessageRole)
    if not isinstance(role, str):
        raise InvalidInputError(f"messages[{index}] has no str 'role'")
    role = _ROLE_ALIASES.get(role, role)
    if role not in _HISTORY_ROLES and role not in _SYSTEM_ROLES:
        raise InvalidInputError(
            f"messages[{index}] has role {role!r}; the local model takes system, user and "
            "assistant messages (it calls no tools)")
    content = get("content")
    if isinstance(content, str):
        return role, content
    if content is None:
        return role, ""
    if isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray)):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, Mapping) and block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            else:
                kind = block.get("type") if isinstance(block, Mapping) else type(block).__name__
                raise InvalidInputError(
                    f"messages[{index}] has a non-text content block ({kind!r}); the local "
                    "model reads text only")
        return role, "".join(parts)
    raise InvalidInputError(f"messages[{index}] content must be a str or a list of text blocks")


def system_turn(instructions: str | None, memory_turn: str) -> str:
    """The system message: the caller's instructions first, then the memory-aware text
    (the hot block or the model's default instructions)."""
    if not instructions:
        return memory_turn
    return f"{instructions.strip()}\n\n{memory_turn}"


def check_history(history: Sequence[Mapping[str, Any]] | None) -> list[dict[str, str]]:
    """Earlier turns as ``[{"role": "user" | "assistant", "content": str}, ...]``.

    Each content is checked as a query is (valid UTF-8, no NUL, at most ``MAX_TEXT_BYTES``)
    but may be empty.

    Raises:
        InvalidInputError: not a list of such dicts (a system message is not allowed: the
            hot block is the system message), or a content that fails those checks (naming
            the turn).
    """
    if history is None:
        return []
    if isinstance(history, (str, bytes)) or not isinstance(history, Sequence):
        raise InvalidInputError("history must be a list of {'role', 'content'} dicts")
    out = []
    for index, message in enumerate(history):
        if not isinstance(message, Mapping):
            raise InvalidInputError(f"history[{index}] must be a dict with 'role' and 'content'")
        role, content = message.get("role"), message.get("content")
        if role not in _HISTORY_ROLES or not isinstance(content, str):
            raise InvalidInputError(
                f"history[{index}]: role must be 'user' or 'assistant' and content a str "
                f"(got role={role!r})"
            )
        content = check_text(content, f"history[{index}]", allow_empty=True)
        out.append({"role": str(role), "content": content})
    return out
