"""One conformance suite for every VectorIndex backend, plus a congruence test between them.

Hermetic and unmocked: the embedded qdrant-edge shard in tmp_path, qdrant-client's
local mode (in memory and on disk) standing in for a server, and PostgreSQL with pgvector
(the session's real server from ``pg_server``, a fresh database per index). Vectors are small seeded
random unit vectors; sparse vectors are real BM25 encodings of short English sentences.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pytest

import memos_core.index as index_pkg
from memos_core.index import (
    Bm25Encoder,
    EdgeIndex,
    EdgeIndexConfig,
    IndexFilter,
    IndexLockedError,
    IndexPoint,
    PgVectorIndex,
    QdrantClientIndex,
    ScoredId,
    SparseVec,
    VectorIndex,
    open_index,
)

DIM = 16
ENC = Bm25Encoder()


def unit(seed: int) -> list[float]:
    vec = np.random.default_rng(seed).normal(size=DIM)
    return (vec / np.linalg.norm(vec)).tolist()


def mid(name: str) -> str:
    """A stable UUID per corpus key, so expectations can be written by name."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"memos-test/{name}"))


# key: (text, payload overrides). Times are epoch seconds; None = no occurred_at.
CORPUS: dict[str, tuple[str, dict]] = {
    "a_tea": ("Alice drinks green tea every morning",
              dict(user_id="alice", type="preference", tags=["drink"], occurred_at=100.0,
                   session_id="s1")),
    "a_dog": ("Alice's dog Rex loves the park",
              dict(user_id="alice", type="fact", tags=["pet"], occurred_at=200.0, session_id="s1",
                   agent_id="helper")),
    "a_trip": ("Alice flew to Lisbon for a conference",
               dict(user_id="alice", type="episode", tags=["travel", "work"], occurred_at=300.0,
                    state="generated")),
    "a_old": ("Alice lived in Porto",
              dict(user_id="alice", type="fact", tags=["home"], occurred_at=50.0, superseded=True)),
    "a_arch": ("Alice once played the xylophone",
               dict(user_id="alice", type="fact", tags=["music"], occurred_at=None,
                    state="archived")),
    "b_coffee": ("Bob drinks strong black coffee",
                 dict(user_id="bob", type="preference", tags=["drink"], occurred_at=150.0,
                      agent_id="helper")),
    "b_shared": ("Bob's team meeting moved to Thursday",
                 dict(user_id="bob", type="fact", tags=["work"], occurred_at=300.0,
                      readers=["alice"])),
    "b_music": ("Bob plays jazz guitar on weekends",
                dict(user_id="bob", type="note", tags=["music", "hobby"], occurred_at=400.0,
                     session_id="s2")),
    "c_secret": ("Carol keeps a diary of dreams",
                 dict(user_id="carol", type="note", tags=[], occurred_at=None)),
}
BASE_PAYLOAD = dict(state="activated", superseded=False, readers=[], version=1)


def corpus_points() -> list[IndexPoint]:
    return [
        IndexPoint(mid(key), unit(i), ENC.encode_document(text), {**BASE_PAYLOAD, **extra})
        for i, (key, (text, extra)) in enumerate(CORPUS.items())
    ]


def ids(*keys: str) -> set[str]:
    return {mid(k) for k in keys}


ALL = set(CORPUS)
LIVE = ALL - {"a_old"}  # the default filter drops superseded points


# -- backends ---------------------------------------------------------------------------

Opener = Callable[[], VectorIndex]


def _openers(tmp_path: Path, pg_url: str | None = None) -> dict[str, Opener]:
    openers: dict[str, Opener] = {
        "edge": lambda: EdgeIndex(tmp_path / "edge", DIM),
        "client-memory": lambda: QdrantClientIndex(":memory:", DIM),
        "client-path": lambda: QdrantClientIndex(str(tmp_path / "local"), DIM),
    }
    if pg_url is not None:
        openers["pgvector"] = lambda: PgVectorIndex(pg_url, DIM)
        openers["pgvector-postings"] = lambda: PgVectorIndex(pg_url, DIM, keyword="postings")
    return openers


DISK_BACKENDS = ["edge", "client-path"]


BACKENDS = ["edge", "client-memory", "client-path", "pgvector", "pgvector-postings"]


@contextmanager
def _database(request) -> Iterator[str | None]:
    """A fresh database on the session's PostgreSQL for the pgvector backend, else None.

    The server starts only when a pgvector case runs (``request.getfixturevalue``)."""
    if not request.param.startswith("pgvector"):
        yield None
        return
    import psycopg

    admin_url, _ = request.getfixturevalue("pg_server")
    name = f"idx_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(admin_url)
    try:
        yield urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module", params=BACKENDS)
def corpus_index(request, tmp_path_factory) -> Iterator[VectorIndex]:
    """The corpus loaded once per backend, for tests that only read."""
    with _database(request) as pg_url:
        idx = _openers(tmp_path_factory.mktemp(request.param), pg_url)[request.param]()
        idx.upsert(corpus_points())
        yield idx
        idx.close()


