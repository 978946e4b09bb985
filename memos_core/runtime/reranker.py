"""A reranker made from a local causal LM (the packaged SmolLM2-135M by default).

No cross-encoder is packaged for offline use, so this is the one reranker the project can run
with what it ships. Two scorings:

- ``"query_likelihood"`` (default): the mean log-probability of the query's tokens after
  "Passage: <text>\nA question about this passage:" -- how well the passage explains the
  question (unsupervised passage re-ranking by question generation, Sachan et al., EMNLP
  2022). It asks no judgement of the model, which suits a 135M model.
- ``"yes_no"``: the log-odds of "yes" over "no" as the first answer token to "Does the
  passage help answer the question?" (pointwise relevance judgement; needs a model that
  follows instructions better than SmolLM2-135M does).

It implements :class:`~memos_core.retrieval.rerank.Reranker`, so
``MemOS(reranker=LocalModelReranker())`` mixes it into the second stage at
``RetrievalConfig.reranker_weight``. It is opt-in and slow on a CPU (one forward pass over
every candidate of every query): docs/benchmarks.md has its LoCoMo recall and ms per query.

Importing this module does not import torch; building the reranker loads the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from memos_core.errors import InvalidInputError

if TYPE_CHECKING:
    from memos_core.runtime.model import LocalModel

__all__ = ["LocalModelReranker"]

_PASSAGE = "Passage: {text}\nA question about this passage:"
_INSTRUCTION = ("Does the passage help answer the question? Answer yes or no.\n\n"
                "Question: {query}\n\nPassage: {text}")


class LocalModelReranker:
    """Relevance of (query, text) pairs scored by a local LM (see the module docstring).

    Args:
        model: a :class:`~memos_core.runtime.LocalModel`; default
            :meth:`LocalModel.default` (SmolLM2-135M-Instruct, offline).
        method: ``"query_likelihood"`` or ``"yes_no"``.
        batch_size: pairs per forward pass (>= 1).
        max_chars: each text is cut to this many characters (>= 1) before prompting.

    Thread-safe as far as torch inference is; holds no per-call state.
    """

    def __init__(self, model: LocalModel | None = None, *,
                 method: Literal["query_likelihood", "yes_no"] = "query_likelihood",
                 batch_size: int = 16, max_chars: int = 600) -> None:
        if method not in ("query_likelihood", "yes_no"):
            raise InvalidInputError(f"method must be 'query_likelihood' or 'yes_no', got {method!r}")
        if batch_size < 1 or max_chars < 1:
            raise InvalidInputError(
                f"batch_size and max_chars must be >= 1, got {batch_size} and {max_chars}")
        if model is None:
            from memos_core.runtime import LocalModel

            model = LocalModel.default()
        self.model = model
        self.method = method
        self.batch_size = batch_size
        self.max_chars = max_chars
        tok = model.tokenizer
        self._yes = sorted({tok.encode(w, add_special_tokens=False)[0] for w in ("yes", "Yes")})
        self._no = sorted({tok.encode(w, add_special_tokens=False)[0] for w in ("no", "No")})
        self._pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def prompt(self, query: str, text: str) -> str:
        """The rendered prompt for one pair, ending where the answer's first token goes."""
        content = _INSTRUCTION.format(query=query.strip(), text=text.strip()[: self.max_chars])
        return self.model.render([{"role": "user", "content": content}],
                                 add_generation_prompt=True)

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        """One score per text, in order; higher is more relevant; an empty ``texts`` gives
        []. ``query_likelihood``: mean log P(query token | passage, earlier query tokens);
        ``yes_no``: log P(yes) - log P(no) over the first answer token (either case)."""
        if not isinstance(query, str) or any(not isinstance(t, str) for t in texts):
            raise InvalidInputError("LocalModelReranker.score takes a str query and str texts")
        out: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start:start + self.batch_size]
            if self.method == "yes_no":
                out.extend(self._log_odds([self.model.encode(self.prompt(query, t)) for t in chunk]))
            else:
                # no chat template here: escaped as a message's text is, so a passage
                # cannot end the text with the tokenizer's control tokens
                encode, escape = self.model.encode, self.model.escape
                asked = encode(escape(" " + query.strip()))
                out.extend(self._likelihood(
                    [encode(escape(_PASSAGE.format(text=t.strip()[: self.max_chars])))
                     for t in chunk], asked))
        return out

    def _likelihood(self, passages: list[list[int]], asked: list[int]) -> list[float]:
        import torch

        if not asked:
            return [0.0] * len(passages)
        rows = [p + asked for p in passages]
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [self._pad] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        model: Any = self.model.model
        with torch.inference_mode():
            logits = model(input_ids=ids.to(model.device),
                           attention_mask=mask.to(model.device)).logits.float()
            logp = torch.log_softmax(logits, dim=-1).cpu()
        target = torch.tensor(asked)
        out = []
        for row, p in enumerate(passages):
            # the token at position i is predicted by the logits at i - 1
            steps = logp[row, len(p) - 1:len(p) - 1 + len(asked)]
            out.append(float(steps.gather(1, target[:, None]).mean()))
        return out

    def _log_odds(self, batch: list[list[int]]) -> list[float]:
        import torch

        width = max(len(ids) for ids in batch)
        # left padding: every prompt's last token sits in the last column
        ids = torch.tensor([[self._pad] * (width - len(x)) + x for x in batch])
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch])
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        model: Any = self.model.model
        with torch.inference_mode():
            logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                           position_ids=positions.to(model.device)).logits[:, -1, :]
            logp = torch.log_softmax(logits.float(), dim=-1)
            yes = torch.logsumexp(logp[:, self._yes], dim=-1)
            no = torch.logsumexp(logp[:, self._no], dim=-1)
        return [float(v) for v in (yes - no).cpu()]
