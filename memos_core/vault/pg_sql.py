"""Statement programs: the SQL of the PostgreSQL vault written once, run by a sync and an
async executor.

A *program* is a generator that yields statements -- :class:`Rows` (a query: its rows come
back), :class:`Exec` (a statement: its row count comes back), :class:`Many` (one statement
over many parameter rows) -- and returns its result, decoded from the rows it was sent. It
never touches a connection: :func:`run` executes it on a psycopg ``Connection`` (the vault's
thread-safe sync path) and :func:`arun` on an ``AsyncConnection`` (the native async path of
:mod:`memos_core.vault.pg_async`), so both paths send the same statements in the same order
and decode the rows with the same code. An error a statement raises is thrown into the
program at the ``yield`` (a program may catch it, as a ``try`` around a ``conn.execute``
would). Transactions and locks are the caller's: a program runs inside whatever transaction
its executor opened.

This module holds the programs of the vault's read paths (``get``, ``get_many``, ``list``,
``history``) and of the change feed's head; those of the integration storage (checkpoints,
conversation logs, keyed items) are in :mod:`memos_core.vault.pg_integrations`.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NamedTuple, TypeVar

from memos_core.cube import MemCube, Usage
from memos_core.vault.base import ListQuery
from memos_core.vault.pg_schema import LOCK_CLASS, WRITE_LOCK
from memos_core.vault.pg_usage import accessed

__all__ = [
    "HEAD_AND_START_QUERY", "HEAD_QUERY", "CubeCache", "Exec", "Many", "Program", "Rows", "Step",
    "arun", "change_head", "get", "get_many", "history", "list_memories", "list_page",
    "list_where", "lock_step", "one", "run", "served", "with_usage",
]

T = TypeVar("T")

#: the change feed's head: the newest change seq, 0 for none
HEAD_QUERY = "SELECT COALESCE(MAX(seq), 0) FROM changes"
#: the head and the server's start time: a restarted server (a restore, a failover) may
#: hold another timeline than the one this process followed
HEAD_AND_START_QUERY = "SELECT COALESCE(MAX(seq), 0), pg_postmaster_start_time()::text FROM changes"
Row = tuple[Any, ...]


@dataclass(frozen=True)
class Rows:
    """A query; the program is sent its rows (a list of tuples)."""

    sql: str
    params: Sequence[Any] = ()


@dataclass(frozen=True)
class Exec:
    """A statement; the program is sent its row count (``-1`` when the server sends none)."""

    sql: str
    params: Sequence[Any] = ()


@dataclass(frozen=True)
class Many:
    """One statement executed for each parameter row (``executemany``); sent None."""

    sql: str
    params: Sequence[Sequence[Any]]


Step = Rows | Exec | Many
#: A generator of statements returning ``T`` (see the module docstring).
Program = Generator[Step, Any, T]


def lock_step() -> Exec:
    """The first statement of every vault mutation: the transaction-scoped write lock."""
    return Exec("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, WRITE_LOCK))


def _execute(conn: Any, step: Step) -> Any:
    if isinstance(step, Rows):
        return list(conn.execute(step.sql, step.params).fetchall())
    if isinstance(step, Exec):
        return conn.execute(step.sql, step.params).rowcount
    with conn.cursor() as cur:
        cur.executemany(step.sql, step.params)
    return None


async def _aexecute(conn: Any, step: Step) -> Any:
    if isinstance(step, Rows):
        cur = await conn.execute(step.sql, step.params)
        return list(await cur.fetchall())
    if isinstance(step, Exec):
        return (await conn.execute(step.sql, step.params)).rowcount
    async with conn.cursor() as cur:
        await cur.executemany(step.sql, step.params)
    return None


def run(conn: Any, program: Program[T]) -> T:
    """Execute ``program`` on a sync psycopg connection; returns what it returns."""
    sent: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = program.send(sent) if error is None else program.throw(error)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        error = None
        try:
            sent = _execute(conn, step)
        except Exception as exc:  # noqa: BLE001 - thrown into the program at its yield
            error = exc


async def arun(conn: Any, program: Program[T]) -> T:
    """Execute ``program`` on a psycopg ``AsyncConnection``; the same steps as :func:`run`."""
    sent: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = program.send(sent) if error is None else program.throw(error)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        error = None
        try:
            sent = await _aexecute(conn, step)
        except Exception as exc:  # noqa: BLE001 - thrown into the program at its yield
            error = exc


def one(step: Rows, decode: Callable[[list[Row]], T]) -> Program[T]:
    """The program of one query whose rows ``decode`` turns into the result."""
    rows = yield step
    return decode(rows)


# -- the vault's read paths ---------------------------------------------------------------------


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc)


#: lays this process's pending usage counts over a cube read with its stored counters
#: (``PendingUsage.overlay``; the bool: the memory has a usage row)
Overlay = Callable[[MemCube, bool], MemCube]


def _usage_of(count: int | None, last: float | None, heat: Any, tier: Any) -> Usage | None:
    """The counters of a usage row (None: the memory has none; LEFT JOIN gave nulls)."""
    return None if count is None else Usage(access_count=count, last_access=_dt(last),
                                            heat=heat, tier=tier)


def _decode(doc: str, usage: Usage | None, overlay: Overlay | None) -> MemCube:
    cube = MemCube.model_validate_json(doc)
    if usage is not None:
        cube = cube.model_copy(update={"usage": usage})
    return overlay(cube, usage is not None) if overlay is not None else cube


def with_usage(docs: Sequence[Row], overlay: Overlay | None = None) -> Program[list[MemCube]]:
    """``(id, doc json)`` rows as cubes, each with its usage counters (one more query)."""
    if not docs:
        return []
    usage = {r[0]: _usage_of(*r[1:5])
             for r in (yield Rows("SELECT id, access_count, last_access, heat, tier FROM usage "
                                  "WHERE id = ANY(%s)", ([d[0] for d in docs],)))}
    return [_decode(doc, usage.get(mid), overlay) for mid, doc in docs]


_READ_WITH_USAGE = ("SELECT m.doc::text, u.access_count, u.last_access, u.heat, u.tier "
                    "FROM memories m LEFT JOIN usage u ON u.id = m.id WHERE m.id = ANY(%s)")

#: the read with a :class:`CubeCache`: each row's ``xmin`` (the transaction that wrote that
#: row version), and its document only where the cache does not hold that row version
_READ_KNOWN = ("SELECT m.id, m.xmin::text, CASE WHEN m.xmin::text = k.x THEN NULL "
               "ELSE m.doc::text END, u.access_count, u.last_access, u.heat, u.tier "
               "FROM memories m LEFT JOIN usage u ON u.id = m.id "
               "LEFT JOIN unnest(%s::text[], %s::text[]) AS k(id, x) ON k.id = m.id "
               "WHERE m.id = ANY(%s)")


def _json_copy(value: Any) -> Any:
    """A copy of JSON-shaped data (dicts and lists copied, everything else shared)."""
    if isinstance(value, dict):
        return {k: _json_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_copy(v) for v in value]
    return value


class _Entry(NamedTuple):
    """One memory a :class:`CubeCache` holds."""

    xmin: str  #: the row version it was read at
    cube: MemCube  #: the decoded document
    usage: Usage | None  #: the stored usage counters, as last read
    read_at: float | None  #: when they were read (monotonic); None: not usable


class CubeCache:
    """Decoded current versions, keyed by memory id and checked by row version: a read
    sends the ``xmin`` it holds for each id, and the server sends the document only where
    the row was written since (any write of a ``memories`` row -- a new version, a state or
    rights change, a forget's scrub -- gives it a new ``xmin``), so the current row is read,
    and its rights and state checked, on every read as before; only the decoding of an
    unchanged document is saved. Bounded (least recently used go first); the vault also
    drops the memories its own writes and the change feed name, once the write committed, so
    a forgotten memory's text does not stay in this process's memory. A read that began
    before a drop keeps nothing it decoded (it may have read the row before the write), so
    a drop cannot be undone by a read in flight. Thread-safe.

    Each entry also keeps the memory's stored usage counters as last read, and when: a
    search whose change-feed check shows every change applied may serve its hits from here
    without a read (:meth:`fresh`; :meth:`memos_core.vault.postgres.PostgresVault.cached_many`).
    This process's own usage flushes are added to the kept counters (:meth:`flushed`); a read
    that overlapped a flush keeps no counters (``usage_epoch``). A write keeps the memories
    it inserted (:meth:`drop`'s ``keep``).

    ``size``: how many cubes it holds (0: none, every read decodes)."""

    def __init__(self, size: int) -> None:
        self.size = size
        #: id -> what is held (least recently used first)
        self._cubes: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        #: counts the drops: a read keeps what it decoded only if none came since it began
        self.generation = 0
        #: ``(usage flushes begun, one in progress)`` (:meth:`PendingUsage.epoch`), set by
        #: the vault: counters read across a flush are not kept
        self.usage_epoch: Callable[[], tuple[int, bool]] = lambda: (0, False)

    def __len__(self) -> int:
        return len(self._cubes)

    def known(self, ids: Sequence[str]) -> dict[str, tuple[str, MemCube]]:
        """The entries held for ``ids`` (a snapshot: later evictions do not touch it)."""
        with self._lock:
            found = {i: (e.xmin, e.cube) for i in ids if (e := self._cubes.get(i)) is not None}
            for i in found:
                self._cubes.move_to_end(i)
        return found

    def put(self, memory_id: str, xmin: str, cube: MemCube, generation: int,
            usage: Usage | None = None, epoch: tuple[int, bool] | None = None) -> None:
        """Keep ``cube`` and its stored ``usage``, read at row version ``xmin`` by a read that
        began at ``generation`` and usage ``epoch`` (nothing is kept if a drop came since;
        the counters are kept as unusable if a usage flush overlapped the read)."""
        if self.size <= 0:
            return
        read_at = time.monotonic() if epoch is not None and not epoch[1] else None
        with self._lock:
            if generation != self.generation:
                return
            if read_at is not None and self.usage_epoch() != epoch:
                read_at = None
            self._hold(memory_id, _Entry(xmin, cube, usage, read_at))

    def _hold(self, memory_id: str, entry: _Entry) -> None:
        """Keep ``entry`` as the newest, evicting the least recently used past ``size``
        (under the lock)."""
        self._cubes[memory_id] = entry
        self._cubes.move_to_end(memory_id)
        while len(self._cubes) > self.size:
            self._cubes.popitem(last=False)

    def fresh(self, ids: Sequence[str], max_age_s: float) -> list[tuple[MemCube, Usage | None]] | None:
        """``(cube, stored usage)`` of every one of ``ids``, or None unless all are held
        with counters read within ``max_age_s`` seconds."""
        oldest = time.monotonic() - max_age_s
        with self._lock:
            entries = [self._cubes.get(i) for i in ids]
            if any(e is None or e.read_at is None or e.read_at < oldest for e in entries):
                return None
            for i in ids:
                self._cubes.move_to_end(i)
        return [(e.cube, e.usage) for e in entries if e is not None]

    def flushed(self, batch: Mapping[str, Sequence[float]]) -> None:
        """This process wrote ``batch``'s accesses (``Pending``) to the stored counters: add
        them to the kept ones, as the flush added them to the rows."""
        with self._lock:
            for mid, entry in batch.items():
                held = self._cubes.get(mid)
                if held is not None and held.usage is not None:
                    self._cubes[mid] = held._replace(usage=accessed(held.usage, entry))

    def stale_usage(self, memory_ids: Iterable[str]) -> None:
        """The stored counters of ``memory_ids`` changed in a way not tracked here (a tier
        change): read them again before serving them."""
        with self._lock:
            for mid in memory_ids:
                held = self._cubes.get(mid)
                if held is not None:
                    self._cubes[mid] = held._replace(read_at=None)

    def drop(self, memory_ids: Iterable[str | None], *,
             keep: Mapping[str, tuple[str, MemCube, Usage]] | None = None,
             began: int = -1) -> None:
        """Drop ``memory_ids`` (they changed). A write that committed new memories passes
        them as ``keep`` (id -> row version, decoded cube, stored counters), with the
        generation from before its transaction: they are kept only if no other drop came
        since (a later change of one of them, by another process, is dropped after this
        write committed). A usage flush meanwhile does not matter: it updates the rows of
        memories that had accesses, and a new memory had none."""
        ids = [i for i in memory_ids if i is not None]
        if not ids and not keep:
            return
        with self._lock:
            keeping = bool(keep) and began == self.generation and self.size > 0
            self.generation += 1
            for i in ids:
                self._cubes.pop(i, None)
            if keep and keeping:
                read_at = time.monotonic()
                for mid, (xmin, cube, usage) in keep.items():
                    self._hold(mid, _Entry(xmin, cube, usage, read_at))

    def clear(self) -> None:
        """Drop everything (reads in flight keep nothing either)."""
        with self._lock:
            self.generation += 1
            self._cubes.clear()


def served(base: MemCube, usage: Usage | None, overlay: Overlay | None) -> MemCube:
    """The caller's own copy of a kept cube (a cube is frozen, but its metadata is a dict),
    with its stored counters and this process's pending accesses laid over them."""
    update: dict[str, Any] = {"metadata": _json_copy(base.metadata)}  # an empty one too
    if usage is not None:
        update["usage"] = usage
    cube = base.model_copy(update=update)
    return overlay(cube, usage is not None) if overlay is not None else cube


def read_current(ids: Sequence[str], overlay: Overlay | None = None,
                 cache: CubeCache | None = None) -> Program[list[MemCube]]:
    """The current versions of ``ids`` (tombstones too) with their usage counters: one
    statement (one round trip, one snapshot). With a ``cache``, documents it holds at their
    current row version are not sent again nor decoded."""
    if cache is None or cache.size <= 0:
        rows = yield Rows(_READ_WITH_USAGE, (list(ids),))
        return [_decode(r[0], _usage_of(*r[1:5]), overlay) for r in rows]
    began, epoch = cache.generation, cache.usage_epoch()
    known = cache.known(ids)
    rows = yield Rows(_READ_KNOWN, (list(known), [e[0] for e in known.values()], list(ids)))
    cubes = []
    for mid, xmin, doc, *usage_row in rows:
        base = known[mid][1] if doc is None else MemCube.model_validate_json(doc)
        usage = _usage_of(*usage_row)
        cache.put(mid, xmin, base, began, usage, epoch)
        cubes.append(served(base, usage, overlay))
    return cubes


def get(memory_id: str, overlay: Overlay | None = None,
        cache: CubeCache | None = None) -> Program[MemCube | None]:
    """The current version of ``memory_id`` (tombstones too), or None."""
    cubes = yield from read_current([memory_id], overlay, cache)
    return cubes[0] if cubes else None


def get_many(memory_ids: Sequence[str], overlay: Overlay | None = None,
             cache: CubeCache | None = None) -> Program[dict[str, MemCube]]:
    """The current versions of those of ``memory_ids`` that exist, by id."""
    ids = list(dict.fromkeys(memory_ids))
    if not ids:
        return {}
    return {c.id: c for c in (yield from read_current(ids, overlay, cache))}


def history(memory_id: str) -> Program[list[MemCube]]:
    """Every stored version of ``memory_id``, oldest first."""
    rows = yield Rows("SELECT doc::text FROM versions WHERE id=%s ORDER BY version", (memory_id,))
    return [MemCube.model_validate_json(r[0]) for r in rows]


def get_version(memory_id: str, version: int) -> Program[MemCube | None]:
    """Version ``version`` of ``memory_id`` as stored, or None."""
    return one(Rows("SELECT doc::text FROM versions WHERE id=%s AND version=%s",
                    (memory_id, version)), _first_cube)


def get_as_of(memory_id: str, when: datetime) -> Program[MemCube | None]:
    """The version of ``memory_id`` that was current at ``when`` (the newest recorded at or
    before it), or None."""
    return one(Rows("SELECT doc::text FROM versions WHERE id=%s AND recorded_at<=%s "
                    "ORDER BY version DESC LIMIT 1", (memory_id, when.timestamp())), _first_cube)


def _first_cube(rows: list[Row]) -> MemCube | None:
    return MemCube.model_validate_json(rows[0][0]) if rows else None


def _filters(q: ListQuery) -> tuple[list[str], list[Any]]:
    """The conditions (and their parameters) of a ``ListQuery`` other than its users."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("agent_id", q.agent_id), ("session_id", q.session_id)):
        if value is not None:
            clauses.append(f"{column} = %s")
            params.append(value)
    for column, values in (("type", q.types), ("state", q.states)):
        if values is not None:
            clauses.append(f"{column} = ANY(%s)")
            params.append(list(values))
    if q.tags:
        clauses.append("tags ?| %s")
        params.append(list(q.tags))
    if q.occurred_after is not None:
        clauses.append("occurred_at >= %s")
        params.append(q.occurred_after.timestamp())
    if q.occurred_before is not None:
        clauses.append("occurred_at <= %s")
        params.append(q.occurred_before.timestamp())
    if not q.include_superseded:
        clauses.append("NOT superseded")
    for key, value in q.metadata_equals.items():
        clauses.append("doc->'metadata'->%s = %s::jsonb")
        params += [key, json.dumps(value)]
    if q.contains_any is not None:
        groups = ["(" + " AND ".join(["strpos(doc::text, %s) > 0"] * len(g)) + ")"
                  for g in q.contains_any if g]
        clauses.append("(" + (" OR ".join(groups) or "FALSE") + ")")
        params += [s for g in q.contains_any if g for s in g]
    return clauses, params


def list_where(q: ListQuery) -> tuple[str, list[Any]]:
    """The ``WHERE`` clause (with its leading space; "" for none) and parameters of the
    memories a ``ListQuery`` selects (one condition: for a count; a page is read by
    :func:`list_page`'s statement)."""
    clauses, params = _filters(q)
    if q.user_ids is not None and q.shared:
        clauses.insert(0, "(user_id = ANY(%s) OR (readers ?| %s AND state <> 'deleted'))")
        params = [list(q.user_ids), list(q.user_ids), *params]
    elif q.user_ids is not None:
        clauses.insert(0, "user_id = ANY(%s)")
        params = [list(q.user_ids), *params]
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


#: a page of a list for at most this many users reads each one's own memories through the
#: ``(user_id, seq)`` index and those shared with each through ``memory_readers``' ``(reader,
#: seq)`` key, already in order; for more, one read of all their memories (and one of all
#: those shared with them) is sorted (a statement of a branch per user would grow without
#: bound)
USER_BRANCHES = 16


def list_page(q: ListQuery) -> tuple[str, list[Any]]:
    """The statement (and its parameters) of the page ``q`` asks for: its ``(id, doc
    text)`` rows in ``seq`` order.

    With ``q.user_ids``, the memories those users own and those shared with them by someone
    else are read apart and merged (``UNION ALL``): one ``OR`` of the two is served by no
    index in ``seq`` order, so the planner either walked the whole ``seq`` index for the
    user's rows (every memory of the store for a user with few) or sorted all of them.
    Each part reads only the ``limit + offset`` first of its own, in order: a user's own
    memories from the ``(user_id, seq)`` index, those shared with them from the ``(reader,
    seq)`` key of ``memory_readers`` (schema migration 9) joined to ``memories`` -- one
    branch per user each, so that the walk stops after the page however many memories are
    shared with the user -- and without the users' own, so that nothing comes twice; a memory
    shared with two of the users is in both their branches and is one row of the merge
    (``DISTINCT``). For more than :data:`USER_BRANCHES` users, each part is one read of
    theirs (the shared one through the ``readers`` GIN index), sorted: ordered by ``seq +
    0``, which no index serves, so that a prepared statement's generic plan (which cannot
    know how few they are) does not walk the ``seq`` index to find them. The page is cut from
    the merged ``seq`` numbers, and only its rows' documents are read. Without ``q.shared``
    the shared part is left out."""
    order = "DESC" if q.newest_first else "ASC"
    clauses, params = _filters(q)
    if q.user_ids is None:
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        return (f"SELECT id, doc::text FROM memories{where} ORDER BY seq {order} "
                "LIMIT %s OFFSET %s", [*params, q.limit, q.offset])
    users = list(dict.fromkeys(q.user_ids))
    rest = "".join(f" AND {c}" for c in clauses)
    reach = q.limit + q.offset
    parts: list[str] = []
    values: list[Any] = []
    branches = 0 < len(users) <= USER_BRANCHES
    if branches:
        for user in users:
            parts.append(f"(SELECT seq FROM memories WHERE user_id = %s{rest} "
                         f"ORDER BY seq {order} LIMIT %s)")
            values += [user, *params, reach]
    else:
        parts.append(f"(SELECT seq FROM memories WHERE user_id = ANY(%s){rest} "
                     f"ORDER BY seq + 0 {order} LIMIT %s)")
        values += [users, *params, reach]
    if q.shared:
        shared, more = _shared_parts(users, rest, params, order, reach, branches)
        parts += shared
        values += more
    distinct = "DISTINCT " if q.shared and branches and len(users) > 1 else ""
    return (f"SELECT m.id, m.doc::text FROM (SELECT {distinct}seq FROM "
            f"({' UNION ALL '.join(parts)}) AS parts ORDER BY seq {order} LIMIT %s OFFSET %s) "
            f"AS page JOIN memories m ON m.seq = page.seq ORDER BY page.seq {order}",
            [*values, q.limit, q.offset])


def _shared_parts(users: list[str], rest: str, params: list[Any], order: str, reach: int,
                  branches: bool) -> tuple[list[str], list[Any]]:
    """:func:`list_page`'s parts (and their parameters) that read the ``seq`` of the first
    ``reach`` memories shared with ``users`` by someone else that meet ``rest`` (conditions
    on unqualified ``memories`` columns, each after `` AND ``, with ``params``), in
    ``order``: with ``branches``, one walk of ``memory_readers``' ``(reader, seq)`` key per
    user; without, one read of them all through the ``readers`` GIN index, sorted. A
    forgotten memory is its owner's only (not even a gap in a reader's page)."""
    if not branches:
        return ([f"(SELECT seq FROM memories WHERE readers ?| %s AND user_id <> ALL(%s) "
                 f"AND state <> 'deleted'{rest} ORDER BY seq + 0 {order} LIMIT %s)"],
                [users, users, *params, reach])
    parts: list[str] = []
    values: list[Any] = []
    # each row's memory is looked up by id in a LATERAL subquery that its LIMIT keeps apart
    # (a plain join let a prepared statement's generic plan scan all of memories under the
    # walk); memory_readers has none of the columns ``rest`` names
    for user in users:
        parts.append(f"(SELECT r.seq FROM memory_readers r CROSS JOIN LATERAL (SELECT 1 "
                     f"FROM memories WHERE id = r.id AND user_id <> ALL(%s) "
                     f"AND state <> 'deleted'{rest} LIMIT 1) AS s "
                     f"WHERE r.reader = %s ORDER BY r.seq {order} LIMIT %s)")
        values += [users, *params, user, reach]
    return parts, values


def list_memories(query: ListQuery, overlay: Overlay | None = None) -> Program[list[MemCube]]:
    """The page ``query`` asks for (:func:`list_page`)."""
    rows = yield Rows(*list_page(query))
    return (yield from with_usage(rows, overlay))


def change_head() -> Program[int]:
    """The newest change-feed seq (0 for none)."""
    return one(Rows(HEAD_QUERY), lambda rows: int(rows[0][0]))
