"""Statements before chatter: a past question never outranks the statement that answers it.

A small set of our own conversations, stored turn by turn the way a chat adapter that keeps
the user's questions stores them; each case asks again a question that was asked before (some
twice) and names the statement that answers it. Real MiniLM, Qdrant and graph; no mocks.
"""

from __future__ import annotations

import pytest

from memos_core.retrieval.rerank import is_question

# (sessions of turns, [(query, the answering statement)])
CONVERSATIONS = [
    (
        [
            ["user: What bike do I have?", "assistant: I don't know yet, tell me about it!",
             "user: I ride a green Trek gravel bike that I bought in Porto last spring.",
             "assistant: Nice, gravel bikes are versatile."],
            ["user: what bike do I have?", "assistant: A green Trek gravel bike.",
             "user: Thanks. I also want to plan a ride to Sintra."],
            ["user: What bike do I have?", "user: Remind me, where did I buy it?"],
        ],
        [("what bike do I have?",
          "user: I ride a green Trek gravel bike that I bought in Porto last spring."),
         ("where did I buy my bike?",
          "user: I ride a green Trek gravel bike that I bought in Porto last spring.")],
    ),
    (
        [
            ["Ana: Do you remember my sister's name?", "Ana: My sister is called Ines and she lives in Oslo.",
             "Bot: Got it."],
            ["Ana: Where does my sister live?", "Ana: Do you remember my sister's name?",
             "Ana: Hey! Where does my sister live?"],
        ],
        [("Do you remember my sister's name?",
          "Ana: My sister is called Ines and she lives in Oslo."),
         ("where does my sister live?", "Ana: My sister is called Ines and she lives in Oslo.")],
    ),
    (
        [
            ["[2 May 2024] Sam: What is my dentist appointment time?",
             "[2 May 2024] Sam: The dentist appointment is on Tuesday at 9:30 with Dr. Rosa.",
             "[2 May 2024] Sam: Can you remind me?"],
            ["[6 May 2024] Sam: What is my dentist appointment time?",
             "[6 May 2024] Sam: what time is my dentist appointment?"],
        ],
        [("What time is my dentist appointment?",
          "[2 May 2024] Sam: The dentist appointment is on Tuesday at 9:30 with Dr. Rosa.")],
    ),
    (
        [
            ["me: Which programming language does our backend use?",
             "me: Our backend is written in Go and deployed on Kubernetes.",
             "me: Which database do we use?", "me: We store everything in PostgreSQL 16."],
            ["me: which programming language does our backend use?",
             "me: Which database do we use again?"],
        ],
        [("Which programming language does our backend use?",
          "me: Our backend is written in Go and deployed on Kubernetes."),
         ("which database do we use?", "me: We store everything in PostgreSQL 16.")],
    ),
]


def _load(mos, user: str, sessions: list[list[str]]) -> dict[str, str]:
    items = [{"text": t, "session_id": f"s{i}"} for i, turns in enumerate(sessions) for t in turns]
    cubes = mos.add_many(items, user_id=user)
    return {c.text: c.id for c in cubes}


def _violations(mos) -> tuple[int, int, list[str]]:
    """(cases, cases where a question ranks above the answer or the answer is missing, details)"""
    cases, bad, details = 0, 0, []
    for n, (sessions, queries) in enumerate(CONVERSATIONS):
        user = f"u{n}"
        ids = _load(mos, user, sessions)
        for query, answer in queries:
            cases += 1
            hits = mos.search(query, user_id=user, k=10, record_usage=False)
            texts = [h.text for h in hits]
            rank = texts.index(answer) if answer in texts else None
            first_q = next((i for i, t in enumerate(texts) if is_question(t)), None)
            if rank is None or (first_q is not None and first_q < rank):
                bad += 1
                details.append(f"{query!r}: answer at {rank}, a question at {first_q}: {texts[:3]}")
            assert ids[answer]
    return cases, bad, details


def test_questions_do_not_outrank_their_answers(make_mos):
    cases, bad, details = _violations(make_mos("fixed"))
    assert cases == 7 and bad == 0, details


def test_the_set_shows_the_problem_without_the_fix(make_mos):
    """With question demotion off (``question_weight=1``) past questions win: the set
    measures something."""
    from memos_core.config import RetrievalConfig

    cases, bad, _ = _violations(make_mos("off", retrieval=RetrievalConfig(question_weight=1.0)))
    assert cases == 7 and bad >= 4


@pytest.mark.parametrize("text, expected", [
    ("What bike do I have?", True),
    ("user: what bike do I have?", True),
    ("[6 May 2024] Sam: What is my dentist appointment time?", True),
    ("Ana: Hey! Where does my sister live?", True),
    ("I ride a green gravel bike. Do you cycle?", False),
    ("user: I ride a green Trek gravel bike.", False),
    ("Caroline: Wow, that's amazing! I went to a support group yesterday. How about you?", False),
    ("", False),
    ("?", True),
])
def test_is_question(text, expected):
    assert is_question(text) is expected
