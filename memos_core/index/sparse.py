"""BM25 sparse vectors, made in-process by qdrant-edge's tokenizer.

The encoder only produces term-frequency weights; the IDF half of BM25 is applied by
Qdrant at search time (both backends store the sparse vector with the IDF modifier), so
adding a document never changes the vectors already stored.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import qdrant_edge

from memos_core.errors import CorruptDataError, MemOSError
from memos_core.index.base import SparseVec

#: Expected document length in tokens (after stopword removal) for BM25 length
#: normalisation. Memories are one or two sentences, so the usual 256 (a web page) would
#: all but switch length normalisation off; a long episode should weigh a word less than a
#: short fact that is about that word.
DEFAULT_AVG_LEN = 20.0
#: Default term-frequency saturation and length normalisation of new stores. Memories are
#: short and their lengths say little about how much of a memory is about a word, so length
#: normalisation is weak (b 0.3, was 0.75): LoCoMo dev recall@10 +0.7 point, BM25 alone +1.2
#: (docs/benchmarks.md, issue 16 third pass).
DEFAULT_K = 1.2
DEFAULT_B = 0.3
#: How text is prepared before it is tokenized (the ``"text"`` setting; stores made before
#: it was recorded: 0). 1 puts text in Unicode NFC (a decomposed "Mu\u0308ller", as macOS
#: file names and some PDFs write it, is "Müller") and splits runs of Chinese, Japanese and
#: Korean characters, which the word tokenizer keeps whole (a sentence without spaces was one
#: term, so no word in it matched), into overlapping character bigrams ("北京烤鸭" ->
#: "北京 京烤 烤鸭"). 2 does what 1 does and also
#:
#: - folds the accents of Greek, Arabic and Hebrew, which the tokenizer's folding (Latin
#:   only) kept: the combining marks after a letter of those scripts are dropped ("Αθήνα"
#:   is "Αθηνα", so the capitals "ΑΘΗΝΑ", written without tonos, match it; Arabic harakat,
#:   Hebrew niqqud). Marks of other scripts stay: Devanagari vowel signs, Thai, ... are
#:   parts of their words;
#: - keeps each character of a document's CJK runs as a term too (as Lucene's
#:   ``CJKBigramFilter`` with ``outputUnigrams``), so a one-character word ("猫", "茶", "本")
#:   or a one-syllable Korean noun with its particle ("책을" -> "책") matches. A query's runs
#:   of two or more characters stay bigrams only: their characters would match every
#:   document sharing one common character ("的", "我", Korean particles), which buries the
#:   documents that share the words (``benchmarks/bm25_text_settings.py``: the same
#:   memories found, a sixth of the other memories returned); a one-character query is
#:   its character.
#:
#: Text with none of these gives the same vectors under 0, 1 and 2 (all of LoCoMo does).
DEFAULT_TEXT = 2
#: The ``"text"`` settings there are (see :data:`DEFAULT_TEXT`).
TEXT_SETTINGS = (0, 1, 2)
#: What stores made before the settings were recorded were encoded with.
LEGACY_SETTINGS = {"avg_len": 20.0, "k": 1.2, "b": 0.75}
#: The vault meta key that pins the settings a store's sparse vectors were made with.
SETTINGS_META = "bm25_settings"


class Bm25Encoder:
    """Text -> BM25 sparse vectors: English, lowercased, accents folded, stopwords
    removed, Snowball-stemmed ("Running dogs" and "run dog" share both terms); in Unicode
    NFC, the accents of Latin, Greek, Arabic and Hebrew letters folded, Chinese, Japanese
    and Korean as character bigrams and characters (:data:`DEFAULT_TEXT`).

    Indices are stable 32-bit term hashes, so no vocabulary is stored. Documents and
    queries must be encoded by encoders with the same :attr:`fingerprint`; a different
    fingerprint means the index must be rebuilt. Thread-safe (encoding is pure).
    """

    def __init__(
        self, *, avg_len: float = DEFAULT_AVG_LEN, k: float = DEFAULT_K, b: float = DEFAULT_B,
        text: int = DEFAULT_TEXT,
    ) -> None:
        """``k``: term-frequency saturation; ``b``: length normalisation in [0, 1];
        ``avg_len``: expected document length in tokens; ``text``: how text is prepared
        (:data:`DEFAULT_TEXT`; 0: as given). Raises ``ValueError`` if invalid."""
        if text not in TEXT_SETTINGS:
            raise ValueError(f"text must be one of {TEXT_SETTINGS}, got {text!r}")
        if not avg_len > 0:
            raise ValueError(f"avg_len must be > 0, got {avg_len!r}")
        if not 0.0 <= b <= 1.0:
            raise ValueError(f"b must be in [0, 1], got {b!r}")
        if not k >= 0:
            raise ValueError(f"k must be >= 0, got {k!r}")
        self._settings = {"avg_len": float(avg_len), "k": float(k), "b": float(b)}
        if text:  # (left out at 0: what stores made before the setting existed recorded)
            self._settings["text"] = text
        self._prepare_document, self._prepare_query = _PREPARE[text]
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
    def settings(self) -> dict[str, float]:
        """``{"avg_len", "k", "b"}`` and ``"text"`` unless 0: what :meth:`__init__` was
        given."""
        return dict(self._settings)

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
        return _to_sparse(self._model.embed_document(self._prepare_document(_check_text(text))))

    def encode_query(self, text: str) -> SparseVec:
        """The search vector of a query: weight 1.0 per distinct term."""
        return _to_sparse(self._model.embed_query(self._prepare_query(_check_text(text))))

    def encode_documents(self, texts: Iterable[str]) -> list[SparseVec]:
        """:meth:`encode_document` for each text, in order."""
        return [self.encode_document(text) for text in texts]

    def encode_queries(self, texts: Iterable[str]) -> list[SparseVec]:
        """:meth:`encode_query` for each text, in order."""
        return [self.encode_query(text) for text in texts]


class _MetaStore(Protocol):
    def get_meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...
    def count(self, query: Any = None) -> int: ...


def encoder_for_store(vault: _MetaStore) -> Bm25Encoder:
    """The encoder of the store behind ``vault``: the BM25 settings it was made with stay
    with it (vault meta :data:`SETTINGS_META`), so a change of the defaults applies to new
    stores and never mixes two encodings in one index (no rebuild is needed). A store that
    holds memories but no record was made before the record existed:
    :data:`LEGACY_SETTINGS`. An empty one gets the current defaults. Processes sharing a
    server-mode vault agree on one value (``set_meta_default`` when the vault has it: the
    first writer wins)."""
    raw = vault.get_meta(SETTINGS_META)
    if raw is None:
        settings = LEGACY_SETTINGS if vault.count() else Bm25Encoder().settings
        value = json.dumps(settings, sort_keys=True)
        set_default = getattr(vault, "set_meta_default", None)
        if set_default is not None:
            raw = str(set_default(SETTINGS_META, value))
        else:
            vault.set_meta(SETTINGS_META, value)
            raw = value
    try:
        stored = json.loads(raw)
        text = stored.get("text", 0) if isinstance(stored, dict) else 0
        if isinstance(text, int) and not isinstance(text, bool) and text > max(TEXT_SETTINGS):
            raise MemOSError(
                f"this store's keyword index was made by a newer memos-core (BM25 text setting "
                f"{text}; this version knows {list(TEXT_SETTINGS)}): upgrade memos-core to open "
                "it. Do not delete its settings record: the index's terms were made with them.")
        return Bm25Encoder(avg_len=float(stored["avg_len"]), k=float(stored["k"]),
                           b=float(stored["b"]), text=stored.get("text", 0))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptDataError(f"the store's BM25 settings record {raw!r} is unreadable ({exc}); "
                         f"delete the vault meta key {SETTINGS_META!r} and run reindex()") from exc


def _check_text(text: str) -> str:
    if not isinstance(text, str):
        raise ValueError(f"BM25 encodes str, got {type(text).__name__}")
    return text


#: a run of two or more Chinese, Japanese or Korean characters: Hangul Jamo, kana, Hangul
#: compatibility Jamo, CJK ideographs (and extension A), Hangul syllables, compatibility
#: ideographs, half-width katakana, the supplementary ideograph planes
_CJK_RUN = re.compile("[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf"
                      "\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f"
                      "\U00020000-\U0003134f]{2,}")


def _bigrams(match: re.Match[str]) -> str:
    run = match.group(0)
    return " " + " ".join(run[i:i + 2] for i in range(len(run) - 1)) + " "


def _bigrams_and_characters(match: re.Match[str]) -> str:
    run = match.group(0)
    return _bigrams(match) + " ".join(run) + " "


#: Greek (and Greek Extended, the polytonic letters), Hebrew (and its presentation forms),
#: Arabic (and its supplement and extended blocks): the scripts whose combining marks
#: ``"text"`` 2 drops. Their marks are accents, vowel points and cantillation, which
#: everyday writing leaves out (Greek capitals, unvocalized Arabic and Hebrew).
_FOLDED_SCRIPTS = ("\u0370-\u03ff\u1f00-\u1fff\u0590-\u05ff\ufb1d-\ufb4f"
                   "\u0600-\u06ff\u0750-\u077f\u0870-\u08ff")
_FOLDED_LETTER = re.compile(f"[{_FOLDED_SCRIPTS}]")


def _fold_marks(text: str) -> str:
    """``text`` (NFC) with the combining marks (category Mn) after Greek, Arabic and Hebrew
    letters dropped, in NFC. Marks after letters of any other script are kept."""
    kept: list[str] = []
    folded = False  # whether the last character that is not a mark is of a folded script
    for char in unicodedata.normalize("NFD", text):
        if unicodedata.category(char) == "Mn":
            if folded:
                continue
        else:
            folded = _FOLDED_LETTER.match(char) is not None
        kept.append(char)
    return unicodedata.normalize("NFC", "".join(kept))


def _prepare(text: str) -> str:
    """``text`` in NFC with its CJK runs as bigrams (``text`` 1; see :data:`DEFAULT_TEXT`)."""
    if not text.isascii():
        text = _CJK_RUN.sub(_bigrams, unicodedata.normalize("NFC", text))
    return text


def _folded(text: str) -> str:
    """``text`` in NFC, its Greek, Arabic and Hebrew marks dropped (:func:`_fold_marks`, only
    when it has a letter of those scripts: the rest is left as NFC made it)."""
    text = unicodedata.normalize("NFC", text)
    return _fold_marks(text) if _FOLDED_LETTER.search(text) else text


def _prepare_document(text: str) -> str:
    """A document under ``text`` 2: NFC, Greek, Arabic and Hebrew marks dropped, CJK runs
    as bigrams and characters (see :data:`DEFAULT_TEXT`)."""
    if not text.isascii():
        text = _CJK_RUN.sub(_bigrams_and_characters, _folded(text))
    return text


def _prepare_query(text: str) -> str:
    """A query under ``text`` 2: as :func:`_prepare_document`, but its CJK runs of two or
    more characters as bigrams only (a one-character run is a term as it is)."""
    if not text.isascii():
        text = _CJK_RUN.sub(_bigrams, _folded(text))
    return text


def _as_given(text: str) -> str:
    return text


#: document and query preparation per ``"text"`` setting
_PREPARE: dict[int, tuple[Callable[[str], str], Callable[[str], str]]] = {
    0: (_as_given, _as_given),
    1: (_prepare, _prepare),
    2: (_prepare_document, _prepare_query),
}


def _to_sparse(vector: qdrant_edge.SparseVector) -> SparseVec:
    # Sorted by index so equal texts always give equal (hashable, comparable) vectors.
    pairs = sorted(zip(vector.indices, vector.values))
    return SparseVec(tuple(i for i, _ in pairs), tuple(float(v) for _, v in pairs))
