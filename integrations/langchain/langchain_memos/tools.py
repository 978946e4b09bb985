"""``create_memory_tools``: tools an agent's model calls to manage its own long-term memory.

``store_memory``, ``search_memories``, ``update_memory``, ``forget_memory`` and
``compress_memories`` each call one facade method (names, descriptions and arguments are
the core's shared specs, ``memos_core.integration.TOOL_SPECS``, as in the LlamaIndex
package's ``memos_tools``; ``search_memory`` is still accepted in ``include``,
with a ``DeprecationWarning``). The user is never a tool argument: it
comes from the agent's runtime context (``invoke(..., context={"user_id": ...})``), else
from ``config["configurable"]``, else from the ``user_id`` given to ``create_memory_tools``.
Memories a tool stores carry the LangGraph thread id as their session.

Each tool returns ``(content, artifact)``: a short text for the model (ids included, so it
can refer to memories later) and a JSON-friendly artifact for the application. A memory
error caused by the model's arguments (an unknown id, a memory of another user, empty
text) comes back to the model as ``"<ErrorClass>: <message>"``, which it can act on (as in
the LlamaIndex package); a missing user is a configuration error and raises.
``search_memories`` caps ``k`` at ``max_k`` (as the LlamaIndex tools do).

``forget_memory`` run by a LangGraph ``ToolNode`` (``create_agent``) also redacts the
forgotten memory in the running graph's messages: ``MemOS.forget`` redacts the stored
checkpoints, but the graph holds its state in memory and would write the text back with its
next checkpoint (and send it to the model). So the tool answers with a ``Command`` whose
``messages`` update is its ``ToolMessage`` plus a redacted copy of every state message that
held the memory, with the same id (the ``add_messages`` reducer replaces messages by id).
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal

from langchain.tools import ToolRuntime
from langchain_core.messages import BaseMessage, ToolMessage
from langchain_core.tools import BaseTool, StructuredTool, ToolException
from langgraph.types import Command
from memos_core import resolve_memos
from memos_core import MemCube, MemOS, MemOSError
from memos_core.integration import (
    in_thread,
    TOOL_NAMES,
    TOOL_SPECS,
    forget_reply,
    redactor_before_forget,
    shown_text,
    tool_spec,
)
from pydantic import Field

from langchain_memos._shared import MissingUserError, current_config, resolve_user_id, thread_id
from langchain_memos.checkpoint import redact_messages

MemoryKind = Literal["fact", "preference", "episode", "task_prompt", "summary", "note"]
__all__ = ["DEPRECATED_NAMES", "TOOL_NAMES", "create_memory_tools"]
#: Old tool names still accepted in ``include`` (with a DeprecationWarning).
DEPRECATED_NAMES = {"search_memory": "search_memories"}

Artifact = Any
#: ``(content, artifact)``: content is the text for the model, or a ``Command`` that
#: carries the ``ToolMessage`` (``forget_memory`` in a graph)
Result = tuple[Any, Artifact]
#: The default ``max_k``: the most memories ``search_memories`` returns, whatever ``k`` the
#: model asks for (the LlamaIndex tools' default too).
MAX_K = 20


def _arg(tool: str, arg: str) -> str:
    """An argument's description from the core's shared tool specs."""
    return tool_spec(tool).arg(arg).description


def _brief(cube: MemCube) -> dict[str, Any]:
    return {
        "id": cube.id, "text": cube.text, "type": cube.type.value, "tags": list(cube.tags),
        "version": cube.version, "created_at": cube.created_at.isoformat(),
    }


def _asked_in(runtime: ToolRuntime[Any, Any] | None, text: str) -> str | None:
    """The id of the latest human message of the graph's state that shares a word of four
    or more letters or digits with ``text`` (the message the model stored it from: "yes"
    after the fact is not), or None (outside a graph, or no such message)."""
    words = set(_WORD.findall(text.lower()))
    for message in reversed(_state_messages(runtime)):
        if message.type != "human" or not message.id:
            continue
        content = message.content if isinstance(message.content, str) else str(message.content)
        if words & set(_WORD.findall(content.lower())):
            return str(message.id)
    return None


_WORD = re.compile(r"[^\W_]{4,}")


def _state_messages(runtime: ToolRuntime[Any, Any] | None) -> list[BaseMessage]:
    """The messages of the running graph's state (empty outside a graph)."""
    state = getattr(runtime, "state", None)
    messages = state.get("messages") if isinstance(state, Mapping) else None
    return [m for m in messages or [] if isinstance(m, BaseMessage)]


