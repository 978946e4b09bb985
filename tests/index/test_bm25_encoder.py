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


def test_a_store_of_a_newer_memos_core_says_to_upgrade(tmp_path):
    """A text setting this version does not know was called an unreadable record, with the
    advice to delete it and reindex (which re-encodes a newer store's index with settings it
    was not made with): it is a newer memos-core's store."""
    import json

    from memos_core import MemOS, MemOSConfig
    from memos_core.errors import CorruptDataError, MemOSError
    from memos_core.index.sparse import SETTINGS_META, TEXT_SETTINGS

    cfg = MemOSConfig(show_progress=False)
    with MemOS(tmp_path / "d", config=cfg) as mos:
        newer = {**mos.store.bm25.settings, "text": max(TEXT_SETTINGS) + 1}
        mos.store.vault.set_meta(SETTINGS_META, json.dumps(newer))
    with pytest.raises(MemOSError, match="made by a newer memos-core.*upgrade") as info:
        MemOS(tmp_path / "d", config=cfg)
    assert not isinstance(info.value, CorruptDataError)


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
    """New stores record ``text`` 2; one whose record says 1 keeps 1 and one whose record
    lacks it (made before) keeps 0, so its stored vectors and its queries never mix two
    preparations."""
    import json

    from memos_core import MemOS, MemOSConfig
    from memos_core.errors import CorruptDataError
    from memos_core.index.sparse import SETTINGS_META

    cfg = MemOSConfig(show_progress=False)
    with MemOS(tmp_path / "d", config=cfg) as mos:
        assert json.loads(mos.store.vault.get_meta(SETTINGS_META))["text"] == 2
        mos.add("我喜欢在北京吃烤鸭和饺子", user_id="u")
        mos.add("Ana rides a green gravel bike.", user_id="u")
        hits = mos.search("烤鸭", user_id="u", record_usage=False)
        assert hits[0].memory.text == "我喜欢在北京吃烤鸭和饺子" and "bm25" in hits[0].signals
        mos.store.vault.set_meta(SETTINGS_META, json.dumps({"avg_len": 20.0, "k": 1.2, "b": 0.3}))
    with MemOS(tmp_path / "d", config=cfg) as mos:
        assert mos.store.bm25.settings == {"avg_len": 20.0, "k": 1.2, "b": 0.3}
        mos.store.vault.set_meta(SETTINGS_META, json.dumps(
            {"avg_len": 20.0, "k": 1.2, "b": 0.3, "text": -1}))
    with pytest.raises(CorruptDataError, match=SETTINGS_META):
        MemOS(tmp_path / "d", config=cfg)
    with pytest.raises(ValueError, match="text must be one of"):
        Bm25Encoder(text=3)


def test_a_store_made_with_text_1_keeps_it_and_a_new_store_gets_2(tmp_path):
    """A store made before ``text`` 2 (its record says 1) is opened with 1: its vectors
    and its queries stay bigram-only and unfolded, as the memories it holds were encoded.
    A new store records 2, where a one-character word and unaccented Greek match."""
    import json

    from memos_core import MemOS, MemOSConfig
    from memos_core.index.sparse import SETTINGS_META

    cfg = MemOSConfig(show_progress=False)
    cat, athens = "我养了一只猫", "Η Αθήνα είναι όμορφη"
    with MemOS(tmp_path / "old", config=cfg) as mos:  # as the code before 2 recorded it
        mos.store.vault.set_meta(SETTINGS_META, json.dumps(
            {"avg_len": 20.0, "k": 1.2, "b": 0.3, "text": 1}))
    with MemOS(tmp_path / "old", config=cfg) as mos:
        assert mos.store.bm25.settings["text"] == 1
        for text in (cat, athens, "我喜欢在北京吃烤鸭和饺子"):
            mos.add(text, user_id="u")
        hits = mos.search("烤鸭", user_id="u", record_usage=False)  # a bigram: as with 1
        assert hits[0].memory.text == "我喜欢在北京吃烤鸭和饺子" and "bm25" in hits[0].signals
        for query in ("猫", "ΑΘΗΝΑ"):
            assert not any("bm25" in h.signals for h in mos.search(
                query, user_id="u", record_usage=False)), query
    with MemOS(tmp_path / "old", config=cfg) as mos:
        assert json.loads(mos.store.vault.get_meta(SETTINGS_META))["text"] == 1
    with MemOS(tmp_path / "new", config=cfg) as mos:
        assert mos.store.bm25.settings["text"] == 2
        for text in (cat, athens, "Ana rides a green gravel bike."):
            mos.add(text, user_id="u")
        for query, want in (("猫", cat), ("ΑΘΗΝΑ", athens), ("Αθηνα", athens)):
            hits = mos.search(query, user_id="u", record_usage=False)
            assert hits[0].memory.text == want and "bm25" in hits[0].signals, query


