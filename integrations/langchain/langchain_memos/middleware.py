"""``MemOSMiddleware``: long-term memory for a ``create_agent`` agent, by constructor only.

Before every model call it searches MemOS for memories relevant to the latest user
message and appends them to the system message of *that call* (``wrap_model_call``), so
they reach the model but are never written into the thread state. After each agent turn
(``after_agent``) it stores what the user *told* in the turn as episodic memories of the
user, with the thread id as their session: by default user statements only -- questions
and the assistant's answers stay in the conversation (the checkpointer's thread), out of
searched memory, so asking again does not find the old question instead of the fact.
Both hooks have sync and async versions, so ``invoke`` and ``ainvoke`` both work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from langchain.agents.middleware import AgentMiddleware, AgentState, ModelRequest, ModelResponse
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from memos_core import resolve_memos
from memos_core import MemOS, SearchHit
from memos_core.integration import asked_or_answered, worth_remembering

from langchain_memos._shared import (
    current_config,
    message_text,
    resolve_user_id,
    role_of,
    thread_id,
)
from langchain_memos.tools import create_memory_tools

Formatter = Callable[[Sequence[SearchHit]], str]

DEFAULT_HEADING = "Relevant memories about the user, from earlier conversations (best first):"


def format_memories(hits: Sequence[SearchHit], heading: str = DEFAULT_HEADING) -> str:
    """The default rendering: a heading, then one line per memory with its type, date and id."""
    lines = [
        f"- {h.text} ({h.memory.type.value}, {h.memory.created_at.date().isoformat()}, id {h.id})"
        for h in hits
    ]
    return heading + "\n" + "\n".join(lines)


class MemOSMiddleware(AgentMiddleware):
    """Agent middleware that recalls and records memories through MemOS.

    Contracts:

    * The user comes from the runtime context (``context[user_id_key]``), else
      ``config["configurable"][user_id_key]``, else the ``user_id`` given here; with none of
      them a model call raises ``MissingUserError``.
    * Recall: at most ``k`` memories, best first, found by MemOS hybrid search for the text
      of the latest human message. Episodic memories of the current thread are left out
      (they are already in the conversation). Nothing is injected when there is no human
      message or no hit. The injected text is not saved in the thread state.
    * Recording: after each turn, the turn's human message(s) and final AI answer (text
      only; tool calls and tool results are never recorded) are filtered by
      ``memos_core.messages.worth_remembering``: messages of ``remember_roles`` (default
      ``("user",)``) that are not questions (unless ``remember_questions=True``) become
      episodic memories. A turn with nothing left records nothing.
    * Ranking: among recalled hits, questions and assistant turns recorded earlier (with
      wider settings, or by older versions) are placed after statements.
    * ``memory_tools=True`` also registers the tools of :func:`create_memory_tools`, so an
      agent gets them without changing its ``tools`` list.
    """

    def __init__(
        self,
        mos: MemOS,
        *,
        user_id: str | None = None,
        user_id_key: str = "user_id",
        k: int = 5,
        recall: bool = True,
        record: bool = True,
        remember_roles: Sequence[str] = ("user",),
        remember_questions: bool = False,
        memory_tools: bool = False,
        formatter: Formatter | None = None,
        agent_id: str | None = None,
    ) -> None:
        """Configure recall/recording for agents built with ``create_agent(middleware=[...])``.

        Args:
            mos: the memory system.
            user_id: fallback user (see the class contract).
            user_id_key: key of the user id in the runtime context / ``configurable``.
            k: how many memories to inject per model call (1-50).
            recall: inject memories before model calls.
            record: store each finished turn's statements as episodic memory.
            remember_roles: roles whose messages are recorded (``"user"``, ``"assistant"``).
            remember_questions: also record questions (off: they crowd out the facts that
                answer them when asked again).
            memory_tools: also give the model the memory tools.
            formatter: renders the hits into the text appended to the system message.
            agent_id: recorded as the agent in stored memories and the audit log.
        """
        mos = resolve_memos(mos)  # a postgresql:// URL: the process's shared MemOS
        if not isinstance(mos, MemOS):
            raise TypeError(f"MemOSMiddleware needs a memos_core.MemOS, got {type(mos).__name__}.")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 50:
            raise ValueError(f"k must be an int between 1 and 50, got {k!r}.")
        self.mos = mos
        self.user_id = user_id
        self.user_id_key = user_id_key
        self.k = k
        self.recall = recall
        self.record = record
        self.remember_roles = tuple(remember_roles)
        bad = [r for r in self.remember_roles if r not in ("user", "assistant")]
        if bad:
            raise ValueError(f"remember_roles may hold 'user' and 'assistant', got {bad!r}.")
        self.remember_questions = bool(remember_questions)
        self.formatter: Formatter = formatter or format_memories
        self.agent_id = agent_id
        self.tools = create_memory_tools(mos, user_id=user_id, user_id_key=user_id_key) if memory_tools else []

    # -- recall ---------------------------------------------------------------------------

    def wrap_model_call(
        self,
        request: ModelRequest,
        handler: Callable[[ModelRequest], ModelResponse],
    ) -> ModelResponse:
        """Run the model call with the relevant memories appended to its system message."""
        if not self.recall:
            return handler(request)
        return handler(self._inject(request, self._recall(request, current_config())))

    async def awrap_model_call(
        self,
        request: ModelRequest,
        handler: Callable[[ModelRequest], Awaitable[ModelResponse]],
    ) -> ModelResponse:
        """Async ``wrap_model_call``; the search runs in a worker thread."""
        if not self.recall:
            return await handler(request)
        hits = await asyncio.to_thread(self._recall, request, current_config())
        return await handler(self._inject(request, hits))

    def _recall(self, request: ModelRequest, config: Mapping[str, Any] | None) -> list[SearchHit]:
        user = self._user(getattr(request.runtime, "context", None), config)
        query = next((message_text(m) for m in reversed(request.messages)
                      if isinstance(m, HumanMessage) and message_text(m)), "")
        if not query:
            return []
        thread = thread_id(config)
        hits = self.mos.search(query, user_id=user, k=self.k, exclude_session=thread)
        return sorted(hits, key=_asked_or_answered)  # stable: statements first, best first within

    def _inject(self, request: ModelRequest, hits: Sequence[SearchHit]) -> ModelRequest:
        if not hits:
            return request
        text = self.formatter(hits)
        system = request.system_message
        if system is None:
            return request.override(system_message=SystemMessage(content=text))
        if isinstance(system.content, str):
            content: Any = f"{system.content}\n\n{text}" if system.content else text
        else:
            content = [*system.content, {"type": "text", "text": text}]
        return request.override(system_message=SystemMessage(content=content))

    # -- recording ------------------------------------------------------------------------

    def after_agent(self, state: AgentState, runtime: Runtime) -> dict[str, Any] | None:
        """Store the finished turn as episodic memory; changes no state."""
        if self.record:
            self._record(state, runtime, current_config())
        return None

    async def aafter_agent(self, state: AgentState, runtime: Runtime) -> dict[str, Any] | None:
        """Async ``after_agent``; the write runs in a worker thread."""
        if self.record:
            await asyncio.to_thread(self._record, state, runtime, current_config())
        return None

    def _record(self, state: Mapping[str, Any], runtime: Runtime, config: Mapping[str, Any] | None) -> None:
        messages = [m for m in _turn(state.get("messages") or [])
                    if worth_remembering(role_of(m), message_text(m), roles=self.remember_roles,
                                         questions=self.remember_questions)]
        if not messages:
            return
        user = self._user(getattr(runtime, "context", None), config)
        self.mos.add(
            [{"role": role_of(m), "content": message_text(m), "id": m.id} for m in messages],
            user_id=user, agent_id=self.agent_id, session_id=thread_id(config),
            metadata={"recorded_by": "langchain_memos.MemOSMiddleware"}, reason="agent turn",
        )

    def _user(self, context: Any, config: Mapping[str, Any] | None) -> str:
        return resolve_user_id(
            component="MemOSMiddleware", key=self.user_id_key, default=self.user_id,
            context=context, config=config,
        )


def _asked_or_answered(hit: SearchHit) -> bool:
    """A recorded question or assistant turn (ranked after statements on recall)."""
    return asked_or_answered(hit.memory)


def _turn(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    """The last turn's human message(s) and final AI answer, those with text."""
    start = max((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=None)
    if start is None:
        return []
    first = start
    while first > 0 and isinstance(messages[first - 1], HumanMessage):
        first -= 1
    humans = [m for m in messages[first:start + 1] if message_text(m)]
    answer = next(
        (m for m in reversed(messages[start + 1:])
         if isinstance(m, AIMessage) and not m.tool_calls and message_text(m)),
        None,
    )
    return humans + ([answer] if answer is not None else [])
