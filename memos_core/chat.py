"""Answering with memory: ``MemOS.chat`` on the local model, hot memories as a KV prefix.

For one question the scheduler's decisions say what goes into the prompt:

1. **Retrieve**: ``mos.search(query, user_id=..., k=k)`` -- the memories this user may read
   (their own and those shared with them), best first. Each hit counts as an access, which is
   what later makes a memory hot.
2. **Hot block**: the user's hot memories (those the scheduler promoted, current versions, the
   user's own only) form one system message whose KV cache the tier keeps. With
   ``kv_prefix=True`` the answer runs on that cache (built now if the tier does not have it);
   with ``kv_prefix=False`` the same message is sent as prompt text (same tokens, slower).
3. **Plaintext**: retrieved memories that are not in the hot block go into the last user turn,
   after the prefix and the ``history``::

       Here are some facts you remember:
       - <memory>
       ...

       Using these facts, answer: <query>

   (SmolLM2-135M answered third-person facts most reliably with this wording among those
   tried; the 135M model still struggles with first-person conversation turns.)

4. **Answer**: the local model decodes greedily; the result carries a :class:`ChatTrace` --
   which memories were used and from which tier, tokens served from the prefix and tokens
   prefilled, and the time to first token end to end.

**Parametric**: when the user has an active LoRA adapter (``mos.consolidate``), the answer
runs on the model with that adapter merged in; retrieved memories the adapter holds at their
current version are *not* put in the prompt (``trace.from_parametric``). The hot block's KV
cache belongs to the base model, so with an adapter it is sent as text
(``trace.fallback`` says so).

If the cached path cannot be used (the block exceeds the KV budget, the model's cache type is
unsupported, a chat template merges tokens across the prefix boundary) the block is sent as
text instead and ``trace.fallback`` says why; the answer is the same.

**Context window**: when the memories make the prompt (with ``max_new_tokens``) longer than
the model reads at once, memories are left out until it fits -- retrieved plaintext ones
lowest-ranked first, then hot ones (what stays of the hot block is sent as text) -- and
``trace.left_out`` names them (:mod:`memos_core.chat_window`). Only a query, history and
system text that do not fit with no memory at all are refused, and that is checked before the
search, so a refused chat counts no memory as read.

**Audit**: a hot block chat builds itself (its KV cache was not kept, e.g. right after a
member changed) writes the memories' text into the tier's directory, so it is audited as the
scheduler's builds are: ``chat:build`` with the block id, its memories' ``[id, version]``
and its tokens (agent :data:`CHAT_AGENT`), ``chat:drop`` when chat drops it again because
a member changed meanwhile, and ``chat:evict`` (in its owner's log) of each block the build
evicted to make room within the KV budget.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field

from memos_core.chat_prompt import (
    PLAINTEXT_HEADER,
    QUESTION_LEAD,
    SplitMessages,
    check_history,
    split_messages,
    system_turn,
    user_turn,
)
from memos_core.chat_window import check_bare, fit_memories
from memos_core.cube import MemCube, Tier
from memos_core.errors import InvalidInputError, MemOSError
from memos_core.runtime.errors import PrefixBoundaryError
from memos_core.validation import check_bool, check_k, check_name, check_text
from memos_core.vault.base import Actor

if TYPE_CHECKING:
    from memos_core.engine import MemoryEngine
    from memos_core.results import SearchHit
    from memos_core.runtime import GenerationResult, LocalModel, PrefixCache, TextStream
    from memos_core.tiers.activation import KVBlock, KVBlockInfo

__all__ = [  # the prompt's parts are :mod:`memos_core.chat_prompt`'s, named here as before
    "CHAT_AGENT", "PLAINTEXT_HEADER", "QUESTION_LEAD", "AsyncChatStream", "ChatAnswer",
    "ChatStream", "ChatTrace", "MemoryChat", "SplitMessages", "UsedMemory", "check_history",
    "split_messages", "system_turn", "user_turn"]

logger = logging.getLogger("memos_core")
#: the agent of the audit records chat writes (a hot block it built: ``chat:build``)
CHAT_AGENT = "memos-chat"
_STREAM_DONE = object()  # what a model step gives once the stream is exhausted


class UsedMemory(BaseModel):
    """One memory that went into the prompt, and from which tier."""

    model_config = ConfigDict(frozen=True)

    id: str
    version: int
    text: str
    tier: Tier = Field(description="'activation': in the hot block; 'plaintext': in the turn; "
                       "'parametric': answered by the active adapter, not in the prompt.")
    retrieved: bool = Field(description="Search found it for this query.")
    score: float | None = Field(default=None, description="Its search score, if retrieved.")


class ChatTrace(BaseModel):
    """What one chat did. Times are milliseconds; ``ttft_ms`` counts from the call (after a
    first-use model load, reported apart) to the first generated token."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    model_id: str
    adapter_version: str | None = Field(
        default=None, description="The LoRA adapter the answer ran on (version@weights hash).")
    memories: tuple[UsedMemory, ...] = Field(
        description="Hot block first, then plaintext, then parametric: what the model saw.")
    left_out: tuple[str, ...] = Field(
        default=(), description="Ids of the memories chosen for the prompt but left out so it "
        "fits the model's context window: retrieved plaintext ones lowest-ranked first, then "
        "hot ones, in the order they were dropped.")
    kv_prefix: bool = Field(description="The answer ran on the hot block's cached KV prefix.")
    block_id: str | None = Field(default=None, description="The hot block, when one was used.")
    block_built: bool = Field(default=False, description="Its KV cache was computed by this call.")
    fallback: str | None = Field(default=None, description="Why the cached path was not taken.")
    prefix_tokens: int = Field(ge=0, description="Tokens served from the KV prefix.")
    prefill_tokens: int = Field(ge=0, description="Tokens run through the model before decoding.")
    new_tokens: int = Field(ge=0, description="Tokens generated.")
    model_load_ms: float = Field(ge=0, description="Loading the model on first use (else 0).")
    retrieval_ms: float = Field(ge=0, description="Search.")
    prepare_ms: float = Field(ge=0, description="Hot block lookup, load or build; the prompt.")
    generation_ttft_ms: float = Field(ge=0, description="Model call to first token.")
    ttft_ms: float = Field(ge=0, description="Chat call to first token (end to end).")
    total_ms: float = Field(ge=0, description="Chat call to the last token.")
    finish_reason: Literal["eos", "length"]

    @property
    def from_activation(self) -> tuple[str, ...]:
        """Ids of the memories served from the hot block (KV prefix or its text)."""
        return tuple(m.id for m in self.memories if m.tier is Tier.ACTIVATION)

    @property
    def from_plaintext(self) -> tuple[str, ...]:
        """Ids of the retrieved memories put in the user turn as text."""
        return tuple(m.id for m in self.memories if m.tier is Tier.PLAINTEXT)

    @property
    def from_parametric(self) -> tuple[str, ...]:
        """Ids of the retrieved memories the adapter answered from (not in the prompt)."""
        return tuple(m.id for m in self.memories if m.tier is Tier.PARAMETRIC)

    def summary(self) -> str:
        """One line, e.g. ``"KV prefix 3 mem (212 tok) + 2 plaintext mem; prefilled 58 tok;
        TTFT 190 ms (model 150 ms); 12 new tok (eos)"`` (with ``"; 2 mem left out for
        length"`` after the plaintext count when memories were left out)."""
        hot, text = len(self.from_activation), len(self.from_plaintext)
        if self.kv_prefix:
            built = ", built" if self.block_built else ""
            block = f"KV prefix {hot} mem ({self.prefix_tokens} tok{built})"
        elif hot:
            why = f" [{self.fallback}]" if self.fallback else ""
            block = f"hot block as text {hot} mem{why}"
        else:
            block = "no hot block"
        if self.adapter_version is not None:
            block += f" + adapter {self.adapter_version} ({len(self.from_parametric)} mem)"
        left = f"; {len(self.left_out)} mem left out for length" if self.left_out else ""
        return (
            f"{block} + {text} plaintext mem{left}; prefilled {self.prefill_tokens} tok; "
            f"TTFT {self.ttft_ms:.0f} ms (model {self.generation_ttft_ms:.0f} ms); "
            f"{self.new_tokens} new tok ({self.finish_reason})"
        )


