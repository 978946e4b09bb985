"""Memory tools for llama-index agents: store, search, update, forget, compress.

``memos_tools(mos, user_id="alice")`` returns ``FunctionTool``s bound to one user. The user
(and agent and session) come from the caller that builds the tools, never from the model:
no tool has a ``user_id`` parameter, and a call that passes one fails. A tool raises the
facade's error (``InvalidInputError``, ``MemoryNotFoundError``, ``AccessDeniedError``)
with the message ``"<ErrorClass>: <what to fix>"`` -- a call whose arguments do not fit
the tool (one it does not have, such as ``user_id``, or a required one missing) too, as an
``InvalidInputError`` naming the tool's arguments; agents hand that message to the model
as the tool result -- the same text LangChain's ``create_memory_tools`` gives its model.
Tool names, descriptions and argument schemas are the core's shared specs
(``memos_core.integration.TOOL_SPECS``), the same in both packages (``store_memory(text,
memory_type, tags)``, ``search_memories(query, k)``, ``update_memory``,
``forget_memory``, ``compress_memories``). Each tool has a sync and an async function; the async one runs the sync one in a
worker thread, so the event loop never blocks.

``forget_memory`` run by an agent (``FunctionAgent``, ``ReActAgent``, ``AgentWorkflow``: they
call the async function and hand it the workflow ``Context``, which is no argument of the
model's) also redacts the forgotten memory in the run's own state -- the tool calls, tool
results and reasoning it keeps in ``ctx.store`` (see :mod:`._forgets`): ``MemOS.forget``
redacts the stored history, but the run would send its copies to the model again and write
them back to memory when it ends.
"""

# no ``from __future__ import annotations``: FunctionTool finds the Context parameter by
# comparing its annotation with the class, not with a string

import asyncio
import functools
import inspect
import warnings
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from llama_index.core.tools import FunctionTool
from llama_index.core.workflow import Context
from memos_core import InvalidInputError, MemOS, MemOSError
from memos_core.integration import (
    TOOL_NAMES,
    MessageRedactor,
    acounted,
    check_k,
    check_name,
    forget_reply,
    in_thread,
    redactor_before_forget,
    shown_text,
    tool_spec,
    whole,
)

from llama_index.memory.memos._checks import check_mos
from llama_index.memory.memos._forgets import is_forgotten, redact_run_state, watch_forgets

#: Every tool name :func:`memos_tools` knows, in the order it returns them: the core's
#: shared tool specs (``memos_core.integration.TOOL_SPECS``), as in ``langchain_memos``.
__all__ = ["DEPRECATED_NAMES", "TOOL_NAMES", "memos_tools"]
#: The short names ``include`` took before; still accepted, with a DeprecationWarning.
DEPRECATED_NAMES = {"store": "store_memory", "search": "search_memories",
                    "update": "update_memory", "forget": "forget_memory",
                    "compress": "compress_memories"}


#: What the application sets when it builds the tools; a model may still try to pass them.
_PRINCIPAL_ARGS = ("user_id", "agent_id", "session_id")


