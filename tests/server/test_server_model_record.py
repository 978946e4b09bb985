"""Server mode: an index other processes share is never rebuilt under them for another
embedding model; the open is refused, naming both models and what to do."""

from __future__ import annotations

import pytest

from memos_core.errors import InvalidInputError


def test_a_shared_index_refuses_another_model_and_a_new_collection_takes_it(open_mos,
                                                                             st_model):
    other = st_model(384)
    first = open_mos()
    first.add("Ana plays the cello every morning.", user_id="u")
    with pytest.raises(InvalidInputError) as err:
        open_mos(embedder=other, embedder_backend="torch")
    message = str(err.value)
    assert "all-MiniLM-L6-v2" in message and other in message and "qdrant_collection" in message
    moved = open_mos(embedder=other, embedder_backend="torch", qdrant_collection="other_model")
    assert moved.search("who plays the cello", user_id="u", k=1)[0].text.startswith("Ana")
    assert first.search("who plays the cello", user_id="u", k=1)[0].text.startswith("Ana")


def test_a_model_of_another_dimension_makes_the_shared_index_for_it(open_mos, st_model):
    mos = open_mos(embedder=st_model(768), embedder_backend="torch")
    mos.add("Ana plays the cello every morning.", user_id="u")
    assert mos.store.index.dim == 768
    again = open_mos(embedder=st_model(768), embedder_backend="torch")
    assert again.search("who plays the cello", user_id="u", k=1)[0].text.startswith("Ana")


def test_the_shared_index_refuses_another_model_however_its_server_is_spelt(pg_url, st_model):
    """Processes spell one server differently (a compose service name, localhost, an IP):
    the index's model record does not depend on it, so another model is refused whichever
    spelling it opens with (it wrote its vectors into the index under another spelling)."""
    from memos_core import MemOS, MemOSConfig

    assert "127.0.0.1" in pg_url
    spelt = pg_url.replace("127.0.0.1", "localhost")
    first = MemOS(pg_url, config=MemOSConfig(show_progress=False))
    try:
        first.add("Ana plays the cello every morning.", user_id="u")
        with pytest.raises(InvalidInputError, match="qdrant_collection"):
            MemOS(spelt, config=MemOSConfig(show_progress=False, embedder=st_model(384),
                                            embedder_backend="torch"))
        with MemOS(spelt, config=MemOSConfig(show_progress=False)) as same_model:
            assert same_model.search("who plays the cello", user_id="u", k=1)[0].text \
                .startswith("Ana")
    finally:
        first.close()
