"""``ChatMemOS``: a LangChain chat model over MemOS's local model with its memory tiers.

Each call answers the last human message with ``mos.chat`` for one user: the user's hot
memories as a cached KV prefix, other retrieved memories as text, and the user's active LoRA
adapter if one was consolidated (see ``memos_core.chat``). Earlier messages become the chat
history. The answer's ``response_metadata`` says which memories were used and from which
tier; ``usage_metadata`` counts prefix, prefilled and generated tokens.

The model is the local one MemOS runs (SmolLM2-135M-Instruct unless ``mos.attach_model``
gave another). It does not call tools: ``bind_tools`` raises, so this model cannot drive a
tool-calling ``create_agent``; use it for answering, or in chains.

It never uses a LangChain LLM cache (``cache=False``, fixed): an answer depends on the user
and on that user's memories at the time of the call, neither of which is in a cache's key
(the prompt and the model's parameters), so a cache would serve one user's answer to another
and keep serving an answer made from a memory that was since forgotten.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

from langchain_core.caches import BaseCache
from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import LangSmithParams, LanguageModelInput
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import AliasChoices, ConfigDict, Field, field_validator

from langchain_memos._shared import (
    configurable,
    context_value,
    current_config,
    resolve_user_id,
    run_context,
)
from memos_core import InvalidInputError, MemOS, resolve_memos
from memos_core.integration import check_name

#: ``model`` (and ``ls_model_name``) until the local model is loaded.
MODEL_NAME = "memos-local"
_CONFIG_USER = "_memos_config_user"  # kwarg carrying config["configurable"][key] to _generate


def to_chat_messages(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    """Check ``messages`` are LangChain messages; ``MemOS.chat(messages=...)`` reads them
    (:func:`memos_core.chat.split_messages`: system messages become the caller's
    instructions, human/ai the history, the last human message the question)."""
    if not messages:
        raise InvalidInputError("ChatMemOS: no messages; pass at least one human message.")
    for index, message in enumerate(messages):
        if not isinstance(message, BaseMessage):
            raise InvalidInputError(
                f"ChatMemOS: messages[{index}] is a {type(message).__name__}, not a LangChain "
                "message.")
    return list(messages)


def _check_temperature(value: Any) -> float | None:
    """``None`` or 0: the local model decodes greedily, sampling is not offered."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != 0:
        raise InvalidInputError(
            f"ChatMemOS: temperature={value!r} is not supported; the local model decodes "
            "greedily (use temperature=0 or leave it unset).")
    return 0.0


def _check_cache(value: Any) -> bool:
    """Only ``False``: a LangChain LLM cache keys an answer on the prompt and the model's
    parameters, but a ``ChatMemOS`` answer also depends on who asks and what that user's
    memory holds at the time, so a cache (the global one, ``None``'s meaning in LangChain)
    would answer one user with another's memories, or with a forgotten memory."""
    if value is False:
        return False
    what = ("a BaseCache" if isinstance(value, BaseCache)
            else "the global LLM cache (set_llm_cache)" if value in (True, None)
            else repr(value))
    raise InvalidInputError(
        f"ChatMemOS: cache={value!r} is not supported: it would use {what}, whose key holds "
        "the prompt but not the user or the user's memories, so one user could be served "
        "another's answer, or an answer made from a memory since forgotten. ChatMemOS never "
        "caches; leave cache unset (False).")


def _check_mos(value: Any) -> MemOS:
    """The ``MemOS`` that ``mos=`` stands for (a ``postgresql://`` URL: the process's shared
    one, as for the other components); anything else is an ``InvalidInputError`` now rather
    than an ``AttributeError`` at the first call."""
    mos = resolve_memos(value)
    if not isinstance(mos, MemOS):
        raise InvalidInputError(
            f"ChatMemOS needs a memos_core.MemOS (or a postgresql:// URL), got "
            f"{type(value).__name__}. Open one with MemOS(data_dir) and pass it as mos=.")
    return mos


