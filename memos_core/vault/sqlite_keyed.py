"""Keyed items in the SQLite vault (a mixin of :class:`~memos_core.vault.sqlite.SQLiteVault`).

Table ``item_keys``: one row per binding ``(user_id, namespace, key) -> memory_id``, with a
UNIQUE index on the key and one on the memory, so two connections (threads or processes)
cannot bind one key twice: the second ``INSERT`` fails inside its transaction, which then
writes nothing. The namespace is stored as its labels joined by U+001F with a trailing
U+001F (``ns_path``), so "starts with these labels" is a range on the index.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from memos_core.cube import MemCube, require_canonical_ids
from memos_core.errors import ConflictError, InvalidInputError, MemoryNotFoundError
from memos_core.vault.base import Actor, ItemKey, NamespaceGrant
from memos_core.vault.grants import check_grants

SCHEMA = """
CREATE TABLE IF NOT EXISTS item_keys (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    ns_path TEXT NOT NULL,
    key TEXT NOT NULL,
    memory_id TEXT NOT NULL UNIQUE
);
CREATE UNIQUE INDEX IF NOT EXISTS item_keys_key ON item_keys(user_id, ns_path, key);
"""

SEP = "\x1f"


def ns_path(labels: Sequence[str], what: str = "namespace") -> str:
    """The stored form of a label path (``("a", "b")`` -> ``"a\\x1fb\\x1f"``)."""
    for label in labels:
        if not isinstance(label, str) or not label or SEP in label:
            raise InvalidInputError(
                f"{what} {tuple(labels)!r} has label {label!r}; labels must be non-empty str "
                "without the control character U+001F.")
    return "".join(label + SEP for label in labels)


def _check_item(item: ItemKey) -> tuple[str, str, str]:
    if not isinstance(item, ItemKey):
        raise InvalidInputError(f"Expected an ItemKey, got {type(item).__name__}.")
    if not isinstance(item.key, str) or not item.key or SEP in item.key:
        raise InvalidInputError(
            f"key {item.key!r} must be a non-empty str without the control character U+001F.")
    if not isinstance(item.user_id, str) or not item.user_id:
        raise InvalidInputError(f"ItemKey.user_id must be a non-empty str, got {item.user_id!r}.")
    return item.user_id, ns_path(item.namespace), item.key


class SQLiteKeyedMixin:
    """Keyed-item storage; uses the vault's ``_tx``, ``_query``, ``_insert``,
    ``_put_version`` and ``_with_usage``."""

    _tx: Any
    _query: Any
    _insert: Any
    _put_version: Any
    _with_usage: Any

    def put_keyed(self, item: ItemKey, cube: MemCube, expected_version: int | None,
                  actor: Actor, action: str, *,
                  grants: Sequence[NamespaceGrant] | None = None) -> None:
        """See :meth:`memos_core.vault.base.KeyedItems.put_keyed`."""
        require_canonical_ids([cube])
        key = _check_item(item)
        if cube.namespace.user_id != item.user_id:
            raise InvalidInputError(
                f"The memory belongs to {cube.namespace.user_id!r}, but the key {item.key!r} to "
                f"{item.user_id!r}; a keyed memory belongs to the key's user.")
        with self._tx() as db:
            row = db.execute("SELECT memory_id FROM item_keys WHERE user_id=? AND ns_path=? "
                             "AND key=?", key).fetchone()
            if expected_version is None:
                if row is not None:
                    raise ConflictError(
                        f"Key {item.key!r} in {item.namespace!r} is already bound to memory "
                        f"{row[0]}; read it and write its next version.")
                check_grants(db, [cube], grants)
                self._insert(db, [cube], actor, action)
                try:
                    db.execute("INSERT INTO item_keys(user_id, ns_path, key, memory_id) "
                               "VALUES (?,?,?,?)", (*key, cube.id))
                except sqlite3.IntegrityError as exc:  # bound by another connection
                    raise ConflictError(f"Key {item.key!r} was bound concurrently ({exc}); "
                                        "read it and retry.") from None
                return
            if row is None or row[0] != cube.id:
                raise ConflictError(
                    f"Key {item.key!r} in {item.namespace!r} is bound to "
                    f"{row[0] if row else 'no memory'}, not {cube.id}; read it and retry.")
            self._put_version(db, cube, expected_version, actor, action, {})

    def get_keyed(self, item: ItemKey) -> MemCube | None:
        """See :meth:`memos_core.vault.base.KeyedItems.get_keyed`."""
        rows = self._query(
            "SELECT m.id, m.doc FROM item_keys k JOIN memories m ON m.id = k.memory_id "
            "WHERE k.user_id=? AND k.ns_path=? AND k.key=?", _check_item(item), lenient=True)
        cubes: list[MemCube] = self._with_usage(rows)
        return cubes[0] if cubes else None

    def list_keyed(self, user_id: str, prefix: Sequence[str] = (), *, limit: int = 1000,
                   offset: int = 0) -> list[tuple[ItemKey, str]]:
        """See :meth:`memos_core.vault.base.KeyedItems.list_keyed`."""
        low = ns_path(tuple(prefix), "prefix")
        high = low[:-1] + chr(ord(SEP) + 1) if low else None
        sql = "SELECT ns_path, key, memory_id FROM item_keys WHERE user_id=?"
        params: list[Any] = [user_id]
        if high is not None:
            sql += " AND ns_path >= ? AND ns_path < ?"
            params += [low, high]
        rows = self._query(sql + " ORDER BY seq LIMIT ? OFFSET ?", [*params, limit, offset])
        return [(ItemKey(user_id, tuple(path.split(SEP)[:-1]), key), mid)
                for path, key, mid in rows]

    def bind_key(self, item: ItemKey, memory_id: str) -> bool:
        """See :meth:`memos_core.vault.base.KeyedItems.bind_key`."""
        key = _check_item(item)
        with self._tx() as db:
            row = db.execute("SELECT user_id, state FROM memories WHERE id=?",
                             (memory_id,)).fetchone()
            if row is None or row[0] != item.user_id or row[1] == "deleted":
                raise MemoryNotFoundError(
                    f"No memory {memory_id!r} of {item.user_id!r} to bind key {item.key!r} to.")
            cur = db.execute("INSERT OR IGNORE INTO item_keys(user_id, ns_path, key, memory_id) "
                             "VALUES (?,?,?,?)", (*key, memory_id))
            return bool(cur.rowcount)

    def unbind_key(self, item: ItemKey, memory_id: str) -> bool:
        """See :meth:`memos_core.vault.base.KeyedItems.unbind_key`."""
        with self._tx() as db:
            cur = db.execute("DELETE FROM item_keys WHERE user_id=? AND ns_path=? AND key=? "
                             "AND memory_id=?", (*_check_item(item), memory_id))
            return bool(cur.rowcount)


def check_imported_keys(histories: Sequence[Sequence[MemCube]],
                        keys: Sequence[tuple[ItemKey, str]]) -> None:
    """Raise :class:`InvalidInputError` unless each ``(item, memory id)`` of an import binds
    a well-formed key to a memory of the import that the key's user owns and that is not
    forgotten (as :meth:`bind_key` requires)."""
    current = {versions[-1].id: versions[-1] for versions in histories if versions}
    for item, memory_id in keys:
        _check_item(item)
        cube = current.get(memory_id)
        if cube is None or cube.user_id != item.user_id or cube.state.value == "deleted":
            raise InvalidInputError(f"Key {item.key!r} may bind only a live memory of "
                                    f"{item.user_id!r} that this import writes, not {memory_id!r}.")


def bind_imported(db: sqlite3.Connection, keys: Sequence[tuple[ItemKey, str]]) -> int:
    """Bind imported memories to their keys (inside the import's transaction, after
    :func:`check_imported_keys`); a key bound already keeps its memory. Returns how many
    were bound."""
    bound = 0
    for item, memory_id in keys:
        cur = db.execute("INSERT OR IGNORE INTO item_keys(user_id, ns_path, key, memory_id) "
                         "VALUES (?,?,?,?)", (*_check_item(item), memory_id))
        bound += cur.rowcount
    return bound


def drop_bindings(db: sqlite3.Connection, memory_id: str) -> None:
    """Delete every key binding of a memory (inside a forget's transaction)."""
    db.execute("DELETE FROM item_keys WHERE memory_id=?", (memory_id,))
