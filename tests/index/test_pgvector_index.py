"""What the pgvector backend adds beyond the shared conformance suite.

A real PostgreSQL (the session's ``pg_server``; a fresh database per test from ``pg_url``):
scores agree with qdrant-client's exact local mode under random operations, two index
objects on one database (as two processes would be) see each other's writes and race
safely, a selective filter on a large collection still returns the exact top ``limit``,
and the index tables hold no memory text or plaintext tag, before or after a forget.
"""

from __future__ import annotations

import random
import threading
import uuid

import numpy as np
import psycopg
import pytest

from memos_core import MemOS, MemOSConfig
from memos_core.index import (
    IndexFilter,
    IndexPoint,
    PgVectorIndex,
    QdrantClientIndex,
    open_index,
)

from test_index_conformance import (  # noqa: E402 - the shared corpus helpers
    DIM,
    ENC,
    assert_same_ranking,
    run_random_operations,
    unit,
)


@pytest.mark.parametrize("keyword", ["scan", "postings"])
@pytest.mark.parametrize("seed", [1, 2])
def test_congruence_pgvector_vs_qdrant_client(pg_url, seed, keyword):
    rng = random.Random(seed)
    pg = PgVectorIndex(pg_url, DIM, keyword=keyword)
    client = QdrantClientIndex(":memory:", DIM)
    try:
        run_random_operations(pg, client, rng)
    finally:
        pg.close()
        client.close()


def test_two_indexes_on_one_database_share_points(pg_url):
    first, second = PgVectorIndex(pg_url, DIM), PgVectorIndex(pg_url, DIM)
    try:
        point = IndexPoint(str(uuid.uuid4()), unit(1), ENC.encode_document("shared garden notes"),
                           {"user_id": "u", "version": 1})
        first.upsert([point])
        assert [h.id for h in second.search_sparse(ENC.encode_query("garden"), IndexFilter(), 5)] == [point.id]
        second.delete([point.id])
        assert first.count() == 0
    finally:
        first.close()
        second.close()