@pytest.fixture(params=BACKENDS)
def opener(request, tmp_path) -> Iterator[Opener]:
    """Opens the backend under test; reopening reaches the same storage (disk backends)."""
    with _database(request) as pg_url:
        yield from _opener(request, tmp_path, pg_url)


def _opener(request, tmp_path: Path, pg_url: str | None) -> Iterator[Opener]:
    opened: list[VectorIndex] = []
    make = _openers(tmp_path, pg_url)[request.param]

    def open_() -> VectorIndex:
        idx = make()
        opened.append(idx)
        return idx

    open_.kind = request.param  # type: ignore[attr-defined]
    yield open_
    for idx in opened:
        idx.close()


@pytest.fixture
def index(opener) -> VectorIndex:
    return opener()


@pytest.fixture
def loaded(index) -> VectorIndex:
    index.upsert(corpus_points())
    return index


def everything(index: VectorIndex, flt: IndexFilter) -> set[str]:
    """Ids passing ``flt``: a dense search with a limit above the corpus size."""
    return {hit.id for hit in index.search_dense(unit(999), flt, 100)}


def assert_best_first(hits: list[ScoredId]) -> None:
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True), scores


# -- the protocol -----------------------------------------------------------------------


def test_backends_satisfy_the_protocol(index):
    assert isinstance(index, VectorIndex)
    assert index.dim == DIM


def test_upsert_counts_and_versions(corpus_index):
    assert corpus_index.count() == len(CORPUS)
    assert corpus_index.versions() == {mid(k): 1 for k in CORPUS}


def test_upsert_replaces_vectors_and_whole_payload(loaded):
    new = IndexPoint(mid("a_tea"), unit(500), ENC.encode_document("Alice now prefers oolong"),
                     {"user_id": "bob", "version": 2})
    loaded.upsert([new])
    assert loaded.count() == len(CORPUS)
    assert loaded.versions()[mid("a_tea")] == 2
    top = loaded.search_dense(unit(500), IndexFilter(), 1)[0]
    assert top.id == mid("a_tea") and top.score == pytest.approx(1.0, abs=1e-4)
    assert mid("a_tea") not in everything(loaded, IndexFilter(user_ids=("alice",)))
    assert mid("a_tea") not in everything(loaded, IndexFilter(tags=("drink",)))  # old tags gone
    assert loaded.search_sparse(ENC.encode_query("green tea"), IndexFilter(), 10) == []
    assert [h.id for h in loaded.search_sparse(ENC.encode_query("oolong"), IndexFilter(), 10)] == [mid("a_tea")]


def test_upsert_same_id_twice_in_one_batch_keeps_the_last(index):
    first = IndexPoint(mid("x"), unit(1), ENC.encode_document("one"), {"user_id": "u", "version": 1})
    index.upsert([first, replace(first, payload={"user_id": "u", "version": 2})])
    assert index.versions() == {mid("x"): 2}


@pytest.mark.parametrize(
    "delete_keys, missing",
    [(["a_tea"], []), (["a_tea", "b_music"], ["ghost"]), ([], ["ghost", "ghost2"]), (["a_tea", "a_tea"], [])],
    ids=["one", "two-and-missing", "only-missing", "duplicate"],
)
def test_delete(loaded, delete_keys, missing):
    loaded.delete([mid(k) for k in delete_keys] + [mid(m) for m in missing])
    left = ALL - set(delete_keys)
    assert set(loaded.versions()) == ids(*left)
    assert loaded.count() == len(left)
    assert everything(loaded, IndexFilter(include_superseded=True)) == ids(*left)


