"""A forget that lands while an agent runs: the copies of the memory the run holds in memory.

``MemOS.forget`` redacts the stored chat history (the core's conversation logs). A running
LlamaIndex agent also holds the conversation in its workflow ``Context``: ``FunctionAgent``
its tool calls and results (``ctx.store["scratchpad"]``), ``ReActAgent`` its reasoning
(``"current_reasoning"``), both the run's tool results (``"current_tool_calls"``). The next
model call of the run sends them, and the run's end writes them to memory, text and all.
Two things keep a forgotten memory out of them:

- the ``forget_memory`` tool, given the run's ``Context``, redacts those values right after
  the forget (:func:`redact_run_state`, with the redactor
  ``memos_core.integration.redactor_before_forget``
  built before it: the memory's text now and what its earlier versions said);
- the chat stores redact the messages written in the minute after a forget of their user
  (:func:`late_redacted`; ``memos_core.integration.LATE_WRITE_S``): what a run (or a
  forget from elsewhere) left in memory reaches the log without the text. A user's own messages are left as they
  are: written after the forget, they are new input (the user may tell it again). A write
  under way while the forget's pass over the logs ran is redacted again after its commit
  (:func:`late_write`), as the pass would have redacted it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.workflow import Context
from memos_core import MemCube, MemOS, MemOSError, State
from memos_core.integration import DerivedForm, LateWrite, MessageRedactor, RecentForgets
from memos_core.integration import alate_write as core_alate_write
from memos_core.integration import late_write as core_late_write

from llama_index.memory.memos._convert import redact_value

#: The keys of a running agent's ``ctx.store`` that hold the run's messages and tool calls
#: (FunctionAgent's scratchpad, ReActAgent's reasoning, the tool results, the user's message).
RUN_STATE_KEYS = ("scratchpad", "current_reasoning", "current_tool_calls", "user_msg_str")


def is_forgotten(mos: MemOS, memory_id: str, user_id: str) -> bool:
    """Whether ``memory_id`` is forgotten now (a refused forget leaves the run's state as
    it is: the memory is still there)."""
    try:
        return mos.history(memory_id, user_id=user_id)[-1].state is State.DELETED
    except MemOSError:
        return False


async def redact_run_state(ctx: Context, redactor: MessageRedactor) -> None:
    """Redact the memory in the values of :data:`RUN_STATE_KEYS` of a running workflow's
    ``ctx.store`` (keys it does not have are skipped; a value is set again only if it
    changed)."""
    for key in RUN_STATE_KEYS:
        value = await ctx.store.get(key, default=None)
        redacted = redact_value(value, redactor)
        if redacted is not value:
            await ctx.store.set(key, redacted)


class _Watched(RecentForgets):
    """A MemOS's recent forgets, kept by its forget hook."""

    def forgot(self, memory: MemCube) -> list[DerivedForm]:
        """The forget hook: remember the redactor (it knows the earlier versions' texts while
        the forget runs). The log itself the core redacts."""
        self.add(memory)
        return []


_registry: weakref.WeakKeyDictionary[MemOS, RecentForgets] = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


def watch_forgets(mos: MemOS) -> None:
    """Start keeping ``mos``'s recent forgets (once per MemOS; the chat stores and the
    memory tools call it when they are built, so that a later forget is seen)."""
    with _registry_lock:
        if mos in _registry:
            return
        watched = _Watched()
        try:
            # the MemOS holds the bound method weakly: the registry keeps it alive as long
            # as the MemOS lives
            mos.on_forget(watched.forgot)
        except MemOSError:  # closed: no forget to see
            return
        _registry[mos] = watched


def late_write(mos: MemOS) -> AbstractContextManager[LateWrite]:
    """Entered before a write's :func:`late_redacted`, left after its follow-up (one call of
    ``mos``): after its commit, ``missed(user_id)`` names the forgets whose pass over the
    logs ran meanwhile (and may have missed it)."""
    return core_late_write(mos, _registry.get(mos))


def alate_write(mos: MemOS) -> AbstractAsyncContextManager[LateWrite]:
    """Async :func:`late_write`."""
    return core_alate_write(mos, _registry.get(mos))


def late_redacted(mos: MemOS, user_id: str | None,
                  messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """``messages`` about to be written to ``user_id``'s queues (None: a store of no user)
    with the memories that user forgot in the last minute redacted (``LATE_WRITE_S``);
    user messages are kept as they are (new input). Unchanged messages are the same
    objects."""
    watched = _registry.get(mos)
    redactors = watched.redactors(user_id) if watched is not None else []
    if not redactors:
        return list(messages)
    out = []
    for message in messages:
        if message.role is not MessageRole.USER:
            for redactor in redactors:
                message = redact_value(message, redactor)
        out.append(message)
    return out
