"""MiniLM in torch with bf16 matrix products: the model's vectors, faster on CPUs that do bf16
arithmetic in hardware.

The weights of the linear layers are held in bf16 and the forward pass runs under
``torch.autocast(bfloat16)``, so every matrix product multiplies bf16 numbers and adds in
fp32, while embeddings, layer norms, softmax and the pooling stay fp32. The vectors are the
fp32 model's up to rounding: cosine to the sentence-transformers vectors >= 0.9999 on the
test texts and on LoCoMo turns (docs/benchmarks.md, twelfth pass), against >= 0.999 asked of
any backend that claims the same vectors. A text's vector moves a little with the shape of
its batch, as the kernels round differently (cosine >= 0.9999 between batchings).

Attention runs as plain batched matrix products and a softmax (transformers' "eager"
attention), not the fused scaled-dot-product kernel: at MiniLM's short sequences the fused
CPU kernel took 17.5% of a bulk call, and the plain products embed 5 to 8% faster
(docs/benchmarks.md, thirteenth pass).

On a CPU with ``avx512_bf16`` (AMD Zen 4, Intel Cooper Lake: up to twice the fp32 rate) or
AMX (Intel Sapphire Rapids and later) the products run faster than in fp32; elsewhere torch
emulates bf16 and this is slower than fp32, so :func:`memos_core.embedding.default_embedder`
uses it only where :func:`memos_core.embedding.pieces.native_bf16` says the hardware has it,
and only for bulk calls: one query is faster on ONNX Runtime.

Tokenisation and batching are the ONNX embedder's (:mod:`memos_core.embedding.pieces`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memos_core.embedding.pieces import (
    PieceBatchedEmbedder,
    check_mean_pooling,
    max_seq_length,
    mean_pool,
    quiet_loading,
)
from memos_core.errors import InvalidInputError

__all__ = ["Bf16Embedder"]


class Bf16Embedder(PieceBatchedEmbedder):
    """A mean-pooling sentence-transformers model (default: the packaged MiniLM) in torch on
    the CPU with bf16 matrix products. Same contract as
    :class:`memos_core.embedding.Embedder`; loaded lazily (about half a second, no export);
    thread-safe. Batching as :class:`memos_core.embedding.onnx.OnnxEmbedder`.

    ``attention``: "eager" (plain batched products, faster here) or "sdpa" (transformers'
    fused kernel); the vectors agree to cosine >= 0.9999.

    Raises:
        InvalidInputError: ``attention`` is neither.
        ModelLoadError: (on the first ``embed``) the model is not Transformer -> mean
            Pooling -> Normalize.
    """

    backend = "bf16"

    def __init__(self, model: str = "minilm", *, batch_size: int = 64, batch_tokens: int = 1024,
                 sort_by_length: bool = True, attention: str = "eager") -> None:
        super().__init__(model, batch_size=batch_size, batch_tokens=batch_tokens,
                         sort_by_length=sort_by_length)
        if attention not in ("eager", "sdpa"):
            raise InvalidInputError(f"attention must be 'eager' or 'sdpa', got {attention!r}.")
        #: transformers' attention: "eager" (batched products, the default) or "sdpa" (fused)
        self.attention = attention
        self._model: Any = None  # the transformers model once loaded

    def _load(self) -> None:
        with self._lock:
            if self._tokenizer is not None:
                return
            import torch
            from transformers import AutoModel

            src = self._model_dir()
            check_mean_pooling(src, "the bf16 embedder")
            tok = self._open_tokenizer(src / "tokenizer.json", max_seq_length(src))
            with quiet_loading():
                model = AutoModel.from_pretrained(str(src), dtype=torch.float32,
                                                  attn_implementation=self.attention)
            model.eval()
            for module in model.modules():  # autocast then has nothing to convert per call
                if isinstance(module, torch.nn.Linear):
                    module.to(torch.bfloat16)
            self._model = model
            self._tokenizer = tok  # last: a set tokenizer means loaded
            self.dim = int(self._run(["dimension probe"]).shape[1])

    def _infer(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import torch

        input_ids = torch.from_numpy(ids)
        attention = torch.from_numpy(mask)
        with torch.inference_mode():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                tokens = self._model(input_ids=input_ids, attention_mask=attention,
                                     token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
            vectors = mean_pool(tokens.float(), attention)
        return np.asarray(vectors.numpy(), dtype=np.float32)