FILTER_CASES = [
    ("none", IndexFilter(), LIVE),
    ("include-superseded", IndexFilter(include_superseded=True), ALL),
    ("owner-or-reader", IndexFilter(user_ids=("alice",)), {"a_tea", "a_dog", "a_trip", "a_arch", "b_shared"}),
    ("owner-only", IndexFilter(user_ids=("bob",)), {"b_coffee", "b_shared", "b_music"}),
    ("two-users", IndexFilter(user_ids=("bob", "carol")), {"b_coffee", "b_shared", "b_music", "c_secret"}),
    ("unknown-user", IndexFilter(user_ids=("mallory",)), set()),
    ("empty-users-fail-closed", IndexFilter(user_ids=()), set()),
    ("agent", IndexFilter(agent_id="helper"), {"a_dog", "b_coffee"}),
    ("session", IndexFilter(session_id="s1"), {"a_tea", "a_dog"}),
    ("type", IndexFilter(types=("fact",)), {"a_dog", "a_arch", "b_shared"}),
    ("types", IndexFilter(types=("note", "episode")), {"a_trip", "b_music", "c_secret"}),
    ("empty-types", IndexFilter(types=()), set()),
    ("tag", IndexFilter(tags=("music",)), {"a_arch", "b_music"}),
    ("tags-any-of", IndexFilter(tags=("work", "pet")), {"a_dog", "a_trip", "b_shared"}),
    ("empty-tags", IndexFilter(tags=()), set()),
    ("state", IndexFilter(states=("archived",)), {"a_arch"}),
    ("states", IndexFilter(states=("activated", "generated")), LIVE - {"a_arch"}),
    ("after-inclusive", IndexFilter(occurred_after=300.0), {"a_trip", "b_shared", "b_music"}),
    ("before-inclusive", IndexFilter(occurred_before=150.0), {"a_tea", "b_coffee"}),
    ("between-inclusive", IndexFilter(occurred_after=150.0, occurred_before=300.0),
     {"b_coffee", "a_dog", "a_trip", "b_shared"}),
    ("empty-range", IndexFilter(occurred_after=301.0, occurred_before=399.0), set()),
    ("superseded-in-range", IndexFilter(occurred_before=60.0, include_superseded=True), {"a_old"}),
    ("user+tag", IndexFilter(user_ids=("alice",), tags=("work",)), {"a_trip", "b_shared"}),
    ("user+time+type",
     IndexFilter(user_ids=("alice",), occurred_after=150.0, types=("fact", "episode")),
     {"a_dog", "a_trip", "b_shared"}),
    ("user+states+superseded",
     IndexFilter(user_ids=("alice",), states=("activated",), include_superseded=True),
     {"a_tea", "a_dog", "a_old", "b_shared"}),
    ("all-fields",
     IndexFilter(user_ids=("bob",), agent_id="helper", session_id=None, types=("preference",),
                 tags=("drink",), states=("activated",), occurred_after=150.0,
                 occurred_before=150.0),
     {"b_coffee"}),
]


FILTER_PARAMS = pytest.mark.parametrize(
    "flt, expected", [c[1:] for c in FILTER_CASES], ids=[c[0] for c in FILTER_CASES]
)


@FILTER_PARAMS
def test_filters_dense(corpus_index, flt, expected):
    assert everything(corpus_index, flt) == ids(*expected)


@FILTER_PARAMS
def test_filters_sparse(corpus_index, flt, expected):
    every_word = ENC.encode_query(" ".join(text for text, _ in CORPUS.values()))
    hits = corpus_index.search_sparse(every_word, flt, 100)
    assert {h.id for h in hits} == ids(*expected)
    assert_best_first(hits)


@pytest.mark.parametrize("limit", [0, 1, 3, 8, 100])
def test_limit_takes_a_prefix_of_the_ranking(corpus_index, limit):
    full = corpus_index.search_dense(unit(3), IndexFilter(), 100)
    hits = corpus_index.search_dense(unit(3), IndexFilter(), limit)
    assert len(hits) == min(limit, len(LIVE))
    assert [h.id for h in hits] == [h.id for h in full[:limit]]


@pytest.mark.parametrize("key", ["a_tea", "b_music", "c_secret"])
def test_dense_identical_vector_ranks_first(corpus_index, key):
    position = list(CORPUS).index(key)
    hits = corpus_index.search_dense(unit(position), IndexFilter(), 5)
    assert hits[0].id == mid(key)
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert all(-1.0 - 1e-6 <= h.score < 0.999 for h in hits[1:])
    assert_best_first(hits)


@pytest.mark.parametrize(
    "query, first",
    [("xylophone", "a_arch"), ("Lisbon conference trip", "a_trip"), ("black coffee", "b_coffee"),
     ("who drinks tea", "a_tea"), ("DOGS in parks", "a_dog")],
)
def test_sparse_ranks_the_keyword_match_first(corpus_index, query, first):
    hits = corpus_index.search_sparse(ENC.encode_query(query), IndexFilter(include_superseded=True), 5)
    assert hits[0].id == mid(first)
    assert all(h.score > 0 for h in hits)
    assert_best_first(hits)


def test_sparse_rare_word_outranks_common_word(index):
    # "drinks" is in many documents, "matcha" in one: IDF must put the matcha doc first.
    texts = ["Dana drinks water", "Eve drinks juice", "Finn drinks milk", "Gus drinks matcha"]
    index.upsert([IndexPoint(mid(t), unit(i), ENC.encode_document(t), {"user_id": "u", "version": 1})
                  for i, t in enumerate(texts)])
    hits = index.search_sparse(ENC.encode_query("drinks matcha"), IndexFilter(), 4)
    assert hits[0].id == mid("Gus drinks matcha")
    assert hits[0].score > 2 * hits[1].score


