"""Argument checks shared by the adapters.

Every check raises :class:`memos_core.InvalidInputError` (a ``ValueError``) whose message names
the argument, what was wrong and what is accepted. Rules that the core owns (what a user id
or ``k`` may be) are delegated to ``memos_core.validation`` so that the adapter and the facade
never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.storage.chat_store.base_db import MessageStatus
from memos_core import InvalidInputError, MemOS
from memos_core import resolve_memos
from memos_core.integration import check_name

#: Which memories a memory block or retriever searches: all of the user's, only those
#: written by its agent, or only those of its session.
SEARCH_SCOPES = ("user", "agent", "session")


def check_mos(mos: object, owner: str) -> MemOS:
    """``mos`` must be an open :class:`memos_core.MemOS` or a ``postgresql://`` URL (server
    mode: the process's shared MemOS on it), not a path or a config."""
    mos = resolve_memos(mos)
    if not isinstance(mos, MemOS):
        raise InvalidInputError(
            f"{owner} needs mos=<memos_core.MemOS>, got {type(mos).__name__}. Open one with "
            "MemOS(data_dir) and pass it in, or pass a postgresql:// URL (server mode)."
        )
    return mos


def check_key(key: object) -> str:
    """A chat store key (a session/conversation id): a non-empty str of at most 256 chars."""
    return str(check_name(key, "key"))


def check_non_negative(value: object, name: str, *, optional: bool = False) -> int | None:
    """A non-negative int (``None`` allowed when ``optional``)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(f"{name} must be a non-negative int, got {value!r}.")
    return value


def check_index(idx: object) -> int:
    """A list position: an int, negative counting from the end as in Python lists."""
    if isinstance(idx, bool) or not isinstance(idx, int):
        raise InvalidInputError(f"idx must be an int position, got {idx!r}.")
    return idx


def check_status(status: object, *, optional: bool) -> str | None:
    """A :class:`MessageStatus` (or its value ``'active'``/``'archived'``) -> its value."""
    if status is None and optional:
        return None
    try:
        return MessageStatus(status).value
    except ValueError:
        allowed = ", ".join(repr(s.value) for s in MessageStatus)
        extra = " or None (every status)" if optional else ""
        raise InvalidInputError(
            f"status must be a MessageStatus ({allowed}){extra}, got {status!r}."
        ) from None


def check_chat_message(message: object, where: str) -> ChatMessage:
    """A llama-index ``ChatMessage`` instance (dicts and strings are refused, not guessed)."""
    if not isinstance(message, ChatMessage):
        raise InvalidInputError(
            f"{where} must be a llama_index ChatMessage, got {type(message).__name__}. Build "
            "one with ChatMessage(role='user', content='...')."
        )
    return message


def check_chat_messages(messages: object, name: str = "messages") -> list[ChatMessage]:
    """A list (or other sequence) of ``ChatMessage``; a lone message is refused."""
    if isinstance(messages, (str, bytes, ChatMessage)) or not isinstance(messages, Sequence):
        raise InvalidInputError(
            f"{name} must be a list of ChatMessage, got {type(messages).__name__}."
        )
    return [check_chat_message(m, f"{name}[{i}]") for i, m in enumerate(messages)]


def check_roles(roles: object, name: str = "remember_roles") -> tuple[str, ...]:
    """Message roles, as ``MessageRole`` members or their values, e.g. ``("user",)``."""
    if isinstance(roles, (str, MessageRole)):
        roles = (roles,)
    if not isinstance(roles, Iterable):
        raise InvalidInputError(f"{name} must be a list of roles, got {type(roles).__name__}.")
    out: list[str] = []
    for role in roles:
        try:
            out.append(MessageRole(role).value)
        except ValueError:
            allowed = ", ".join(r.value for r in MessageRole)
            raise InvalidInputError(
                f"{name} contains {role!r}, which is not a message role ({allowed})."
            ) from None
    return tuple(out)


def check_scope(scope: object, *, agent_id: str | None, session_id: str | None) -> str:
    """A search scope from :data:`SEARCH_SCOPES` whose id (agent or session) is set."""
    if scope not in SEARCH_SCOPES:
        raise InvalidInputError(
            f"search_scope must be one of {', '.join(SEARCH_SCOPES)}, got {scope!r}."
        )
    if scope == "agent" and agent_id is None:
        raise InvalidInputError("search_scope='agent' needs agent_id=...; pass one or use 'user'.")
    if scope == "session" and session_id is None:
        raise InvalidInputError(
            "search_scope='session' needs session_id=...; pass one or use 'user'."
        )
    return str(scope)


def scope_filters(scope: str, agent_id: str | None, session_id: str | None) -> dict[str, Any]:
    """The ``MemOS.search`` keywords that a search scope stands for."""
    if scope == "agent":
        return {"agent_id": agent_id}
    if scope == "session":
        return {"session_id": session_id}
    return {}
