"""Small helpers every component uses: who the user is, which thread this is, message text.

These map LangChain / LangGraph types onto the facade's arguments; none of them touches
memory. Errors are ``memos_core.InvalidInputError`` (a ``ValueError``) with a message that
says how to supply what is missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.messages import BaseMessage
from memos_core import InvalidInputError
from memos_core.integration import check_text

try:  # where a run's config holds its Runtime (what langgraph.runtime.get_runtime reads)
    from langgraph._internal._constants import CONFIG_KEY_RUNTIME as _RUNTIME_KEY
except ImportError:  # pragma: no cover - another langgraph layout
    _RUNTIME_KEY = "__pregel_runtime"

#: Roles the facade's episodic memories use for LangChain message types.
_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}


class MissingUserError(InvalidInputError):
    """No user id was supplied to a component that acts for a user (a configuration error)."""


def context_value(context: Any, key: str) -> Any:
    """``key`` from a runtime context that is a mapping, a dataclass or a pydantic model."""
    if context is None:
        return None
    if isinstance(context, Mapping):
        return context.get(key)
    return getattr(context, key, None)


def configurable(config: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """``config["configurable"]`` or an empty mapping."""
    if not config:
        return {}
    value = config.get("configurable") or {}
    return value if isinstance(value, Mapping) else {}


def resolve_user_id(
    *,
    component: str,
    key: str,
    default: str | None,
    context: Any = None,
    config: Mapping[str, Any] | None = None,
) -> str:
    """The principal for a call: runtime context, then ``configurable``, then the default.

    The user never comes from a model's tool arguments. Raises ``InvalidInputError`` naming
    the three ways to supply it when none of them does (``MissingUserError``).
    """
    for candidate in (context_value(context, key), configurable(config).get(key), default):
        if candidate is not None:
            if not isinstance(candidate, str) or not candidate.strip():
                raise InvalidInputError(
                    f"{component}: the user id ({key!r}) must be a non-empty str, got {candidate!r}."
                )
            return candidate
    raise MissingUserError(
        f"{component} does not know the user. Pass it in the agent's runtime context "
        f"(create_agent(..., context_schema=...) and invoke(..., context={{{key!r}: 'alice'}})), "
        f"or in config={{'configurable': {{{key!r}: 'alice'}}}}, or construct the component "
        f"with user_id='alice'. Replaying or forking from a checkpoint: the config of "
        f"get_state_history / get_state / update_state names only the thread and checkpoint, "
        f"so pass the user again: invoke(None, {{'configurable': "
        f"{{**snapshot.config['configurable'], {key!r}: 'alice'}}}}) or "
        f"invoke(None, snapshot.config, context={{{key!r}: 'alice'}}). The user is never "
        f"read from stored checkpoints."
    )


def thread_id(config: Mapping[str, Any] | None) -> str | None:
    """The LangGraph thread id of the running graph, if there is one (used as session id)."""
    value = configurable(config).get("thread_id")
    return str(value) if value is not None else None


def current_config() -> Mapping[str, Any] | None:
    """The config of the running graph step, or None outside a graph."""
    from langgraph.config import get_config

    try:
        return get_config()
    except RuntimeError:
        return None


def role_of(message: BaseMessage) -> str:
    """The facade's role name for a LangChain message (``human`` -> ``user``, ...)."""
    return _ROLES.get(message.type, message.type)


def message_text(message: BaseMessage) -> str:
    """The plain text of a message (may be empty): its text content blocks, each stripped,
    joined by a space, as ``MemOS.add`` joins a message's blocks (LangChain's
    ``message.text`` joins them with nothing: "...called RexHe is...")."""
    content = message.content
    if isinstance(content, str):
        return content.strip()
    parts = (block if isinstance(block, str) else block.get("text")
             for block in content
             if isinstance(block, str) or (isinstance(block, dict) and block.get("type") == "text"))
    return " ".join(p.strip() for p in parts if isinstance(p, str) and p.strip())


def run_context(config: Mapping[str, Any] | None) -> Any:
    """The context the running graph was invoked with (``invoke(..., context=...)``), or
    None. A run's config holds its ``Runtime`` under the key ``langgraph.runtime.get_runtime``
    reads, which nodes, models and the checkpointer all see."""
    runtime = configurable(config).get(_RUNTIME_KEY)
    return getattr(runtime, "context", None)


def storable(text: str) -> bool:
    """Whether MemOS stores ``text`` as a memory's text (``check_text``: no NUL character
    or unpaired surrogate, at most the size limit, something visible)."""
    try:
        check_text(text)
    except InvalidInputError:
        return False
    return True