def test_sparse_scores_count_only_what_the_principals_may_read(index):
    """BM25's statistics come from the points the searching principals own or read: other
    users' memories change neither a user's scores nor its ranking (a store-wide IDF would
    tell a user how many memories of others hold a word); one shared with the user counts."""
    own = ["Ann drinks green tea", "Ann bought a tea kettle", "Ann walks her dog"]
    query, alice = ENC.encode_query("tea dog"), IndexFilter(user_ids=("ann",))

    def points(texts, user, start, **extra):
        return [IndexPoint(mid(f"{user}/{i}"), unit(start + i), ENC.encode_document(t),
                           {"user_id": user, "version": 1, **extra}) for i, t in enumerate(texts)]

    index.upsert(points(own, "ann", 0))
    before = index.search_sparse(query, alice, 10)
    assert {h.id for h in before} == {mid("ann/0"), mid("ann/1"), mid("ann/2")}
    # another user writes "tea" 30 times: store-wide, "tea" would become common and "dog" rare
    index.upsert(points([f"Bo likes tea number {i}" for i in range(30)], "bo", 100))
    after = index.search_sparse(query, alice, 10)
    scores = {h.id: h.score for h in before}
    assert {h.id: h.score for h in after} == pytest.approx(scores, rel=1e-5)
    assert after[0].id == before[0].id == mid("ann/2")  # "dog" is the rarer word for Ann
    # a store-wide search counts every point: there "tea" weighs less than "dog"
    wide = {h.id: h.score for h in index.search_sparse(query, IndexFilter(), 50)}
    assert wide[mid("ann/2")] > wide[mid("ann/0")]
    # a memory shared with the user is one it reads: it joins the user's statistics
    index.upsert(points(["Bo shares a tea recipe"], "cy", 200, readers=["ann"]))
    shared = {h.id: h.score for h in index.search_sparse(query, alice, 10)}
    assert mid("cy/0") in shared
    assert shared[mid("ann/0")] < scores[mid("ann/0")]


def test_sparse_query_without_terms_returns_nothing(corpus_index):
    assert corpus_index.search_sparse(ENC.encode_query("the of and"), IndexFilter(), 5) == []
    assert corpus_index.search_sparse(ENC.encode_query("zzzunknownword"), IndexFilter(), 5) == []


@pytest.mark.parametrize(
    "payload, flt, visible",
    [
        ({"superseded": True}, IndexFilter(), False),
        ({"readers": ["carol"]}, IndexFilter(user_ids=("carol",)), True),
        ({"state": "archived"}, IndexFilter(states=("activated",)), False),
        ({"tags": ["new"], "version": 7}, IndexFilter(tags=("new",)), True),
        ({"occurred_at": None}, IndexFilter(occurred_after=0.0), False),
    ],
    ids=["supersede", "share", "archive", "retag", "untime"],
)
def test_set_payload_merges_fields(loaded, payload, flt, visible):
    loaded.set_payload(mid("a_tea"), payload)
    assert (mid("a_tea") in everything(loaded, flt)) is visible
    assert mid("a_tea") in everything(loaded, IndexFilter(user_ids=("alice",), include_superseded=True))
    assert loaded.versions()[mid("a_tea")] == payload.get("version", 1)


def test_a_payload_with_a_version_never_moves_the_point_back(loaded):
    """Two processes change one memory's grants on a shared index: the later version's
    payload lands first, and the earlier one's, arriving late, must not write its readers
    over it (v3 -> v2 would give bob a memory revoked from him)."""
    loaded.set_payload(mid("a_tea"), {"readers": ["bob"], "version": 3})
    loaded.set_payload(mid("a_tea"), {"readers": ["bob", "carol"], "version": 2})  # late
    loaded.set_payload(mid("a_tea"), {"readers": ["carol"], "version": 3})  # same version
    assert loaded.versions()[mid("a_tea")] == 3
    assert mid("a_tea") in everything(loaded, IndexFilter(user_ids=("bob",)))
    assert mid("a_tea") not in everything(loaded, IndexFilter(user_ids=("carol",)))
    loaded.set_payload(mid("a_tea"), {"readers": [], "version": 4})  # a later one applies
    assert loaded.versions()[mid("a_tea")] == 4
    assert mid("a_tea") not in everything(loaded, IndexFilter(user_ids=("bob",)))
    with pytest.raises(KeyError, match="upsert"):
        loaded.set_payload(mid("ghost"), {"readers": [], "version": 2})


def test_an_upsert_never_moves_a_point_back_a_version(loaded):
    """The same race for a whole point: a text update's index write arriving after a later
    version's must leave the later text (and its vectors) in place; one batch mixing
    versions applies each point on its own."""
    tea, dog = (p for p in corpus_points() if p.id in (mid("a_tea"), mid("a_dog")))
    later = IndexPoint(tea.id, unit(7), ENC.encode_document("Alice drinks oolong"),
                       {**tea.payload, "version": 3})
    loaded.upsert([later])
    loaded.upsert([IndexPoint(tea.id, unit(6), ENC.encode_document("Alice drinks mate"),
                              {**tea.payload, "version": 2}),
                   IndexPoint(dog.id, unit(6), dog.sparse, {**dog.payload, "version": 2})])
    assert loaded.versions()[mid("a_tea")] == 3 and loaded.versions()[mid("a_dog")] == 2
    alice = IndexFilter(user_ids=("alice",))
    assert [h.id for h in loaded.search_dense(unit(7), alice, 1)] == [mid("a_tea")]
    assert mid("a_tea") not in {h.id for h in loaded.search_sparse(ENC.encode_query("mate"), alice, 5)}
    loaded.upsert([later])  # the same version again replaces it (a repair re-embeds it)
    assert loaded.versions()[mid("a_tea")] == 3


