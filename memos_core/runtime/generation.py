"""Greedy decoding with an optional KV prefix, its trace, and token streaming.

A manual greedy loop rather than ``model.generate``: it is deterministic, prefills exactly the
tokens we pass (so "tokens prefilled" is a measured fact, not an estimate), lets us time the
first token precisely, and streams without a helper thread.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import torch


class GenerationTrace(BaseModel):
    """What one generation did, for the chat trace and the benchmark."""

    model_config = ConfigDict(frozen=True)

    used_kv_prefix: bool = Field(description="True when a cached KV prefix was reused.")
    prefix_tokens: int = Field(ge=0, description="Tokens served from the KV prefix (0 if none).")
    prefill_tokens: int = Field(ge=0, description="Tokens run through the model before decoding.")
    new_tokens: int = Field(ge=0, description="Tokens generated (an end-of-turn token excluded).")
    ttft_ms: float = Field(
        ge=0, description="Milliseconds from the start of the call to the first generated token."
    )
    total_ms: float = Field(ge=0, description="Milliseconds for the whole generation.")
    finish_reason: Literal["eos", "length"] = Field(
        description="'eos': the model ended its turn; 'length': max_new_tokens was reached."
    )


class GenerationResult(BaseModel):
    """Text and token ids of a finished generation, with its trace."""

    model_config = ConfigDict(frozen=True)

    text: str
    token_ids: tuple[int, ...]
    trace: GenerationTrace


_CACHE_ARGS: dict[type, str] = {}


def cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """The keyword a model's ``forward`` takes its KV cache by: ``cache`` in current
    transformers (``past_key_values`` is deprecated there and warns on every call),
    ``past_key_values`` in older releases. A PEFT wrapper is looked through."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    kind = type(base)
    name = _CACHE_ARGS.get(kind)
    if name is None:
        params = inspect.signature(base.forward).parameters
        name = _CACHE_ARGS[kind] = "cache" if "cache" in params else "past_key_values"
    return {name: cache}


def greedy_tokens(
    model: Any,
    input_ids: torch.Tensor,
    cache: Any,
    max_new_tokens: int,
    eos_token_ids: frozenset[int],
) -> Iterator[int]:
    """Yield greedily chosen token ids, stopping after an end token or ``max_new_tokens``.

    ``input_ids``: (1, q) tokens to prefill after whatever ``cache`` already holds. ``cache``
    is grown in place (pass a fork, never a stored prefix). An end token is yielded last.
    Each forward runs in its own ``inference_mode`` block, so no grad mode leaks to the
    caller while the generator is suspended.
    """
    import torch

    step_input = input_ids  # (1, q) for the prefill, then (1, 1) per decoded token
    for _ in range(max_new_tokens):
        with torch.inference_mode():
            out = model(
                input_ids=step_input, **cache_kwargs(model, cache), use_cache=True,
                logits_to_keep=1,
            )
            next_id = int(out.logits[0, -1].argmax())  # logits: (1, 1, vocab)
        yield next_id
        if next_id in eos_token_ids:
            return
        step_input = torch.tensor([[next_id]], device=input_ids.device)  # (1, 1)


class IncrementalDecoder:
    """Turns a growing list of token ids into text pieces, holding back partial characters.

    Decoding the whole sequence each step (instead of token by token) keeps multi-token
    characters and tokenizer whitespace rules right; a piece ending in U+FFFD is an
    unfinished UTF-8 sequence and waits for the next token.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._emitted = ""

    def push(self, token_id: int) -> str:
        """Add one token; return the newly completed text (possibly empty)."""
        self._ids.append(token_id)
        text = str(self._tokenizer.decode(self._ids, skip_special_tokens=True))
        if text.endswith("\ufffd") or not text.startswith(self._emitted):
            return ""
        piece, self._emitted = text[len(self._emitted) :], text
        return piece

    def text(self) -> str:
        """The full decoded text so far (including any held-back tail)."""
        return str(self._tokenizer.decode(self._ids, skip_special_tokens=True))

    def flush(self) -> str:
        """Whatever text is still held back, at the end of the generation."""
        text = self.text()
        tail = text[len(self._emitted) :] if text.startswith(self._emitted) else ""
        self._emitted = text
        return tail


class TextStream:
    """Iterator over text pieces of a generation; :attr:`result` is set once it is exhausted.

    The model runs as the stream is iterated. A stream is single-use and not thread-safe.
    """

    def __init__(self, pieces: Generator[str, None, GenerationResult]) -> None:
        self._pieces = pieces  # yields str pieces, returns a GenerationResult
        self._result: GenerationResult | None = None

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        try:
            return next(self._pieces)
        except StopIteration as stop:
            if self._result is None:
                self._result = stop.value
            raise

    @property
    def result(self) -> GenerationResult:
        """The finished generation. Raises RuntimeError until the stream is exhausted."""
        if self._result is None:
            raise RuntimeError("the stream is not finished: iterate it to the end first")
        return self._result

    @property
    def trace(self) -> GenerationTrace:
        return self.result.trace


def run_generation(
    *,
    model: Any,
    tokenizer: Any,
    input_ids: torch.Tensor,
    cache: Any,
    prefix_tokens: int,
    max_new_tokens: int,
    eos_token_ids: frozenset[int],
    started: float,
) -> Generator[str, None, GenerationResult]:
    """Generator: yields text pieces, returns a :class:`GenerationResult` (via StopIteration).

    ``started`` is the ``time.perf_counter()`` value the call began at (tokenizing and forking
    the cache count toward time to first token).
    """
    decoder = IncrementalDecoder(tokenizer)
    ids: list[int] = []
    ttft: float | None = None
    finish: Literal["eos", "length"] = "length"
    for token_id in greedy_tokens(model, input_ids, cache, max_new_tokens, eos_token_ids):
        if ttft is None:
            ttft = time.perf_counter() - started
        if token_id in eos_token_ids:
            finish = "eos"
            break
        ids.append(token_id)
        piece = decoder.push(token_id)
        if piece:
            yield piece
    total = time.perf_counter() - started
    tail = decoder.flush()
    if tail:
        yield tail
    text = decoder.text()
    trace = GenerationTrace(
        used_kv_prefix=prefix_tokens > 0,
        prefix_tokens=prefix_tokens,
        prefill_tokens=int(input_ids.shape[1]),
        new_tokens=len(ids),
        ttft_ms=1000.0 * (ttft if ttft is not None else total),
        total_ms=1000.0 * total,
        finish_reason=finish,
    )
    return GenerationResult(text=text, token_ids=tuple(ids), trace=trace)