def _config(runtime: ToolRuntime[Any, Any] | None) -> Mapping[str, Any] | None:
    """The config of the call: the agent's (via the runtime) or that of ``tool.invoke``."""
    return getattr(runtime, "config", None) or current_config()


class _MemoryOps:
    """The tools' bodies: resolve the user, call the facade, format the answer."""

    def __init__(self, mos: MemOS, user_id: str | None, user_id_key: str, k: int,
                 max_k: int) -> None:
        self.mos, self.user_id, self.user_id_key = mos, user_id, user_id_key
        self.k, self.max_k = k, max_k

    def _user(self, runtime: ToolRuntime[Any, Any] | None) -> str:
        return resolve_user_id(
            component="memory tools", key=self.user_id_key, default=self.user_id,
            context=getattr(runtime, "context", None), config=_config(runtime),
        )

    def store(
        self,
        text: Annotated[str, Field(description=_arg("store_memory", "text"))],
        memory_type: Annotated[MemoryKind, Field(description=_arg("store_memory", "memory_type"))] = "fact",
        tags: Annotated[list[str] | None, Field(description=_arg("store_memory", "tags"))] = None,
        runtime: ToolRuntime[Any, Any] = None,  # type: ignore[assignment]
    ) -> Result:
        # the user's message the model stored it from is its source: forgetting the memory
        # then blanks that message in the thread too, where a paraphrase would not match
        (cube,) = self.mos.add_many(
            [{"text": text, "message_id": _asked_in(runtime, text)}], user_id=self._user(runtime),
            session_id=thread_id(_config(runtime)), type=memory_type, tags=tags or (),
            origin="extraction", reason="store_memory tool",
        )
        return f"Stored memory {cube.id}.", _brief(cube)

    def search(
        self,
        query: Annotated[str, Field(description=_arg("search_memories", "query"))],
        k: Annotated[int | None, Field(ge=1, description=_arg("search_memories", "k"))] = None,
        runtime: ToolRuntime[Any, Any] = None,  # type: ignore[assignment]
    ) -> Result:
        user = self._user(runtime)
        hits = self.mos.search(query, user_id=user, k=min(k or self.k, self.max_k))
        if not hits:
            return "No memories found.", []
        lines = [
            f"{n}. [{h.id}] ({h.memory.type.value}, {h.memory.created_at.date().isoformat()}) "
            f"{shown_text(h.memory, user)}" for n, h in enumerate(hits, start=1)
        ]
        artifact = [{**_brief(h.memory), "score": h.score, "why": h.explain()} for h in hits]
        noun = "memory" if len(hits) == 1 else "memories"
        return f"{len(hits)} {noun}, best first:\n" + "\n".join(lines), artifact

    def update(
        self,
        memory_id: Annotated[str, Field(description=_arg("update_memory", "memory_id"))],
        text: Annotated[str, Field(description=_arg("update_memory", "text"))],
        runtime: ToolRuntime[Any, Any] = None,  # type: ignore[assignment]
    ) -> Result:
        cube = self.mos.update(memory_id, text, user_id=self._user(runtime), reason="update_memory tool")
        return f"Updated memory {cube.id} (version {cube.version}; older versions are kept).", _brief(cube)

    def forget(
        self,
        memory_id: Annotated[str, Field(description=_arg("forget_memory", "memory_id"))],
        runtime: ToolRuntime[Any, Any] = None,  # type: ignore[assignment]
    ) -> Result:
        user = self._user(runtime)
        messages = _state_messages(runtime)
        # read before the forget: what the memory said (now and in earlier versions)
        redactor = redactor_before_forget(self.mos, memory_id, user) if messages else None
        receipt = self.mos.forget(memory_id, user_id=user, reason="forget_memory tool")
        reply, artifact = forget_reply(receipt), receipt.model_dump(mode="json")
        call_id = getattr(runtime, "tool_call_id", None)
        if redactor is None or not call_id:
            return reply, artifact
        answer = ToolMessage(reply, artifact=artifact, tool_call_id=call_id, name="forget_memory")
        # the graph's own copy of its messages: without this, its next checkpoint (and model
        # call) would bring back what the forget just redacted in the stored checkpoints
        update = [answer, *redact_messages(messages, redactor)]
        return Command(update={"messages": update}), None

    def compress(
        self,
        memory_ids: Annotated[list[str], Field(min_length=2, description=_arg("compress_memories", "memory_ids"))],
        summary: Annotated[str, Field(description=_arg("compress_memories", "summary"))],
        runtime: ToolRuntime[Any, Any] = None,  # type: ignore[assignment]
    ) -> Result:
        cube = self.mos.compress(memory_ids, summary, user_id=self._user(runtime),
                                 reason="compress_memories tool")
        return (
            f"Stored summary {cube.id} of {len(memory_ids)} memories; the originals are "
            "archived (kept, no longer in search).",
            _brief(cube),
        )