class ChatAnswer(BaseModel):
    """The model's answer and how it was made."""

    model_config = ConfigDict(frozen=True)

    text: str
    trace: ChatTrace


class ChatStream:
    """Text pieces of an answer as the model makes them; ``answer`` once exhausted.

    ``"".join(stream) == stream.answer.text``. Single use, not thread-safe.
    """

    def __init__(self, pieces: TextStream, finish: Callable[[GenerationResult], ChatAnswer]):
        self._pieces = pieces
        self._finish = finish
        self._answer: ChatAnswer | None = None

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        try:
            return next(self._pieces)
        except StopIteration:
            if self._answer is None:
                self._answer = self._finish(self._pieces.result)
            raise

    @property
    def answer(self) -> ChatAnswer:
        """The finished answer. Raises RuntimeError until the stream is exhausted."""
        if self._answer is None:
            raise RuntimeError("the stream is not finished: iterate it to the end first")
        return self._answer

    @property
    def trace(self) -> ChatTrace:
        return self.answer.trace


class AsyncChatStream:
    """``async for piece in stream``: a :class:`ChatStream` whose model steps run in a worker
    thread, so the event loop never blocks on the model.

    A read may be cancelled (``asyncio.wait_for(anext(stream), t)`` timing out, a cancelled
    task) and the stream read on: the cancelled read's model step goes on in its thread and
    the next read returns that step's piece, so no piece is lost or repeated and
    ``"".join(pieces) == stream.answer.text`` still holds. At most one step runs at a time:
    a consumer that stops early leaves at most that one step to finish, and the model is not
    run further. Readers in several tasks at once each get a different piece. Single use;
    ``answer`` and ``trace`` raise RuntimeError until the stream is exhausted.
    """

    def __init__(self, stream: ChatStream) -> None:
        self._stream = stream
        # the step whose piece no read has taken yet (its read was cancelled, or is waiting);
        # a thread's future, not a loop's, so it keeps its piece whatever befalls the reader
        self._step: concurrent.futures.Future[object] | None = None

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    async def __anext__(self) -> str:
        while True:
            step = self._step
            if step is None or step.cancelled():
                step = concurrent.futures.Future()
                asyncio.get_running_loop().run_in_executor(None, self._advance, step)
                self._step = step
            try:  # shielded: cancelling this read must not cancel the step
                piece = await asyncio.shield(asyncio.wrap_future(step))
            except asyncio.CancelledError:
                raise  # the step goes on; the next read takes its piece
            except BaseException:
                if self._step is step:  # the model's error is this read's, as from next()
                    self._step = None
                raise
            if self._step is step:  # else a concurrent read took this piece: take the next
                self._step = None
                break
        if piece is _STREAM_DONE:
            raise StopAsyncIteration
        return cast(str, piece)

    def _advance(self, step: concurrent.futures.Future[object]) -> None:
        """One model step, in a worker thread; its piece (or error) goes to ``step``."""
        if not step.set_running_or_notify_cancel():
            return
        try:
            step.set_result(next(self._stream, _STREAM_DONE))
        except BaseException as exc:  # the reader gets it, as from next()
            step.set_exception(exc)

    @property
    def answer(self) -> ChatAnswer:
        return self._stream.answer

    @property
    def trace(self) -> ChatTrace:
        return self._stream.trace


