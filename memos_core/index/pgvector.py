"""The server-mode backend: the index in PostgreSQL, next to the server-mode vault.

Two tables per ``collection`` (``<collection>_points`` and ``<collection>_terms``):

- ``_points``: one row per memory -- the dense vector (pgvector ``vector(dim)`` with an HNSW
  index for cosine distance) and the filter fields as typed columns (``tags`` and ``readers``
  as ``text[]`` with GIN indexes, the others with B-tree indexes). Never the memory text; the
  tags are whatever the caller gives, which in MemOS are keyed hashes
  (:mod:`memos_core.governance.index_privacy`).
- ``_terms``: the BM25 postings -- ``(term, id, weight)`` per term of a memory's sparse
  vector (our :class:`~memos_core.index.sparse.Bm25Encoder`: term ids are 32-bit hashes, the
  weights its term-frequency part), primary key ``(term, id)``. A keyword search reads the
  postings of its terms only; IDF is computed at search time from the live postings
  (``ln(1 + (N - n + 0.5) / (n + 0.5))`` like Qdrant's IDF modifier, with ``N`` the points
  that have a sparse vector), so scores are exact after deletes and never go stale.

Why postings and not a ``sparsevec`` column: pgvector indexes ``sparsevec`` only with HNSW
(approximate, at most 1000 non-zero entries, and no use for a 2-5 term BM25 query), so a
``sparsevec`` keyword search is a scan of every row that passes the filter, and its dimension
limit (10^9) is below our 2^32 hash range. ``benchmarks/server_mode.py`` measures the postings
table against Postgres full-text search (``tsvector``, which would store the memory's words in
the index -- a copy of the text that forgetting must then chase).

Filters are SQL ``WHERE`` clauses inside the search query (never post-filtering). A dense
search runs on the HNSW index with pgvector 0.8's iterative index scans
(``hnsw.iterative_scan = relaxed_order``), so a filter that most points fail still fills the
``limit``; when it returns fewer hits than ``limit`` (the filter passes fewer points than
that, or the scan gave up after ``hnsw.max_scan_tuples``) the query is repeated as an exact
scan over the filtered rows, so no passing point is ever lost.

Every write is one transaction; upserts are idempotent (``INSERT .. ON CONFLICT``) and take
their row locks in id order, so concurrent writers from many processes neither deadlock nor
leave a mix of two versions' postings. Connections come from a :mod:`psycopg_pool` pool.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from threading import Lock
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from memos_core.errors import ServerUnavailableError
from memos_core.index.base import IndexFilter, IndexPoint, QueryVector, ScoredId, SparseVec
from memos_core.index.pg_bm25 import SPARSE_DIM, bm25_cached_statement, bm25_statement, sparsevec_text
from memos_core.index.pg_parts import (
    LIST_FIELDS,
    _DenseDumper,
    _DenseParam,
    _vector_text,
    render_where,
    where_params,
    where_shape,
)
from memos_core.index.filters import FilterPlan, idf_corpus, plan_filter
from memos_core.index.points import (
    canonical_id,
    check_limit,
    check_payload,
    check_points,
    check_sparse,
    dense_array,
)
from memos_core.vault.pg_url import hide_secrets, redact_url

__all__ = ["PgVectorIndex", "SCHEMA_LOCK_KEY"]

_LIST_FIELDS = LIST_FIELDS  # text[] columns (GIN indexes; a filter on them is an overlap)
_TEXT_FIELDS = ("user_id", "agent_id", "session_id", "type", "state")
_COLUMNS = ("user_id", "agent_id", "session_id", "type", "tags", "state", "occurred_at",
            "superseded", "version", "readers")
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
_BATCH = 500  # points per INSERT statement
_SPARSE_DIM = SPARSE_DIM  # sparsevec's largest dimension (term ids are folded into it)
#: advisory lock (transaction-scoped) around creating the extension and the index tables
#: ("memos"): :func:`memos_core.server_mode.check_pgvector` takes it too
SCHEMA_LOCK_KEY = 0x6D656D6F73
#: an IDF corpus's key in the statistics cache: its principals, sorted (None: every point)
_Corpus = tuple[str, ...] | None
#: what a BM25 statement counted: (when, corpus, terms counted, whether N was counted)
_Stale = tuple[float, _Corpus, list[int], bool]
_CONNECT_TIMEOUT_S = 10  # libpq's connect_timeout of the first connection (whole seconds)
_NEVER = 2**62  # psycopg's prepare_threshold: a statement is prepared only when asked to


class PgVectorIndex:
    """A :class:`~memos_core.index.base.VectorIndex` on PostgreSQL with pgvector (>= 0.8).

    Args:
        url: a libpq URL (``postgresql://user:pass@host:port/db``); the database needs the
            ``vector`` extension or the right to create it.
        dim: the dense vectors' length. An existing collection with another ``dim`` raises
            ``ValueError``.
        collection: table name prefix (lower-case letters, digits, ``_``): one per vault.
        pool_size: most connections this index holds (threads beyond it wait for one).
        ef_search: HNSW candidates per dense search (raised to ``limit`` when that is larger).
        max_scan_tuples: how many tuples an iterative scan may visit before it gives up
            (then the exact scan takes over).
        idf_ttl_s: how long BM25's statistics (points per term, points in all) are reused
            before they are read again; other processes' writes reach the IDF within it.
        keyword: how a BM25 search finds and scores its points (same results, different
            plans): ``"scan"`` scores the rows that pass the filter by the ``sparsevec``
            inner product with the IDF-weighted query; ``"postings"`` starts from the
            postings of the query's terms and checks the filter on each. See
            ``benchmarks/server_mode.py`` for both measured.

    Thread-safe and process-safe: any number of processes may open the same collection.
    Raises :class:`~memos_core.errors.ServerUnavailableError` if the server cannot be
    reached on open (within 10 s; the URL shown without its passwords), ``ValueError`` for
    a URL libpq cannot read; a call that loses the server later raises
    :class:`psycopg.OperationalError`.
    """

    def __init__(self, url: str, dim: int, collection: str = "memos", *, pool_size: int = 4,
                 ef_search: int = 100, max_scan_tuples: int = 20_000,
                 keyword: Literal["scan", "postings"] = "scan",
                 idf_ttl_s: float = 5.0) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if not isinstance(collection, str) or not _NAME.match(collection):
            raise ValueError(
                f"collection must be lower-case letters, digits and '_' (at most 41, not "
                f"starting with a digit) to name PostgreSQL tables, got {collection!r}")
        if keyword not in ("scan", "postings"):
            raise ValueError(f"keyword must be 'scan' or 'postings', got {keyword!r}")
        self.keyword = keyword
        self.idf_ttl_s = float(idf_ttl_s)
        self._stats_lock = Lock()
        #: BM25 statistics per IDF corpus (its principals; None: every point), with the time
        #: they were counted: (corpus, term) -> points holding the term; corpus -> N
        self._df: dict[tuple[_Corpus, int], tuple[float, int]] = {}
        self._total: dict[_Corpus, tuple[float, int]] = {}
        if not isinstance(url, str) or not url.startswith(("postgresql://", "postgres://")):
            shown = redact_url(url) if isinstance(url, str) else url
            raise ValueError(f"url must be a postgresql:// URL, got {shown!r}")
        try:  # libpq's reading of the URL (an unknown ?parameter): the settings are wrong
            conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise ValueError(f"libpq cannot read the URL {redact_url(url)!r}: "
                             f"{hide_secrets(str(exc).strip(), url)}") from None
        self.url = url
        self.dim = dim
        self.collection = collection
        self.ef_search = int(ef_search)
        #: ``(statement, seen)``: a query of another component on the same server that each
        #: hybrid search sends first in its round trip; ``seen(rows, sent_at)`` gets its rows
        #: and when it was sent (the vault's change-feed head: ``FeedMixin.head_probe``)
        self.probe: tuple[str, Callable[[Sequence[Any], float], None]] | None = None
        self.max_scan_tuples = int(max_scan_tuples)
        self._points = sql.Identifier(f"{collection}_points")
        self._terms = sql.Identifier(f"{collection}_terms")
        #: BM25's N, kept by triggers: one row per writing statement, summed when read
        self._counts = sql.Identifier(f"{collection}_counts")
        self._closed = False
        self._close_lock = Lock()
        #: rendered WHERE clauses by filter shape (see _where)
        self._where_cache: dict[tuple[Any, ...], sql.SQL] = {}
        self._pool = ConnectionPool(url, min_size=1, max_size=max(1, pool_size), open=False,
                                    # Only the searches are prepared (``prepare=True``: their
                                    # parse and analysis done once per connection), and
                                    # every execution is planned for its own parameters
                                    # (``plan_cache_mode``, see _configure).
                                    kwargs={"autocommit": True, "prepare_threshold": _NEVER},
                                    configure=self._configure,
                                    name=f"memos-index-{collection}")
        try:
            # one connection first, with a connect timeout: an unreachable server fails at
            # once with libpq's reason, where the pool would retry for 30 s and then say
            # only that it timed out
            with psycopg.connect(url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S) as conn:
                self._ensure_schema(conn)
            self._pool.open(wait=True, timeout=30)
        except psycopg.OperationalError as exc:  # the pool's PoolTimeout too
            self._pool.close()
            raise ServerUnavailableError(
                f"Cannot reach the PostgreSQL server of the pgvector index at "
                f"{redact_url(url)}: {hide_secrets(str(exc).strip(), url)}. Check that the "
                "server runs and that the host, port, user, password and database of the "
                "index URL are right.") from exc
        except BaseException:
            self._pool.close()
            raise

    def __repr__(self) -> str:
        return f"PgVectorIndex(collection={self.collection!r}, dim={self.dim})"

    def __enter__(self) -> PgVectorIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        """Session settings of every pooled connection: iterative HNSW scans, so a filter
        that most points fail still fills the limit (pgvector >= 0.8); query vectors are sent
        in binary (:class:`_DenseParam`). The search statements are prepared (server-side
        named statements: parsed and analysed once per connection) but never run on a
        generic plan (``plan_cache_mode = force_custom_plan``): a generic plan cannot see the
        LIMIT or how selective the filter is, and picks a full sort over the HNSW index;
        each execution is planned for its parameters, as an unprepared statement is."""
        conn.adapters.register_dumper(_DenseParam, _DenseDumper)
        conn.execute("SELECT set_config('plan_cache_mode', 'force_custom_plan', false), "
                     "set_config('hnsw.iterative_scan', 'relaxed_order', false), "
                     "set_config('hnsw.ef_search', %s, false), "
                     "set_config('hnsw.max_scan_tuples', %s, false)",
                     (str(self.ef_search), str(self.max_scan_tuples)))

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection inside one transaction (committed on success)."""
        with self._conn() as conn:
            with conn.transaction():
                yield conn

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection in autocommit mode: each statement is its own transaction
        (reads that need one consistent snapshot are single statements)."""
        if self._closed:
            raise RuntimeError(f"{self!r} is closed; open a new PgVectorIndex")
        try:
            with self._pool.connection() as conn:
                yield conn
        except psycopg.OperationalError:
            # the server may have restarted: replace the broken idle connections now, so
            # one call fails, not one per pooled connection (best effort: it may be down)
            try:
                self._pool.check()
            except Exception:  # noqa: BLE001 - the pool keeps reconnecting by itself
                pass
            raise

    # -- schema ---------------------------------------------------------------------------

    def _ensure_schema(self, conn: psycopg.Connection[Any]) -> None:
        """Create the tables (or check and upgrade them) on ``conn``, an autocommit
        connection, in one transaction under the schema's advisory lock."""
        p, t = self._points, self._terms

        def ix(suffix: str) -> sql.Identifier:
            return sql.Identifier(f"{self.collection}_{suffix}")

        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
            if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() is None:
                try:
                    with conn.transaction():
                        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                except psycopg.Error as exc:
                    raise ValueError(
                        "the database lacks the pgvector extension and this role may not create "
                        f"it ({exc}); run CREATE EXTENSION vector as its owner") from None
            found = conn.execute(
                "SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass(%s) "
                "AND attname = 'dense'", (f"{self.collection}_points",)).fetchone()
            if found is not None:
                if found[0] != self.dim:
                    raise ValueError(
                        f"the index tables {self.collection}_* exist with dim={found[0]}, not "
                        f"dim={self.dim}: use another collection, or drop them (the index is "
                        "rebuilt from the vault)")
                self._ensure_counts(conn)  # an index made before the counts table
                self._ensure_term_owners(conn)  # ... or before the postings' owners
                return
            conn.execute(sql.SQL(
                "CREATE TABLE {p} (id uuid PRIMARY KEY, dense vector({dim}) NOT NULL, "
                "has_sparse boolean NOT NULL, sparse sparsevec({sdim}) NOT NULL, user_id text NOT NULL, agent_id text, "
                "session_id text, type text, tags text[] NOT NULL, state text, "
                "occurred_at double precision, superseded boolean NOT NULL, "
                "version bigint NOT NULL, readers text[] NOT NULL)"
            ).format(p=p, dim=sql.Literal(self.dim), sdim=sql.Literal(_SPARSE_DIM)))
            conn.execute(sql.SQL(
                "CREATE TABLE {t} (term bigint NOT NULL, id uuid NOT NULL REFERENCES {p} (id) "
                "ON DELETE CASCADE, weight real NOT NULL, owner text NOT NULL, "
                "PRIMARY KEY (term, id) INCLUDE (weight))"
            ).format(t=t, p=p))
            conn.execute(sql.SQL("CREATE INDEX {i} ON {t} (id)").format(i=ix("terms_id"), t=t))
            conn.execute(sql.SQL("CREATE INDEX {i} ON {t} (term, owner)").format(
                i=ix("terms_owner"), t=t))
            conn.execute(sql.SQL(
                "CREATE INDEX {i} ON {p} USING hnsw (dense vector_cosine_ops)"
            ).format(i=ix("dense_hnsw"), p=p))
            for col in ("user_id", "agent_id", "session_id", "type", "state", "occurred_at"):
                conn.execute(sql.SQL("CREATE INDEX {i} ON {p} ({c})").format(
                    i=ix(col), p=p, c=sql.Identifier(col)))
            for col in _LIST_FIELDS:
                conn.execute(sql.SQL("CREATE INDEX {i} ON {p} USING gin ({c})").format(
                    i=ix(col), p=p, c=sql.Identifier(col)))
            self._ensure_counts(conn)

    def _ensure_term_owners(self, conn: Any) -> None:
        """The postings' ``owner`` column (the point's ``user_id``) and its index, which
        count a term's points per principal for BM25's IDF without visiting other users'
        postings: added and filled on the first open of an index that lacks them; the
        caller holds the schema lock."""
        if conn.execute("SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) "
                        "AND attname = 'owner' AND NOT attisdropped",
                        (f"{self.collection}_terms",)).fetchone():
            return
        t, p = self._terms, self._points
        conn.execute(sql.SQL("ALTER TABLE {t} ADD COLUMN owner text").format(t=t))
        conn.execute(sql.SQL("UPDATE {t} t SET owner = p.user_id FROM {p} p WHERE p.id = t.id").format(
            t=t, p=p))
        conn.execute(sql.SQL("ALTER TABLE {t} ALTER COLUMN owner SET NOT NULL").format(t=t))
        conn.execute(sql.SQL("CREATE INDEX {i} ON {t} (term, owner)").format(
            i=sql.Identifier(f"{self.collection}_terms_owner"), t=t))

    def _ensure_counts(self, conn: Any) -> None:
        """BM25's N (the points with a sparse vector) without a scan of the points: statement
        triggers on the points table add one row of +/- count to ``<collection>_counts`` per
        writing statement (insert-only, so writers never wait on each other), ``TRUNCATE``
        empties it, and about one statement in a hundred folds the rows into one; N is their
        sum, exact and transactional like the points. Made (and filled with the current count)
        on the first open of an index that lacks it; the caller holds the schema lock."""
        c, p = self._counts, self._points
        fn = sql.Identifier(f"{self.collection}_count_sparse")
        body = sql.SQL(
            "BEGIN "
            "IF TG_OP = 'TRUNCATE' THEN DELETE FROM {c}; RETURN NULL; END IF; "
            # one statement per event: a statement naming a transition table the event lacks
            # does not plan
            "IF TG_OP = 'INSERT' THEN "
            "INSERT INTO {c} SELECT count(*) FROM new_rows WHERE has_sparse; "
            "ELSIF TG_OP = 'DELETE' THEN "
            "INSERT INTO {c} SELECT -count(*) FROM old_rows WHERE has_sparse; "
            "ELSE INSERT INTO {c} SELECT (SELECT count(*) FROM new_rows WHERE has_sparse) "
            "- (SELECT count(*) FROM old_rows WHERE has_sparse); END IF; "
            # one folder at a time (a try-lock: two folds deleting the same rows in different
            # orders could deadlock; a writer that does not get the lock skips folding)
            "IF random() < 0.01 THEN IF pg_try_advisory_xact_lock(hashtext({key})) THEN "
            "WITH gone AS (DELETE FROM {c} RETURNING delta) "
            "INSERT INTO {c} SELECT COALESCE(sum(delta), 0) FROM gone; END IF; END IF; "
            "RETURN NULL; END").format(c=c, key=sql.Literal(f"memos-index-fold:{self.collection}"))
        # the function is replaced on every open (an older body is updated in place)
        conn.execute(sql.SQL("CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS {b}").format(
            fn=fn, b=sql.Literal(body.as_string(conn))))
        if conn.execute("SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass(%s) AND tgname = %s",
                        (f"{self.collection}_points", f"{self.collection}_n_ins")).fetchone():
            return
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {c}").format(c=c))  # of a dropped points table
        conn.execute(sql.SQL("CREATE TABLE {c} (delta bigint NOT NULL)").format(c=c))
        conn.execute(sql.SQL("INSERT INTO {c} SELECT count(*) FROM {p} WHERE has_sparse").format(
            c=c, p=p))
        for name, event, tables in (
                ("ins", "INSERT", "REFERENCING NEW TABLE AS new_rows"),
                ("upd", "UPDATE", "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"),
                ("del", "DELETE", "REFERENCING OLD TABLE AS old_rows"),
                ("trunc", "TRUNCATE", "")):
            conn.execute(sql.SQL(
                "CREATE TRIGGER {t} AFTER {e} ON {p} {r} FOR EACH STATEMENT EXECUTE FUNCTION {fn}()"
            ).format(t=sql.Identifier(f"{self.collection}_n_{name}"), e=sql.SQL(event), p=p,
                     r=sql.SQL(tables), fn=fn))

    # -- writes ---------------------------------------------------------------------------

    def upsert(self, points: Sequence[IndexPoint]) -> None:
        """Insert or replace points (see the protocol); all are checked before any write,
        and the whole batch is one transaction."""
        checked = sorted(check_points(points, self.dim), key=lambda row: row[0])
        if not checked:
            return
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in ("id", "dense", "has_sparse", "sparse", *_COLUMNS))
        updates = sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
            for c in ("dense", "has_sparse", "sparse", *_COLUMNS))
        insert_points = sql.SQL(
            "INSERT INTO {p} ({cols}) SELECT u.id, u.dense::vector, u.has_sparse, "
            "u.sparse::sparsevec, u.user_id, "
            "u.agent_id, u.session_id, u.type, "
            "ARRAY(SELECT jsonb_array_elements_text(u.tags)), u.state, u.occurred_at, "
            "u.superseded, u.version, ARRAY(SELECT jsonb_array_elements_text(u.readers)) "
            "FROM unnest(%s::uuid[], %s::text[], %s::boolean[], %s::text[], %s::text[], %s::text[], "
            "%s::text[], %s::text[], %s::jsonb[], %s::text[], %s::float8[], %s::boolean[], "
            "%s::bigint[], %s::jsonb[]) WITH ORDINALITY AS u(id, dense, has_sparse, sparse, user_id, "
            "agent_id, session_id, type, tags, state, occurred_at, superseded, version, "
            "readers, n) ORDER BY u.n ON CONFLICT (id) DO UPDATE SET {updates} "
            "WHERE {p}.version <= EXCLUDED.version RETURNING id::text"
        ).format(p=self._points, cols=columns, updates=updates)
        insert_terms = sql.SQL(
            "INSERT INTO {t} (term, id, weight, owner) SELECT * FROM unnest(%s::bigint[], "
            "%s::uuid[], %s::real[], %s::text[])").format(t=self._terms)
        delete_terms = sql.SQL("DELETE FROM {t} WHERE id = ANY(%s::uuid[])").format(t=self._terms)
        from psycopg.types.json import Jsonb

        with self._writing(), self._tx() as conn:
            for start in range(0, len(checked), _BATCH):
                rows = checked[start:start + _BATCH]
                ids = [pid for pid, *_ in rows]
                cols: dict[str, list[Any]] = {c: [r[3][c] for r in rows] for c in _COLUMNS}
                # The upsert locks each point row first (in id order), so a concurrent writer
                # of the same id waits here and then sees these postings when it deletes them.
                # A point the index holds at a newer version than this one is left as it is
                # (two processes' index updates of one memory can arrive in either order):
                # only the points written get their postings replaced.
                written = {r[0] for r in conn.execute(insert_points, (
                    ids, [_vector_text(r[1]) for r in rows], [bool(r[2].indices) for r in rows],
                    [sparsevec_text(r[2].indices, r[2].values) for r in rows],
                    cols["user_id"], cols["agent_id"], cols["session_id"], cols["type"],
                    [Jsonb(v) for v in cols["tags"]], cols["state"], cols["occurred_at"],
                    cols["superseded"], cols["version"], [Jsonb(v) for v in cols["readers"]]))}
                rows = [r for r in rows if r[0] in written]
                conn.execute(delete_terms, ([r[0] for r in rows],))
                terms: list[int] = []
                term_ids: list[Any] = []
                weights: list[float] = []
                owners: list[str] = []
                for pid, _dense, sparse, payload in rows:
                    terms += sparse.indices
                    term_ids += [pid] * len(sparse.indices)
                    weights += sparse.values
                    owners += [payload["user_id"]] * len(sparse.indices)
                if terms:
                    conn.execute(insert_terms, (terms, term_ids, weights, owners))

    def set_payload(self, id: str, payload: dict[str, Any]) -> None:
        """Merge ``payload`` into point ``id``'s payload; ``KeyError`` if it does not exist.
        A payload with a ``version`` changes nothing when the point already holds that
        version or a later one."""
        pid = canonical_id(id)
        fields = check_payload(payload, partial=True)
        # an owner or readers change moves the point between principals' IDF corpora
        moves = "user_id" in fields or "readers" in fields
        with self._writing() if moves else contextlib.nullcontext(), self._tx() as conn:
            if not fields:
                found = conn.execute(sql.SQL("SELECT 1 FROM {p} WHERE id = %s").format(
                    p=self._points), (pid,)).fetchone()
            else:
                assignments = sql.SQL(", ").join(
                    sql.SQL("{c} = %s").format(c=sql.Identifier(k)) for k in fields)
                # a payload carrying a version never moves the point back: another process
                # may have written a later one since this process read it
                newer = (sql.SQL(" AND version < %s") if "version" in fields else sql.SQL(""))
                params = (*fields.values(), pid, *(
                    (fields["version"],) if "version" in fields else ()))
                found = conn.execute(
                    sql.SQL("UPDATE {p} SET {a} WHERE id = %s{n} RETURNING 1").format(
                        p=self._points, a=assignments, n=newer), params).fetchone()
                if found is None and "version" in fields:  # there, at that version or later
                    found = conn.execute(sql.SQL("SELECT 1 FROM {p} WHERE id = %s").format(
                        p=self._points), (pid,)).fetchone()
                if found is not None and "user_id" in fields:  # the postings follow the owner
                    conn.execute(sql.SQL("UPDATE {t} SET owner = %s WHERE id = %s").format(
                        t=self._terms), (fields["user_id"], pid))
        if found is None:
            raise KeyError(f"no point {pid} in the index; upsert it instead")

    def delete(self, ids: Iterable[str]) -> None:
        """Delete points (and their postings) by id in one transaction; missing ids are
        ignored. Deleted rows keep no bytes in live rows; the server reclaims the dead
        tuples at its next VACUUM."""
        pids = sorted(set(canonical_id(i) for i in ids))
        if not pids:
            return
        with self._writing(), self._tx() as conn:
            conn.execute(sql.SQL(
                "SELECT id FROM {p} WHERE id = ANY(%s::uuid[]) ORDER BY id FOR UPDATE"
            ).format(p=self._points), (pids,))
            conn.execute(sql.SQL("DELETE FROM {p} WHERE id = ANY(%s::uuid[])").format(
                p=self._points), (pids,))

    def clear(self) -> None:
        """Remove every point (``TRUNCATE``: the old rows' files are dropped at once)."""
        with self._writing(), self._tx() as conn:
            conn.execute(sql.SQL("TRUNCATE {t}, {p}").format(t=self._terms, p=self._points))

    # -- reads ----------------------------------------------------------------------------

    def _where(self, plan: FilterPlan, alias: str = "p") -> tuple[sql.Composable, list[Any]]:
        """The filter as a ``WHERE`` clause over ``alias`` and its parameters. The clause's
        text depends only on the plan's shape (which conditions on which fields, which
        bounds), not on its values (those are parameters): it is rendered once per shape and
        kept (a search's filters have a few shapes)."""
        key = (alias, where_shape(plan))
        params: list[Any] = []
        for cond in plan.must:
            where_params(cond, params)
        for cond in plan.must_not:
            where_params(cond, params)
        found = self._where_cache.get(key)
        if found is None:
            rendered, rendered_params = self._render_where(plan, alias)
            if rendered_params != params:  # a condition kind the walks disagree on
                raise TypeError(f"cannot render the filter plan {plan!r}")
            found = sql.SQL(rendered.as_string(None))
            if len(self._where_cache) >= 256:
                self._where_cache.clear()
            self._where_cache[key] = found
        return found, params

    def _render_where(self, plan: FilterPlan, alias: str = "p") -> tuple[sql.Composable, list[Any]]:
        """The filter's clause rendered anew (what :meth:`_where` keeps per shape)."""
        return render_where(plan, alias)

    def search_dense(self, vector: Sequence[float], flt: IndexFilter, limit: int) -> list[ScoredId]:
        """Nearest points by cosine similarity, best first.

        The planner picks the HNSW index (with iterative scans, so a filter that most points
        fail still fills the limit) or, for a filter that few rows pass, an exact scan of
        them; if the result is short of ``limit`` (fewer rows pass, or the HNSW scan gave up
        after ``max_scan_tuples``), an exact scan of the filtered rows replaces it."""
        query = _DenseParam(dense_array(vector, self.dim))
        plan = plan_filter(flt)
        if plan is None or check_limit(limit) == 0:
            return []
        where, params = self._where(plan)
        ann, exact = self._dense_sql(where)
        args = (query, *params, limit)
        with contextlib.ExitStack() as stack:
            if limit > self.ef_search:  # an HNSW scan returns at most ef_search hits per round
                conn = stack.enter_context(self._tx())
                conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(min(1000, limit)),))
            else:
                conn = stack.enter_context(self._conn())
            rows = conn.execute(ann, args, prepare=True).fetchall()
            if len(rows) < limit:
                rows = conn.execute(exact, args, prepare=True).fetchall()
        return self._dense_hits(rows)

    def _dense_sql(self, where: sql.Composable) -> tuple[sql.Composed, sql.Composed]:
        """The dense search's HNSW query and its exact fallback (same parameters: the query
        vector a :class:`_DenseParam`); ids come back as text (no ``UUID`` objects to build)."""
        ann = sql.SQL(
            "SELECT p.id::text, p.dense <=> %b::vector AS dist FROM {p} p WHERE {w} ORDER BY dist LIMIT %s"
        ).format(p=self._points, w=where)
        exact = sql.SQL(  # OFFSET 0 keeps the ordering out of the index's reach
            "SELECT id::text, dist FROM (SELECT p.id, p.dense <=> %b::vector AS dist FROM {p} p "
            "WHERE {w} OFFSET 0) s ORDER BY dist, id LIMIT %s"
        ).format(p=self._points, w=where)
        return ann, exact

    @staticmethod
    def _dense_hits(rows: list[Any]) -> list[ScoredId]:
        rows.sort(key=lambda row: (row[1], row[0]))  # relaxed_order: nearly sorted
        return [ScoredId(pid, 1.0 - float(dist)) for pid, dist in rows]

    def search_hybrid(self, vector: QueryVector | None, sparse: SparseVec | None,
                      flt: IndexFilter, limit: int) -> tuple[list[ScoredId], list[ScoredId]]:
        """``(search_dense(vector, ...), search_sparse(sparse, ...))`` -- the same hits -- in
        one round trip instead of two or three: the BM25 statement (which counts stale IDF
        statistics itself) and the dense query go out in a libpq pipeline on one connection.
        ``None`` skips that search (its list is empty).

        ``vector`` may be a function that computes the vector (the query embedding): it is
        called after the BM25 statement was sent, so the server runs the keyword search while
        this process embeds the query."""
        if sparse is not None:
            check_sparse(sparse)
        plan = plan_filter(flt)
        if plan is None or check_limit(limit) == 0:
            return [], []
        if limit > self.ef_search:  # the dense search needs its own transaction
            dense = vector() if callable(vector) else vector
            return (self.search_dense(dense, flt, limit) if dense is not None else [],
                    self.search_sparse(sparse, flt, limit) if sparse is not None else [])
        where, params = self._where(plan)
        dense_rows: list[Any] = []
        sparse_rows: list[Any] = []
        bm25 = self._bm25(sparse, flt, where, params, limit) if sparse is not None and sparse.indices else None
        ann, exact = self._dense_sql(where)
        query: _DenseParam | None = None
        with self._conn() as conn:
            # the BM25 statement goes out first, the dense one once the vector is there;
            # both results come back with the pipeline's Sync: one round trip (a fetch
            # inside the block would wait for the first result, then the Sync again)
            with conn.pipeline():
                dense_cur = sparse_cur = probe_cur = None
                probe, sent_at = self.probe, time.monotonic()
                if probe is not None:
                    probe_cur = conn.execute(probe[0], prepare=True)
                if bm25 is not None and bm25[0] is not None:
                    sparse_cur = conn.execute(bm25[0], bm25[1], prepare=True)
                if callable(vector):  # the server has the BM25 statement meanwhile
                    vector = vector()
                if vector is not None:
                    query = _DenseParam(dense_array(vector, self.dim))
                    dense_cur = conn.execute(ann, (query, *params, limit), prepare=True)
            if probe_cur is not None and probe is not None:
                probe[1](probe_cur.fetchall(), sent_at)
            if dense_cur is not None:
                dense_rows = dense_cur.fetchall()
            if sparse_cur is not None:
                sparse_rows = sparse_cur.fetchall()
            if query is not None and len(dense_rows) < limit:
                dense_rows = conn.execute(exact, (query, *params, limit), prepare=True).fetchall()
        return (self._dense_hits(dense_rows),
                self._bm25_hits(sparse_rows, bm25[2]) if bm25 is not None else [])

    def search_sparse(self, vector: SparseVec, flt: IndexFilter, limit: int) -> list[ScoredId]:
        """Points by BM25 (query term weights x stored TF weights x IDF), best first.

        Only points sharing a term with the query are returned; an empty query vector
        returns ``[]``. IDF is over the live points, as of at most ``idf_ttl_s`` ago for
        writes of other processes (this object's own writes count at once).
        """
        check_sparse(vector)
        plan = plan_filter(flt)
        if plan is None or check_limit(limit) == 0 or not vector.indices:
            return []
        where, params = self._where(plan)
        statement, args, stale = self._bm25(vector, flt, where, params, limit)
        if statement is None:
            return []
        with self._conn() as conn:
            rows = conn.execute(statement, args, prepare=True).fetchall()
        return self._bm25_hits(rows, stale)

    def _bm25(self, vector: SparseVec, flt: IndexFilter, where: sql.Composable,
              params: list[Any], limit: int) -> tuple[sql.Composed | None, tuple[Any, ...], _Stale]:
        """The BM25 search as one statement (:mod:`memos_core.index.pg_bm25`): cached
        statistics of the filter's IDF corpus younger than ``idf_ttl_s`` are passed in, stale
        ones counted by it. Also returns what :meth:`_bm25_hits` needs to cache the counts it
        returns. The statement is ``None`` when the cached statistics say no point of the
        corpus holds a query term."""
        now = time.monotonic()
        plan = idf_corpus(flt)
        key: _Corpus = None if plan is None else tuple(sorted(set(flt.user_ids or ())))
        with self._stats_lock:
            known = {t: hit[1] for t in vector.indices
                     if (hit := self._df.get((key, t))) is not None and now - hit[0] <= self.idf_ttl_s}
            counted = self._total.get(key)
            total = counted[1] if counted and now - counted[0] <= self.idf_ttl_s else None
        missing = [t for t in vector.indices if t not in known]
        if not missing and total is not None:
            cached = bm25_cached_statement(self.keyword, self._points, self._terms, where, params,
                                           vector.indices, vector.values, known, total, limit)
            if cached is None:  # no point holds any query term
                return None, (), (now, key, [], False)
            return cached[0], cached[1], (now, key, [], False)
        statement, args = bm25_statement(self.keyword, self._points, self._terms, where, params,
                                         vector.indices, vector.values, known, missing, total,
                                         limit, counts=self._counts, principals=key)
        return statement, args, (now, key, missing, total is None)

    def _bm25_hits(self, rows: list[Any], stale: _Stale) -> list[ScoredId]:
        """The hits of a :meth:`_bm25` statement, best first (score, then id); the counts it
        made go into the statistics cache."""
        now, corpus, missing, counted_total = stale
        hits, counts, total = [], {}, None
        for kind, name, value in rows:
            if kind == "h":
                hits.append(ScoredId(name, float(value)))
            elif kind == "d":
                counts[int(name)] = int(value)
            else:
                total = int(value)
        with self._stats_lock:
            if len(self._df) > 200_000:
                self._df.clear()
            if len(self._total) > 10_000:
                self._total.clear()
            for term in missing:  # a term no point holds is not kept: counted again next
                if counts.get(term):  # time (another process may have stored one since)
                    self._df[corpus, term] = (now, counts[term])
            if counted_total and total is not None:
                self._total[corpus] = (now, total)
        hits.sort(key=lambda h: (-h.score, h.id))
        return hits

    def _forget_stats(self) -> None:
        """Drop the cached BM25 statistics (after this object's own writes)."""
        with self._stats_lock:
            self._df.clear()
            self._total.clear()

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Around a write: cached statistics are dropped before it and again once it ended
        (a search in between may have cached the old counts)."""
        self._forget_stats()
        try:
            yield
        finally:
            self._forget_stats()

    def versions(self) -> dict[str, int]:
        """``{id: payload["version"]}`` for every point."""
        with self._tx() as conn:
            rows = conn.execute(sql.SQL("SELECT id, version FROM {p}").format(p=self._points))
            return {str(pid): int(v) for pid, v in rows}

    def versions_of(self, ids: Sequence[str]) -> dict[str, int]:
        """``{id: version}`` of the points among ``ids`` that are in the index (one query)."""
        if not ids:
            return {}
        with self._tx() as conn:
            rows = conn.execute(sql.SQL("SELECT id, version FROM {p} WHERE id = ANY(%s)").format(
                p=self._points), (list(ids),))
            return {str(pid): int(v) for pid, v in rows}

    def count(self) -> int:
        """The exact number of points."""
        with self._tx() as conn:
            row = conn.execute(sql.SQL("SELECT count(*) FROM {p}").format(
                p=self._points)).fetchone()
            return int(row[0]) if row else 0

    # -- maintenance ----------------------------------------------------------------------

    def flush(self) -> None:
        """Nothing to do: every acknowledged write is a committed transaction."""
        if self._closed:
            raise RuntimeError(f"{self!r} is closed; open a new PgVectorIndex")

    def optimize(self) -> None:
        """``ANALYZE`` both tables, so the planner's row estimates (exact scan or HNSW) follow
        bulk loads; the HNSW index itself is maintained on every write."""
        with self._tx() as conn:
            conn.execute(sql.SQL("ANALYZE {p}, {t}").format(p=self._points, t=self._terms))

    def close(self) -> None:
        """Close the connection pool. Idempotent."""
        with self._close_lock:
            if not self._closed:
                self._closed = True
                self._pool.close()
