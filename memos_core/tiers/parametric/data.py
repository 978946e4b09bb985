"""Training and evaluation data of the parametric tier, derived from the memories alone.

* :func:`cloze` turns a statement into a prompt and the answer it must complete to: the last
  word is the answer (``"Ada's cat is named Pastel."`` -> ``("Ada's cat is named",
  " Pastel")``). One deterministic rule, no model, no grammar: it suits the short fact and
  preference statements that are consolidated; anything shorter than three words has no
  cloze form and is not consolidated.
* :func:`question` turns the same statement into a simple question (``"What is Ada's cat
  named?"``), learned in chat form with the statement as the answer, so the adapter can
  answer in a chat and not only complete raw text.
* :data:`REPLAY_PROMPTS` are general prompts whose *base model* behaviour is distilled into
  the adapter alongside the memories (its full next-token distribution over each prompt and
  its greedy completion), so the adapter keeps what the model already said; no outside data.
* :func:`neighbour` prompts (each memory's cloze prompt about someone else) are replayed the
  same way, so the adapter ties an answer to its subject rather than to the sentence pattern.
* :data:`CONTROL_PROMPTS` (disjoint from the replay prompts) measure drift. Only those the
  base model answers with confidence are used (see ``ParametricConfig.control_min_confidence``):
  an answer the base model itself barely prefers flips under any change of weights and
  measures noise, not forgetting.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from pydantic import BaseModel, ConfigDict, Field

_TRAILING = re.compile(r"[\s.!?;:,]+$")
_COPULA = re.compile(r"^(?P<subject>.+?)\s+(?P<verb>is|are|was|were)(?:\s+(?P<rest>.*))?$")
_ARTICLE = re.compile(r"\s*\b(?:a|an|the)$", re.IGNORECASE)

REPLAY_PROMPTS: tuple[str, ...] = (
    "The capital of Italy is",
    "The largest ocean on Earth is the",
    "A week has seven days. The first day of the week is",
    "The chemical symbol for gold is",
    "Photosynthesis is the process by which plants",
    "The opposite of hot is",
    "The planet closest to the Sun is",
    "Shakespeare wrote the play",
    "In mathematics, two plus two equals",
    "The tallest mountain in the world is",
    "A baby cat is called a",
    "The main language spoken in Brazil is",
    "Ice is the solid form of",
    "The author of the theory of relativity is",
    "A triangle has three",
    "The color of a clear daytime sky is",
    "Bees make a sweet food called",
    "The currency of Japan is the",
    "A person who writes poems is called a",
    "The first month of the year is",
    "Python is a popular programming",
    "To make tea, you first boil",
    "Water is made of hydrogen and",
    "The largest planet in our solar system is",
    "One, two, three, four,",
    "Monday, Tuesday, Wednesday,",
    "A dog is a kind of",
    "The freezing point of water in Celsius is",
    "The sun rises in the",
    "An apple a day keeps the",
    "The speed of light is about",
    "A year has twelve",
    "The first president of the United States was",
    "The author of Harry Potter is",
)

CONTROL_PROMPTS: tuple[str, ...] = (
    "The capital of France is",
    "The capital of Germany is",
    "The capital of England is",
    "The capital of China is",
    "The capital of Japan is",
    "The capital of Spain is",
    "The capital of Canada is",
    "Madrid is the capital of",
    "The Earth orbits around the",
    "The moon orbits the",
    "Paris is famous for the Eiffel",
    "The opposite of up is",
    "The opposite of left is",
    "The opposite of black is",
    "The plural of mouse is",
    "The longest river in Africa is the",
    "Humans breathe in oxygen and breathe out",
    "The primary colors are red, blue and",
    "The chemical symbol for water is",
    "The chemical symbol for sodium is",
    "The chemical symbol for iron is",
    "The chemical symbol for oxygen is",
    "A teacher works in a",
    "Mount Everest is the highest mountain in the",
    "The Mona Lisa was painted by Leonardo da",
    "The Olympic Games are held every four",
    "A, B, C, D,",
    "The Amazon is the largest rainforest in the",
    "Water boils at 100 degrees",
    "The Statue of Liberty is in New",
    "Elephants are the largest land",
    "The Beatles were a band from",
    "A decade is ten",
    "A century is one hundred",
    "The President of the United States lives in the White",
    "The Great Barrier Reef is off the coast of",
    "A spider has eight",
    "The Sahara is a large",
    "William Shakespeare was an English",
    "A group of wolves is called a",
)


class Example(BaseModel):
    """One training sequence: loss is taken on ``completion`` only (``prompt`` is context)."""

    model_config = ConfigDict(frozen=True)

    prompt: str = Field(description="Context tokens (no loss); may be empty.")
    completion: str = Field(min_length=1, description="Tokens the model learns to produce.")
    source: str = Field(description="Memory id, or 'replay'.")


def cloze(text: str) -> tuple[str, str] | None:
    """``(prompt, answer)`` for a statement, the answer being its last word with a leading
    space; None when the statement has fewer than three words. Pure and deterministic."""
    words = _TRAILING.sub("", text.strip()).split()
    if len(words) < 3:
        return None
    return " ".join(words[:-1]), " " + words[-1]


def question(text: str) -> str | None:
    """A simple question the statement answers, from its cloze prompt: ``"<subject> is
    <rest>"`` becomes ``"What is <subject> <rest>?"`` (a trailing article dropped:
    ``"Ada's car is a"`` -> ``"What is Ada's car?"``), anything else ``"<prompt> what?"``
    (``"Quenby lives in"`` -> ``"Quenby lives in what?"``). None without a cloze form."""
    form = cloze(text)
    if form is None:
        return None
    prompt = form[0]
    match = _COPULA.match(prompt)
    if match is None:
        return f"{prompt} what?"
    rest = _ARTICLE.sub("", match["rest"] or "").strip()
    return f"What {match['verb']} {match['subject']}{' ' + rest if rest else ''}?"


def neighbour(text: str) -> str | None:
    """The statement's cloze prompt about someone else: up to the first possessive replaced
    by ``"My"`` (``"Ada's cat is named"`` -> ``"My cat is named"``), else the first word by
    ``"Someone"`` (``"Quenby lives in"`` -> ``"Someone lives in"``). Trained as replay, so the
    adapter learns the answer belongs to this subject, not to the sentence pattern. None
    without a cloze form."""
    form = cloze(text)
    if form is None:
        return None
    words = form[0].split()
    for i, word in enumerate(words):
        if word.endswith(("'s", "’s")):
            return " ".join(["My", *words[i + 1:]])
    return " ".join(["Someone", *words[1:]])


def memory_examples(
    memory_id: str, text: str, *, statement: bool = True,
    chat: Callable[[str], tuple[str, str]] | None = None,
) -> list[Example]:
    """The statement itself (learned whole; left out with ``statement=False``), its cloze
    form (prompt -> answer) and, given ``chat``, its question form: ``chat(question)`` returns
    the chat-formatted prompt and the end-of-turn text, and the answer is the statement.

    Raises:
        ValueError: the statement has no cloze form (see :func:`cloze`).
    """
    form = cloze(text)
    if form is None:
        raise ValueError(
            f"memory {memory_id} is too short to consolidate (needs three words or more): {text!r}"
        )
    prompt, answer = form
    examples = [Example(prompt=prompt, completion=answer, source=memory_id)]
    if statement:
        examples.insert(0, Example(prompt="", completion=text.strip(), source=memory_id))
    if chat is not None:
        asked, end = chat(question(text) or prompt)
        examples.append(Example(prompt=asked, completion=text.strip() + end, source=memory_id))
    return examples


def replay_examples(prompts: Sequence[str], completions: Sequence[str]) -> list[Example]:
    """Replay pairs: each prompt with the base model's own greedy completion (empty ones
    are dropped: nothing to protect)."""
    if len(prompts) != len(completions):
        raise ValueError("one completion per replay prompt is needed")
    return [
        Example(prompt=p, completion=c, source="replay")
        for p, c in zip(prompts, completions)
        if c.strip()
    ]
