"""BM25 sparse vectors, made in-process by qdrant-edge's tokenizer.

The encoder only produces term-frequency weights; the IDF half of BM25 is applied by
Qdrant at search time (both backends store the sparse vector with the IDF modifier), so
adding a document never changes the vectors already stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import qdrant_edge

from memos_core.index.base import SparseVec

#: Expected document length in tokens (after stopword removal) for BM25 length
#: normalisation. Memories are one or two sentences, so the usual 256 (a web page) would
#: all but switch length normalisation off; a long episode should weigh a word less than a
#: short fact that is about that word.
DEFAULT_AVG_LEN = 20.0


class Bm25Encoder:
    """Text -> BM25 sparse vectors: English, lowercased, accents folded, stopwords
    removed, Snowball-stemmed ("Running dogs" and "run dog" share both terms).

    Indices are stable 32-bit term hashes, so no vocabulary is stored. Documents and
    queries must be encoded by encoders with the same :attr:`fingerprint`; a different
    fingerprint means the index must be rebuilt. Thread-safe (encoding is pure).
    """

    def __init__(
        self, *, avg_len: float = DEFAULT_AVG_LEN, k: float = 1.2, b: float = 0.75
    ) -> None:
        """``k``: term-frequency saturation; ``b``: length normalisation in [0, 1];
        ``avg_len``: expected document length in tokens. Raises ``ValueError`` if invalid."""
        if not avg_len > 0:
            raise ValueError(f"avg_len must be > 0, got {avg_len!r}")
        if not 0.0 <= b <= 1.0:
            raise ValueError(f"b must be in [0, 1], got {b!r}")
        if not k >= 0:
            raise ValueError(f"k must be >= 0, got {k!r}")
        self._settings = {"avg_len": float(avg_len), "k": float(k), "b": float(b)}
        config = qdrant_edge.Bm25Config(
            k=float(k),
            b=float(b),
            avg_len=float(avg_len),
            language="english",
            lowercase=True,
            ascii_folding=True,
        )
        self._model = qdrant_edge.Bm25(config)

    @property
    def fingerprint(self) -> str:
        """A string that changes whenever the vectors this encoder makes would change."""
        settings = {"tokenizer": "qdrant-edge-bm25", "language": "english", **self._settings}
        return json.dumps(settings, sort_keys=True)

    def encode_document(self, text: str) -> SparseVec:
        """The stored vector of a document: per-term BM25 term-frequency weights (> 0).

        Text with no indexable word (empty, only stopwords or punctuation) gives an empty
        vector, which no sparse search matches.
        """
        return _to_sparse(self._model.embed_document(_check_text(text)))

    def encode_query(self, text: str) -> SparseVec:
        """The search vector of a query: weight 1.0 per distinct term."""
        return _to_sparse(self._model.embed_query(_check_text(text)))

    def encode_documents(self, texts: Iterable[str]) -> list[SparseVec]:
        """:meth:`encode_document` for each text, in order."""
        return [self.encode_document(text) for text in texts]

    def encode_queries(self, texts: Iterable[str]) -> list[SparseVec]:
        """:meth:`encode_query` for each text, in order."""
        return [self.encode_query(text) for text in texts]


def _check_text(text: str) -> str:
    if not isinstance(text, str):
        raise ValueError(f"BM25 encodes str, got {type(text).__name__}")
    return text


def _to_sparse(vector: qdrant_edge.SparseVector) -> SparseVec:
    # Sorted by index so equal texts always give equal (hashable, comparable) vectors.
    pairs = sorted(zip(vector.indices, vector.values))
    return SparseVec(tuple(i for i, _ in pairs), tuple(float(v) for _, v in pairs))
