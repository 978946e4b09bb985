"""The BM25 query of :class:`~memos_core.index.pgvector.PgVectorIndex` as one statement.

IDF (``ln(1 + (N - n + 0.5) / (n + 0.5))``, Qdrant's modifier; ``n`` the points holding the
term, ``N`` the points with a sparse vector) needs statistics. They are counted over the points
the searching principals own or read (the IDF corpus,
:func:`~memos_core.index.filters.idf_corpus`), so other users' memories never show in a
user's scores; a store-wide search counts every point, its ``N`` kept by triggers in a
counts table so that it is not a scan of the points. The index caches them per corpus for
``idf_ttl_s``; the terms whose counts are stale (and ``N`` when it is) are counted *inside* the
search statement, which also returns those counts for the cache. So a keyword search is one
round trip whether or not the statistics were cached, and its scores are the ones the
two-step form computed (same arithmetic in float8, the same folding of term ids into
``sparsevec``'s dimensions, the same float text the vector is parsed from).

Rows of the statement: ``('h', id, score)`` for each hit, best first (the caller sorts again
by score then id, the SQL order, since a ``UNION ALL``'s order is not guaranteed);
``('d', term, n)`` for each stale term some point holds; ``('t', NULL, N)`` when ``N`` was
stale. When every statistic is cached, :func:`bm25_cached_statement` is the cheaper
plain statement (the IDF-weighted query built by the client, as before).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from psycopg import sql

#: sparsevec's largest dimension, and the fold of 32-bit term ids into it (as in pgvector.py)
SPARSE_DIM = 1_000_000_000
FOLD = SPARSE_DIM - 1


def bm25_statement(
    keyword: str, points: sql.Identifier, terms_table: sql.Identifier, where: sql.Composable,
    where_params: Sequence[Any], indices: Sequence[int], values: Sequence[float],
    known: dict[int, int], missing: Sequence[int], total: int | None, limit: int,
    counts: sql.Identifier | None = None,
    principals: Sequence[str] | None = None,
) -> tuple[sql.Composed, tuple[Any, ...]]:
    """The statement and its parameters.

    Args:
        keyword: ``"scan"`` (``sparsevec`` inner product over the rows passing the filter)
            or ``"postings"`` (from the postings of the query's terms).
        where: the filter over alias ``p`` with its ``where_params``.
        indices, values: the query's term ids and weights.
        known: cached counts of some of the terms; ``missing``: the terms to count now.
        total: the cached ``N``, or ``None`` to count it now: the sum of the ``counts``
            table's rows (kept by triggers on the points), or, without one, a count of the
            points with a sparse vector (a scan of the points table).
        principals: the statistics are counted over the points these own or read
            (:func:`~memos_core.index.filters.idf_corpus`); ``None``: every point (``counts``
            gives ``N``). A term's points are its postings with one of these owners (the
            ``(term, owner)`` index: other users' postings are not visited) plus those of the
            others' points shared with them (the ``readers`` index).
    """
    if principals is None:
        counted = sql.SQL("SELECT term, count(*)::float8 AS n FROM {t} WHERE term = ANY(%s::bigint[]) "
                          "GROUP BY term").format(t=terms_table)
        n = (sql.SQL("SELECT COALESCE(sum(delta), 0) FROM {c}").format(c=counts) if counts is not None
             else sql.SQL("SELECT count(*) FROM {p} WHERE has_sparse").format(p=points))
        counted_params: tuple[Any, ...] = ()
        n_params: tuple[Any, ...] = ()
    else:
        who = list(principals)
        counted = sql.SQL(
            "SELECT term, count(*)::float8 AS n FROM ("
            "SELECT t.term FROM {t} t WHERE t.term = ANY(%s::bigint[]) AND t.owner = ANY(%s::text[]) "
            "UNION ALL SELECT t.term FROM {p} c JOIN {t} t ON t.id = c.id "
            "WHERE c.readers && %s::text[] AND NOT c.user_id = ANY(%s::text[]) "
            "AND t.term = ANY(%s::bigint[])) x GROUP BY term").format(t=terms_table, p=points)
        n = sql.SQL("SELECT count(*) FROM {p} c WHERE c.has_sparse AND "
                    "(c.user_id = ANY(%s::text[]) OR c.readers && %s::text[])").format(p=points)
        counted_params = (who, who, who, list(missing))
        n_params = (who, who)
    head = sql.SQL(
        "WITH q(term, w) AS (SELECT * FROM unnest(%s::bigint[], %s::float8[])), "
        "counted AS ({counted}), "
        "df(term, n) AS (SELECT * FROM unnest(%s::bigint[], %s::float8[]) "
        "UNION ALL SELECT term, n FROM counted), "
        "tot AS (SELECT CASE WHEN %s::boolean THEN ({n})::float8 ELSE %s::float8 END AS n), "
        "b AS MATERIALIZED (SELECT q.term, q.w * ln(1 + (tot.n - df.n + 0.5) / (df.n + 0.5)) AS boost "
        "FROM q JOIN df ON df.term = q.term CROSS JOIN tot WHERE df.n > 0), "
    ).format(counted=counted, n=n)
    if keyword == "postings":
        hits = sql.SQL(
            "hits AS (SELECT p.id, sum(t.weight * b.boost) AS score FROM b "
            "JOIN {t} t ON t.term = b.term JOIN {p} p ON p.id = t.id WHERE {w} "
            "GROUP BY p.id ORDER BY score DESC, p.id LIMIT %s) "
        ).format(t=terms_table, p=points, w=where)
    else:
        hits = sql.SQL(
            "v AS MATERIALIZED (SELECT ('{{' || string_agg(f.k::text || ':' || f.s::text, ',' ORDER BY f.k) "
            "|| '}}/' || {dim})::sparsevec AS qv FROM (SELECT mod(b.term, {fold}) + 1 AS k, "
            "sum(b.boost) AS s FROM b GROUP BY 1) f), "
            "hits AS (SELECT p.id, -(p.sparse <#> v.qv) AS score FROM {p} p CROSS JOIN v "
            "WHERE {w} AND (p.sparse <#> v.qv) < 0 ORDER BY p.sparse <#> v.qv, p.id LIMIT %s) "
        ).format(p=points, w=where, dim=sql.Literal(str(SPARSE_DIM)), fold=sql.Literal(FOLD))
    tail = sql.SQL(
        "SELECT 'h', id::text, score FROM hits "
        "UNION ALL SELECT 'd', term::text, n FROM counted "
        "UNION ALL SELECT 't', NULL, n FROM tot WHERE %s::boolean")
    known_terms = list(known)
    args = (list(indices), [float(v) for v in values], list(missing), *counted_params, known_terms,
            [float(known[t]) for t in known_terms], total is None, *n_params,
            float(total or 0), *where_params, limit, total is None)
    return head + hits + tail, args


def idf(total: int, n: int) -> float:
    """Qdrant's IDF modifier for a term ``n`` of ``total`` points hold."""
    return math.log(1.0 + (total - n + 0.5) / (n + 0.5))


def sparsevec_text(indices: Sequence[int], values: Sequence[float]) -> str:
    """pgvector's text form of a sparse vector. Our term ids are 32-bit hashes, beyond
    ``sparsevec``'s 10^9 dimensions: they are folded (``id % (10^9 - 1) + 1``; a fold that
    lands two terms of one text on one index adds their weights), as the statement of
    :func:`bm25_statement` folds them in SQL."""
    folded: dict[int, float] = {}
    for index, value in zip(indices, values):
        key = int(index) % FOLD + 1
        folded[key] = folded.get(key, 0.0) + float(value)
    body = ",".join(f"{k}:{v!r}" for k, v in sorted(folded.items()))
    return "{" + body + "}/" + str(SPARSE_DIM)


def bm25_cached_statement(
    keyword: str, points: sql.Identifier, terms_table: sql.Identifier, where: sql.Composable,
    where_params: Sequence[Any], indices: Sequence[int], values: Sequence[float],
    known: dict[int, int], total: int, limit: int,
) -> tuple[sql.Composed, tuple[Any, ...]] | None:
    """The same search when every statistic is cached: the IDF-weighted query is built here
    and the statement is a plain one (cheaper to plan); its rows are the hits only, in the
    same ``('h', id, score)`` form. ``None`` when no query term is held by any point."""
    terms, boosts = [], []
    for term, value in zip(indices, values):
        if known[term] > 0:
            terms.append(term)
            boosts.append(value * idf(total, known[term]))
    if not terms:
        return None
    if keyword == "postings":
        return sql.SQL(
            "SELECT 'h', p.id::text, sum(t.weight * q.b) AS score "
            "FROM unnest(%s::bigint[], %s::float8[]) AS q(term, b) "
            "JOIN {t} t ON t.term = q.term JOIN {p} p ON p.id = t.id "
            "WHERE {w} GROUP BY p.id ORDER BY score DESC, p.id LIMIT %s"
        ).format(t=terms_table, p=points, w=where), (terms, boosts, *where_params, limit)
    qv = sparsevec_text(terms, boosts)
    return sql.SQL(
        "SELECT 'h', p.id::text, -(p.sparse <#> %s::sparsevec) AS score FROM {p} p "
        "WHERE {w} AND (p.sparse <#> %s::sparsevec) < 0 "
        "ORDER BY p.sparse <#> %s::sparsevec, p.id LIMIT %s"
    ).format(p=points, w=where), (qv, *where_params, qv, qv, limit)
