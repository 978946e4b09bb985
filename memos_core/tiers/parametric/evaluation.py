"""Evaluating an adapter, and the gate that decides whether it may go live.

Two measurements, both greedy and on raw text (no chat template):

* **recall** -- for each memory, the completion of its cloze prompt must contain the
  remembered answer (case-insensitive, surrounding space and punctuation ignored);
* **drift** -- for each control prompt the base model answers with confidence (see
  :func:`base_control_answers`), the first ``control_words`` words of the answer
  (lowercased, punctuation dropped) must equal the base model's; every difference is a
  regression.

:func:`gate` is pure: numbers and a config in, a decision with its reasons out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from memos_core.tiers.parametric.config import ParametricConfig
from memos_core.tiers.parametric.data import cloze, question

_WORD = re.compile(r"[^\W_]+")


def greedy_completion(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int,
                      stop: Callable[[], None] = lambda: None) -> list[int]:
    """Token ids greedily generated after the raw ``prompt`` (stops early at an end token).

    ``model`` is a transformers causal LM (base, merged, or peft-wrapped); it is not modified.
    ``stop`` is called before each token (it raises to end the generation: a closing store).
    """
    import torch
    from transformers import DynamicCache

    from memos_core.runtime.generation import greedy_tokens

    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    input_ids = torch.tensor([ids], device=model.device)  # (1, prompt_len)
    eos = frozenset(i for i in [tokenizer.eos_token_id] if i is not None)
    out = []
    stop()
    for token in greedy_tokens(model, input_ids, DynamicCache(config=model.config),
                               max_new_tokens, eos):
        out.append(token)
        stop()
    return [t for t in out if t not in eos]


def _norm(text: str) -> str:
    return " ".join(text.lower().replace(".", " ").replace(",", " ").split())


def leading_words(text: str, n: int) -> str:
    """The first ``n`` words of ``text``, lowercased, a word being a run of letters and
    digits (``" Jupiter, but"`` -> ``"jupiter"``, ``" Tower's"`` -> ``"tower"`` for n=1)."""
    return " ".join(_WORD.findall(text.lower())[:n])


def control_kept(base: str, adapted: str, n: int) -> bool:
    """Whether the adapted answer starts with the same ``n`` words as the base answer."""
    return leading_words(base, n) == leading_words(adapted, n)


def answer_recalled(completion: str, answer: str) -> bool:
    """True when ``answer`` appears in ``completion`` (case, spacing, '.' and ',' ignored).
    A substring: a completion running on into the next word (``" Pastelotvin"``) counts."""
    wanted = _norm(answer)
    return bool(wanted) and wanted in _norm(completion)


class RecallItem(BaseModel):
    model_config = ConfigDict(frozen=True)

    memory_id: str
    prompt: str
    answer: str
    completion: str
    recalled: bool
    question: str | None = Field(default=None, description="The chat question asked.")
    question_completion: str | None = Field(default=None, description="The chat answer.")
    question_recalled: bool | None = Field(
        default=None, description="The chat answer contains the answer (None: not asked).")
    context_completion: str | None = Field(
        default=None, description="The chat answer with the trained memories in the prompt.")
    context_recalled: bool | None = Field(
        default=None, description="That answer contains the answer (None: not asked).")
    base_context_recalled: bool | None = Field(
        default=None, description="The base model's answer to the same prompt contains it.")


class ControlItem(BaseModel):
    model_config = ConfigDict(frozen=True)

    prompt: str
    base: str = Field(description="The base model's answer.")
    adapted: str = Field(description="The answer under the adapter.")
    kept: bool


class Evaluation(BaseModel):
    """Recall of the memories and drift on the controls; ``recall`` is in 0..1."""

    model_config = ConfigDict(frozen=True)

    recall_hits: int = Field(ge=0)
    recall_total: int = Field(ge=0)
    controls: int = Field(ge=0, description="Control prompts checked.")
    control_regressions: int = Field(ge=0, description="Controls whose answer changed.")
    context_regressions: int = Field(
        default=0, ge=0,
        description="Memories the base model answered right in a chat with the memories in "
        "the prompt and the adapted model did not (:func:`evaluate`'s ``context``).")
    items: tuple[RecallItem, ...] = ()
    control_items: tuple[ControlItem, ...] = ()

    @property
    def recall(self) -> float:
        """Fraction recalled; 0.0 when there is nothing to recall."""
        return self.recall_hits / self.recall_total if self.recall_total else 0.0

    @property
    def question_recall(self) -> float | None:
        """Fraction answered right when asked in a chat (None: not asked)."""
        asked = [i.question_recalled for i in self.items if i.question_recalled is not None]
        return sum(asked) / len(asked) if asked else None

    @property
    def context_right(self) -> tuple[int, int] | None:
        """``(base model, adapted model)``: how many memories each answered right when asked
        with the memories in the prompt (None: the in-context check did not run). Beside
        ``context_regressions``, what was gained: the gate counts only the losses."""
        asked = [i for i in self.items if i.context_recalled is not None]
        if not asked:
            return None
        return (sum(bool(i.base_context_recalled) for i in asked),
                sum(bool(i.context_recalled) for i in asked))

    def answered_in_chat(self) -> frozenset[str]:
        """Ids of the memories the adapter answered right when asked in a chat."""
        return frozenset(i.memory_id for i in self.items if i.question_recalled)


def scrubbed(evaluation: Evaluation) -> Evaluation:
    """``evaluation`` without any text: recall items keep their memory id and whether they
    were recalled, controls whether they were kept (what a forget leaves of an adapter's
    record: the texts may hold the forgotten memory)."""
    return evaluation.model_copy(update={
        "items": tuple(i.model_copy(update={"prompt": "", "answer": "", "completion": "",
                                            "question": None, "question_completion": None,
                                            "context_completion": None})
                       for i in evaluation.items),
        "control_items": tuple(c.model_copy(update={"prompt": "", "base": "", "adapted": ""})
                               for c in evaluation.control_items),
    })


class GateDecision(BaseModel):
    """Whether an adapter may be activated, and why (or why not)."""

    model_config = ConfigDict(frozen=True)

    passed: bool
    reasons: tuple[str, ...]


def gate(recall: float, control_regressions: int, config: ParametricConfig,
         controls: int | None = None, context_regressions: int = 0,
         context_right: tuple[int, int] | None = None) -> GateDecision:
    """Pass iff ``recall >= config.min_recall``, ``control_regressions <=
    config.max_control_regressions``, (when ``controls`` is given) at least
    ``config.min_controls`` controls were checked, and ``context_regressions <=
    config.max_context_regressions``. ``context_right`` (:attr:`Evaluation.context_right`)
    only adds to the reasons what the adapter answered right in context against the base
    model, for a user weighing a lost answer against gained ones. Pure; ``recall`` in
    0..1."""
    reasons = []
    context_ok = context_regressions <= config.max_context_regressions
    recall_ok = recall >= config.min_recall
    drift_ok = control_regressions <= config.max_control_regressions
    if controls is not None and controls < config.min_controls:
        drift_ok = False
        reasons.append(f"only {controls} confident control prompts < {config.min_controls}: "
                       "drift cannot be measured on this base model")
    reasons.append(f"recall {recall:.3f} {'>=' if recall_ok else '<'} {config.min_recall}")
    reasons.append(
        f"control regressions {control_regressions} "
        f"{'<=' if drift_ok else '>'} {config.max_control_regressions}"
    )
    if context_regressions or not context_ok:
        right = "" if context_right is None else (
            f" (answered right with them: adapted {context_right[1]}, base {context_right[0]})")
        reasons.append(
            f"answers lost with the memories in the prompt {context_regressions} "
            f"{'<=' if context_ok else '>'} {config.max_context_regressions}{right}")
    return GateDecision(passed=recall_ok and drift_ok and context_ok, reasons=tuple(reasons))


def first_token_confidence(model: Any, tokenizer: Any, prompt: str) -> float:
    """The probability ``model`` gives its most likely next token after the raw ``prompt``."""
    import torch

    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids], device=model.device)).logits
    return float(logits[0, -1].float().softmax(-1).max())


def base_control_answers(
    model: Any, tokenizer: Any, prompts: Sequence[str], config: ParametricConfig,
    stop: Callable[[], None] = lambda: None,
) -> list[tuple[str, str]]:
    """``(prompt, answer)`` for the control prompts the base model answers with confidence
    (first token probability >= ``config.control_min_confidence``); the answer is its first
    ``control_tokens`` tokens, decoded."""
    return [
        (p, tokenizer.decode(greedy_completion(model, tokenizer, p, config.control_tokens,
                                               stop)))
        for p in prompts
        if config.control_min_confidence <= 0
        or first_token_confidence(model, tokenizer, p) >= config.control_min_confidence
    ]


def evaluate(
    model: Any,
    tokenizer: Any,
    memories: Sequence[tuple[str, str]],
    controls: Sequence[tuple[str, str]],
    config: ParametricConfig,
    chat: Callable[[str], str] | None = None,
    stop: Callable[[], None] = lambda: None,
    context: Callable[[str], str] | None = None,
    base_in_context: Mapping[str, bool] | None = None,
) -> Evaluation:
    """Measure ``model`` (the adapted model) on ``memories`` (``(id, text)``) and
    ``controls`` (``(prompt, base answer)`` from :func:`base_control_answers`). Given
    ``chat`` (question -> chat-formatted prompt), each memory's question form is asked too
    (``question_tokens`` tokens) and ``question_recalled`` set. Given ``context`` (question
    -> a chat prompt with the memories in it, as a chat would give them) and
    ``base_in_context`` (memory id -> whether the base model answered that prompt right,
    :func:`in_context_answers`), it is asked that way too: a memory the base model answered
    and the adapted one did not is a context regression. ``stop`` is called before each
    memory, control and generated token and may raise to end it there."""
    items = []
    for memory_id, text, prompt, answer in _cloze_forms(memories, stop):
        out = tokenizer.decode(greedy_completion(model, tokenizer, prompt, config.recall_tokens,
                                                 stop))
        asked = said = None
        if chat is not None:
            asked = question(text) or prompt
            said = tokenizer.decode(greedy_completion(model, tokenizer, chat(asked),
                                                      config.question_tokens, stop))
        in_context = None
        if context is not None:
            in_context = _asked_in_context(model, tokenizer, context, text, prompt, config, stop)
        items.append(RecallItem(
            memory_id=memory_id, prompt=prompt, answer=answer.strip(), completion=out,
            recalled=answer_recalled(out, answer), question=asked, question_completion=said,
            question_recalled=None if said is None else answer_recalled(said, answer),
            context_completion=in_context,
            context_recalled=None if in_context is None else answer_recalled(in_context, answer),
            base_context_recalled=None if base_in_context is None
            else base_in_context.get(memory_id)))
    control_items = []
    for prompt, base in controls:
        stop()
        out = tokenizer.decode(greedy_completion(model, tokenizer, prompt, config.control_tokens,
                                                 stop))
        kept = control_kept(base, out, config.control_words)
        control_items.append(ControlItem(prompt=prompt, base=base, adapted=out, kept=kept))
    return Evaluation(
        recall_hits=sum(i.recalled for i in items),
        recall_total=len(items),
        controls=len(control_items),
        control_regressions=sum(not c.kept for c in control_items),
        context_regressions=sum(bool(i.base_context_recalled) and i.context_recalled is False
                                for i in items),
        items=tuple(items),
        control_items=tuple(control_items),
    )


def in_context_answers(model: Any, tokenizer: Any, memories: Sequence[tuple[str, str]],
                       context: Callable[[str], str], config: ParametricConfig,
                       stop: Callable[[], None] = lambda: None) -> dict[str, bool]:
    """Memory id -> whether ``model`` (the base model) answers the memory's question right
    when asked with ``context`` (the memories in the prompt): what :func:`evaluate` compares
    the adapted model with. Memories without a cloze form are left out, as there."""
    answered = {}
    for memory_id, text, prompt, answer in _cloze_forms(memories, stop):
        said = _asked_in_context(model, tokenizer, context, text, prompt, config, stop)
        answered[memory_id] = answer_recalled(said, answer)
    return answered


def _cloze_forms(memories: Sequence[tuple[str, str]], stop: Callable[[], None],
                 ) -> Iterator[tuple[str, str, str, str]]:
    """``(id, text, cloze prompt, answer)`` of each memory that has a cloze form; ``stop()``
    before each."""
    for memory_id, text in memories:
        stop()
        form = cloze(text)
        if form is not None:
            yield memory_id, text, *form


def _asked_in_context(model: Any, tokenizer: Any, context: Callable[[str], str], text: str,
                      cloze_prompt: str, config: ParametricConfig,
                      stop: Callable[[], None]) -> str:
    """``model``'s answer to the memory's question (its cloze prompt if it has none) asked
    in ``context``: the same prompt for the base and the adapted model."""
    asked = context(question(text) or cloze_prompt)
    return str(tokenizer.decode(greedy_completion(model, tokenizer, asked,
                                                  config.question_tokens, stop)))
