"""``MemOSStore``: a LangGraph ``BaseStore`` whose items are MemOS memories.

Pass it to ``create_agent(..., store=MemOSStore(mos, user_label=0))`` (or
``graph.compile(store=...)``); tools and middleware reach it as ``runtime.store``. Each item
is one memory of the user its namespace names -- which label that is, the constructor says
(``user_label``: a position or a function; or ``user_id`` for a single-user store) -- so
what an agent puts in the store is versioned, audited and forgettable, and what it indexes
(the default) is also found by MemOS search, the retriever and the middleware, which put it
into model prompts. An item put with ``index=False`` is kept out of all of them.
How an item maps to a memory is described in :mod:`langchain_memos._store_codec`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from langgraph.store.base import (
    BaseStore,
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
)
from memos_core import resolve_memos
from memos_core import (
    AccessDeniedError,
    InvalidInputError,
    MemCube,
    MemoryNotFoundError,
    MemOS,
    MemoryType,
    State,
)
from memos_core.integration import (
    in_thread,
    ItemKey,
    aget_by_key,
    aiter_by_prefix,
    allowance,
    check_metadata,
    check_name,
    check_tags,
    check_text,
    delete_by_key,
    for_prompt,
    get_by_key,
    has_native_async,
    iter_by_prefix,
    migrate_keys,
    put_by_key,
)

from langchain_memos import _store_codec as codec

logger = logging.getLogger(__name__)

#: How a namespace names its user: a label position, or a function of the namespace.
UserLabel = int | Callable[[tuple[str, ...]], str | None]

#: The facade answers at most this many hits per search.
_MAX_K = 1000
#: Marks a data directory whose items written before keys existed are bound to their keys.
_MIGRATION = "langgraph-store"
#: The memory text of an item that is not indexed: nothing of its value is searchable.
NOT_INDEXED_TEXT = "(a store item that is not indexed for search)"


class MemOSStore(BaseStore):
    """LangGraph long-term memory backed by MemOS.

    Contracts (those of LangGraph's ``BaseStore``, with these choices):

    * Every item belongs to one MemOS user, and every operation acts as that user. Which
      user, the constructor says, explicitly (there is no default: a silent "first label"
      made ``"memories"`` the owner of every user's items in the common
      ``("memories", user_id)`` layout):

      - ``user_label=0`` for ``(user_id, "memories")``, ``user_label=1`` for
        ``("memories", user_id)``, any position (negative counts from the end, for
        namespaces only -- a search prefix has no end);
      - ``user_label=fn``: ``fn(namespace_or_prefix)`` returns the user id, or None when it
        cannot tell (an ``IndexError`` / ``KeyError`` it raises, ``ns[1]`` of a shorter
        prefix say, counts as None);
      - ``user_id="alice"``: a single-user store, namespaces are free-form.

      A namespace (or search / ``list_namespaces`` prefix) that does not carry the user
      raises ``InvalidNamespaceError`` saying which label was expected, before anything is
      read or written.
    * An item is a memory its user owns, bound in the vault to its key by a ``put``: a
      memory another user shared with the user is never one of their items (nor is any
      other memory that merely carries the store's tags or metadata), whatever it says.
    * ``put`` of a new key adds a memory; ``put`` of an existing key writes a new version
      of the same memory (``created_at`` is kept, history is readable with
      ``mos.history``); ``put(value=None)``/``delete`` forgets it (a tombstone stays in the
      audit trail). Deleting a missing key does nothing.
    * Values must be JSON (dicts, lists, str, int, float, bool, None with str keys); they
      come back equal. Anything else raises ``InvalidInputError`` before anything is written.
    * ``index``: the memory text is built from the given fields (or ``index_fields`` of the
      store, default the whole value as JSON). An indexed item is an ordinary searchable
      memory: ``MemOS.search``, ``MemOSRetriever``, the memory tools and
      ``MemOSMiddleware`` find it and put its text into prompts. A non-indexed item
      (``index=False``, or index fields the value lacks) is not searchable: its memory
      text is :data:`NOT_INDEXED_TEXT` and the memory is archived, which default
      ``MemOS.search`` leaves out. Non-indexed items are stored and returned by ``get``,
      by searches without a query and by ``list_namespaces`` as before; a search with a
      query ranks the indexed items by MemOS hybrid search (``score`` = fused RRF score,
      higher is better, comparable within one query only) and appends non-indexed matches
      after them with ``score=None``, as LangGraph's reference store does.
    * Search without a query returns items in the order they were first put.
    * The memories are the store's: ``mos.update`` (or the ``update_memory`` tool) on one
      changes its text, not the item's value; the next ``put`` of the key rewrites both.
      Forgetting the memory deletes the item; archiving it (``mos.compress``) does not.
    * Within one ``batch``, reads see the store as it was before the batch; puts are
      applied afterwards, the last put per (namespace, key) winning.
    * TTL is not supported (``supports_ttl = False``): ``put(..., ttl=...)`` raises
      ``NotImplementedError``. LangGraph's TTL (minutes, refreshed when an item is read, the
      item deleted when it runs out) has no counterpart in the core's ``ttl_seconds``
      (counted from the memory's creation, never refreshed; an expired memory is hidden from
      search and chat but kept until it is forgotten), and mapping one onto the other would
      keep items LangGraph users expect gone.
    * Sensitivity: the memories the store creates carry its ``sensitivity`` tags. A search
      (with or without a query) is a prompt path: an item the core would redact in
      ``MemOS.search`` -- a tag not covered by ``allow_sensitive`` -- keeps its place but
      its value is :func:`~langchain_memos._store_codec.redacted_value` and value filters
      see only that. ``get`` is a record read and returns the value whole.
    """

    supports_ttl = False

    def __init__(
        self,
        mos: MemOS,
        *,
        user_label: UserLabel | None = None,
        user_id: str | None = None,
        index: Mapping[str, Any] | None = None,
        index_fields: Sequence[str] | None = None,
        memory_type: str = "note",
        agent_id: str | None = None,
        sensitivity: Sequence[str] = (),
        allow_sensitive: Sequence[str] | str | None = None,
    ) -> None:
        """Wrap an open ``MemOS``; the store does not own it (close the MemOS yourself).

        Args:
            mos: the memory system to read and write.
            user_label: which namespace label is the user: a position (``0`` for
                ``(user_id, "memories")``, ``1`` for ``("memories", user_id)``) or a function
                from a namespace (or search prefix) to the user id (None: not there).
            user_id: instead of ``user_label``, one user owns every item.
            index: LangGraph's index config as written for ``InMemoryStore`` /
                ``PostgresStore``: ``{"dims": ..., "embed": ..., "fields": [...]}``.
                ``fields`` are the searchable fields (as ``index_fields``); ``dims`` and
                ``embed`` are accepted and not used: MemOS embeds with its own model and
                adds keyword search.
            index_fields: default fields (LangGraph JSON paths such as ``"text"`` or
                ``"facts[*].text"``) whose text is searchable; None means the whole value.
            memory_type: MemOS semantic type of the memories the store writes.
            agent_id: recorded as the writing agent in the memories and the audit log.
            sensitivity: tags (``"pii"``, ``"secret"``) given to every memory the store
                creates; an existing key keeps the tags its memory was created with.
            allow_sensitive: tags searches may show unredacted (``"*"``: all); None means
                the MemOS's ``config.allow_sensitive``, as in ``MemOS.search``.

        Raises:
            InvalidInputError: no MemOS; neither or both of ``user_label`` / ``user_id``; a
                bad ``index`` config or ``index_fields``; an unknown ``memory_type``; a bad
                ``agent_id``; bad sensitivity settings.
        """
        mos = resolve_memos(mos)  # a postgresql:// URL: the process's shared MemOS
        if not isinstance(mos, MemOS):
            raise InvalidInputError(
                f"MemOSStore needs a memos_core.MemOS, got {type(mos).__name__}. "
                "Open one with MemOS(data_dir)."
            )
        self.mos = mos
        self.user_label, self.user_id = _check_user_mapping(user_label, user_id)
        fields = _index_config_fields(index)
        if fields is not None and index_fields is not None and list(index_fields) != fields:
            raise InvalidInputError(
                f"index['fields'] {fields!r} and index_fields {list(index_fields)!r} disagree; "
                "give one of them.")
        if index_fields is None:
            index_fields = fields
        self.index_config = dict(index) if index is not None else None
        self.index_fields = codec.check_index(
            list(index_fields) if index_fields is not None else None, "<store default>"
        ) or None
        if memory_type not in {t.value for t in MemoryType}:  # not at the first put of a batch
            raise InvalidInputError(
                f"memory_type must be one of {[t.value for t in MemoryType]}, got {memory_type!r}.")
        self.memory_type = memory_type
        self.agent_id = check_name(agent_id, "agent_id", optional=True)
        self.sensitivity = (sensitivity,) if isinstance(sensitivity, str) else tuple(sensitivity)
        if not all(isinstance(t, str) and t for t in self.sensitivity):
            raise InvalidInputError(
                f"sensitivity must be a list of non-empty tags such as ['pii'], got {sensitivity!r}."
            )
        self.allow_sensitive = allow_sensitive
        self._allowed()  # a bad allowance fails here, not in the first search
        migrate_keys(mos, _MIGRATION, _key_of)  # items from before the vault kept their keys

    # -- who owns a namespace -------------------------------------------------------------

    def user_of(self, namespace: tuple[str, ...], *, prefix: bool = False) -> str:
        """The MemOS user a namespace (or, with ``prefix=True``, a search prefix) belongs to.

        Raises:
            InvalidNamespaceError: it does not carry the user where ``user_label`` says.
        """
        if self.user_id is not None:
            return self.user_id
        label = self.user_label
        if callable(label):
            try:
                found = label(tuple(namespace))
                where = "the user_label function returned no user id for it"
            except (IndexError, KeyError) as exc:  # ns[1] of a shorter prefix, say
                found = None
                where = f"the user_label function raised {type(exc).__name__}({exc}) for it"
        else:
            assert isinstance(label, int)
            if label < 0 and prefix:
                raise InvalidNamespaceError(
                    f"MemOSStore(user_label={label}) counts from the end of a namespace, so a "
                    f"search or list_namespaces prefix {namespace!r} cannot name the user; use "
                    "a non-negative position or a function.")
            found = namespace[label] if -len(namespace) <= label < len(namespace) else None
            where = f"it has no label at position {label}, where this store reads the user id"
        if not isinstance(found, str) or not found or found == "*":
            raise InvalidNamespaceError(
                f"{'prefix' if prefix else 'namespace'} {namespace!r} does not name a user: "
                f"{where}. MemOSStore keeps items per user; include the user id there "
                "(e.g. ('memories', user_id) with user_label=1).")
        try:
            return str(check_name(found, "user_id"))
        except InvalidInputError as exc:
            raise InvalidNamespaceError(f"namespace {namespace!r}: {exc}") from None

    # -- BaseStore ------------------------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ops in order; see the class docstring for the batch semantics.

        Every op is validated before anything runs -- every put rendered and checked
        against the limits of the memory it writes -- so bad input writes nothing.
        """
        ops, writes = self._checked(ops)
        results: list[Result] = []
        for op in ops:
            if isinstance(op, GetOp):
                cube = self._lookup(op.namespace, op.key)
                results.append(_item(cube) if cube is not None else None)
            elif isinstance(op, SearchOp):
                results.append(self._search(op))
            elif isinstance(op, ListNamespacesOp):
                results.append(self._list_namespaces(op))
            else:
                results.append(None)
        for write in writes:
            self._write(write)
        return results

    def _checked(self, ops: Iterable[Op]) -> tuple[list[Op], list[_Write]]:
        """Every op validated and naming its user, before anything runs; and the writes of
        the puts, the last one per (namespace, key), each checked as the core will check it
        (:meth:`_prepared`)."""
        ops = list(ops)
        writes: dict[tuple[tuple[str, ...], str], _Write] = {}
        for op in ops:
            _validate(op)
            self._check_user(op)
            if isinstance(op, PutOp):
                writes[(op.namespace, op.key)] = self._prepared(op)  # the last put of a key wins
        return ops, list(writes.values())

    def _check_user(self, op: Op) -> None:
        """Every op names its user before anything runs."""
        if isinstance(op, (GetOp, PutOp)):
            self.user_of(op.namespace)
        elif isinstance(op, SearchOp):
            self.user_of(op.namespace_prefix, prefix=True)
        elif isinstance(op, ListNamespacesOp):
            self.user_of(codec.concrete_prefix(tuple(op.match_conditions or ())), prefix=True)

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Async ``batch``, with the same semantics and results. In server mode the reads
        by key -- ``GetOp``, searches without a query, ``ListNamespacesOp`` -- are native
        async (``memos_core.integration.aget_by_key`` / ``aiter_by_prefix``); a search
        with a query (embedding, hybrid retrieval) and the puts (memory writes) run in a
        worker thread. On the embedded vault the whole batch runs
        in one worker thread. The event loop never blocks."""
        if not has_native_async(self.mos):
            return await in_thread(self.batch, list(ops))
        ops, writes = self._checked(ops)
        results: list[Result] = []
        for op in ops:
            if isinstance(op, GetOp):
                cube = await aget_by_key(self.mos, self._key(op.namespace, op.key))
                results.append(_item(cube) if cube is not None else None)
            elif isinstance(op, SearchOp):
                results.append(await self._asearch(op))
            elif isinstance(op, ListNamespacesOp):
                results.append(await self._alist_namespaces(op))
            else:
                results.append(None)
        if writes:
            await in_thread(self._write_all, writes)
        return results

    def _write_all(self, writes: Sequence[_Write]) -> None:
        for write in writes:
            self._write(write)

    # -- reads ----------------------------------------------------------------------------

    def _key(self, namespace: tuple[str, ...], key: str) -> ItemKey:
        return _item_key(self.user_of(namespace), namespace, key)

    def _lookup(self, namespace: tuple[str, ...], key: str) -> MemCube | None:
        """The live memory of the item (an indexed unique key in the vault)."""
        return get_by_key(self.mos, self._key(namespace, key))

    def _scan(self, prefix: tuple[str, ...]) -> Iterable[MemCube]:
        """Every item under ``prefix`` in first-put order (the vault's key bindings)."""
        for _, cube in iter_by_prefix(self.mos, self.user_of(prefix, prefix=True), prefix):
            if codec.META_KEY in cube.metadata:
                yield cube

    async def _ascan(self, prefix: tuple[str, ...]) -> AsyncIterator[MemCube]:
        """Async :meth:`_scan` (native reads)."""
        async for _, cube in aiter_by_prefix(self.mos, self.user_of(prefix, prefix=True), prefix):
            if codec.META_KEY in cube.metadata:
                yield cube

    async def _asearch(self, op: SearchOp) -> list[SearchItem]:
        """Async :meth:`_search`: natively without a query, else in a worker thread."""
        if op.limit <= 0:
            return []
        if op.query:
            return await asyncio.to_thread(self._search, op)
        want = op.offset + op.limit
        matched = []
        async for cube in self._ascan(op.namespace_prefix):
            item = self._shown(cube, None)
            if codec.matches_filter(item.value, op.filter):
                matched.append(item)
                if len(matched) >= want:
                    break
        return matched[op.offset:want]

    async def _alist_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        conditions = tuple(op.match_conditions or ())
        found = {_namespace(c) async for c in self._ascan(codec.concrete_prefix(conditions))}
        return _namespaces_page(found, op)

    def _search(self, op: SearchOp) -> list[SearchItem]:
        if op.limit <= 0:
            return []
        want = op.offset + op.limit
        if not op.query:
            # the vault's key bindings, not MemOS.list: that also lists memories other users
            # shared with the user, which may carry the store's tags and metadata
            matched = []
            for cube in self._scan(op.namespace_prefix):
                item = self._shown(cube, None)
                if codec.matches_filter(item.value, op.filter):
                    matched.append(item)
                    if len(matched) >= want:
                        break
            return matched[op.offset:want]
        ranked = self._ranked(op, want)
        if len(ranked) < want:
            seen = {(i.namespace, i.key) for i in ranked}
            for cube in self._scan(op.namespace_prefix):
                item = self._shown(cube, None)
                if (item.namespace, item.key) in seen or _indexed(cube):
                    continue
                if codec.matches_filter(item.value, op.filter):
                    ranked.append(item)
                    if len(ranked) >= want:
                        break
        return ranked[op.offset:want]

    def _ranked(self, op: SearchOp, want: int) -> list[SearchItem]:
        """Indexed items matching the filter, best first, at least ``want`` if there are."""
        k = min(_MAX_K, max(want, 10) * (2 if op.filter else 1))
        user = self.user_of(op.namespace_prefix, prefix=True)
        bound: dict[str, bool] = {}  # memory id -> an item (its key bound to it): read once
        while True:
            hits = self.mos.search(
                op.query or "", user_id=user, k=k,  # only called with a query
                tags=[codec.prefix_tag(op.namespace_prefix)], include_archived=True,
                allow_sensitive=self.allow_sensitive,
            )
            ranked = []
            for hit in hits:
                if hit.memory.user_id != user:  # shared by another user: never an item
                    continue
                # a redacted hit has lost its metadata (the item's key and value): read the
                # record for the key; the value shown stays the core's redaction
                record = self._record(hit.id, user) if hit.redacted else hit.memory
                if record is None or not _indexed(record) or _key_of(record) is None \
                        or not isinstance(record.metadata.get(codec.META_VALUE), dict):
                    continue  # not shaped as an item: any memory may carry the tags
                item = _search_item(record, hit.score, hit.redacted)
                if not codec.matches_filter(item.value, op.filter):
                    continue
                if hit.id not in bound:  # the vault's binding, last: one read per match
                    bound[hit.id] = self._is_item(record, user)
                if bound[hit.id]:
                    ranked.append(item)
                    if len(ranked) >= want:
                        return ranked
            if len(hits) < k or k >= _MAX_K:
                return ranked
            k = min(_MAX_K, k * 4)

    def _allowed(self) -> frozenset[str]:
        """The tags searches show unredacted, resolved as ``MemOS.search`` resolves them."""
        allow = self.allow_sensitive
        return allowance(self.mos.config.allow_sensitive if allow is None else allow)

    def _shown(self, cube: MemCube, score: float | None) -> SearchItem:
        """``cube``'s item as a search shows it: redacted where the core's rule says so."""
        _, withheld = for_prompt(cube, self._allowed())
        return _search_item(cube, score, withheld)

    def _is_item(self, cube: MemCube, user: str) -> bool:
        """Whether a memory ``MemOS.search`` found is an item of ``user``'s: one ``user``
        owns that the vault binds to the key its metadata names. Tags and metadata alone
        make no item: any memory may carry them, and search also finds the memories other
        users shared with ``user``."""
        if cube.user_id != user:
            return False
        key = _key_of(cube)
        bound = get_by_key(self.mos, key) if key is not None else None
        return bound is not None and bound.id == cube.id

    def _record(self, memory_id: str, user_id: str) -> MemCube | None:
        try:
            return self.mos.get(memory_id, user_id=user_id)
        except (MemoryNotFoundError, AccessDeniedError):  # forgotten or revoked since the search
            return None

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        conditions = tuple(op.match_conditions or ())
        found = {_namespace(cube) for cube in self._scan(codec.concrete_prefix(conditions))}
        return _namespaces_page(found, op)

    # -- writes ---------------------------------------------------------------------------

    def _prepared(self, op: PutOp) -> _Write:
        """The write of a put (validated by :func:`_validate`): its memory's text, metadata
        and tags, checked now against the limits ``put_by_key`` enforces (text size,
        metadata depth, tag length), so that no put of a batch fails after another was
        stored.

        A non-indexed item (``index=False``, or index fields the value does not have) is
        kept out of search: its memory text is :data:`NOT_INDEXED_TEXT` (nothing of the
        value is embedded or keyword-indexed) and the memory is archived, a state
        ``MemOS.search`` -- and so the middleware, the retriever and the memory tools --
        leaves out by default. The store's own search still lists it, unscored."""
        item = self._key(op.namespace, op.key)
        if op.value is None:
            return _Write(item, None, {}, (), False)
        value = codec.check_value(op.value, op.key)
        index = codec.check_index(op.index, op.key)
        fields = self.index_fields if index is None else (index or None)
        text, found = codec.render_text(value, fields)
        indexed = index is not False and found
        metadata = {
            codec.META_NS: codec.ns_json(op.namespace),
            codec.META_KEY: op.key,
            codec.META_VALUE: value,
            codec.META_INDEX: index if indexed else False,
        }
        try:
            return _Write(item, check_text(text if indexed else NOT_INDEXED_TEXT),
                          check_metadata(metadata), check_tags(codec.namespace_tags(op.namespace)),
                          indexed)
        except InvalidInputError as exc:
            raise InvalidInputError(
                f"Cannot store key {op.key!r} in namespace {op.namespace!r}: {exc}") from None

    def _write(self, write: _Write) -> None:
        """One put, atomic in the vault (``memos_core.integration.put_by_key``): correct
        with other stores, threads or processes writing the same key. The memory's state
        (:func:`_settled_state`) is part of the put, decided on the version it replaces:
        of two puts of a key, the last one's item is searchable exactly if it is indexed."""
        if write.text is None:
            delete_by_key(self.mos, write.item, agent_id=self.agent_id,
                          reason="langgraph store delete")
            return
        put_by_key(self.mos, write.item, write.text, metadata=write.metadata, tags=write.tags,
                   type=self.memory_type, sensitivity=self.sensitivity, agent_id=self.agent_id,
                   reason="langgraph store put",
                   state=lambda current: _settled_state(current, write.indexed))


class _Write(NamedTuple):
    """A put, checked and rendered before a batch writes anything (``text`` None: a
    delete)."""

    item: ItemKey
    text: str | None
    metadata: dict[str, Any]
    tags: Sequence[str]
    indexed: bool


def _settled_state(current: MemCube | None, indexed: bool) -> State | None:
    """The state of the version a put writes over ``current`` (None: keep it). A
    non-indexed item's memory is archived (out of default search); one that the store
    archived for that reason comes back once it is put indexed again. A memory archived
    otherwise (``mos.compress``, the scheduler) stays as it is."""
    if not indexed:
        return State.ARCHIVED
    if current is not None and current.state is State.ARCHIVED and not _indexed(current):
        return State.GENERATED
    return None


def _namespaces_page(found: set[tuple[str, ...]], op: ListNamespacesOp) -> list[tuple[str, ...]]:
    """``list_namespaces``' answer from the namespaces of the items found."""
    conditions = tuple(op.match_conditions or ())
    spaces = [ns for ns in found if codec.namespace_matches(ns, conditions)]
    if op.max_depth is not None:
        spaces = list({ns[: op.max_depth] for ns in spaces})
    spaces.sort()
    return spaces[op.offset: op.offset + op.limit]


def _item_key(user_id: str, namespace: tuple[str, ...], key: str) -> ItemKey:
    """The vault key of an item (the LangGraph key behind ``=``: an empty key is valid)."""
    return ItemKey(user_id, tuple(namespace), "=" + key)


def _key_of(cube: MemCube) -> ItemKey | None:
    """The key of a memory an earlier version of the store wrote (None: not an item)."""
    meta = cube.metadata
    if not isinstance(meta.get(codec.META_KEY), str) or not isinstance(meta.get(codec.META_NS), str):
        return None
    try:
        namespace = tuple(json.loads(meta[codec.META_NS]))
    except ValueError:
        return None
    return _item_key(cube.user_id, namespace, meta[codec.META_KEY])


def _validate(op: Op) -> None:
    """Check one op's shape before anything runs (raw ``batch`` calls skip the wrappers)."""
    if isinstance(op, GetOp):
        codec.check_namespace(op.namespace)
        _check_key(op.key)
    elif isinstance(op, PutOp):
        codec.check_namespace(op.namespace)
        _check_key(op.key)
        if op.namespace[0] == "langgraph":
            raise InvalidNamespaceError('The root namespace label cannot be "langgraph".')
        if op.value is not None:
            codec.check_value(op.value, op.key)
            codec.check_index(op.index, op.key)
        if op.ttl is not None:
            raise NotImplementedError(
                "TTL is not supported by MemOSStore: MemOS counts a memory's TTL from its "
                "creation and cannot refresh it on reads as LangGraph's TTL requires; put "
                "without ttl."
            )
    elif isinstance(op, SearchOp):
        codec.check_namespace(op.namespace_prefix, what="namespace_prefix")
        codec.check_filter(op.filter)
        _check_page(op.limit, op.offset)
        if op.query is not None and not isinstance(op.query, str):
            raise InvalidInputError(f"query must be a str, got {type(op.query).__name__}.")
    elif isinstance(op, ListNamespacesOp):
        for cond in op.match_conditions or ():
            codec.check_namespace(tuple(cond.path), what=f"{cond.match_type} path", allow_empty=True)
        _check_page(op.limit, op.offset)
        if op.max_depth is not None and (not isinstance(op.max_depth, int) or op.max_depth < 1):
            raise InvalidInputError(f"max_depth must be a positive int, got {op.max_depth!r}.")
    else:
        raise InvalidInputError(
            f"Unknown store operation {type(op).__name__}; expected GetOp, PutOp, SearchOp "
            "or ListNamespacesOp."
        )


def _check_user_mapping(user_label: object, user_id: object) -> tuple[UserLabel | None, str | None]:
    """Exactly one of ``user_label`` (a position or a function) and ``user_id``."""
    if (user_label is None) == (user_id is None):
        raise InvalidInputError(
            "MemOSStore needs to know whose memory each item is: pass user_label=0 for "
            "namespaces like (user_id, 'memories'), user_label=1 for ('memories', user_id), "
            "user_label=<function of the namespace>, or user_id='...' for a single-user store "
            "(exactly one of user_label and user_id).")
    if user_id is not None:
        return None, str(check_name(user_id, "user_id"))
    if isinstance(user_label, bool) or not (isinstance(user_label, int) or callable(user_label)):
        raise InvalidInputError(
            f"user_label must be a label position (int) or a function of the namespace, got "
            f"{user_label!r}.")
    return user_label, None  # type: ignore[return-value]


def _index_config_fields(index: object) -> list[str] | None:
    """The ``fields`` of LangGraph's ``IndexConfig`` (``dims``/``embed`` are checked for
    shape only: MemOS embeds with its own model)."""
    if index is None:
        return None
    if not isinstance(index, Mapping):
        raise InvalidInputError(
            f"index must be LangGraph's index config, a dict like {{'dims': 384, 'embed': ..., "
            f"'fields': ['text']}}, got {type(index).__name__}.")
    unknown = set(index) - {"dims", "embed", "fields", "ann_index_config", "distance_type"}
    if unknown:
        raise InvalidInputError(f"index has unknown keys {sorted(unknown)}; LangGraph's index "
                                "config has dims, embed and fields.")
    dims = index.get("dims")
    if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int) or dims < 1):
        raise InvalidInputError(f"index['dims'] must be a positive int, got {dims!r}.")
    if "embed" in index or "dims" in index:
        logger.info("MemOSStore: index 'dims'/'embed' are not used; MemOS embeds with its own "
                    "model and adds keyword search")
    fields = index.get("fields")
    if fields is None:
        return None
    if isinstance(fields, str) or not isinstance(fields, Sequence):
        raise InvalidInputError(f"index['fields'] must be a list of field paths, got {fields!r}.")
    return list(fields)