#: What the model reads about each tool: the core's shared specs.
_DESCRIPTIONS = {spec.name: spec.description for spec in TOOL_SPECS}


def _as_tool_error(func: Callable[..., Result]) -> Callable[..., Result]:
    """Memory errors caused by the model's arguments become messages the model can read."""

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Result:
        try:
            return func(*args, **kwargs)
        except MissingUserError:
            raise  # a configuration error: the application must supply the user
        except MemOSError as exc:
            raise ToolException(f"{type(exc).__name__}: {exc}") from exc

    return run


def _in_thread(func: Callable[..., Result]) -> Callable[..., Any]:
    @functools.wraps(func)
    async def run(*args: Any, **kwargs: Any) -> Result:
        return await in_thread(func, *args, **kwargs)

    return run


def _validation_message(exc: Exception) -> str:
    return f"Invalid arguments: {exc}. Fix them and call the tool again."


def create_memory_tools(
    mos: MemOS,
    *,
    user_id: str | None = None,
    user_id_key: str = "user_id",
    k: int = 5,
    include: Sequence[str] | None = None,
    max_k: int = MAX_K,
) -> list[BaseTool]:
    """Memory tools for an agent: ``create_agent(model, tools=[*mine, *create_memory_tools(mos)])``.

    Args:
        mos: the memory system the tools read and write.
        user_id: fallback user when neither the runtime context nor ``configurable`` has one
            (handy for a single-user app or calling the tools directly).
        user_id_key: the key of the user id in the runtime context / ``configurable``.
        k: how many memories ``search_memories`` returns when the model does not say
            (at most ``max_k``).
        include: names of the tools to create (default all, in :data:`TOOL_NAMES` order).
        max_k: the most memories ``search_memories`` returns, whatever ``k`` the model asks
            for (1 to 1000; as the LlamaIndex tools' ``max_k``).

    Each tool has a sync and an async implementation (the async one runs the facade call in
    a worker thread). Unknown names in ``include`` raise ``ValueError``.
    """
    mos = resolve_memos(mos)  # a postgresql:// URL: the process's shared MemOS
    if not isinstance(mos, MemOS):
        raise TypeError(f"create_memory_tools needs a memos_core.MemOS, got {type(mos).__name__}.")
    names = list(TOOL_NAMES if include is None else include)
    for old, new in DEPRECATED_NAMES.items():
        if old in names:
            warnings.warn(f"memory tool {old!r} is now called {new!r}", DeprecationWarning,
                          stacklevel=2)
            names = [new if n == old else n for n in names]
    unknown = sorted(set(names) - set(TOOL_NAMES))
    if unknown:
        raise ValueError(f"Unknown memory tools {unknown}; choose from {list(TOOL_NAMES)}.")
    if isinstance(max_k, bool) or not isinstance(max_k, int) or not 1 <= max_k <= 1000:
        raise ValueError(f"max_k must be an int between 1 and 1000, got {max_k!r}.")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}.")
    ops = _MemoryOps(mos, user_id, user_id_key, min(k, max_k), max_k)
    bodies: dict[str, Callable[..., Result]] = {
        "store_memory": ops.store, "search_memories": ops.search, "update_memory": ops.update,
        "forget_memory": ops.forget, "compress_memories": ops.compress,
    }
    tools: list[BaseTool] = []
    for name in names:
        body = _as_tool_error(bodies[name])
        tools.append(StructuredTool.from_function(
            func=body, coroutine=_in_thread(body), name=name, description=_DESCRIPTIONS[name],
            response_format="content_and_artifact", handle_tool_error=True,
            handle_validation_error=_validation_message,
        ))
    return tools
