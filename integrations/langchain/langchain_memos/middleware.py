"""``MemOSMiddleware``: long-term memory for a ``create_agent`` agent, by constructor only.

Before every model call it searches MemOS for memories relevant to the latest user
message and appends them to the system message of *that call* (``wrap_model_call``), so
they reach the model but are never written into the thread state. After each agent turn
(``after_agent``) it stores what the user *told* in the turn as episodic memories of the
user, with the thread id as their session: by default user statements only -- questions,
small talk, requests to forget, turns in which the model used a memory tool and the
assistant's answers stay in the conversation (the checkpointer's thread), out of searched
memory, so asking again does not find the old question instead of the fact (of a question
that also tells something, what it tells is recorded). A message is
recorded once: replaying or forking a thread from an earlier checkpoint does not record
it again. Both hooks have sync and async versions, so ``invoke`` and ``ainvoke`` both
work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, NamedTuple

from langchain.agents.middleware import AgentMiddleware, AgentState, ModelRequest, ModelResponse
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from memos_core import resolve_memos
from memos_core import InvalidInputError, MemCube, MemOS, SearchHit, State
from memos_core.integration import (
    in_thread,
    FORGOTTEN,
    TOOL_NAMES,
    LateWrite,
    MessageRedactor,
    asked_or_answered,
    late_write,
    quoting,
    recall_query,
    remembered_text,
    shown_text,
)

from langchain_memos._shared import (
    current_config,
    message_text,
    resolve_user_id,
    role_of,
    storable,
    thread_id,
)
from langchain_memos.chat_history import recent_forgets
from langchain_memos.tools import create_memory_tools

Formatter = Callable[[Sequence[SearchHit]], str]

DEFAULT_HEADING = "Relevant memories about the user, from earlier conversations (best first):"

#: The memory tools that change memory (:func:`create_memory_tools`, LlamaIndex's
#: ``memos_tools``): in a turn that calls one, the model stored, updated, forgot or
#: compressed memories itself, so the turn is not recorded (a search does not count).
MEMORY_TOOL_NAMES = frozenset(TOOL_NAMES) - {"search_memories"}
#: Every lifecycle state: a message is recorded once, whatever became of its memory since.
_ALL_STATES = tuple(s.value for s in State)
#: Page size of the lookup of a thread's recorded memories.
_PAGE = 1000

logger = logging.getLogger(__name__)


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
      of the latest human message. Memories made from a message the model is sent anyway
      (one of the call's messages, by id) are left out; those of the current thread whose
      messages are gone from the conversation (trimmed, summarized) are recalled like any
      other. Nothing is injected when there is no human message or no hit. The injected
      text is not saved in the thread state. Recall is best effort: a message MemOS would
      refuse as a query (a NUL character, an unpaired surrogate, over its 1 MB text limit)
      is searched without those characters and cut to the limit, with a log warning; the
      turn goes on either way.
    * Recording: after each turn, the turn's human message(s) and final AI answer (text
      only; tool calls and tool results are never recorded) are filtered by
      ``memos_core.integration.remembered_text``: messages of ``remember_roles`` (default
      ``("user",)``) that are not small talk, not requests to forget and not questions
      (unless ``remember_questions=True``) become episodic memories; of a question that
      also tells something ("My wife's name is Ana. Can you remind me of her
      birthday?"), the sentences that tell do (its id is still the memory's source, so a
      forget blanks the whole message in the thread). A message whose text MemOS does
      not store (see recall) stays in the thread and is not recorded, with a log warning.
      An answer that quotes a memory the user forgot in the last minute (the turn read it
      before the forget) is not recorded; one recorded while that forget ran is forgotten
      right after. A memory shared with the user by someone else is never taken for one of theirs. A
      turn in which the model changed memory with a tool (:data:`MEMORY_TOOL_NAMES`: it
      stored, updated, forgot or compressed memories itself) records nothing, nor does a
      turn with nothing left.
    * Once per message: a message of the thread that is already the source of a memory of
      the user (in any state, forgotten included), or whose text a current memory of the
      thread holds, is not recorded again -- replaying or forking the thread from an
      earlier checkpoint (``invoke(None, config)``) or invoking it with no new message
      records nothing new. A message edited in place (same id, new text, e.g.
      ``update_state`` before a fork) is recorded anew and supersedes the memory of its old
      text.
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
        # roles whose messages may be memories of the thread (the user's always: other
        # components, or this one with other settings, may have recorded them)
        self._recorded_roles = frozenset({"user", *self.remember_roles})
        self.formatter: Formatter = formatter or format_memories
        self.agent_id = agent_id
        self.tools = create_memory_tools(mos, user_id=user_id, user_id_key=user_id_key) if memory_tools else []
        #: recorded answers may quote a memory forgotten while the turn ran (the user's own
        #: messages are new input)
        self._forgets = recent_forgets(mos) if "assistant" in self.remember_roles else None

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
        text = next((message_text(m) for m in reversed(request.messages)
                     if isinstance(m, HumanMessage) and message_text(m)), "")
        query = recall_query(text) if text else None
        if query is None:
            return []
        # what the call holds already: memories made from its messages (by id). A memory of
        # this thread whose message was trimmed or summarized away is recalled again.
        present = [str(m.id) for m in request.messages
                   if m.id and role_of(m) in self._recorded_roles and message_text(m)]
        hits = self.mos.search(query, user_id=user, k=self.k, exclude_sources=present)
        # stable: statements first, best first within; a memory another user shared names
        # its owner, so the model does not take it for something this user said
        return [_shown_to(h, user) for h in sorted(hits, key=_asked_or_answered)]

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
            await in_thread(self._record, state, runtime, current_config())
        return None

    def _record(self, state: Mapping[str, Any], runtime: Runtime, config: Mapping[str, Any] | None) -> None:
        humans, answer, tools = _turn(state.get("messages") or [])
        if tools & MEMORY_TOOL_NAMES:
            return  # the model stored, updated or forgot memories itself in this turn
        messages = [said for said in map(self._said, [*humans, *answer]) if said is not None]
        if not messages:
            return
        with late_write(self.mos, self._forgets) as late:  # before it looks at recent forgets
            self._record_turn(messages, config, self._user(getattr(runtime, "context", None),
                                                           config), late)

    def _record_turn(self, messages: list[Said], config: Mapping[str, Any] | None, user: str,
                     late: LateWrite) -> None:
        if self._forgets is not None:  # an answer quoting a memory forgotten meanwhile
            forgotten = self._forgets.redactors(user)
            messages = [m for m in messages if not _quotes(m, forgotten)]
        session = thread_id(config)
        new, edited = self._unrecorded(messages, user, session)
        meta = {"recorded_by": "langchain_memos.MemOSMiddleware"}
        recorded: list[MemCube] = []
        if new:
            recorded += self.mos.add(
                [_as_item(m) for m in new], user_id=user, agent_id=self.agent_id,
                session_id=session, metadata=meta, reason="agent turn",
            )
        for said, old in edited:
            try:
                recorded += self.mos.add(
                    [_as_item(said)], user_id=user, agent_id=self.agent_id,
                    session_id=session, metadata=meta, supersedes=old.id,
                    reason="agent turn (edited message)",
                )
            except InvalidInputError:
                # superseded already: another run of this thread recorded the edit meanwhile
                # (MemOS refuses to supersede a memory twice); anything else is the caller's
                if self.mos.get(old.id, user_id=user).superseded_by is None:
                    raise
        for cube in quoting(recorded, late.missed(user)):  # a forget ran meanwhile
            self.mos.forget(cube.id, user_id=user, agent_id=self.agent_id,
                            reason="recorded answer quoted a memory forgotten meanwhile")

    def _said(self, message: BaseMessage) -> Said | None:
        """What of ``message`` to record (``memos_core.integration.remembered_text``: the
        whole message, or the statements of one that asks), or None."""
        text = message_text(message)
        if FORGOTTEN in text:  # redacted by a forget
            return None
        said = remembered_text(role_of(message), text, roles=self.remember_roles,
                               questions=self.remember_questions)
        if not said:
            return None
        if not storable(Said(message, said).memory_text):
            # the message stays in the thread; only its memory is left out
            logger.warning("MemOSMiddleware: message %s was not recorded as a memory: MemOS "
                           "does not store its text (a NUL character, an unpaired surrogate "
                           "or more than the size limit)", message.id or "without id")
            return None
        return Said(message, said)

    def _unrecorded(self, messages: Sequence[Said], user: str, session: str | None
                    ) -> tuple[list[Said], list[tuple[Said, MemCube]]]:
        """``messages`` not recorded in this thread yet, and those edited since their memory
        was recorded (same id, other text) with the memory their new text supersedes.

        Recorded already: a message that is the source of a memory of the thread (by id,
        in any state -- a forgotten memory's message is not recorded again either), or one
        whose text a current memory of the thread holds (a replay from the checkpoint of
        the input applies the input again, under a new message id). The lookup reads the
        thread's episodic memories (the vault's session filter). Without a thread (no
        checkpointer) every call brings its own messages and nothing is looked up."""
        if session is None:
            return list(messages), []
        ids = {str(m.message.id) for m in messages if m.message.id}
        sources: dict[str, list[MemCube]] = {}
        said: set[str] = set()
        offset = 0
        while True:
            page = self.mos.list(user_id=user, session_id=session, types=["episode"],
                                 states=_ALL_STATES, include_superseded=True,
                                 limit=_PAGE, offset=offset)
            for cube in page:
                if cube.user_id != user:  # shared with the user: another's conversation
                    continue
                for source in ids.intersection(cube.provenance.source_message_ids):
                    sources.setdefault(source, []).append(cube)
                if cube.state is not State.DELETED and cube.superseded_by is None:
                    said.add(cube.text)
            if len(page) < _PAGE:
                break
            offset += _PAGE
        new: list[Said] = []
        edited: list[tuple[Said, MemCube]] = []
        for message in messages:
            text = message.memory_text
            found = sources.get(str(message.message.id)) if message.message.id else None
            if not found:
                if text not in said:
                    new.append(message)
                    said.add(text)
                continue
            if any(c.state is State.DELETED for c in found):
                continue  # forgotten: the user asked for it to go
            current = [c for c in found if c.superseded_by is None]
            if not current or any(self._made_from(c, text, user) for c in current):
                continue
            edited.append((message, current[-1]))
        return new, edited

    def _made_from(self, cube: MemCube, text: str, user: str) -> bool:
        """Whether ``cube`` was recorded with ``text`` (its first version's text: an update
        of the memory since does not make its message new)."""
        if cube.text == text:
            return True
        return cube.version > 1 and bool(self.mos.history(cube.id, user_id=user)[0].text == text)

    def _user(self, context: Any, config: Mapping[str, Any] | None) -> str:
        return resolve_user_id(
            component="MemOSMiddleware", key=self.user_id_key, default=self.user_id,
            context=context, config=config,
        )


def _asked_or_answered(hit: SearchHit) -> bool:
    """A recorded question or assistant turn (ranked after statements on recall)."""
    return asked_or_answered(hit.memory)


def _turn(messages: Sequence[BaseMessage]) -> tuple[list[BaseMessage], list[BaseMessage], set[str]]:
    """The last turn: its human message(s) with text, its final AI answer with text (a
    list of at most one) and the names of the tools the model called in it."""
    start = max((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=None)
    if start is None:
        return [], [], set()
    first = start
    while first > 0 and isinstance(messages[first - 1], HumanMessage):
        first -= 1
    humans = [m for m in messages[first:start + 1] if message_text(m)]
    after = messages[start + 1:]
    tools = {str(call.get("name")) for m in after if isinstance(m, AIMessage) for call in m.tool_calls}
    answer = next(
        (m for m in reversed(after)
         if isinstance(m, AIMessage) and not m.tool_calls and message_text(m)),
        None,
    )
    return humans, [answer] if answer is not None else [], tools


class Said(NamedTuple):
    """A message of the turn and what of it is recorded (all its text, or its statements)."""

    message: BaseMessage
    text: str

    @property
    def memory_text(self) -> str:
        """The text ``MemOS.add`` gives its memory ("role: text")."""
        return f"{role_of(self.message)}: {self.text}"


def _quotes(said: Said, forgotten: Sequence[MessageRedactor]) -> bool:
    """Whether ``said``, not the user's own message, quotes a forgotten memory."""
    if role_of(said.message) == "user":
        return False
    return any(r.text(said.memory_text) != said.memory_text for r in forgotten)


def _as_item(said: Said) -> dict[str, Any]:
    """What of a message is recorded, as ``MemOS.add`` takes it (the message id becomes the
    memory's source)."""
    return {"role": role_of(said.message), "content": said.text, "id": said.message.id}


def _shown_to(hit: SearchHit, user: str) -> SearchHit:
    """``hit`` with its memory's text as ``user``'s prompt shows it (``shown_text``)."""
    text = shown_text(hit.memory, user)
    if text == hit.memory.text:
        return hit
    return hit.model_copy(update={"memory": hit.memory.model_copy(update={"text": text})})
