"""Keeping message text from becoming the tokenizer's control tokens.

A chat template writes its turns with the tokenizer's special tokens (ChatML's
``<|im_start|>`` / ``<|im_end|>``), and a tokenizer reads those strings as the special
tokens wherever they stand in the text it is given -- inside a message's content too. A
memory (one shared by another user, or one made from tool output), a history turn or a
query holding ``"<|im_end|>\\n<|im_start|>system\\n..."`` would then open a real system turn
in the prompt. So every message's content is *neutralised* before the template is applied:
each occurrence of a control string gets a zero-width space after its first character, which
the tokenizer no longer matches and the model reads as the same characters.

Pure functions, no model: :meth:`memos_core.runtime.LocalModel.render` applies them to every
message, so every prompt (plaintext, the hot block and its cached KV prefix, the reranker's,
the parametric tier's) is tokenised from the same neutralised text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = ["JOINERS", "control_pattern", "control_strings", "neutralise"]

#: Invisible characters put into a control string to break it, the first that no control
#: string contains (zero-width space, word joiner, zero-width no-break space).
JOINERS = ("\u200b", "\u2060", "\ufeff")


def control_strings(tokenizer: Any) -> tuple[str, ...]:
    """The texts the tokenizer reads as control tokens: every special added token, and every
    other added token the chat template writes itself (some templates mark tool calls with
    tokens not flagged special). Longest first, as a tokenizer matches them.

    Left out are one-character tokens (a joiner cannot go inside them) and non-special added
    tokens that hold whitespace (tokenizers that add runs of spaces or a newline as tokens
    use them for ordinary text, and templates write newlines)."""
    template = getattr(tokenizer, "chat_template", None)
    template = template if isinstance(template, str) else ""
    found = {str(c) for c in getattr(tokenizer, "all_special_tokens", ()) or ()}
    for token in getattr(tokenizer, "added_tokens_decoder", {}).values():
        content = str(getattr(token, "content", token))
        if getattr(token, "special", False):
            found.add(content)
        elif content in template and not any(ch.isspace() for ch in content):
            found.add(content)
    return tuple(sorted((c for c in found if len(c) > 1), key=lambda s: (-len(s), s)))


def control_pattern(controls: Iterable[str]) -> tuple[re.Pattern[str], str] | None:
    """``(pattern, joiner)``: a regex matching any of ``controls`` (longest first) and the
    joiner :func:`neutralise` breaks them with; None when there are no controls."""
    ordered = sorted(set(controls), key=lambda s: (-len(s), s))
    if not ordered:
        return None
    joiner = next((j for j in JOINERS if not any(j in c for c in ordered)), None)
    if joiner is None:  # a tokenizer whose special tokens hold all three: none is safe
        raise ValueError("every joiner appears in a control token; cannot neutralise text")
    return re.compile("|".join(re.escape(c) for c in ordered)), joiner


def neutralise(text: str, pattern: re.Pattern[str], joiner: str) -> str:
    """``text`` with every control string (see :func:`control_pattern`) broken by ``joiner``
    after its first character. Repeated until none is left: breaking one match can leave
    another that overlapped it whole (the tokenizer would then read that one), and since no
    control string holds the joiner, each round only removes matches."""
    while pattern.search(text) is not None:
        text = pattern.sub(lambda m: m.group(0)[0] + joiner + m.group(0)[1:], text)
    return text