def test_set_payload_of_a_missing_point_raises_key_error(loaded):
    with pytest.raises(KeyError, match="upsert"):
        loaded.set_payload(mid("ghost"), {"state": "archived"})


def test_set_payload_rejects_unknown_keys(loaded):
    with pytest.raises(ValueError, match="never stores memory text"):
        loaded.set_payload(mid("a_tea"), {"text": "Alice drinks green tea"})


def test_clear(loaded):
    loaded.clear()
    assert loaded.count() == 0
    assert loaded.versions() == {}
    assert loaded.search_dense(unit(0), IndexFilter(), 5) == []
    loaded.upsert(corpus_points()[:2])
    assert loaded.count() == 2


def test_optimize_keeps_results(loaded):
    before = loaded.search_dense(unit(1), IndexFilter(user_ids=("alice",)), 5)
    loaded.optimize()
    loaded.flush()
    after = loaded.search_dense(unit(1), IndexFilter(user_ids=("alice",)), 5)
    assert [h.id for h in after] == [h.id for h in before]


BAD_POINTS = [
    ("wrong-dim", dict(dense=[1.0] * (DIM - 1)), "shape"),
    ("nan", dict(dense=[float("nan")] + [1.0] * (DIM - 1)), "NaN"),
    ("zero-vector", dict(dense=[0.0] * DIM), "zeros"),
    ("not-a-uuid", dict(id="memory-1"), "UUID"),
    ("text-in-payload", dict(payload={"user_id": "u", "version": 1, "text": "secret"}), "never stores"),
    ("no-version", dict(payload={"user_id": "u"}), "missing required"),
    ("bool-version", dict(payload={"user_id": "u", "version": True}), "version"),
    ("tags-as-string", dict(payload={"user_id": "u", "version": 1, "tags": "music"}), "list of strings"),
    ("superseded-as-int", dict(payload={"user_id": "u", "version": 1, "superseded": 1}), "bool"),
    ("sparse-duplicates", dict(sparse=SparseVec((3, 3), (1.0, 2.0))), "duplicate"),
    ("sparse-lengths", dict(sparse=SparseVec((1, 2), (1.0,))), "indices"),
]


@pytest.mark.parametrize("change, message", [c[1:] for c in BAD_POINTS], ids=[c[0] for c in BAD_POINTS])
def test_bad_points_are_rejected_before_any_write(loaded, change, message):
    good = IndexPoint(mid("new"), unit(42), ENC.encode_document("fresh"), {"user_id": "u", "version": 1})
    with pytest.raises(ValueError, match=message):
        loaded.upsert([good, replace(good, **{"id": mid("new2"), **change})])
    assert loaded.count() == len(CORPUS)  # the good point in the batch was not written either


@pytest.mark.parametrize(
    "call",
    [
        lambda i: i.search_dense([1.0] * (DIM + 1), IndexFilter(), 3),
        lambda i: i.search_dense(unit(0), IndexFilter(), -1),
        lambda i: i.search_sparse(SparseVec((1,), (float("inf"),)), IndexFilter(), 3),
        lambda i: i.search_dense(unit(0), IndexFilter(user_ids="alice"), 3),  # a str, not a tuple
        lambda i: i.delete(["not-a-uuid"]),
    ],
    ids=["query-dim", "negative-limit", "sparse-inf", "users-as-str", "delete-bad-id"],
)
def test_bad_calls_raise_value_error(corpus_index, call):
    with pytest.raises(ValueError):
        call(corpus_index)


def test_closed_index_refuses_calls_and_close_is_idempotent(index):
    index.close()
    index.close()
    with pytest.raises(RuntimeError, match="closed"):
        index.count()


def test_concurrent_use_from_threads(index):
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for j in range(15):
                pid = str(uuid.UUID(int=n * 1000 + j + 1))
                index.upsert([IndexPoint(pid, unit(n * 100 + j), ENC.encode_document(f"note {j} of worker {n}"),
                                         {"user_id": f"w{n}", "version": j})])
                index.search_dense(unit(j), IndexFilter(user_ids=(f"w{n}",)), 5)
                index.search_sparse(ENC.encode_query("note worker"), IndexFilter(), 5)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert index.count() == 60


# -- storage: persistence, locking, mismatched dims ------------------------------------


