"""``memos_core.messages.worth_remembering``: which chat turns the adapters (LangChain's
``MemOSMiddleware``, LlamaIndex's ``MemOSMemory``) turn into searched memories.

A stored turn is recalled into later prompts, so the rule keeps out what would only crowd
the recall slots or undo a forget: questions (they match the same question asked again
better than the fact that answers it), small talk ("thanks!", "hi", "ok"), and requests to
forget (stored, "Forget that I'm allergic to peanuts" restates the fact it asks to drop).
"""

from __future__ import annotations

import pytest

from memos_core import messages
from memos_core.integration import worth_remembering

STATEMENTS = [
    "I'm allergic to peanuts.",
    "My sister lives in Oslo",
    "Thanks, my name is Bob.",
    "Hi, I am Bob and I live in Lyon.",
    "No, I am vegetarian.",
    "I forgot my password at work yesterday.",
    "I always forget my keys.",
    "Forgetting my keys is a habit of mine.",
    "I deleted my Facebook account last year.",
    "Remove the onions from my recipes, I hate onions.",
    "Clear skies make me happy.",
    "Let's forget about work and talk about my cat Miso.",
    "Remember that I am vegetarian.",
    "I want you to remember that I am vegetarian.",
    "OK so I moved to Berlin in May.",
    "Remind me to call Jo on Friday.",
    "Tell Jo I will be late.",
    "I told you my locker code is 5512.",
    "What I love most is hiking.",
    "Do you know what? I finally adopted a dog named Rex.",
    "Do you remember Jo? She moved to Lisbon last week.",
    "What's more, my new phone number is 555-0199.",
    "So what's new: I started at Acme as a data engineer today.",
    "Tell me about it. My landlord raised the rent again.",
    "Tell me about it, my commute to Acme is now two hours.",
    "Tell me my flight is on time, it leaves at 7:05 from gate B12.",
]

RECALL_REQUESTS = [
    "Remind me of my gym locker code.",
    "Please remind me what my sister's name is.",
    "Can you remind me about the dentist appointment.",
    "Tell me what my locker code is.",
    "Tell me about my dentist appointment.",
    "tell me again where I parked",
    "Show me my saved addresses.",
    "Look up my passport number.",
    "Do you remember where I parked.",
    "What's my locker code",
    "Tell me what my sister's name is. Thanks!",
    "Do you remember Dr. Smith's phone number.",
    "Can you remind me what St. Mary's address is.",
]

SMALL_TALK = [
    "thanks!", "Thank you so much!", "thx", "hi", "Hello there", "hey!", "Good morning",
    "ok", "OK.", "okay, sounds good", "Great, thanks!", "cool", "Perfect, thank you!",
    "Go ahead.", "You\u2019re welcome", "got it", "yes please", "no", "bye, see you later!",
    "\U0001F44D", "...", "lol",
]

FORGET_REQUESTS = [
    "Forget that I'm allergic to peanuts.",
    "forget it",
    "Please forget my address.",
    "OK, now forget my address.",
    "Can you forget that I live in Paris.",
    "I want you to forget my phone number",
    "I\u2019d like you to forget where I work.",
    "Delete the memory about my allergy.",
    "Remove my phone number from your memory.",
    "Please delete everything you know about me.",
    "Erase what I said about my job.",
    "Delete that I live in Paris.",
    "Don't remember that.",
    "Do not store my card number.",
    "Stop remembering my birthday.",
    "Unlearn my old address.",
    "Find and forget Alice's PIN.",
    "Please go ahead and delete the memory of my old job.",
]


@pytest.mark.parametrize("text", STATEMENTS)
def test_statements_are_remembered(text: str) -> None:
    assert worth_remembering("user", text)
    assert not messages.is_phatic(text) and not messages.is_forget_request(text)


@pytest.mark.parametrize("text", SMALL_TALK)
def test_small_talk_is_not_remembered(text: str) -> None:
    assert not worth_remembering("user", text)
    assert not worth_remembering("user", text, questions=True)  # not even with questions on
    assert not worth_remembering("assistant", text, roles=("user", "assistant"))
    assert messages.is_phatic(text)


@pytest.mark.parametrize("text", FORGET_REQUESTS)
def test_requests_to_forget_are_not_remembered(text: str) -> None:
    assert not worth_remembering("user", text)
    assert not worth_remembering("user", text, questions=True)
    assert messages.is_forget_request(text)


@pytest.mark.parametrize("text", RECALL_REQUESTS)
def test_requests_to_be_told_are_questions(text: str) -> None:
    """Stored, "Remind me of my gym locker code." outranked the fact that answers it the
    next time it was asked (a LlamaIndex user's review): it asks, so it is a question."""
    assert messages.is_question(text)
    assert not worth_remembering("user", text)
    assert worth_remembering("user", text, questions=True)


def test_roles_questions_and_empty_text_keep_their_rules() -> None:
    assert not worth_remembering("assistant", "I booked a window seat for you.")
    assert worth_remembering("assistant", "I booked a window seat for you.", roles=("user", "assistant"))
    assert not worth_remembering("user", "What bike do I have?")
    assert worth_remembering("user", "What bike do I have?", questions=True)
    assert not worth_remembering("user", "   ")
    assert not worth_remembering("tool", "42", roles=("user", "assistant"))
    # a long turn of friendly words is still a statement about something
    assert worth_remembering("user", "Thanks so much, the Lyon trip with my sister was great!")