def _check_arguments(fn: Callable[..., Any], args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> None:
    """Refuse a call whose arguments do not fit ``fn`` with an ``InvalidInputError`` the
    model can act on ("InvalidInputError: search_memories has no argument 'user_id'...")
    rather than Python's ``TypeError`` about a local function. ``ctx`` (the agent's
    workflow context) is no argument of the model's and is not offered to it."""
    signature = inspect.signature(fn)
    try:
        signature.bind(*args, **kwargs)
        return
    except TypeError as exc:
        reason = str(exc)
    params = signature.parameters
    name = fn.__name__
    offered = ", ".join(p for p in params if p != "ctx")
    unknown = [k for k in kwargs if k not in params]
    filled = set(list(params)[:len(args)]) | set(kwargs)
    missing = [p.name for p in params.values()
               if p.default is p.empty and p.name not in filled]
    if unknown:
        problem = f"{name} has no argument {', '.join(map(repr, unknown))}"
    elif missing:
        problem = f"{name} needs the argument {', '.join(map(repr, missing))}"
    else:
        problem = f"{name} cannot take these arguments ({reason})"
    hint = ""
    if set(unknown) & set(_PRINCIPAL_ARGS):
        hint = (" The user, agent and session are set by the application that built the "
                "tools, not by the tool call; leave them out.")
    raise InvalidInputError(
        f"InvalidInputError: {problem}; its arguments are {offered}.{hint}")


def _model_facing(fn: Callable[..., str]) -> Callable[..., str]:
    """A facade error keeps its class and gets the class name in its message, so the model
    reads ``"MemoryNotFoundError: ..."`` as it does with the LangChain tools; so does a call
    whose arguments do not fit (:func:`_check_arguments`)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> str:
        _check_arguments(fn, args, kwargs)
        try:
            return fn(*args, **kwargs)
        except MemOSError as exc:
            name = type(exc).__name__
            if str(exc).startswith(name):
                raise
            raise type(exc)(f"{name}: {exc}") from exc

    return run


def _checked_twin(fn: Callable[..., Awaitable[str]]) -> Callable[..., Awaitable[str]]:
    """An async tool function that refuses arguments which do not fit it as the sync one
    does (:func:`_check_arguments`), before it starts anything."""

    @functools.wraps(fn)
    async def run(*args: Any, **kwargs: Any) -> str:
        _check_arguments(fn, args, kwargs)
        return await fn(*args, **kwargs)

    return run


def _async_twin(fn: Callable[..., str]) -> Callable[..., Awaitable[str]]:
    @functools.wraps(fn)
    async def run(*args: Any, **kwargs: Any) -> str:
        return await in_thread(fn, *args, **kwargs)

    return run


def _forget_twin(mos: MemOS, user_id: str, forget: Callable[..., str]
                 ) -> Callable[..., Awaitable[str]]:
    """``forget_memory``'s async function: in an agent run (``ctx`` given), what the memory
    says now and said before is read first, and after the forget the run's state loses it
    -- the forget and that redaction one unit a cancel of the tool call cannot split
    (``memos_core.integration.whole``): cancelled in between, the run kept the text."""

    @whole
    async def forget_and_redact(memory_id: str, ctx: Context | None,
                                redactor: MessageRedactor | None) -> str:
        # a call of the MemOS for its whole length: close() waits for the redaction too, and
        # the unit's own check that the memory is gone is not refused as a new call
        async with acounted(mos, None, catch_up=False):
            reply = await in_thread(forget, memory_id)
            if ctx is not None and redactor is not None \
                    and await asyncio.to_thread(is_forgotten, mos, memory_id, user_id):
                await redact_run_state(ctx, redactor)
            return reply

    @functools.wraps(forget)
    async def run(memory_id: str, ctx: Context = None) -> str:  # type: ignore[assignment]
        redactor = None
        if ctx is not None:
            redactor = await asyncio.to_thread(redactor_before_forget, mos, memory_id, user_id)
        return await forget_and_redact(memory_id, ctx, redactor)

    return run


def _memory_ids(memory_ids: object) -> list[str]:
    if isinstance(memory_ids, str) or not isinstance(memory_ids, Sequence) or not memory_ids:
        raise InvalidInputError(
            f"memory_ids must be a non-empty list of memory ids, got {memory_ids!r}."
        )
    return list(memory_ids)


def _search_k(k: object, max_k: int) -> int:
    """The ``k`` the model asked for (default 5), capped at ``max_k``. ``FunctionTool`` hands
    the model's arguments over as they came, not through the schema, so a whole number in a
    str (``"2"``) counts too; anything else that is not an int is refused."""
    if k is None:
        k = 5
    elif isinstance(k, str):
        try:
            k = int(k)
        except ValueError:
            raise InvalidInputError(
                f"k must be a whole number of memories, such as 5; got {k!r}."
            ) from None
    if isinstance(k, int) and not isinstance(k, bool):
        k = min(k, max_k)
    return check_k(k)


def _functions(
    mos: MemOS, user_id: str, agent_id: str | None, session_id: str | None, max_k: int
) -> dict[str, Callable[..., str]]:
    """The tool functions, closed over the principal. Their signatures are the tool schemas."""

    def store_memory(text: str, memory_type: str = "fact", tags: list[str] | None = None) -> str:
        """Remember a piece of information about the user for later conversations.

        Args:
            text (str): The information, as one self-contained sentence.
            memory_type (str): One of fact, preference, episode, task_prompt, summary, note.
            tags (list[str]): Optional short labels for filtering.
        """
        # FunctionTool hands a model's null over as it came: it means the default here, as
        # it does for ``k`` (the core's default type would be "note")
        cube = mos.add(text, user_id=user_id, agent_id=agent_id, session_id=session_id,
                       type="fact" if memory_type is None else memory_type, tags=tags or ())
        return f"Stored memory {cube.id}."

    def search_memories(query: str, k: int | None = 5) -> str:
        """Search the user's memories; returns the best matches with their ids.

        Args:
            query (str): What to look for, in natural language.
            k (int): How many memories to return at most (capped at ``max_k``).
        """
        hits = mos.search(query, user_id=user_id, k=_search_k(k, max_k))
        if not hits:
            return "No memories match."
        return "\n".join(f"[{h.id}] {shown_text(h.memory, user_id)}" for h in hits)

    def update_memory(memory_id: str, text: str) -> str:
        """Correct a stored memory; the old text stays in its history.

        Args:
            memory_id (str): The id shown by search_memories.
            text (str): The corrected text.
        """
        cube = mos.update(memory_id, text, user_id=user_id, agent_id=agent_id)
        return f"Updated memory {cube.id} (version {cube.version})."

    def forget_memory(memory_id: str, ctx: Context = None) -> str:  # type: ignore[assignment]
        """Forget a memory for good: its text leaves every version, the index, the graph and
        the chat history. Summaries made from it are flagged, not forgotten (their text may
        still repeat it); the reply names them so that the model can check them.

        Args:
            memory_id (str): The id shown by search_memories.
            ctx (Context): The running agent's workflow context (from the agent, not the
                model); only the async call uses it (:func:`_forget_twin`).
        """
        receipt = mos.forget(memory_id, user_id=user_id, agent_id=agent_id)
        return forget_reply(receipt)

    def compress_memories(memory_ids: list[str], summary: str) -> str:
        """Replace several memories by one summary; the originals are archived.

        Args:
            memory_ids (list[str]): The ids (from search_memories) of the memories to
                summarise.
            summary (str): The summary text that keeps what matters from them.
        """
        cube = mos.compress(_memory_ids(memory_ids), summary, user_id=user_id, agent_id=agent_id)
        return f"Compressed {len(memory_ids)} memories into memory {cube.id}."

    return {
        "store_memory": store_memory,
        "search_memories": search_memories,
        "update_memory": update_memory,
        "forget_memory": forget_memory,
        "compress_memories": compress_memories,
    }


def memos_tools(
    mos: MemOS,
    *,
    user_id: str,
    agent_id: str | None = None,
    session_id: str | None = None,
    include: Sequence[str] | None = None,
    max_k: int = 20,
) -> list[FunctionTool]:
    """``FunctionTool``s that act on ``user_id``'s memories, in :data:`TOOL_NAMES` order.

    Args:
        mos: The MemOS to act on.
        user_id: The principal of every call (from your session, not from the model).
        agent_id: Recorded as the actor on writes.
        session_id: Filed on memories the store tool creates.
        include: Tool names to build, e.g. ``["search_memories"]`` (default: all that this
            MemOS supports; ``compress_memories`` needs ``MemOS.compress``). The old short
            names (``"search"``...) still work, with a DeprecationWarning.
        max_k: Cap on ``k`` in ``search_memories``, whatever the model asks for.

    Tool names: ``store_memory``, ``search_memories``, ``update_memory``,
    ``forget_memory``, ``compress_memories``.
    """
    mos = check_mos(mos, "memos_tools")
    user = str(check_name(user_id, "user_id"))
    agent = check_name(agent_id, "agent_id", optional=True)
    session = check_name(session_id, "session_id", optional=True)
    max_k = check_k(max_k, "max_k")
    can_compress = callable(getattr(mos, "compress", None))
    if include is None:
        names = [n for n in TOOL_NAMES if n != "compress_memories" or can_compress]
    else:
        if isinstance(include, str):
            include = [include]
        old = [n for n in include if n in DEPRECATED_NAMES]
        if old:
            warnings.warn(f"memos_tools include names {old} are deprecated; use "
                          f"{[DEPRECATED_NAMES[n] for n in old]}", DeprecationWarning,
                          stacklevel=2)
            include = [DEPRECATED_NAMES.get(n, n) for n in include]
        unknown = [n for n in include if n not in TOOL_NAMES]
        if unknown:
            raise InvalidInputError(
                f"include names unknown tools {unknown}; choose from {', '.join(TOOL_NAMES)}."
            )
        if "compress_memories" in include and not can_compress:
            raise InvalidInputError(
                "The compress tool needs MemOS.compress, which this memos-core version does "
                "not have; leave 'compress_memories' out of include."
            )
        names = [n for n in TOOL_NAMES if n in include]
    watch_forgets(mos)  # the chat stores then redact what a run writes after a forget
    functions = {n: _model_facing(fn) for n, fn in _functions(mos, user, agent, session,
                                                               max_k).items()}
    twins = {n: _async_twin(fn) for n, fn in functions.items()}
    twins["forget_memory"] = _forget_twin(mos, user, functions["forget_memory"])
    twins = {n: _checked_twin(fn) for n, fn in twins.items()}
    # name, description and argument schema: the core's shared specs
    return [
        FunctionTool.from_defaults(
            fn=functions[n], async_fn=twins[n], name=n, description=tool_spec(n).description,
            fn_schema=tool_spec(n).args_model(),
            # the agent passes its Context; a call outside a run gets None
            partial_params={"ctx": None} if n == "forget_memory" else None,
        )
        for n in names
    ]