@pytest.mark.parametrize("kind", DISK_BACKENDS)
def test_reopen_from_disk_keeps_everything(tmp_path, kind):
    make = _openers(tmp_path)[kind]
    first = make()
    first.upsert(corpus_points())
    first.set_payload(mid("a_tea"), {"version": 3})
    first.delete([mid("c_secret")])
    dense_before = first.search_dense(unit(2), IndexFilter(user_ids=("alice",)), 5)
    sparse_before = first.search_sparse(ENC.encode_query("drinks coffee tea"), IndexFilter(), 5)
    first.close()
    second = make()
    try:
        assert second.count() == len(CORPUS) - 1
        assert second.versions()[mid("a_tea")] == 3
        assert_same_ranking(second.search_dense(unit(2), IndexFilter(user_ids=("alice",)), 5), dense_before)
        # Membership only: edge's IDF statistics still count the deleted point before the
        # reopen and not after it (see EdgeIndexConfig.exact_idf), so scores may shift.
        sparse_after = second.search_sparse(ENC.encode_query("drinks coffee tea"), IndexFilter(), 5)
        assert {h.id for h in sparse_after} == {h.id for h in sparse_before}
    finally:
        second.close()


@pytest.mark.parametrize("kind", DISK_BACKENDS)
def test_second_open_of_the_same_storage_is_refused(tmp_path, kind):
    make = _openers(tmp_path)[kind]
    first = make()
    try:
        with pytest.raises(IndexLockedError, match="already open"):
            make()
    finally:
        first.close()
    make().close()  # free again once closed


@pytest.mark.parametrize("kind", DISK_BACKENDS)
def test_reopen_with_another_dim_is_refused(tmp_path, kind):
    _openers(tmp_path)[kind]().close()
    path = tmp_path / ("edge" if kind == "edge" else "local")
    with pytest.raises(ValueError, match="dim=8"):
        EdgeIndex(path, 8) if kind == "edge" else QdrantClientIndex(str(path), 8)


def test_edge_refuses_a_foreign_non_empty_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        EdgeIndex(tmp_path, DIM)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_edge_exact_idf_ignores_deleted_points(tmp_path):
    texts = ["tea time", "coffee time", "tea party", "dog park", "cat nap"]
    points = [IndexPoint(mid(t), unit(i), ENC.encode_document(t), {"user_id": "u", "version": 1})
              for i, t in enumerate(texts)]
    exact = EdgeIndex(tmp_path / "exact", DIM, EdgeIndexConfig(exact_idf=True))
    reference = QdrantClientIndex(":memory:", DIM)
    try:
        for idx in (exact, reference):
            idx.upsert(points)
            idx.delete([mid("dog park"), mid("cat nap")])
        query = ENC.encode_query("tea")
        assert_same_ranking(exact.search_sparse(query, IndexFilter(), 5),
                            reference.search_sparse(query, IndexFilter(), 5))
    finally:
        exact.close()
        reference.close()


def test_client_index_leaves_a_given_client_open(tmp_path):
    from qdrant_client import QdrantClient

    client = QdrantClient(":memory:")
    idx = QdrantClientIndex(client, DIM, collection="mine")
    idx.close()
    assert client.collection_exists("mine")


# -- the factory ------------------------------------------------------------------------


def test_package_exports_are_sorted():
    assert index_pkg.__all__ == sorted(index_pkg.__all__)


@pytest.mark.parametrize(
    "kind, path, expected",
    [("edge", "edge", EdgeIndex), ("qdrant", "local", QdrantClientIndex),
     ("qdrant", ":memory:", QdrantClientIndex)],
)
def test_open_index(tmp_path, kind, path, expected):
    idx = open_index(kind, path=path if path == ":memory:" else tmp_path / path, dim=DIM)
    try:
        assert isinstance(idx, expected) and idx.dim == DIM
    finally:
        idx.close()


@pytest.mark.parametrize(
    "kind, path, url, message",
    [
        ("faiss", "x", None, "unknown index kind 'faiss'"),
        ("edge", None, None, "needs path"),
        ("edge", "x", "http://localhost:6333", "takes no url"),
        ("qdrant", None, None, "needs url"),
        ("pgvector", "x", None, "needs url="),
    ],
)
def test_open_index_errors(tmp_path, kind, path, url, message):
    with pytest.raises(ValueError, match=message):
        open_index(kind, path=tmp_path / path if path else None, url=url, dim=DIM)


# -- congruence: the same random operations on both backends ---------------------------

WORDS = ("tea coffee dog cat park music jazz guitar travel Lisbon meeting Thursday diary dream "
         "xylophone garden bike rain book movie").split()


