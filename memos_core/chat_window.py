"""Fitting a chat's prompt into the model's context window by leaving memories out.

``MemOS.chat`` chooses the memories in its prompt, and a memory can be a very long text, so
a short question could make a prompt that with ``max_new_tokens`` is longer than the
model's context window (which the model refuses, :meth:`LocalModel._check_fits`). The user
did nothing wrong there, so chat leaves memories out until the prompt fits:

1. the retrieved plaintext memories, lowest-ranked first;
2. then the hot block's memories: those search did not find for this question first (from
   the end of the block), then the retrieved ones, lowest score first. What stays of the
   block is sent as prompt text (its cached KV prefix holds all of it), or, when none
   stays, the default instructions alone.

Only when the caller's own text (query, history, system) with ``max_new_tokens`` does not fit
even with no memory at all is the chat refused (:class:`InvalidInputError`); chat checks that
(:func:`check_bare`) before it searches, so a refused chat reads no memory.

What to keep is estimated from each memory's bullet line, measured best first and only up
to the first that does not fit (of a very long text only a head is tokenised, enough to tell
it is over); the kept prompt is then counted whole with the model's own chat template and
tokenizer, and shortened further if the estimate was short, so the result never rests on the
estimate. A model whose context window is unknown (``context_window`` None) gets the prompt
unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from memos_core.errors import InvalidInputError
from memos_core.governance.access import shown_text
from memos_core.tiers.activation.compose import bullet

if TYPE_CHECKING:
    from memos_core.cube import MemCube
    from memos_core.runtime import LocalModel
    from memos_core.runtime.prefix import Message

Compose = Callable[[Sequence["MemCube"], Sequence["MemCube"]], list["Message"]]
"""``compose(plaintext, hot)``: the prompt's messages with those memories, the hot block as
text (the same tokens its cached KV prefix stands for)."""


@dataclass(frozen=True)
class Fitted:
    """The memories that stay in a prompt that had to be shortened."""

    plain: list[MemCube]  # the retrieved plaintext memories kept, best first
    hot: list[MemCube]  # the hot memories kept, in block order
    left_out: tuple[str, ...]  # ids left out, in the order they were dropped


def fit_memories(
    model: LocalModel,
    max_new_tokens: int,
    compose: Compose,
    plain: Sequence[MemCube],
    hot: Sequence[MemCube],
    *,
    viewer: str,
    scores: Mapping[str, float],
) -> Fitted | None:
    """Which memories to keep so that ``compose(plain, hot)`` with ``max_new_tokens`` fits
    ``model``'s context window; None when the prompt fits as it is (or the window is
    unknown). ``plain`` is ranked best first; ``scores`` holds the search score of each hot
    memory search found; ``viewer`` is the user the plaintext is shown to (as in the prompt).

    Kept are the best-ranked plaintext memories whose lines fit (a lower-ranked short one
    does not jump a longer one above it); only if the hot block alone is too long are hot
    memories left out too, and then every plaintext one is.

    Raises:
        InvalidInputError: the prompt does not fit even with no memory in it.
    """
    window = model.context_window
    if window is None:
        return None
    room = window - max_new_tokens

    def count(keep_plain: Sequence[MemCube], keep_hot: Sequence[MemCube]) -> int:
        rendered = model.render(compose(keep_plain, keep_hot), add_generation_prompt=True)
        return _tokens_upto(model, rendered, room)

    if count(plain, hot) <= room:
        return None
    bare = check_bare(model, max_new_tokens, compose([], []))
    size = count([], hot)
    kept_plain: list[MemCube] = []
    if size <= room:
        kept_plain = _leading(plain, room - size, lambda c, most: _tokens_upto(
            model, model.escape(bullet(shown_text(c, viewer))) + "\n", most))
        # the estimate leaves out the list's header and merges at line ends: count it whole
        while kept_plain and count(kept_plain, hot) > room:
            kept_plain.pop()
    left_out = [c.id for c in reversed(plain[len(kept_plain):])]
    if size <= room:
        return Fitted(plain=kept_plain, hot=list(hot), left_out=tuple(left_out))
    # best kept last to go: retrieved for this question by score, then the rest in block order
    ranked = sorted(hot, key=lambda c: (c.id not in scores, -scores.get(c.id, 0.0)))
    staying = _leading(ranked, room - bare,
                       lambda c, most: _tokens_upto(model, model.escape(bullet(c.text)) + "\n",
                                                    most))

    def in_block_order(kept: list[MemCube]) -> list[MemCube]:
        ids = {c.id for c in kept}
        return [c for c in hot if c.id in ids]

    while staying and count([], in_block_order(staying)) > room:
        staying.pop()
    left_out += [c.id for c in reversed(ranked[len(staying):])]
    return Fitted(plain=[], hot=in_block_order(staying), left_out=tuple(left_out))


def check_bare(model: LocalModel, max_new_tokens: int, bare: Sequence[Message]) -> int:
    """Tokens of ``bare``, the prompt with no memory in it (the caller's query, history and
    system text). :meth:`MemoryChat.ask` calls this before it searches, so that a chat it
    must refuse counts no memory as read (nor heats it).

    Raises:
        InvalidInputError: with ``max_new_tokens`` it is longer than the context window.
    """
    tokens = len(model.encode(model.render(bare, add_generation_prompt=True)))
    window = model.context_window
    if window is not None and tokens + max_new_tokens > window:
        raise InvalidInputError(
            f"the query, history and system text alone make a prompt of {tokens:,} tokens (no "
            f"memory is in it) and max_new_tokens is {max_new_tokens:,}: together more than "
            f"the {window:,} tokens {model.model_id} reads at once. Shorten the query, history "
            "or system text, or ask for fewer new tokens.")
    return tokens


def _leading(
    memories: Sequence[MemCube], room: int, tokens: Callable[[MemCube, int], int]
) -> list[MemCube]:
    """The longest head of ``memories`` whose lines (``tokens(memory, at_most)``) add up to at
    most ``room`` tokens. No memory after the first that does not fit is measured."""
    kept: list[MemCube] = []
    for memory in memories:
        cost = tokens(memory, room)
        if cost > room:
            break
        room -= cost
        kept.append(memory)
    return kept


_CHARS_PER_TOKEN = 16
"""More characters than a token of a chat model's tokenizer spans but in rare runs (of
spaces, say): a text's head this many characters per allowed token is enough to tell a text
that is over."""


def _tokens_upto(model: LocalModel, text: str, limit: int) -> int:
    """Tokens in ``text``: exact when at most ``limit``, else some number over ``limit``. Only
    a head of a very long text is tokenised (a memory may be a megabyte of text)."""
    head = _CHARS_PER_TOKEN * (limit + 1)
    if len(text) > head:
        # a cut can split a word's tokens differently, by a token or two: keep a margin
        tokens = len(model.encode(text[:head]))
        if tokens > limit + 8:
            return tokens
    return len(model.encode(text))
