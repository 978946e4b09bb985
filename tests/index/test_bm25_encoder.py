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


# -- per-store settings (issue 16): a store keeps the BM25 settings its vectors were made with


def test_a_new_store_records_the_default_settings_and_keeps_them(tmp_path):
    import json
    import sqlite3

    from memos_core import MemOS, MemOSConfig
    from memos_core.index.sparse import LEGACY_SETTINGS, SETTINGS_META, Bm25Encoder

    cfg = MemOSConfig(show_progress=False)
    with MemOS(tmp_path / "d", config=cfg) as mos:
        assert mos.store.bm25.settings == Bm25Encoder().settings
        assert json.loads(mos.store.vault.get_meta(SETTINGS_META)) == Bm25Encoder().settings
        mos.add("Ana rides a green gravel bike.", user_id="u")
        # what a store made with other settings records (e.g. before a change of defaults)
        mos.store.vault.set_meta(SETTINGS_META, json.dumps({"avg_len": 12.0, "k": 0.5, "b": 0.2}))
    with MemOS(tmp_path / "d", config=cfg) as mos:
        assert mos.store.bm25.settings == {"avg_len": 12.0, "k": 0.5, "b": 0.2}
        assert mos.store.retriever.bm25 is mos.store.bm25
    # a store from before the record existed: it holds memories, so it was made with the old
    # defaults, whatever the defaults are now
    db = sqlite3.connect(tmp_path / "d" / "vault.sqlite3")
    with db:
        db.execute("DELETE FROM meta WHERE key=?", (SETTINGS_META,))
    db.close()
    with MemOS(tmp_path / "d", config=cfg) as mos:
        assert mos.store.bm25.settings == LEGACY_SETTINGS
        assert json.loads(mos.store.vault.get_meta(SETTINGS_META)) == LEGACY_SETTINGS
        hits = mos.search("gravel bike", user_id="u", record_usage=False)
        assert hits and "bm25" in hits[0].signals


def test_an_unreadable_settings_record_is_a_clear_error(tmp_path):
    from memos_core import MemOS, MemOSConfig
    from memos_core.errors import CorruptDataError
    from memos_core.index.sparse import SETTINGS_META

    cfg = MemOSConfig(show_progress=False)
    with MemOS(tmp_path / "d", config=cfg) as mos:
        mos.store.vault.set_meta(SETTINGS_META, "{not json")
    with pytest.raises(CorruptDataError, match=SETTINGS_META):
        MemOS(tmp_path / "d", config=cfg)


# -- text preparation ("text" 1): Unicode NFC, and Chinese / Japanese / Korean as bigrams

def _shares(query: str, document: str, encoder: Bm25Encoder = ENC) -> float:
    """Share of the query's terms the document has."""
    q = set(encoder.encode_query(query).indices)
    return len(q & set(encoder.encode_document(document).indices)) / len(q)


@pytest.mark.parametrize("query,document", [
    ("北京", "我喜欢在北京吃烤鸭和饺子"),
    ("烤鸭", "我喜欢在北京吃烤鸭和饺子"),
    ("東京", "東京でラーメンを食べた"),
    ("ラーメン", "東京でラーメンを食べた"),
    ("김치찌개", "김치찌개를 좋아해요"),
])
def test_a_word_inside_unspaced_cjk_text_is_a_keyword_match(query, document):
    """The word tokenizer kept a run of CJK characters whole: a sentence was one term, so
    none of its words matched it (the dense model, trained on English, gives little)."""
    assert _shares(query, document) == 1.0
    assert _shares(query, document, Bm25Encoder(text=0)) == 0.0  # as before


def test_decomposed_and_composed_text_are_the_same_terms():
    import unicodedata

    composed = "Jürgen Müller wohnt in Köln"
    decomposed = unicodedata.normalize("NFD", composed)
    assert ENC.encode_document(decomposed) == ENC.encode_document(composed)
    assert _shares("Müller Köln", decomposed) == 1.0
    assert _shares("Müller Köln", decomposed, Bm25Encoder(text=0)) == 0.0  # split at marks


def test_text_without_cjk_or_decomposed_letters_keeps_its_vectors():
    """English (all of LoCoMo), accented text in NFC: the same vectors as before, so
    recall there is unchanged and stores made before need no rebuild."""
    legacy = Bm25Encoder(text=0)
    for text in ("Running dogs chased 3 cats at 3pm on May 7, 2023!",
                 "Zoë's café in Köln -- “quoted” — dashes", "Ünïcödé ß Straße İstanbul",
                 "Привет, мир", ""):
        assert ENC.encode_document(text) == legacy.encode_document(text), text
        assert ENC.encode_query(text) == legacy.encode_query(text), text


def test_a_store_keeps_the_text_preparation_it_was_made_with(tmp_path):
    """New stores record ``text`` 1; one whose record lacks it (made before) keeps 0, so
    its stored vectors and its queries never mix two preparations."""
    import json

    from memos_core import MemOS, MemOSConfig
    from memos_core.errors import CorruptDataError
    from memos_core.index.sparse import SETTINGS_META

    cfg = MemOSConfig(show_progress=False)
    with MemOS(tmp_path / "d", config=cfg) as mos:
        assert json.loads(mos.store.vault.get_meta(SETTINGS_META))["text"] == 1
        mos.add("我喜欢在北京吃烤鸭和饺子", user_id="u")
        mos.add("Ana rides a green gravel bike.", user_id="u")
        hits = mos.search("烤鸭", user_id="u", record_usage=False)
        assert hits[0].memory.text == "我喜欢在北京吃烤鸭和饺子" and "bm25" in hits[0].signals
        mos.store.vault.set_meta(SETTINGS_META, json.dumps({"avg_len": 20.0, "k": 1.2, "b": 0.3}))
    with MemOS(tmp_path / "d", config=cfg) as mos:
        assert mos.store.bm25.settings == {"avg_len": 20.0, "k": 1.2, "b": 0.3}
        mos.store.vault.set_meta(SETTINGS_META, json.dumps(
            {"avg_len": 20.0, "k": 1.2, "b": 0.3, "text": 7}))
    with pytest.raises(CorruptDataError, match=SETTINGS_META):
        MemOS(tmp_path / "d", config=cfg)
    with pytest.raises(ValueError, match="text must be 0 or 1"):
        Bm25Encoder(text=2)