def test_concurrent_upserts_of_the_same_ids_leave_one_consistent_version(pg_url):
    """Writers on separate pools (as separate processes) replace the same points at once:
    no deadlock, and each point ends with exactly the postings of the version it holds."""
    ids = [str(uuid.UUID(int=i + 1)) for i in range(20)]
    indexes = [PgVectorIndex(pg_url, DIM) for _ in range(3)]
    errors: list[BaseException] = []

    def writer(n: int, idx: PgVectorIndex) -> None:
        rng = random.Random(n)
        try:
            for round_ in range(12):
                chosen = rng.sample(ids, 8)
                idx.upsert([IndexPoint(pid, unit(n * 1000 + round_), ENC.encode_document(f"w{n} r{round_} word{n}"),
                                       {"user_id": "u", "version": n * 100 + round_}) for pid in chosen])
                idx.delete([rng.choice(ids)])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n, idx)) for n, idx in enumerate(indexes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        versions = indexes[0].versions()
        with psycopg.connect(pg_url) as conn:
            terms = dict(conn.execute("SELECT id::text, count(*) FROM memos_terms GROUP BY id").fetchall())
        for pid, version in versions.items():
            writer_n, round_ = divmod(version, 100)
            expected = ENC.encode_document(f"w{writer_n} r{round_} word{writer_n}")
            assert terms.get(pid, 0) == len(expected.indices), pid
        assert set(terms) <= set(versions)  # no postings of a deleted point
    finally:
        for idx in indexes:
            idx.close()


@pytest.mark.parametrize("planner", ["free", "hnsw-forced"])
def test_selective_filter_on_a_large_collection_returns_the_exact_top(pg_url, planner):
    """3000 points, one user owns 12: HNSW alone would find few of them (its candidates are
    mostly other users'); iterative scans plus the exact fallback return the true top, and
    so does the exact scan the planner picks for small filtered sets."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3000, DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rare = set(range(0, 3000, 250))
    points = [IndexPoint(str(uuid.UUID(int=i + 1)), vectors[i].tolist(), ENC.encode_document("x"),
                         {"user_id": "rare" if i in rare else f"u{i % 7}", "version": 1}) for i in range(3000)]
    idx = PgVectorIndex(pg_url, DIM)
    try:
        idx.upsert(points)
        idx.optimize()
        if planner == "hnsw-forced":  # no owner indexes, no bitmap or sequential scans: HNSW
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute("DROP INDEX memos_user_id, memos_readers")
                db = conn.info.dbname
                conn.execute(f'ALTER DATABASE "{db}" SET enable_bitmapscan = off')
                conn.execute(f'ALTER DATABASE "{db}" SET enable_seqscan = off')
            idx.close()
            idx = PgVectorIndex(pg_url, DIM)
        query = vectors[5].tolist()
        for user, limit in (("rare", 10), ("rare", 50), ("u3", 10)):
            members = [i for i in range(3000) if (i in rare) == (user == "rare") and (user == "rare" or i % 7 == 3)]
            truth = sorted(members, key=lambda i: -float(vectors[i] @ vectors[5]))[:limit]
            hits = idx.search_dense(query, IndexFilter(user_ids=(user,)), limit)
            assert [h.id for h in hits] == [str(uuid.UUID(int=i + 1)) for i in truth]
    finally:
        idx.close()


def test_idf_follows_another_process_writes_after_the_ttl(pg_url):
    """Another index object's writes reach this one's BM25 statistics once they are older
    than idf_ttl_s (here 0: every search reads them)."""
    reader = PgVectorIndex(pg_url, DIM, idf_ttl_s=0.0)
    writer = PgVectorIndex(pg_url, DIM)
    try:
        base = [IndexPoint(str(uuid.UUID(int=i + 1)), unit(i), ENC.encode_document(t), {"user_id": "u", "version": 1})
                for i, t in enumerate(["tea time", "coffee time", "tea party"])]
        writer.upsert(base)
        before = reader.search_sparse(ENC.encode_query("tea"), IndexFilter(), 5)
        writer.upsert([IndexPoint(str(uuid.UUID(int=10 + i)), unit(10 + i), ENC.encode_document(f"tea {w}"),
                                  {"user_id": "u", "version": 1}) for i, w in enumerate(["cup", "pot", "bag"])])
        after = reader.search_sparse(ENC.encode_query("tea"), IndexFilter(), 5)
        assert len(after) == 5
        # "tea" is now in 5 of 6 points instead of 2 of 3: a lower IDF, so a lower score
        assert after[0].score < before[0].score
        assert_same_ranking(after, writer.search_sparse(ENC.encode_query("tea"), IndexFilter(), 5))
    finally:
        reader.close()
        writer.close()


def test_a_term_no_point_held_is_found_at_once_when_another_process_adds_it(pg_url):
    """A search counted 0 points holding "kayak"; caching that 0 for idf_ttl_s dropped the
    term from every query, so a memory with it stored by another process was not found by
    its words for 5 s ("tell worker A, ask worker B"). Zero counts are not kept."""
    reader = PgVectorIndex(pg_url, DIM)  # the default 5 s statistics
    writer = PgVectorIndex(pg_url, DIM)
    try:
        writer.upsert([IndexPoint(str(uuid.UUID(int=1)), unit(1), ENC.encode_document("tea time"),
                                  {"user_id": "u", "version": 1})])
        assert reader.search_sparse(ENC.encode_query("kayak"), IndexFilter(), 5) == []
        kayak = str(uuid.UUID(int=2))
        writer.upsert([IndexPoint(kayak, unit(2), ENC.encode_document("the kayak is in the shed"),
                                  {"user_id": "u", "version": 1})])
        hits = reader.search_sparse(ENC.encode_query("kayak"), IndexFilter(), 5)
        assert [h.id for h in hits] == [kayak]
    finally:
        reader.close()
        writer.close()


def test_an_index_from_before_the_postings_owners_gets_them_on_open(pg_url):
    """The postings' owner column (per-principal IDF counts read it) is added and filled from
    the points when an index made without it is opened; a changed owner moves its postings."""
    texts = {"ann": ["tea with Ann", "Ann walks the dog"], "bo": [f"tea number {i}" for i in range(8)]}
    points = [IndexPoint(str(uuid.uuid5(uuid.NAMESPACE_URL, f"{u}/{i}")), unit(10 * k + i),
                         ENC.encode_document(t), {"user_id": u, "version": 1})
              for k, (u, ts) in enumerate(texts.items()) for i, t in enumerate(ts)]
    ann, query = IndexFilter(user_ids=("ann",)), ENC.encode_query("tea dog")
    first = PgVectorIndex(pg_url, DIM, collection="old")
    try:
        first.upsert(points)
        expected = first.search_sparse(query, ann, 5)
    finally:
        first.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:  # what an older memos-core made
        conn.execute("DROP INDEX old_terms_owner")
        conn.execute("ALTER TABLE old_terms DROP COLUMN owner")
    again = PgVectorIndex(pg_url, DIM, collection="old")
    try:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            owners = conn.execute("SELECT DISTINCT owner FROM old_terms ORDER BY 1").fetchall()
            assert owners == [("ann",), ("bo",)]
            assert conn.execute("SELECT to_regclass('old_terms_owner')").fetchone()[0] is not None
        got = again.search_sparse(query, ann, 5)
        assert [h.id for h in got] == [h.id for h in expected]
        assert [h.score for h in got] == pytest.approx([h.score for h in expected])
        # bo's first memory is given to ann: her statistics count it, through its postings
        again.set_payload(points[2].id, {"user_id": "ann"})
        moved = {h.id: h.score for h in again.search_sparse(query, ann, 5)}
        assert points[2].id in moved  # "tea" is in more of ann's points: a lower IDF
        assert moved[points[0].id] < {h.id: h.score for h in expected}[points[0].id]
    finally:
        again.close()


def test_reopen_keeps_points_and_refuses_another_dim(pg_url):
    first = PgVectorIndex(pg_url, DIM, collection="team_a")
    first.upsert([IndexPoint(str(uuid.uuid4()), unit(3), ENC.encode_document("kept"), {"user_id": "u", "version": 4})])
    first.close()
    with pytest.raises(RuntimeError, match="closed"):
        first.search_dense(unit(3), IndexFilter(), 1)
    again = open_index("pgvector", url=pg_url, dim=DIM, collection="team_a")
    try:
        assert list(again.versions().values()) == [4]
    finally:
        again.close()
    with pytest.raises(ValueError, match="dim=8"):
        PgVectorIndex(pg_url, 8, collection="team_a")
    other = PgVectorIndex(pg_url, 8, collection="team_b")  # another collection, its own tables
    other.close()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(url="http://localhost:6333", dim=DIM), "postgresql://"),
        (dict(url="postgresql://x@127.0.0.1:1/db", dim=0), "dim"),
        (dict(url="postgresql://x@127.0.0.1:1/db", dim=DIM, collection="Robert'); DROP"), "collection"),
        (dict(url="postgresql://x@127.0.0.1:1/db", dim=DIM, keyword="fts"), "keyword"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PgVectorIndex(**kwargs)


def _index_bytes(url: str) -> str:
    """Every row of every index table, as text."""
    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE 'memos_%'")]
        return "\n".join(str(row) for t in tables for row in conn.execute(f'SELECT * FROM "{t}"'))


def test_memos_on_pgvector_keeps_no_text_or_tag_in_the_index(pg_url, tmp_path):
    """MemOS(index='pgvector'): search works, and the index tables never hold the memory's
    words or its plaintext tags -- before the forget or after it (no row of it is left)."""
    config = MemOSConfig(index="pgvector", index_url=pg_url, show_progress=False)
    with MemOS(tmp_path / "d", config=config) as mos:
        kept = mos.add("The quarterly budget review is on Friday", user_id="ann", tags=["finance"])
        secret = mos.add("Ann's oncologist appointment is at nine", user_id="ann", tags=["diagnosis"])
        assert mos.search("oncologist appointment", user_id="ann", k=1)[0].id == secret.id
        assert [h.id for h in mos.search("budget", user_id="ann", k=5, tags=["finance"])] == [kept.id]
        stored = _index_bytes(pg_url).lower()
        for word in ("oncologist", "appointment", "diagnosis", "finance", "budget"):
            assert word not in stored
        assert secret.id in stored
        mos.forget(secret.id, user_id="ann")
        stored = _index_bytes(pg_url)
        assert secret.id not in stored and kept.id in stored


def test_cli_with_a_data_directory_and_the_pgvector_index(pg_url, tmp_path, capsys):
    """`memos --index pgvector --index-url URL`: the vault in the directory, the index on the server."""
    import json

    from memos_core.cli import main

    def run(*args: str) -> str:
        code = main([args[0], "--data-dir", str(tmp_path / "d"), "--user", "alice", "--index", "pgvector",
                     "--index-url", pg_url, "--json", *args[1:]])
        assert code == 0
        return capsys.readouterr().out

    cube = json.loads(run("add", "Alice keeps bees in her garden."))
    assert json.loads(run("search", "bees"))[0]["id"] == cube["id"]
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT id::text FROM memos_points").fetchall() == [(cube["id"],)]


def _n(url: str) -> tuple[int, int]:
    """BM25's N as the counts table keeps it, and as a scan of the points counts it."""
    with psycopg.connect(url, autocommit=True) as conn:
        kept = conn.execute("SELECT COALESCE(sum(delta), 0) FROM memos_counts").fetchone()[0]
        scanned = conn.execute("SELECT count(*) FROM memos_points WHERE has_sparse").fetchone()[0]
    return int(kept), int(scanned)


def test_bm25_total_is_kept_by_triggers_exactly(pg_url):
    from memos_core.index.base import SparseVec

    first, second = PgVectorIndex(pg_url, DIM), PgVectorIndex(pg_url, DIM)
    rng = random.Random(7)
    ids = [str(uuid.UUID(int=i + 1)) for i in range(60)]

    def point(pid: str, words: str) -> IndexPoint:
        sparse = ENC.encode_document(words) if words else SparseVec((), ())
        return IndexPoint(pid, unit(rng.randrange(DIM)), sparse, {"user_id": "u", "version": 1})

    try:
        first.upsert([point(pid, "tea garden" if i % 3 else "") for i, pid in enumerate(ids)])
        assert _n(pg_url) == (40, 40)
        # updates that gain or lose a sparse vector, deletes, two writers at once
        def write(idx: PgVectorIndex, seed: int) -> None:
            r = random.Random(seed)
            for _ in range(40):
                chosen = r.sample(ids, 5)
                if r.random() < 0.3:
                    idx.delete(chosen[:2])
                else:
                    idx.upsert([point(pid, r.choice(["", "tea", "garden tools"])) for pid in chosen])

        threads = [threading.Thread(target=write, args=(idx, s)) for s, idx in ((1, first), (2, second))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        kept, scanned = _n(pg_url)
        assert kept == scanned
        # the statement's N is the kept one: scores equal a fresh count's (cache off)
        first.idf_ttl_s = 0.0
        hits = first.search_sparse(ENC.encode_query("tea"), IndexFilter(), 5)
        assert all(h.score > 0 for h in hits)
        first.clear()
        assert _n(pg_url) == (0, 0)
    finally:
        first.close()
        second.close()


def test_an_index_without_the_counts_table_gets_it_on_open(pg_url):
    idx = PgVectorIndex(pg_url, DIM)
    idx.upsert([IndexPoint(str(uuid.uuid4()), unit(i), ENC.encode_document(f"note {i}"),
                           {"user_id": "u", "version": 1}) for i in range(5)])
    idx.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:  # as an index made before it
        for name in ("ins", "upd", "del", "trunc"):
            conn.execute(f"DROP TRIGGER memos_n_{name} ON memos_points")
        conn.execute("DROP TABLE memos_counts")
    again = PgVectorIndex(pg_url, DIM)
    try:
        assert _n(pg_url) == (5, 5)
        again.upsert([IndexPoint(str(uuid.uuid4()), unit(9), ENC.encode_document("gardening"),
                                 {"user_id": "u", "version": 1})])
        assert _n(pg_url) == (6, 6)
    finally:
        again.close()


def test_counts_rows_are_folded_while_two_writers_add(pg_url):
    # each writing statement appends a row; about 1 in 100 folds them (one folder at a time)
    indexes = [PgVectorIndex(pg_url, DIM) for _ in range(2)]

    def add(idx: PgVectorIndex, offset: int) -> None:
        for i in range(300):
            idx.upsert([IndexPoint(str(uuid.UUID(int=offset + i + 1)), unit(i % DIM),
                                   ENC.encode_document(f"walk {i}"), {"user_id": "u", "version": 1})])

    try:
        threads = [threading.Thread(target=add, args=(idx, k * 1000)) for k, idx in enumerate(indexes)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            rows = conn.execute("SELECT count(*) FROM memos_counts").fetchone()[0]
        # 600 upserts fire ~1200 statement triggers: P(no fold at all) ~ 0.99^1200 ~ 6e-6
        assert rows < 600
        assert _n(pg_url) == (600, 600)
    finally:
        for idx in indexes:
            idx.close()


def test_an_older_version_does_not_replace_a_newer_one(pg_url):
    """Two processes' index updates of one memory can arrive out of order: the point keeps
    the newer version, its vector and its postings; an equal version still replaces it."""
    idx, other = PgVectorIndex(pg_url, DIM), PgVectorIndex(pg_url, DIM)
    pid, fresh = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        idx.upsert([IndexPoint(pid, unit(3), ENC.encode_document("violin lessons on tuesday"),
                               {"user_id": "u", "version": 3})])
        other.upsert([IndexPoint(pid, unit(2), ENC.encode_document("pottery class on monday"),
                                 {"user_id": "u", "version": 2}),
                      IndexPoint(fresh, unit(5), ENC.encode_document("pottery kiln"),
                                 {"user_id": "u", "version": 1})])  # same batch, still written
        assert idx.versions() == {pid: 3, fresh: 1}
        assert [h.id for h in idx.search_sparse(ENC.encode_query("violin"), IndexFilter(), 5)] == [pid]
        assert [h.id for h in idx.search_sparse(ENC.encode_query("pottery"), IndexFilter(), 5)] == [fresh]
        assert idx.search_dense(unit(3), IndexFilter(), 1)[0].id == pid
        idx.upsert([IndexPoint(pid, unit(4), ENC.encode_document("violin recital"),
                               {"user_id": "u", "version": 3})])  # a reindex at the same version
        assert [h.id for h in idx.search_sparse(ENC.encode_query("recital"), IndexFilter(), 5)] == [pid]
        assert [h.id for h in idx.search_sparse(ENC.encode_query("tuesday"), IndexFilter(), 5)] == []
    finally:
        idx.close()
        other.close()
