"""Training and evaluation data of the parametric tier, derived from the memories alone.

* :func:`cloze` turns a statement into a prompt and the answer it must complete to: the last
  word is the answer (``"Ada's cat is named Pastel."`` -> ``("Ada's cat is named",
  " Pastel")``). One deterministic rule, no model, no grammar: it suits the short fact and
  preference statements that are consolidated; anything shorter than three words has no
  cloze form and is not consolidated.
* :data:`REPLAY_PROMPTS` are general prompts whose *base model* completions are trained
  alongside the memories, so the adapter keeps what the model already said (no outside data).
* :data:`CONTROL_PROMPTS` (disjoint from the replay prompts) measure drift: their base-model
  answers must stay the same under the adapter.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

_TRAILING = re.compile(r"[\s.!?;:,]+$")

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
)

CONTROL_PROMPTS: tuple[str, ...] = (
    "The capital of France is",
    "The capital of Germany is",
    "Water is made of hydrogen and",
    "The Earth orbits around the",
    "The largest planet in our solar system is",
    "One, two, three, four,",
    "Monday, Tuesday, Wednesday,",
    "The primary colors are red, blue and",
    "A dog is a kind of",
    "The freezing point of water in Celsius is",
    "The opposite of up is",
    "The sun rises in the",
    "The longest river in Africa is the",
    "An apple a day keeps the",
    "The speed of light is about",
    "Humans breathe in oxygen and breathe out",
    "The moon orbits the",
    "A year has twelve",
    "The plural of mouse is",
    "The first president of the United States was",
    "Paris is famous for the Eiffel",
    "The author of Harry Potter is",
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


def memory_examples(memory_id: str, text: str, *, statement: bool = True) -> list[Example]:
    """The statement itself (learned whole; left out with ``statement=False``) and its cloze
    form (prompt -> answer).

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
