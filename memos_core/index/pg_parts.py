"""Statement parts of :class:`~memos_core.index.pgvector.PgVectorIndex`: the query vector as a
binary parameter, and filter plans as ``WHERE`` clauses (rendered, and the shape and
parameters a rendering depends on, so that the index keeps one rendering per shape)."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
from psycopg import pq, sql
from psycopg.adapt import Dumper

from memos_core.index.filters import AnyOf, Between, Condition, Either, FilterPlan, IsTrue

#: the list fields (``text[]`` columns): an ``AnyOf`` on them is an overlap (``&&``)
LIST_FIELDS = ("tags", "readers")


def _vector_text(values: Sequence[float]) -> str:
    """pgvector's text form of a vector (no client-side adapter needed)."""
    return "[" + ",".join(repr(float(v)) for v in values) + "]"


class _DenseParam:
    """A query vector as a statement parameter in pgvector's binary form (``vector_recv``:
    two big-endian int16, the length and 0, then the float4 values). The values are the
    float4 nearest each float, as the server's parse of :func:`_vector_text` gives for the
    float4 values an embedder returns; the text form costs a ``repr`` per value here and a
    parse per value on the server."""

    __slots__ = ("data",)

    def __init__(self, values: Sequence[float] | np.ndarray) -> None:
        arr = np.asarray(values, dtype=">f4")
        self.data = struct.pack(">HH", arr.shape[0], 0) + arr.tobytes()


class _DenseDumper(Dumper):
    """Sends a :class:`_DenseParam` in binary with no type of its own (oid 0): the
    statement's ``::vector`` cast types the parameter, so no per-database type oid is needed."""

    format = pq.Format.BINARY
    oid = 0

    def dump(self, obj: Any) -> bytes:
        return obj.data  # type: ignore[no-any-return]


def where_shape(plan: FilterPlan) -> tuple[Any, ...]:
    """What the text of a plan's ``WHERE`` clause depends on (not its values)."""
    def one(cond: Condition) -> tuple[Any, ...]:
        if isinstance(cond, Either):
            return ("or", tuple(one(o) for o in cond.options))
        if isinstance(cond, Between):
            return ("between", cond.key, cond.gte is not None, cond.lte is not None)
        return (type(cond).__name__, cond.key)
    return (tuple(one(c) for c in plan.must), tuple(one(c) for c in plan.must_not))


def where_params(cond: Condition, out: list[Any]) -> None:
    """Append the parameters of ``cond`` in the order its rendered clause holds them."""
    if isinstance(cond, Either):
        for option in cond.options:
            where_params(option, out)
    elif isinstance(cond, AnyOf):
        out.append(list(cond.values))
    elif isinstance(cond, Between):
        if cond.gte is not None:
            out.append(cond.gte)
        if cond.lte is not None:
            out.append(cond.lte)


def render_where(plan: FilterPlan, alias: str = "p") -> tuple[sql.Composable, list[Any]]:
    """A filter plan as a ``WHERE`` clause over ``alias`` (values as ``%s`` parameters) and
    its parameters; ``true`` for an empty plan."""
    params: list[Any] = []

    def render(cond: Condition) -> sql.Composable:
        if isinstance(cond, Either):
            return sql.SQL("({})").format(sql.SQL(" OR ").join(render(o) for o in cond.options))
        col = sql.Identifier(alias, cond.key)
        if isinstance(cond, AnyOf):
            params.append(list(cond.values))
            op = "&&" if cond.key in LIST_FIELDS else "= ANY"
            tpl = "({} && %s::text[])" if op == "&&" else "({} = ANY(%s::text[]))"
            return sql.SQL(tpl).format(col)
        if isinstance(cond, IsTrue):
            return sql.SQL("({} IS TRUE)").format(col)
        if isinstance(cond, Between):
            parts = [sql.SQL("{} IS NOT NULL").format(col)]
            if cond.gte is not None:
                params.append(cond.gte)
                parts.append(sql.SQL("{} >= %s").format(col))
            if cond.lte is not None:
                params.append(cond.lte)
                parts.append(sql.SQL("{} <= %s").format(col))
            return sql.SQL("({})").format(sql.SQL(" AND ").join(parts))
        raise TypeError(f"unknown filter condition {cond!r}")

    clauses: list[sql.Composable] = [render(c) for c in plan.must]
    clauses += [sql.SQL("{} IS NOT TRUE").format(sql.Identifier(alias, c.key)) if isinstance(c, IsTrue)
                else sql.SQL("NOT coalesce({}, false)").format(render(c)) for c in plan.must_not]
    if not clauses:
        return sql.SQL("true"), params
    return sql.SQL(" AND ").join(clauses), params