def _check_key(key: object) -> None:
    if not isinstance(key, str):
        raise InvalidInputError(f"key must be a str, got {type(key).__name__} {key!r}.")


def _check_page(limit: object, offset: object) -> None:
    for name, value in (("limit", limit), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInputError(f"{name} must be a non-negative int, got {value!r}.")


def _namespace(cube: MemCube) -> tuple[str, ...]:
    return tuple(json.loads(cube.metadata[codec.META_NS]))


def _indexed(cube: MemCube) -> bool:
    return cube.metadata.get(codec.META_INDEX) is not False


def _item(cube: MemCube) -> Item:
    return Item(
        value=cube.metadata[codec.META_VALUE],
        key=cube.metadata[codec.META_KEY],
        namespace=_namespace(cube),
        created_at=cube.created_at,
        updated_at=cube.updated_at,
    )


def _search_item(cube: MemCube, score: float | None, redacted: Sequence[str] = ()) -> SearchItem:
    """``cube``'s item with its value, or with :func:`codec.redacted_value` for ``redacted``."""
    return SearchItem(
        _namespace(cube),
        cube.metadata[codec.META_KEY],
        codec.redacted_value(redacted) if redacted else cube.metadata[codec.META_VALUE],
        cube.created_at,
        cube.updated_at,
        score,
    )
