"""Chat messages -> memory fields: how ``MemOS.add(messages)`` reads a conversation."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from memos_core.errors import InvalidInputError
from memos_core.validation import check_text


def message_item(message: Any, position: int) -> dict[str, Any]:
    """A chat message (dict or object with role/content) -> keyword arguments for a cube.

    The memory text is "speaker: content" (speaker = the message's ``name``, else its role);
    the message ``id`` becomes provenance, ``occurred_at`` and ``metadata`` are kept.
    """
    get = message.get if isinstance(message, Mapping) else lambda k, d=None: getattr(message, k, d)
    role = get("role") or get("type")
    content = get("content")
    if not isinstance(role, str) or content is None:
        raise InvalidInputError(
            f"message {position} needs a str 'role' and a 'content' (got {message!r:.80})."
        )
    if isinstance(content, list):  # content blocks: keep the text parts
        content = " ".join(b.get("text", "") if isinstance(b, Mapping) else str(b) for b in content)
    content = check_text(content, f"message {position} content")
    speaker = get("name") or role
    item: dict[str, Any] = {"text": f"{speaker}: {content}", "role": role}
    if get("id") is not None:  # an empty or false one is refused by the id check, not dropped
        item["message_id"] = str(get("id"))
    if get("occurred_at") is not None:  # "" or 0 is refused by add's check, not dropped
        item["occurred_at"] = get("occurred_at")
    if get("metadata") is not None:
        item["metadata"] = get("metadata")
    return item


def merge_message_item(base: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    """Call-level keywords overridden by a message's own; metadata dicts are merged."""
    merged = {**base, **item}
    if isinstance(base.get("metadata"), Mapping) and isinstance(item.get("metadata"), Mapping):
        merged["metadata"] = {**base["metadata"], **item["metadata"]}
    return merged


#: Words a question opens with (English); see :func:`is_question`.
_QUESTION_OPENERS = frozenset(
    "what who whom whose where when why how which is are am was were do does did can could "
    "would should will shall may might have has had isn't aren't don't doesn't didn't "
    "can't won't what's who's where's when's why's how's".split()
)


#: A one-sentence request to be told what is remembered, however it ends ("Remind me of my
#: locker code.", "Tell me what my sister's name is.", "Do you remember where I parked."):
#: an optional courtesy opener, then remind me of / about / what..., tell me what / where /
#: about..., show me my / what..., look up / recall my..., do you remember / recall /
#: know ("Remind me to call Jo" is a task, and is not one).
_RECALL_REQUEST = re.compile(
    r"""^\W*(?:(?:please|pls|kindly|ok|okay|so|now|also|and|hey|actually|just)\b[\s,!.]*)*
        (?:(?:can|could|would|will)\s+you\s+(?:please\s+)?)?
        (?:remind\s+me\s+(?:again\s+)?(?:of|about|what|where|when|who|whom|whose|how|which)\b
          |tell\s+me\s+(?:again\s+)?(?:what|where|when|who|whom|whose|how|which
                                        |about(?!\s+it\b))\b
          |show\s+me\s+(?:my|what|where|when|who|which)\b
          |(?:look\s+up|recall)\s+(?:my|what|where|when|who|which)\b
          |(?:do|did)\s+you\s+(?:still\s+)?(?:remember|recall|know)\b)""",
    re.IGNORECASE | re.VERBOSE,
)


#: Where one sentence ends and another begins ("Do you know what? I adopted a dog."): a
#: request followed by a statement is a statement worth remembering. Not after a title or
#: a common abbreviation ("Dr. Smith", "St. Mary's", "e.g. this").
_SENTENCE_END = re.compile(
    r"(?<![A-Z])(?<!\bDr)(?<!\bMr)(?<!\bMs)(?<!\bSt)(?<!\bJr)(?<!\bSr)(?<!\bMrs)(?<!\bvs)"
    r"(?<!\be\.g)(?<!\bi\.e)(?<!\betc)[.!?:;]\s+")


def _one_sentence(text: str) -> bool:
    """Whether ``text`` says one thing: one sentence, perhaps followed by courtesy only
    ("Tell me what my sister's name is. Thanks!")."""
    _, *rest = _SENTENCE_END.split(text.strip())
    return all(is_phatic(sentence) for sentence in rest)


def is_question(text: str) -> bool:
    """Whether a chat turn asks rather than tells: it ends with ``?``, it opens with a
    question word (``what``, ``do``, ``can``...) and does not end like a statement, or it is
    one sentence asking to be told what is remembered, however it ends ("Remind me of my
    locker code.", "Tell me what my sister's name is.").

    Adapters keep such turns out of searched memory by default (they stay in the
    conversation log): a stored question is the closest match to the same question asked
    again and would crowd out the fact that answers it.
    """
    stripped = text.strip()
    if not stripped:
        return False
    if stripped.endswith("?") or (_RECALL_REQUEST.match(stripped) and _one_sentence(stripped)):
        return True
    first = stripped.split(None, 1)[0].lower().strip(",.!:;\"'")
    return first in _QUESTION_OPENERS and not stripped.endswith((".", "!"))


#: Words that make up small talk: a turn made of these alone ("thanks!", "ok, great",
#: "hi there", "sounds good") says nothing worth a memory; see :func:`is_phatic`.
_PHATIC_WORDS = frozenset(
    "hi hello hey heya hiya howdy yo greetings morning afternoon evening night good bye "
    "goodbye goodnight cya see you ya later soon thanks thank thx ty tysm cheers appreciate "
    "appreciated much so very lot a again ok okay k kk okey alright right sure yes yeah yep yup "
    "no nope nah fine great nice cool perfect awesome excellent wonderful lovely amazing "
    "brilliant super neat sweet wow oh ah aha hmm hm um uh lol haha hehe np welcome you're "
    "youre got it understood noted gotcha indeed absolutely exactly agreed sounds go ahead "
    "please pls done will do that's thats all for now then well and too there".split()
)
#: The most words a small-talk turn has (longer turns of these words are still talk).
_PHATIC_MAX_WORDS = 8
_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")

#: A request to forget or delete what was remembered ("Forget that I'm allergic to
#: peanuts.", "Please delete the memory about my address", "Don't remember that"): an
#: optional courtesy opener, then forget / unlearn / stop remembering / don't remember /
#: don't store, or delete / remove / erase / wipe / clear / drop followed by what names a
#: memory (memory, remembered, what you know, stored, saved, note, fact, "that I ...").
_FORGET_REQUEST = re.compile(
    r"""^\W*(?:(?:please|pls|kindly|ok|okay|so|now|also|and|hey|actually|just)\b[\s,!.]*)*
        (?:(?:can|could|would|will)\s+you\s+(?:please\s+)?
          |i(?:\s+(?:want|need|would\s+like)|['\u2019]d\s+like)\s+you\s+to\s+
          |you\s+(?:should|must|can|may|need\s+to|have\s+to)\s+)?
        (?:(?:go\s+ahead|find|look\s+(?:it\s+)?up|search(?:\s+for\s+it)?)\s+and\s+)?
        (?:(?:forget|unlearn|unremember)\b
          |(?:stop|quit)\s+(?:remembering|storing|saving|recording)\b
          |(?:don['\u2019]?t|do\s+not)\s+(?:remember|store|save|keep|record|memori[sz]e)\b
          |(?:delete|remove|erase|wipe|clear|drop|purge|scrub)\b.*?
            \b(?:memor(?:y|ies)|remember(?:ed|s)?|memori[sz]ed|(?:know|knew)\s+about|stored|saved
               |records?|recorded|notes?|facts?|that\s+i\b|what\s+i\s+(?:said|told|wrote)
               |everything|all\s+(?:of\s+)?(?:it|that|this))\b)""",
    re.IGNORECASE | re.VERBOSE,
)


def is_phatic(text: str) -> bool:
    """Whether a chat turn is small talk only: no words at all (punctuation, emoji), or at
    most a few words that are all greetings, thanks and acknowledgements ("hi", "thanks!",
    "ok, sounds good", "Great, thank you so much!")."""
    words = [w.lower().replace("\u2019", "'") for w in _WORD.findall(text)]
    return len(words) <= _PHATIC_MAX_WORDS and all(w in _PHATIC_WORDS for w in words)


def is_forget_request(text: str) -> bool:
    """Whether a chat turn asks to forget or delete remembered things ("Forget that I'm
    allergic to peanuts.", "Please delete the memory of my address"). Stored, such a turn
    would restate the very fact it asks to drop."""
    return _FORGET_REQUEST.match(text.strip()) is not None


def worth_remembering(role: str, text: str, *, roles: Iterable[str] = ("user",),
                      questions: bool = False) -> bool:
    """The adapters' default for turning a chat turn into a searched memory: a turn with
    text, from one of ``roles`` (default the user's only: assistant turns restate or guess),
    that is not small talk (:func:`is_phatic`: greetings, thanks, "ok"), not a request to
    forget or delete memories (:func:`is_forget_request`: stored, it restates the fact to
    drop), and not a question unless ``questions``. Everything stays in the conversation
    log."""
    if role not in set(roles) or not text.strip():
        return False
    if is_phatic(text) or is_forget_request(text):
        return False
    return questions or not is_question(text)


def asked_or_answered(memory: Any) -> bool:
    """A recorded question or assistant turn (an episodic memory whose ``role`` metadata is
    ``assistant``, or ``user`` with a question): adapters rank these after statements on
    recall, so one stored with wider settings still does not crowd out a fact."""
    if getattr(memory.type, "value", memory.type) != "episode":
        return False
    role = memory.metadata.get("role")
    if role == "assistant":
        return True
    _, _, said = memory.text.partition(": ")
    return role == "user" and is_question(said or memory.text)