def _random_point(rng: random.Random, key: int, version: int) -> IndexPoint:
    text = " ".join(rng.choices(WORDS, k=rng.randint(1, 6)))
    payload = {
        "user_id": rng.choice(["u1", "u2", "u3"]), "version": version,
        "tags": rng.sample(["a", "b", "c"], rng.randint(0, 2)), "state": rng.choice(["generated", "activated", "archived"]),
        "occurred_at": rng.choice([None, float(rng.randint(0, 10))]), "superseded": rng.random() < 0.2,
        "readers": rng.sample(["u1", "u2", "u3"], rng.randint(0, 1)), "type": rng.choice(["fact", "note"]),
    }
    return IndexPoint(str(uuid.UUID(int=key + 1)), unit(rng.randint(0, 10_000)), ENC.encode_document(text), payload)


def _random_filter(rng: random.Random) -> IndexFilter:
    return IndexFilter(
        user_ids=rng.choice([None, ("u1",), ("u2", "u3")]), tags=rng.choice([None, ("a",), ("b", "c")]),
        states=rng.choice([None, ("activated",), ("generated", "activated")]), types=rng.choice([None, ("note",)]),
        occurred_after=rng.choice([None, 3.0]), occurred_before=rng.choice([None, 7.0]),
        include_superseded=rng.random() < 0.3,
    )


def assert_same_ranking(a: list[ScoredId], b: list[ScoredId]) -> None:
    """Same scores in the same order; ids may only differ among (near-)tied scores."""
    assert len(a) == len(b)
    assert [h.score for h in a] == pytest.approx([h.score for h in b], rel=1e-4, abs=1e-5)
    for x, y in zip(a, b):
        if x.id != y.id:
            tied = [h.id for h in a if abs(h.score - x.score) <= 1e-4 * max(1.0, abs(x.score))]
            assert y.id in tied, (a, b)


def run_random_operations(index, reference, rng: random.Random) -> None:
    """40 random upserts, deletes, payload changes and searches applied to both indexes;
    every search's ranking and the final versions and count must agree."""
    versions = 0
    for _ in range(40):
        op = rng.random()
        if op < 0.35:
            versions += 1
            batch = [_random_point(rng, rng.randint(0, 60), versions) for _ in range(rng.randint(1, 8))]
            for idx in (index, reference):
                idx.upsert(batch)
        elif op < 0.45:
            doomed = [str(uuid.UUID(int=rng.randint(0, 70) + 1)) for _ in range(3)]
            for idx in (index, reference):
                idx.delete(doomed)
        elif op < 0.55 and index.count():
            target = rng.choice(sorted(index.versions()))
            change = {"superseded": rng.random() < 0.5, "tags": rng.sample(["a", "b", "c"], 1)}
            for idx in (index, reference):
                idx.set_payload(target, change)
        else:
            flt, limit = _random_filter(rng), rng.randint(1, 12)
            query = unit(rng.randint(0, 10_000))
            assert_same_ranking(index.search_dense(query, flt, limit), reference.search_dense(query, flt, limit))
            words = ENC.encode_query(" ".join(rng.choices(WORDS, k=3)))
            assert_same_ranking(index.search_sparse(words, flt, limit),
                                reference.search_sparse(words, flt, limit))
    assert index.versions() == reference.versions()
    assert index.count() == reference.count()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_congruence_edge_vs_qdrant_client(tmp_path, seed):
    rng = random.Random(seed)
    # exact_idf: the local mode computes IDF over live points only, so edge must too for
    # BM25 scores to agree after deletes and replacements.
    edge = EdgeIndex(tmp_path / "edge", DIM, EdgeIndexConfig(exact_idf=True))
    client = QdrantClientIndex(":memory:", DIM)
    try:
        run_random_operations(edge, client, rng)
    finally:
        edge.close()
        client.close()


def test_open_index_uses_the_named_collection(tmp_path) -> None:
    from memos_core.index import open_index

    a = open_index("qdrant", path=tmp_path / "q", dim=8, collection="team-a")
    try:
        assert a.collection == "team-a"
    finally:
        a.close()


# -- search_hybrid: dense + BM25 in one call ----------------------------------------------

HYBRID_QUERIES = [("Alice tea morning", 2), ("Bob jazz guitar weekends", 7), ("xylophone", 4),
                  ("no such words anywhere", 1)]


@FILTER_PARAMS
@pytest.mark.parametrize("limit", [1, 3, 100])
def test_search_hybrid_equals_the_two_searches(corpus_index, flt, expected, limit):
    """The optional one-call search (or base.search_hybrid's fallback) returns exactly what
    search_dense and search_sparse return, on every backend and filter."""
    from memos_core.index.base import search_hybrid

    for text, seed in HYBRID_QUERIES:
        sparse = ENC.encode_query(text)
        dense_hits, sparse_hits = search_hybrid(corpus_index, unit(seed), sparse, flt, limit)
        assert dense_hits == corpus_index.search_dense(unit(seed), flt, limit)
        assert sparse_hits == corpus_index.search_sparse(sparse, flt, limit)
        assert {h.id for h in dense_hits} <= ids(*expected)