def _check_user(value: Any) -> str | None:
    """``user_id=`` checked now: an empty one ("") was accepted and failed only at the first
    call. None: the user comes from each call (runtime context or config)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(
            f"ChatMemOS: user_id must be a non-empty str or None (the user of each call's "
            f"runtime context or config), got {value!r}; e.g. ChatMemOS(mos=mos, "
            "user_id='alice').")
    return check_name(value, "user_id")  # its length and characters, as MemOS checks them


def _cut_at_stop(text: str, stop: Sequence[str] | None) -> tuple[str, bool]:
    """``text`` up to the first stop sequence, and whether one was found."""
    if not stop:
        return text, False
    cuts = [text.find(s) for s in stop if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


class ChatMemOS(BaseChatModel):
    """Chat with MemOS memory on the local model (KV tier, plaintext, LoRA adapter).

    Args:
        mos: an open ``memos_core.MemOS`` (not owned: close it yourself).
        user_id: whose memories answer. Else the user of the call's LangGraph runtime
            context (``graph.invoke(..., context=...)``, as ``create_agent(context_schema=...)``
            passes it), else ``config["configurable"][user_id_key]`` of the call
            (``invoke(..., config=...)``) or of the running graph; else ``MissingUserError``.
        k: memories retrieved per question.
        max_tokens: answer length bound (alias ``max_new_tokens``; greedy decoding).
        temperature: ``None`` or ``0`` (the local model decodes greedily; anything else is
            refused rather than ignored).
        stop: default stop sequences (a call's ``stop`` adds to them).
        model: the name reported as ``ls_model_name`` / ``response_metadata["model_name"]``
            before the local model is loaded; which model answers is the MemOS's
            (``mos.attach_model``, else SmolLM2-135M-Instruct).
        timeout, max_retries: accepted for the standard interface; a local model makes no
            network call, so neither has an effect.
        kv_prefix: serve the hot block from its cached KV prefix (``False``: as prompt text).
        cache: always ``False``; ``True``, ``None`` (LangChain's "the global cache") or a
            ``BaseCache`` raise ``InvalidInputError``: an answer depends on the user and
            the user's current memories, which no LLM cache key holds.

    Input: system, human and ai messages, text only, ending with a human message (the
    question); read by ``memos_core.chat.split_messages``, the rule ``MemOSLLM`` also
    follows. System messages open the memory-aware system turn (with a hot block, the block
    is then sent as text: ``response_metadata["trace"]["fallback"]`` says so). AI messages
    that only carry tool calls are left out; tool messages are refused. ``stop`` sequences
    cut the answer (streaming stops early). No tool binding: the 135M local model does not
    call tools (``bind_tools`` raises ``NotImplementedError`` saying what to use instead).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    mos: Any = Field(exclude=True, description="The open memos_core.MemOS.")
    user_id: str | None = None
    user_id_key: str = "user_id"
    k: int = Field(default=5, ge=1)
    max_new_tokens: int = Field(default=128, ge=1,
                                validation_alias=AliasChoices("max_new_tokens", "max_tokens"))
    temperature: float | None = None
    stop: list[str] | None = Field(default=None, validation_alias=AliasChoices("stop", "stop_sequences"))
    model: str = Field(default=MODEL_NAME, validation_alias=AliasChoices("model", "model_name"))
    timeout: float | None = None
    max_retries: int | None = None
    kv_prefix: bool = True
    # frozen: ``model.cache = ...`` after construction raises too (see _check_cache)
    cache: BaseCache | bool | None = Field(default=False, exclude=True, frozen=True)

    def __init__(self, **data: Any) -> None:
        # checked before pydantic so that the caller gets InvalidInputError itself (a
        # field validator's would come wrapped in a ValidationError)
        if "mos" in data:
            data["mos"] = _check_mos(data["mos"])
        if "cache" in data:
            _check_cache(data["cache"])
        if "user_id" in data:
            data["user_id"] = _check_user(data["user_id"])
        super().__init__(**data)

    @field_validator("mos", mode="before")
    @classmethod
    def _a_memos(cls, value: Any) -> MemOS:
        return _check_mos(value)

    @field_validator("cache")
    @classmethod
    def _never_cached(cls, value: Any) -> bool:
        return _check_cache(value)

    @field_validator("temperature")
    @classmethod
    def _greedy_only(cls, value: float | None) -> float | None:
        return _check_temperature(value)

    @property
    def max_tokens(self) -> int:
        """The standard name of ``max_new_tokens``."""
        return self.max_new_tokens

    @property
    def _llm_type(self) -> str:
        return "memos"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "k": self.k, "max_new_tokens": self.max_new_tokens,
                "kv_prefix": self.kv_prefix}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "memos"
        params["ls_model_name"] = kwargs.get("model") or self._model_name()
        params["ls_model_type"] = "chat"
        params["ls_temperature"] = 0.0 if self.temperature is None else self.temperature
        params["ls_max_tokens"] = kwargs.get("max_tokens", self.max_new_tokens)
        stops = self._stops(stop)
        if stops:
            params["ls_stop"] = stops
        return params

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: str | None = None,
                   **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """Not supported: the local model does not call tools."""
        raise NotImplementedError(
            "ChatMemOS does not call tools (the small local model has no tool calling); for "
            "an agent, use a tool-calling chat model with MemOSMiddleware, MemOSStore or "
            "create_memory_tools for its memory.")

    def _model_name(self) -> str:
        """The loaded local model's id, else ``model``."""
        try:
            return self.mos.model_info().model_id or self.model
        except Exception:  # noqa: BLE001 - a closed MemOS still has a name to report
            return self.model

    def _stops(self, stop: Sequence[str] | None) -> list[str]:
        return [*(self.stop or ()), *(stop or ())]

    # ------------------------------------------------------------------ who asks

    def _config_user(self, config: Mapping[str, Any] | None) -> Any:
        """The user a call's config names: its graph run's context (``invoke(...,
        context=...)``), else ``configurable``; None if neither does."""
        user = context_value(run_context(config), self.user_id_key)
        return user if user is not None else configurable(config).get(self.user_id_key)

    def _with_config_user(self, config: RunnableConfig | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Pass the call's user (:meth:`_config_user`) on to ``_generate`` / ``_stream``
        (LangChain hands them ``**kwargs``, not the config)."""
        user = self._config_user(config)
        if user is not None and _CONFIG_USER not in kwargs:
            kwargs = {**kwargs, _CONFIG_USER: user}
        return kwargs

    def invoke(self, input: Any, config: RunnableConfig | None = None, *,
               stop: list[str] | None = None, **kwargs: Any) -> AIMessage:
        return super().invoke(input, config, stop=stop, **self._with_config_user(config, kwargs))

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, *,
                      stop: list[str] | None = None, **kwargs: Any) -> AIMessage:
        return await super().ainvoke(input, config, stop=stop,
                                     **self._with_config_user(config, kwargs))

    def stream(self, input: Any, config: RunnableConfig | None = None, *,
               stop: list[str] | None = None, **kwargs: Any) -> Iterator[AIMessageChunk]:
        return super().stream(input, config, stop=stop, **self._with_config_user(config, kwargs))

    def astream(self, input: Any, config: RunnableConfig | None = None, *,
                stop: list[str] | None = None, **kwargs: Any) -> AsyncIterator[AIMessageChunk]:
        return super().astream(input, config, stop=stop, **self._with_config_user(config, kwargs))

    def _user(self, kwargs: Mapping[str, Any]) -> str:
        if self.user_id is not None:
            return resolve_user_id(component="ChatMemOS", key=self.user_id_key,
                                   default=self.user_id)
        passed = kwargs.get(_CONFIG_USER)
        if passed is None:  # called without a config: that of the running graph, if any
            passed = self._config_user(current_config())
        return resolve_user_id(component="ChatMemOS", key=self.user_id_key, default=passed)

    def _chat_args(self, messages: Sequence[BaseMessage], kwargs: Mapping[str, Any]
                   ) -> dict[str, Any]:
        """``MemOS.chat`` keywords for one call; a call's ``max_tokens`` / ``temperature``
        override the model's."""
        unknown = set(kwargs) - {_CONFIG_USER, "max_tokens", "max_new_tokens", "temperature"}
        if unknown:
            raise InvalidInputError(
                f"ChatMemOS: unsupported call keyword(s) {sorted(unknown)}; accepted: stop, "
                "max_tokens, temperature (0 or None).")
        _check_temperature(kwargs.get("temperature"))
        limit = kwargs.get("max_tokens", kwargs.get("max_new_tokens", self.max_new_tokens))
        return {
            "messages": to_chat_messages(messages), "user_id": self._user(kwargs), "k": self.k,
            "max_new_tokens": limit, "kv_prefix": self.kv_prefix,
        }

    # ------------------------------------------------------------------ answers

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        answer = self.mos.chat(**self._chat_args(messages, kwargs))
        return _result(answer.text, answer.trace, self._stops(stop))

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None,
                         **kwargs: Any) -> ChatResult:
        args = await asyncio.to_thread(self._chat_args, messages, kwargs)
        answer = await self.mos.achat(**args)
        return _result(answer.text, answer.trace, self._stops(stop))

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        stream = self.mos.chat(stream=True, **self._chat_args(messages, kwargs))
        cutter = _StopCutter(self._stops(stop))
        for piece in stream:
            text = cutter.feed(piece)
            if text:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                if run_manager:
                    run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk
            if cutter.stopped:
                break
        yield from _tail(cutter, stream)

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        args = await asyncio.to_thread(self._chat_args, messages, kwargs)
        stream = await self.mos.achat(stream=True, **args)
        cutter = _StopCutter(self._stops(stop))
        async for piece in stream:
            text = cutter.feed(piece)
            if text:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                if run_manager:
                    await run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk
            if cutter.stopped:
                break
        for chunk in _tail(cutter, stream):
            yield chunk

    # ------------------------------------------------------------------ token counts

    def _tokenizer(self) -> Any:
        """The local model's tokenizer if the model is already loaded (never loads it)."""
        try:
            return self.mos.model_info().tokenizer
        except Exception:  # noqa: BLE001 - counting falls back to the approximation
            return None

    def get_num_tokens(self, text: str) -> int:
        """Tokens of ``text`` with the local tokenizer when the model is loaded, else
        ``count_tokens_approximately`` (never downloads GPT-2 as LangChain's default does)."""
        tokenizer = self._tokenizer()
        if tokenizer is None:
            return count_tokens_approximately([AIMessage(text)], extra_tokens_per_message=0)
        return len(tokenizer.encode(text, add_special_tokens=False))

    def get_num_tokens_from_messages(self, messages: list[BaseMessage],
                                     tools: Sequence[Any] | None = None) -> int:
        """Prompt tokens of ``messages`` under the local chat template when the model is
        loaded, else ``count_tokens_approximately``. ``tools`` are ignored (none are sent)."""
        tokenizer = self._tokenizer()
        if tokenizer is not None:
            turns = [{"role": {"human": "user", "ai": "assistant"}.get(m.type, m.type),
                      "content": m.text} for m in messages]
            try:
                prompt = tokenizer.apply_chat_template(turns, tokenize=False)
                return len(tokenizer.encode(prompt, add_special_tokens=False))
            except Exception:  # noqa: BLE001 - a role the template rejects
                return count_tokens_approximately(messages)
        return count_tokens_approximately(messages)


class _StopCutter:
    """Streams text up to the first stop sequence, holding back what could start one."""

    def __init__(self, stop: Sequence[str] | None) -> None:
        self.stop = [s for s in (stop or ()) if s]
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.buffer = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if not self.stop:
            return piece
        self.buffer += piece
        text, found = _cut_at_stop(self.buffer, self.stop)
        if found:
            self.stopped, self.buffer = True, ""
            return text
        # never negative: a buffer shorter than ``hold`` may all be the start of a stop
        # sequence (a negative cut would emit its beginning)
        cut = max(0, len(self.buffer) - self.hold)
        out, self.buffer = self.buffer[:cut], self.buffer[cut:]
        return out

    def flush(self) -> str:
        out, self.buffer = self.buffer, ""
        return out


def _tail(cutter: _StopCutter, stream: Any) -> Iterator[ChatGenerationChunk]:
    """What the stop cutter held back, then a last empty chunk carrying the trace (only when
    the stream ran to its end: a stream cut at a stop sequence has no trace)."""
    rest = cutter.flush()
    if rest:
        yield ChatGenerationChunk(message=AIMessageChunk(content=rest))
    if cutter.stopped:
        yield ChatGenerationChunk(message=AIMessageChunk(
            content="", response_metadata={"finish_reason": "stop"}, chunk_position="last"))
        return
    trace = stream.trace
    yield ChatGenerationChunk(message=AIMessageChunk(
        content="", response_metadata=_metadata(trace), usage_metadata=_usage(trace),
        chunk_position="last"))


def _metadata(trace: Any, *, stopped: bool = False) -> dict[str, Any]:
    """``response_metadata``: who, which memories from which tier, the trace."""
    return {
        "model_name": trace.model_id,
        "finish_reason": "stop" if stopped else trace.finish_reason,
        "user_id": trace.user_id,
        "memories": [
            {"id": m.id, "version": m.version, "tier": m.tier.value, "retrieved": m.retrieved,
             "score": m.score}
            for m in trace.memories
        ],
        "kv_prefix": trace.kv_prefix,
        "adapter_version": trace.adapter_version,
        "trace_summary": trace.summary(),
        "trace": trace.model_dump(mode="json"),
    }


def _usage(trace: Any) -> dict[str, int]:
    prompt = trace.prefix_tokens + trace.prefill_tokens
    return {"input_tokens": prompt, "output_tokens": trace.new_tokens,
            "total_tokens": prompt + trace.new_tokens}


def _result(text: str, trace: Any, stop: Sequence[str] | None) -> ChatResult:
    text, stopped = _cut_at_stop(text, stop)
    message = AIMessage(content=text, response_metadata=_metadata(trace, stopped=stopped),
                        usage_metadata=_usage(trace))
    return ChatResult(generations=[ChatGeneration(message=message)])
