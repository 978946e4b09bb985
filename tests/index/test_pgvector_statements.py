"""How the pgvector backend sends its searches (issue 14, fifth pass), on a real PostgreSQL.

The query vector goes in pgvector's binary form and must be the very vector the text form
gave; the search statements are prepared per connection but planned for each execution's
parameters (never a generic plan); dense hits come back as text ids in (score, id) order,
ties included, on the HNSW statement and on the exact fallback.
"""

from __future__ import annotations

import time
import uuid

import numpy as np
import psycopg
import pytest

from memos_core.index import IndexFilter, IndexPoint, PgVectorIndex
from memos_core.index.pgvector import _DenseDumper, _DenseParam, _vector_text

from test_index_conformance import DIM, ENC, unit


def test_binary_query_vector_is_the_vector_the_text_form_gives(pg_url):
    PgVectorIndex(pg_url, DIM).close()  # creates the extension
    rng = np.random.default_rng(5)
    vectors = [rng.standard_normal(384).astype(np.float32).tolist() for _ in range(150)]  # embedder-like
    vectors += [rng.standard_normal(384).tolist() for _ in range(150)]  # any float64
    vectors += [[1e-30, -3.5, 7.0, 0.1] * 96, [float(np.float32(1) + np.float32(2**-23))] * 384]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.adapters.register_dumper(_DenseParam, _DenseDumper)
        for values in vectors:
            same, text = conn.execute("SELECT %b::vector = %s::vector, %b::vector::text",
                                      (_DenseParam(values), _vector_text(values),
                                       _DenseParam(values))).fetchone()
            assert same, values[:4]
            assert np.array_equal(np.array(text.strip("[]").split(","), dtype=np.float32),
                                  np.asarray(values, dtype=np.float32))


def _points(n: int, users: tuple[str, ...] = ("a", "b")) -> list[IndexPoint]:
    words = ["garden", "river", "piano", "market", "winter", "novel", "coffee", "bridge"]
    out = []
    for i in range(n):
        text = " ".join(words[(i * k) % len(words)] for k in (1, 3, 5)) + f" item{i % 7}"
        out.append(IndexPoint(str(uuid.UUID(int=i + 1)), unit(i % 13), ENC.encode_document(text),
                              {"user_id": users[i % len(users)], "version": 1}))
    return out


def test_search_statements_are_prepared_and_never_run_on_a_generic_plan(pg_url):
    idx = PgVectorIndex(pg_url, DIM, pool_size=1)  # one connection: every search uses it
    try:
        idx.upsert(_points(60))
        flt = IndexFilter(user_ids=("a",))
        first = None
        for _ in range(8):  # beyond the 5 custom plans after which a server may go generic
            found = (idx.search_hybrid(unit(3), ENC.encode_query("garden piano"), flt, 10),
                     idx.search_dense(unit(4), flt, 10), idx.search_sparse(ENC.encode_query("river"), flt, 10),
                     idx.search_dense(unit(5), flt, 50))  # more than pass: the exact fallback
            first = first or found
            assert found == first
        with idx._pool.connection() as conn:
            assert conn.execute("SHOW plan_cache_mode").fetchone()[0] == "force_custom_plan"
            rows = conn.execute("SELECT statement, generic_plans, custom_plans "
                                "FROM pg_prepared_statements").fetchall()
        dense = [r for r in rows if "<=>" in r[0]]
        keyword = [r for r in rows if "<#>" in r[0]]
        assert dense and keyword, rows
        assert all(generic == 0 for _, generic, _ in rows), rows
        assert max(custom for _, _, custom in dense) >= 8
    finally:
        idx.close()