def test_search_hybrid_with_one_side_missing(corpus_index):
    from memos_core.index.base import search_hybrid

    flt = IndexFilter(user_ids=("alice",))
    sparse = ENC.encode_query("Alice tea")
    assert search_hybrid(corpus_index, None, sparse, flt, 5) == (
        [], corpus_index.search_sparse(sparse, flt, 5))
    assert search_hybrid(corpus_index, unit(1), None, flt, 5) == (
        corpus_index.search_dense(unit(1), flt, 5), [])
    assert search_hybrid(corpus_index, unit(1), SparseVec((), ()), flt, 5) == (
        corpus_index.search_dense(unit(1), flt, 5), [])
    assert search_hybrid(corpus_index, unit(1), sparse, flt, 0) == ([], [])
    assert search_hybrid(corpus_index, unit(1), sparse, IndexFilter(user_ids=()), 5) == ([], [])


@pytest.mark.parametrize("limit", [3, 100])
def test_search_hybrid_computes_a_vector_function_once(corpus_index, limit):
    """The query vector may be a function (the query embedding): called once, and the hits
    are those of the vector it returns."""
    from memos_core.index.base import search_hybrid

    flt = IndexFilter(user_ids=("alice", "bob"))
    calls: list[int] = []
    for text, seed in HYBRID_QUERIES:
        sparse = ENC.encode_query(text)
        calls.clear()

        def vector(seed: int = seed) -> list[float]:
            calls.append(seed)
            return unit(seed)

        assert search_hybrid(corpus_index, vector, sparse, flt, limit) == \
            search_hybrid(corpus_index, unit(seed), sparse, flt, limit)
        assert calls == [seed]
        calls.clear()
        assert search_hybrid(corpus_index, vector, None, flt, limit) == (
            corpus_index.search_dense(unit(seed), flt, limit), [])
        assert calls == [seed]


def test_search_hybrid_vector_function_that_raises(corpus_index):
    """A query embedding that fails inside the call raises its own error, and the index
    answers the next search as before (pgvector: the pipelined BM25 statement it had sent
    is not left on the connection)."""
    from memos_core.index.base import search_hybrid

    flt = IndexFilter(user_ids=("alice",))
    sparse = ENC.encode_query("Alice tea")

    def broken() -> list[float]:
        raise RuntimeError("the embedder failed")

    expected = search_hybrid(corpus_index, unit(2), sparse, flt, 5)
    for _ in range(3):  # a pool of connections: each may have taken the failure
        with pytest.raises(RuntimeError, match="the embedder failed"):
            search_hybrid(corpus_index, broken, sparse, flt, 5)
        assert search_hybrid(corpus_index, unit(2), sparse, flt, 5) == expected


@pytest.mark.parametrize("call", [
    lambda i, f: f(i, [1.0] * (DIM + 1), ENC.encode_query("tea"), IndexFilter(), 3),
    lambda i, f: f(i, unit(0), SparseVec((1,), (float("inf"),)), IndexFilter(), 3),
    lambda i, f: f(i, unit(0), ENC.encode_query("tea"), IndexFilter(), -1),
], ids=["query-dim", "sparse-inf", "negative-limit"])
def test_search_hybrid_bad_calls_raise_value_error(corpus_index, call):
    from memos_core.index.base import search_hybrid

    with pytest.raises(ValueError):
        call(corpus_index, search_hybrid)


def test_search_hybrid_sees_writes_and_fresh_statistics(index):
    """After a write the BM25 statistics are read again (pgvector: in the same round trip as
    the dense query) and both lists still equal the separate searches."""
    from memos_core.index.base import search_hybrid

    index.upsert(corpus_points())
    sparse = ENC.encode_query("Carol dreams diary")
    flt = IndexFilter()
    before = search_hybrid(index, unit(8), sparse, flt, 4)
    index.upsert([IndexPoint(mid("c_more"), unit(20), ENC.encode_document("Carol dreams of dreams"),
                             {**BASE_PAYLOAD, "user_id": "carol"})])
    after = search_hybrid(index, unit(8), sparse, flt, 4)
    assert after == (index.search_dense(unit(8), flt, 4), index.search_sparse(sparse, flt, 4))
    assert mid("c_more") in {h.id for h in after[1]} and before != after


@pytest.mark.parametrize("version, ok", [
    ("1.16.0", True), ("1.17.2", True), ("2.0.0", True), ("dev", True),
    ("1.15.4", False), ("1.9.0", False),
])
def test_a_qdrant_server_too_old_for_conditional_writes_is_refused(version, ok):
    """The versioned writes need Qdrant 1.16's conditional updates; an older server would
    refuse every upsert (or ignore the condition), so open says so."""
    from memos_core.index.client import check_server_version

    if ok:
        check_server_version(version)
    else:
        with pytest.raises(ValueError, match="needs 1.16 or later"):
            check_server_version(version)