@dataclass
class _Prepared:
    """Everything decided before the model runs."""

    started: float
    user_id: str
    query: str
    turns: list[dict[str, str]]
    system: str | None
    prefix: PrefixCache | None
    messages: list[dict[str, str]]
    used: list[UsedMemory]
    plain: list[MemCube]  # the retrieved memories put in the user turn, best first
    hot: list[MemCube]  # the hot block's memories, in block order
    model: LocalModel | None = None  # the adapted model, when the user has an active adapter
    block_id: str | None = None
    block_built: bool = False
    fallback: str | None = None
    left_out: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Request:
    """One chat call's arguments, checked (see :func:`_check_request`)."""

    query: str
    turns: list[dict[str, str]]
    system: str | None
    user_id: str
    k: int
    stream: bool
    kv_prefix: bool
    max_new_tokens: int


def _check_request(query: str | None, history: Sequence[Mapping[str, Any]] | None,
                   messages: Sequence[Any] | None, system: str | None, user_id: str, k: int,
                   stream: bool, kv_prefix: bool, max_new_tokens: int) -> _Request:
    """The arguments of :meth:`MemoryChat.ask`, checked (its ``Raises`` but for the context
    window and the model), ``messages`` split into query, history and system."""
    if messages is not None:
        if query is not None or history is not None or system is not None:
            raise InvalidInputError(
                "pass either messages=[...] or query (with history/system), not both")
        split = split_messages(messages)
        query, turns, system = split.query, split.history, split.system
    elif query is None:
        raise InvalidInputError("nothing to answer: pass a query or messages=[...]")
    else:
        turns = check_history(history)
    query = check_text(query, "query")
    if system is not None:
        system = check_text(system, "system") if str(system).strip() else None
    user_id = str(check_name(user_id, "user_id"))
    k = check_k(k)
    stream = check_bool(stream, "stream")  # "no" would stream by its truthiness
    kv_prefix = check_bool(kv_prefix, "kv_prefix")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or (
        max_new_tokens < 1
    ):
        raise InvalidInputError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    return _Request(query=query, turns=turns, system=system, user_id=user_id, k=k,
                    stream=stream, kv_prefix=kv_prefix, max_new_tokens=max_new_tokens)