# -- text preparation 2: Greek, Arabic and Hebrew accents folded; CJK characters as terms

TEXT_1 = Bm25Encoder(text=1)


@pytest.mark.parametrize("query,document", [
    ("ΑΘΗΝΑ", "Η Αθήνα είναι όμορφη"),  # Greek capitals are written without tonos
    ("Αθηνα", "Η Αθήνα είναι όμορφη"),
    ("ΟΔΥΣΣΕΥΣ", "Ο Οδυσσεύς γύρισε σπίτι"),  # and a final sigma
    ("καφε", "Πίνω καφέ κάθε πρωί"),
    ("καφέ", "ΠΙΝΩ ΚΑΦΕ ΚΑΘΕ ΠΡΩΙ"),
    ("ευρωπαικη", "Ευρωπαϊκή Ένωση"),  # dialytika and tonos
    ("οδυσσευς", "Ὀδυσσεύς"),  # polytonic: breathing and accent
    ("محمد", "مُحَمَّد يحب القهوة"),  # harakat
    ("مُحَمَّد", "محمد يحب القهوة"),
    ("احمد", "أحمد في البيت"),  # hamza on alef
    ("שלום", "שָׁלוֹם לכולם"),  # niqqud
    ("שָׁלוֹם", "שלום לכולם"),
])
def test_greek_arabic_and_hebrew_match_with_and_without_their_marks(query, document):
    """The tokenizer folds Latin accents only: the capitals or unaccented spelling of a
    Greek word, unvocalized Arabic or Hebrew never matched the marked one."""
    assert _shares(query, document) == 1.0
    assert _shares(query, document, TEXT_1) == 0.0  # as before


@pytest.mark.parametrize("word,other", [
    ("कुल", "कल"),  # a vowel sign (Mn) makes another word
    ("दिल", "दल"),  # a vowel sign (Mc)
    ("किताब", "कताब"),
])
def test_devanagari_vowel_signs_are_kept(word, other):
    """Devanagari's marks are its vowels: a word matches itself, not the word without."""
    assert _shares(word, f"मेरा {word} है") == 1.0
    assert _shares(other, f"मेरा {word} है") == 0.0
    assert _shares(word, f"मेरा {other} है") == 0.0


@pytest.mark.parametrize("query,document", [
    ("猫", "我养了一只猫"),
    ("茶", "我每天早上喝茶"),
    ("书", "她买了一本书"),
    ("猫", "うちの猫は白い"),
    ("本", "本を読みました"),
    ("책", "나는 책을 읽었다"),  # a one-syllable noun with its particle
    ("물", "물을 마셨다"),
])
def test_a_one_character_word_matches_inside_cjk_text(query, document):
    """A CJK run was its bigrams only: a one-character word was no term of it."""
    assert _shares(query, document) == 1.0
    assert _shares(query, document, TEXT_1) == 0.0  # as before


@pytest.mark.parametrize("query,document", [
    ("北京", "我住在京都"),  # shares the character 京, not the word
    ("서울", "서쪽으로 갔다"),
    ("上海旅游", "我在海边"),
])
def test_a_query_of_several_cjk_characters_is_matched_by_its_bigrams_only(query, document):
    """Documents keep their characters as terms, queries of two or more characters do
    not: a query's characters would match every memory sharing one with it."""
    assert _shares(query, document) == 0.0


def test_text_2_changes_only_greek_arabic_hebrew_marks_and_cjk():
    """English (all of LoCoMo: 5,350 turns, captions and questions of locomo_dev were
    compared), Latin, Cyrillic, Devanagari, Thai: the vectors of ``text`` 1."""
    for text in ("Running dogs chased 3 cats at 3pm on May 7, 2023!",
                 "Caroline went to the LGBTQ support group on 7 May 2023.",
                 "Melanie painted a lake sunrise last year; she loves pottery.",
                 "Zoë's café in Köln -- “quoted” — dashes", "Ünïcödé ß Straße İstanbul",
                 "Tôi thích phở bò ở Hà Nội", "Привет, мир, ёлка и чай",
                 "नमस्ते, मेरा नाम किताब है", "สวัสดีครับ ผมชื่อดี", ""):
        assert ENC.encode_document(text) == TEXT_1.encode_document(text), text
        assert ENC.encode_query(text) == TEXT_1.encode_query(text), text
