"""``MemOSLLM``: a llama-index LLM that answers with ``MemOS.chat`` on the local model.

Each call retrieves the user's memories and answers on the local model runtime: the user's hot
memories come from the KV tier as a cached prefix, other retrieved memories go into the turn as
text, and an active LoRA adapter (``mos.consolidate``) answers for the memories it holds.
What was used is returned with the answer: ``response.raw`` is the full
``memos_core.chat.ChatTrace`` as a dict, ``response.additional_kwargs`` a short summary
(memory ids and tiers, tokens prefilled, TTFT).

Messages go to ``MemOS.chat(messages=...)``, read by the core's one rule
(:func:`memos_core.chat.split_messages`, shared with LangChain's ``ChatMemOS``): the last
message (a user message with text) is the query, earlier user/assistant messages are the
history, and system messages open the memory-aware system turn. The memory section a
``MemOSMemory`` renders into a system message (``<memory>...</memory>``) is left out --
``MemOS.chat`` retrieves for itself; ``additional_kwargs["memory_sections_removed"]`` counts
them.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.llm import LLM
from memos_core import InvalidInputError, MemOS, MemOSError
from memos_core.integration import check_k, check_name

from llama_index.memory.memos._checks import check_chat_messages, check_mos
from llama_index.memory.memos._convert import message_text

#: ``LLMMetadata.model_name`` of every MemOSLLM.
MODEL_NAME = "memos-local"
#: Context window reported while the local model is not loaded yet (loading it to ask would
#: cost seconds).
DEFAULT_CONTEXT_WINDOW = 8192

_ASSISTANT_ROLES = frozenset({MessageRole.ASSISTANT, MessageRole.CHATBOT, MessageRole.MODEL})
_SYSTEM_ROLES = frozenset({MessageRole.SYSTEM, MessageRole.DEVELOPER})


#: A memory section llama-index's ``Memory`` renders into the system message
#: (``<memory>...</memory>``); ``MemOS.chat`` retrieves for itself, so it is left out.
_MEMORY_SECTION = re.compile(r"<memory>.*?</memory>", re.DOTALL)


def _to_messages(messages: object) -> tuple[list[dict[str, str]], int]:
    """``messages`` -> (chat messages for ``MemOS.chat(messages=...)``, number of memory
    sections left out of system messages).

    The rule is the core's (:func:`memos_core.chat.split_messages`, the one ``ChatMemOS``
    follows): system messages open the memory-aware system turn, user/assistant messages
    before the last are the history, the last must be the user's question.
    """
    checked = check_chat_messages(messages)
    out: list[dict[str, str]] = []
    removed = 0
    for message in checked:
        role = message.role.value
        text = message_text(message)
        if message.role in _SYSTEM_ROLES:
            text, n = _MEMORY_SECTION.subn("", text)
            removed += n
        elif message.role in _ASSISTANT_ROLES:
            role = "assistant"
        out.append({"role": role, "content": text})
    return out, removed


def _checked(method: Callable[..., Any]) -> Callable[..., Any]:
    """Refuse bad ``messages`` with a clear error before llama-index's instrumentation, whose
    event model would raise a bare pydantic error for e.g. a str."""
    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def checked_async(self: Any, messages: Any, **kwargs: Any) -> Any:
            return await method(self, check_chat_messages(messages), **kwargs)

        return checked_async

    @functools.wraps(method)
    def checked(self: Any, messages: Any, **kwargs: Any) -> Any:
        return method(self, check_chat_messages(messages), **kwargs)

    return checked


def _summary(trace: Any, removed: int) -> dict[str, Any]:
    """The trace fields a caller usually wants, JSON-serialisable."""
    return {
        "user_id": trace.user_id,
        "model_id": trace.model_id,
        "adapter_version": trace.adapter_version,
        "memory_ids": [m.id for m in trace.memories],
        "memory_tiers": {m.id: m.tier.value for m in trace.memories},
        "kv_prefix": trace.kv_prefix,
        "prefix_tokens": trace.prefix_tokens,
        "prefill_tokens": trace.prefill_tokens,
        "new_tokens": trace.new_tokens,
        "ttft_ms": trace.ttft_ms,
        "total_ms": trace.total_ms,
        "finish_reason": trace.finish_reason,
        "summary": trace.summary(),
        "memory_sections_removed": removed,
    }


class MemOSLLM(LLM):
    """A chat LLM over the MemOS local model, answering with ``user_id``'s memories.

    ``MemOSLLM(mos=mos, user_id="alice")``; use it like any llama-index LLM, e.g.
    ``SimpleChatEngine.from_defaults(llm=MemOSLLM(...), memory=MemOSMemory.from_defaults(...))``.
    The model is the one ``mos.attach_model`` set, else SmolLM2-135M-Instruct (loaded on first
    use). Decoding is greedy. It does not call tools (``is_function_calling_model=False``).
    """

    mos: MemOS = Field(exclude=True, description="The MemOS whose local model answers.")
    user_id: str = Field(description="Whose memories answer; every MemOS call uses it.")
    k: int = Field(default=5, description="Memories retrieved per question.")
    max_new_tokens: int = Field(default=128, description="Most tokens generated per answer.")
    kv_prefix: bool = Field(
        default=True, description="Serve the hot block from its cached KV prefix (else as text)."
    )

    def __init__(self, *, mos: MemOS | None = None, user_id: str | None = None, k: int = 5,
                 max_new_tokens: int = 128, kv_prefix: bool = True, **kwargs: Any) -> None:
        mos = check_mos(mos, "MemOSLLM")
        user_id = str(check_name(user_id, "user_id"))
        k = check_k(k)
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or (
            max_new_tokens < 1
        ):
            raise InvalidInputError(
                f"max_new_tokens must be a positive int, got {max_new_tokens!r}."
            )
        super().__init__(mos=mos, user_id=user_id, k=k, max_new_tokens=max_new_tokens,
                         kv_prefix=bool(kv_prefix), **kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "MemOSLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self._context_window(),
            num_output=self.max_new_tokens,
            is_chat_model=True,
            is_function_calling_model=False,
            model_name=MODEL_NAME,
        )

    def _context_window(self) -> int:
        """The loaded model's ``max_position_embeddings``; never loads a model to find out."""
        try:
            window = self.mos.model_info().context_window
        except MemOSError:  # a closed MemOS still describes itself
            return DEFAULT_CONTEXT_WINDOW
        return window or DEFAULT_CONTEXT_WINDOW

    def _chat_kwargs(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        return {"user_id": self.user_id, "messages": messages, "k": self.k,
                "max_new_tokens": self.max_new_tokens, "kv_prefix": self.kv_prefix}

    @staticmethod
    def _response(text: str, trace: Any, removed: int, delta: str | None = None) -> ChatResponse:
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=text),
            delta=delta,
            raw=trace.model_dump(mode="json") if trace is not None else None,
            additional_kwargs=_summary(trace, removed) if trace is not None else {},
        )

    # ------------------------------------------------------------------ chat

    @_checked
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Answer the last user message; ``raw``/``additional_kwargs`` carry the trace."""
        chat, dropped = _to_messages(messages)
        answer = self.mos.chat(**self._chat_kwargs(chat))
        return self._response(answer.text, answer.trace, dropped)

    @_checked
    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """Responses with ``delta`` = the new piece and the text so far; the last one also
        carries the trace (its piece is held back until the model has finished)."""
        chat, dropped = _to_messages(messages)
        stream = self.mos.chat(stream=True, **self._chat_kwargs(chat))

        def gen() -> Iterator[ChatResponse]:
            text, pending = "", None
            for piece in stream:
                if pending is not None:
                    yield self._response(text, None, dropped, delta=pending)
                text += piece
                pending = piece
            yield self._response(text, stream.trace, dropped, delta=pending or "")

        return gen()

    @_checked
    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """:meth:`chat` with the model in a worker thread (the event loop is not blocked)."""
        chat, dropped = _to_messages(messages)
        answer = await self.mos.achat(**self._chat_kwargs(chat))
        return self._response(answer.text, answer.trace, dropped)

    @_checked
    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        """:meth:`stream_chat` with every model step in a worker thread."""
        chat, dropped = _to_messages(messages)
        stream = await self.mos.achat(stream=True, **self._chat_kwargs(chat))

        async def gen() -> AsyncIterator[ChatResponse]:
            text, pending = "", None
            async for piece in stream:
                if pending is not None:
                    yield self._response(text, None, dropped, delta=pending)
                text += piece
                pending = piece
            yield self._response(text, stream.trace, dropped, delta=pending or "")

        return gen()

    # ------------------------------------------------------------------ completion

    @staticmethod
    def _as_messages(prompt: object) -> list[ChatMessage]:
        if not isinstance(prompt, str):
            raise InvalidInputError(f"prompt must be a str, got {type(prompt).__name__}.")
        return [ChatMessage(role=MessageRole.USER, content=prompt)]

    @staticmethod
    def _completion(response: ChatResponse) -> CompletionResponse:
        return CompletionResponse(text=response.message.content or "", delta=response.delta,
                                  raw=response.raw, additional_kwargs=response.additional_kwargs)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """``prompt`` answered as a single user message (no history)."""
        return self._completion(self.chat(self._as_messages(prompt)))

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        responses = self.stream_chat(self._as_messages(prompt))
        return (self._completion(r) for r in responses)

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        return self._completion(await self.achat(self._as_messages(prompt)))

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        responses = await self.astream_chat(self._as_messages(prompt))

        async def gen() -> AsyncIterator[CompletionResponse]:
            async for response in responses:
                yield self._completion(response)

        return gen()