class MemoryChat:
    """Chat with memory for one store; see the module docstring. Made by the engine."""

    def __init__(self, engine: MemoryEngine) -> None:
        self.engine = engine

    def ask(
        self,
        query: str | None = None,
        *,
        user_id: str,
        history: Sequence[Mapping[str, Any]] | None = None,
        messages: Sequence[Any] | None = None,
        system: str | None = None,
        k: int = 5,
        max_new_tokens: int = 128,
        stream: bool = False,
        kv_prefix: bool = True,
    ) -> ChatAnswer | ChatStream:
        """Answer ``query`` for ``user_id``: a :class:`ChatAnswer`, or with ``stream=True`` a
        :class:`ChatStream` (the model runs as it is iterated).

        Either ``query`` (with optional ``history`` of user/assistant turns and ``system``
        instructions) or ``messages``, a whole chat read by :func:`split_messages` (its
        system messages become ``system``). The caller's ``system`` text opens the system
        turn, before the memory-aware part; with a hot block this sends the block as text
        (its cached KV prefix starts with the default instructions), and ``trace.fallback``
        says so.

        Memories that would make the prompt with ``max_new_tokens`` longer than the model's
        context window are left out (plaintext lowest-ranked first, then hot ones; see
        :mod:`memos_core.chat_window`); ``trace.left_out`` names them.

        Raises:
            InvalidInputError: bad query, messages, user, history, system, ``k`` or
                ``max_new_tokens``; both ``query`` and ``messages`` or neither; a query,
                history and system text that with ``max_new_tokens`` do not fit the context
                window even with no memory in the prompt.
            ModelLoadError: the local model cannot be loaded.
        """
        request = _check_request(query, history, messages, system, user_id, k, stream,
                                 kv_prefix, max_new_tokens)
        load_started = time.perf_counter()
        loaded = self.engine.model_loaded and self.engine.tier_if(False) is not None
        tier = self.engine.tier
        load_ms = 0.0 if loaded else 1000.0 * (time.perf_counter() - load_started)
        prepared = self._prepare(request.query, request.user_id, request.turns, request.k,
                                 request.kv_prefix, request.system, request.max_new_tokens)
        prepared.timings["model_load_ms"] = load_ms
        model = prepared.model or tier.model
        gen_started = time.perf_counter()
        output = self._generate(model, prepared, request.max_new_tokens, request.stream)
        prepared.timings["setup_ms"] = 1000.0 * (gen_started - prepared.started)

        def finish(result: GenerationResult) -> ChatAnswer:
            trace = self._trace(prepared, result, model.model_id, model.adapter_version)
            return ChatAnswer(text=result.text, trace=trace)

        if request.stream:
            return ChatStream(cast("TextStream", output), finish)
        return finish(cast("GenerationResult", output))

    def _generate(self, model: Any, prepared: _Prepared, max_new_tokens: int,
                  stream: bool) -> GenerationResult | TextStream:
        """Run the model on the prepared prompt (from the hot block's KV prefix if there is
        one); a prefix whose boundary does not fit the prompt is sent as text instead."""
        try:
            return model.generate(  # type: ignore[no-any-return]
                prepared.prefix, prepared.messages, max_new_tokens=max_new_tokens, stream=stream
            )
        except PrefixBoundaryError as exc:  # raised before anything runs
            if prepared.prefix is None:
                raise
            # the block as text from the memories as the store holds them, never from the
            # prefix's messages: those may come from a file, and a file is derived, not trusted
            prepared.messages = self._messages(prepared, prepared.plain, prepared.hot)
            prepared.prefix, prepared.fallback = None, f"{type(exc).__name__}"
            return model.generate(  # type: ignore[no-any-return]
                None, prepared.messages, max_new_tokens=max_new_tokens, stream=stream)

    def _prepare(
        self, query: str, user_id: str, turns: list[dict[str, str]], k: int, kv_prefix: bool,
        system: str | None, max_new_tokens: int,
    ) -> _Prepared:
        """Check that the prompt fits without memories, search, pick the hot block and the
        plaintext, compose the prompt, fit it into the model's context window.

        Raises:
            InvalidInputError: the prompt does not fit the context window even with no
                memory in it (raised before the search, so no memory counts as read).
        """
        started = time.perf_counter()
        adapted = self.engine.parametric.model_for(user_id)
        prepared = _Prepared(started=started, user_id=user_id, query=query, turns=turns,
                             system=system, prefix=None, messages=[], used=[], plain=[],
                             hot=[], model=adapted)
        # refused before the search: every hit counts as an access, and a refused chat must
        # not make memories hot (nor consolidation candidates)
        check_bare(adapted or self.engine.tier.model, max_new_tokens,
                   self._messages(prepared, [], []))
        searched = time.perf_counter()
        hits = self.engine.mos.search(query, user_id=user_id, k=k)
        retrieved = time.perf_counter()
        hot = self.engine.executor.hot_memories(user_id)
        hot_ids = {c.id for c in hot}
        held = self.engine.parametric.held(user_id) if adapted is not None else frozenset()
        scores = {h.id: h.score for h in hits}
        plain: list[SearchHit] = [h for h in hits if h.id not in hot_ids and h.id not in held]
        used = [_used(c, Tier.ACTIVATION, scores.get(c.id)) for c in hot]
        used += [_used(h.memory, Tier.PLAINTEXT, h.score) for h in plain]
        used += [_used(h.memory, Tier.PARAMETRIC, h.score) for h in hits if h.id in held]
        prepared.used, prepared.plain, prepared.hot = used, [h.memory for h in plain], hot
        if hot and system is None and adapted is None and kv_prefix:
            self._attach_block(prepared)
        else:
            prepared.messages = self._messages(prepared, prepared.plain, hot)
            if hot and system is not None:  # the cached prefix opens with the default text
                prepared.fallback = "caller system message: the hot block is sent as text"
            elif hot and adapted is not None:  # the stored KV caches are the base model's
                prepared.fallback = "adapter active: the KV prefix belongs to the base model"
        self._fit(prepared, adapted or self.engine.tier.model, max_new_tokens, scores)
        now = time.perf_counter()
        prepared.timings.update(retrieval_ms=1000.0 * (retrieved - searched),
                                prepare_ms=1000.0 * (now - retrieved + searched - started))
        return prepared

    def _messages(self, prepared: _Prepared, plain: Sequence[MemCube],
                  hot: Sequence[MemCube]) -> list[dict[str, str]]:
        """The whole prompt with these memories, the hot block (if any) as text: the system
        turn (caller's instructions, then the block or the default instructions), the
        history, the user turn."""
        tier = self.engine.tier
        if hot:
            opening = tier.messages_for(hot)
            opening[0] = {"role": "system",
                          "content": system_turn(prepared.system, opening[0]["content"])}
        else:
            opening = [{"role": "system",
                        "content": system_turn(prepared.system, tier.instructions)}]
        return [*opening, *self._after_block(prepared, plain)]

    @staticmethod
    def _after_block(prepared: _Prepared, plain: Sequence[MemCube]) -> list[dict[str, str]]:
        """What follows the system turn (or the cached block): the history, then the user
        turn with these plaintext memories."""
        question = user_turn(prepared.query, plain, prepared.user_id)
        return [*prepared.turns, {"role": "user", "content": question}]

    def _fit(self, prepared: _Prepared, model: LocalModel, max_new_tokens: int,
             scores: Mapping[str, float]) -> None:
        """Leave memories out until the prompt fits the context window (see
        :mod:`memos_core.chat_window`); a shortened hot block is sent as text."""
        fitted = fit_memories(model, max_new_tokens, partial(self._messages, prepared),
                              prepared.plain, prepared.hot, viewer=prepared.user_id,
                              scores=scores)
        if fitted is None:
            return
        left = set(fitted.left_out)
        dropped_hot = len(fitted.hot) < len(prepared.hot)
        if dropped_hot and prepared.prefix is not None:
            kept = len(fitted.hot)
            prepared.fallback = (
                f"prompt over the context window: {len(prepared.hot) - kept} hot memories "
                f"left out, {kept} sent as text")
            prepared.prefix = prepared.block_id = None
        prepared.plain, prepared.hot, prepared.left_out = fitted.plain, fitted.hot, fitted.left_out
        prepared.used = [u for u in prepared.used
                         if u.id not in left or u.tier is Tier.PARAMETRIC]
        if prepared.prefix is not None:  # the cached block stays whole: only the turn changes
            prepared.messages = self._after_block(prepared, fitted.plain)
        else:
            prepared.messages = self._messages(prepared, fitted.plain, fitted.hot)

    def _attach_block(self, prepared: _Prepared) -> None:
        """Use the hot block's KV cache (building it if the tier lacks it), else its text."""
        tier = self.engine.tier
        hot = prepared.hot
        try:
            block = tier.get(hot)
            if block is None:
                fresh: list[Any] = []  # another thread may have built it meanwhile
                evicted: list[KVBlockInfo] = []
                try:
                    block = tier.get_or_build(hot, on_build=fresh.append,
                                              on_evict=evicted.append)
                finally:  # their files are gone, built or not
                    for info in evicted:
                        self.engine.executor.audit_eviction(info, "chat:evict", CHAT_AGENT)
                prepared.block_built = bool(fresh)
                if fresh:
                    self._audit_block(prepared.user_id, "chat:build", block)
                if not self.engine.executor.still_hot(prepared.user_id, hot):
                    # a memory of the block changed or was forgotten while it was built (the
                    # forget's purge may have run before the file was written): drop it and
                    # send what is hot now as text
                    if tier.drop(block.block_id):
                        self._audit_block(prepared.user_id, "chat:drop", block)
                    now = self.engine.executor.hot_memories(prepared.user_id)
                    was = {(u.id, u.version): u for u in prepared.used
                           if u.tier is Tier.ACTIVATION}
                    prepared.used = [
                        *(was.get((c.id, c.version)) or _used(c, Tier.ACTIVATION, None)
                          for c in now),
                        *(u for u in prepared.used if u.tier is not Tier.ACTIVATION)]
                    prepared.fallback = "the hot memories changed while their block was built"
                    prepared.hot = now
                    prepared.messages = self._messages(prepared, prepared.plain, now)
                    return
        except (MemOSError, ValueError, OSError) as exc:  # budget, unsupported cache type,
            # the block's file could not be written (a full disk, no permission): the answer
            # does not need the cache, so the block goes as text and the reason is traced
            if isinstance(exc, OSError):
                logger.warning("the KV cache of the hot block could not be built; it is sent "
                               "as text", exc_info=True)
            prepared.fallback = f"{type(exc).__name__}: {exc}"
            prepared.messages = self._messages(prepared, prepared.plain, hot)
            return
        prepared.prefix, prepared.block_id = block.prefix, block.block_id
        prepared.messages = self._after_block(prepared, prepared.plain)

    def _audit_block(self, owner: str, action: Literal["chat:build", "chat:drop"],
                     block: KVBlock) -> None:
        """Audit a hot block this chat built (its file holds the memories' text) or dropped,
        as the scheduler audits its own (``schedule:build`` / ``schedule:drop``). A build
        whose record cannot be written is dropped: no block file stays unaudited."""
        details: dict[str, Any] = {"block_id": block.block_id}
        if action == "chat:build":
            details.update(memories=[list(m) for m in block.memories], tokens=block.num_tokens)
        reason = ("hot block built for a chat" if action == "chat:build"
                  else "hot block changed while a chat built it")
        try:
            self.engine.store.vault.audit(Actor(owner, CHAT_AGENT, reason), action,
                                          details=details)
        except BaseException:
            if action == "chat:build":
                self.engine.tier.drop(block.block_id)
            raise

    def _trace(self, prepared: _Prepared, result: GenerationResult, model_id: str,
               adapter_version: str | None = None) -> ChatTrace:
        gen = result.trace
        setup = prepared.timings["setup_ms"]
        return ChatTrace(
            user_id=prepared.user_id,
            model_id=model_id,
            adapter_version=adapter_version,
            memories=tuple(prepared.used),
            kv_prefix=gen.used_kv_prefix,
            block_id=prepared.block_id if gen.used_kv_prefix else None,
            block_built=prepared.block_built,
            fallback=prepared.fallback,
            left_out=prepared.left_out,
            prefix_tokens=gen.prefix_tokens,
            prefill_tokens=gen.prefill_tokens,
            new_tokens=gen.new_tokens,
            model_load_ms=prepared.timings["model_load_ms"],
            retrieval_ms=prepared.timings["retrieval_ms"],
            prepare_ms=prepared.timings["prepare_ms"],
            generation_ttft_ms=gen.ttft_ms,
            ttft_ms=setup + gen.ttft_ms,
            total_ms=setup + gen.total_ms,
            finish_reason=gen.finish_reason,
        )


def _used(cube: MemCube, tier: Tier, score: float | None) -> UsedMemory:
    return UsedMemory(id=cube.id, version=cube.version, text=cube.text, tier=tier,
                      retrieved=score is not None, score=score)
