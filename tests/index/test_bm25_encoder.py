"""Bm25Encoder: what makes two texts share terms, and the shape of the vectors it makes."""

from __future__ import annotations

import math

import pytest

from memos_core.index import Bm25Encoder, SparseVec

ENC = Bm25Encoder()


def terms(text: str) -> set[int]:
    return set(ENC.encode_query(text).indices)


@pytest.mark.parametrize(
    "a, b",
    [
        ("Running dogs", "run dog"),  # stemming
        ("COFFEE Tea", "coffee tea"),  # lowercase
        ("café naïve", "cafe naive"),  # accent folding
        ("the dog and the cat", "dog cat"),  # stopwords dropped
        ("dog, cat!", "dog cat"),  # punctuation
    ],
    ids=["stem", "case", "accents", "stopwords", "punctuation"],
)
def test_equivalent_texts_share_all_terms(a, b):
    assert terms(a) == terms(b)


@pytest.mark.parametrize("text", ["", "   ", "the of and", "!!!"])
def test_texts_without_words_give_empty_vectors(text):
    assert ENC.encode_document(text) == SparseVec((), ())
    assert ENC.encode_query(text) == SparseVec((), ())


def test_query_weights_are_one_per_distinct_term():
    vec = ENC.encode_query("tea tea coffee")
    assert len(vec.indices) == 2 and vec.values == (1.0, 1.0)


def weights(text: str) -> dict[int, float]:
    vec = ENC.encode_document(text)
    return dict(zip(vec.indices, vec.values))


def test_document_weights_saturate_with_term_frequency_and_fall_with_length():
    once, twice = weights("tea"), weights("tea tea")
    long = weights("tea " + " ".join(f"word{i}" for i in range(60)))
    (tea,) = terms("tea")
    assert once[tea] < twice[tea] < 2 * once[tea]
    assert long[tea] < once[tea]
    assert all(v > 0 and math.isfinite(v) for v in twice.values())


def test_vectors_are_sorted_deterministic_and_u32():
    a = ENC.encode_document("zebra apple mango zebra")
    assert a == Bm25Encoder().encode_document("zebra apple mango zebra")
    assert list(a.indices) == sorted(a.indices)
    assert all(0 <= i < 2**32 for i in a.indices)


def test_batch_versions_equal_single_calls():
    texts = ["green tea", "black coffee", ""]
    assert ENC.encode_documents(texts) == [ENC.encode_document(t) for t in texts]
    assert ENC.encode_queries(iter(texts)) == [ENC.encode_query(t) for t in texts]


def test_fingerprint_follows_settings():
    assert Bm25Encoder().fingerprint == ENC.fingerprint
    assert Bm25Encoder(avg_len=100).fingerprint != ENC.fingerprint
    assert Bm25Encoder(avg_len=100).encode_document("tea") != ENC.encode_document("tea")


@pytest.mark.parametrize("kwargs", [dict(avg_len=0), dict(b=1.5), dict(k=-1)])
def test_invalid_settings_raise(kwargs):
    with pytest.raises(ValueError):
        Bm25Encoder(**kwargs)


def test_non_text_raises():
    with pytest.raises(ValueError, match="str"):
        ENC.encode_document(None)  # type: ignore[arg-type]