@pytest.mark.parametrize("limit", [5, 40])  # HNSW statement / exact fallback (30 pass)
def test_dense_hits_are_text_ids_in_score_then_id_order_ties_included(pg_url, limit):
    idx = PgVectorIndex(pg_url, DIM)
    try:
        # 30 points of user "a" on 3 distinct vectors: every score is tied 10 times
        points = [IndexPoint(str(uuid.UUID(int=(i * 7919) % 1000 + 1)), unit(i % 3),
                             ENC.encode_document(f"note {i}"), {"user_id": "a", "version": 1})
                  for i in range(30)]
        idx.upsert(points)
        query = unit(0)
        hits = idx.search_dense(query, IndexFilter(user_ids=("a",)), limit)
        scored = sorted(((-float(np.dot(np.asarray(p.dense, np.float32), np.asarray(query, np.float32))), p.id)
                         for p in points))
        assert all(type(h.id) is str for h in hits)
        assert [h.id for h in hits] == [pid for _, pid in scored][:limit]
        hybrid, _ = idx.search_hybrid(query, None, IndexFilter(user_ids=("a",)), limit)
        assert hybrid == hits
    finally:
        idx.close()


def test_where_clauses_are_rendered_once_per_shape_with_the_values_as_parameters(pg_url):
    from memos_core.index.filters import AnyOf, Between, Either, FilterPlan, IsTrue

    rng = np.random.default_rng(3)

    def condition(depth: int = 0):
        kind = rng.integers(0, 4 if depth < 2 else 3)
        key = str(rng.choice(["user_id", "tags", "readers", "state", "occurred_at", "superseded"]))
        if kind == 0:
            return AnyOf(key, tuple(f"v{rng.integers(0, 99)}" for _ in range(int(rng.integers(1, 4)))))
        if kind == 1:
            return IsTrue(key)
        if kind == 2:
            return Between(key, None if rng.random() < 0.4 else float(rng.random()),
                           None if rng.random() < 0.4 else float(rng.random()))
        return Either(tuple(condition(depth + 1) for _ in range(int(rng.integers(1, 3)))))

    idx = PgVectorIndex(pg_url, DIM)
    try:
        for _ in range(300):
            plan = FilterPlan(tuple(condition() for _ in range(int(rng.integers(0, 4)))),
                              tuple(condition() for _ in range(int(rng.integers(0, 3)))))
            where, params = idx._where(plan, "q")
            expected, expected_params = idx._render_where(plan, "q")
            assert where.as_string(None) == expected.as_string(None)
            assert params == expected_params
        shapes = len(idx._where_cache)
        assert 0 < shapes <= 256
        plan = FilterPlan((AnyOf("user_id", ("a",)),))
        first, _ = idx._where(plan)
        again, params = idx._where(FilterPlan((AnyOf("user_id", ("b", "c")),)))
        assert again is first and params == [["b", "c"]]  # same shape: the kept clause
    finally:
        idx.close()


def test_the_bm25_statement_reaches_the_server_before_the_query_is_embedded(pg_url):
    """With a vector function, search_hybrid sends the BM25 statement first and computes the
    vector while the server works on it: inside the function, the server already shows the
    index connection running (or having run) the BM25 statement."""
    idx = PgVectorIndex(pg_url, DIM, pool_size=1)  # one connection: the search uses this one
    try:
        idx.upsert(_points(40))
        flt = IndexFilter(user_ids=("a",))
        sparse = ENC.encode_query("garden piano")
        with idx._pool.connection() as conn:
            pid = conn.info.backend_pid
        seen: list[str] = []

        def vector() -> list[float]:
            with psycopg.connect(pg_url, autocommit=True) as watcher:
                for _ in range(500):  # up to 5 s
                    query = watcher.execute("SELECT query FROM pg_stat_activity WHERE pid = %s",
                                            (pid,)).fetchone()[0]
                    if "counted AS" in query:  # the BM25 statement (its first 1 kB)
                        break
                    time.sleep(0.01)
            seen.append(query)
            return unit(3)

        hits = idx.search_hybrid(vector, sparse, flt, 10)
        assert len(seen) == 1 and "counted AS" in seen[0], seen
        assert hits == (idx.search_dense(unit(3), flt, 10), idx.search_sparse(sparse, flt, 10))
    finally:
        idx.close()
