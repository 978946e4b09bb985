"""Async twins of the Memory API, generated from the sync methods.

``aadd = twin(add)`` in the class body makes ``await mos.aadd(...)``: it takes exactly the
arguments of ``add`` and returns what ``add`` returns (the types come from the sync
signature through :class:`typing.ParamSpec`, so a type checker sees them too), running the
sync method in a worker thread (:func:`memos_core.calls.in_thread`) so the event loop does
not wait on embedding, SQLite or the index (work that holds the interpreter lock still stalls
it: loading torch or the embedder, the edge index's shard calls; docs/api.md). Cancelling the await stops the wait, not the call
(a cancelled ``aforget`` still forgets, even one queued behind busy threads), except for a
read (``twin(..., read=True)``: search, get, list, ...), which is dropped if it has not started
yet, so a server's timed-out requests shed their work. The facade is thread-safe, so many
tasks may await at once.
``tests/test_memos.py`` checks that every public method has its twin.

A twin may also name a *native* implementation (``aget = twin(get, native=native_get)``):
an async function that serves the call without a thread when it can -- in server mode, the
vault's native async view (``PostgresVault.native_async()``, an asyncio connection pool of
the running loop) -- and returns :data:`FALLBACK` otherwise, for the thread path. It must
return and raise exactly what the sync method does. ``aget``, ``alist`` and ``ahistory``
have one (:func:`native_get`, :func:`native_list`, :func:`native_history`); every write
stays on the thread path (the kernel's locks, index and change listeners are sync).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from memos_core.calls import in_own_thread, in_thread
from memos_core.governance import access

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")

__all__ = ["FALLBACK", "acheck_open", "native_get", "native_history", "native_list",
           "native_view", "twin"]

#: What a native implementation returns when the call must run in a worker thread.
FALLBACK: Any = object()


def native_view(vault: object) -> Any | None:
    """``vault``'s native async view (``vault.native_async()``), or None if it has none."""
    make = getattr(vault, "native_async", None)
    return make() if callable(make) else None


async def acheck_open(mos: Any, view: Any) -> None:
    """What ``mos._check_open()`` does before a call, without blocking the event loop:
    :class:`~memos_core.errors.InvalidInputError` if ``mos`` is closed; in server mode,
    apply other processes' changes first when the change feed's head (read through
    ``view``) is past this process's cursor (applying them takes the store's locks: a
    worker thread)."""
    if mos.closed:
        mos._check_open()  # raises the closed error
    follower = getattr(mos.store, "follower", None)
    if follower is not None and await view.change_head() != follower.cursor:  # < : went back
        await in_thread(mos.store.sync)
    if mos._forgets_check_due():  # once a minute: forgets a killed process left unfinished
        await in_thread(mos._finish_forgets_due)


async def native_get(mos: Any, memory_id: str, *, user_id: str, version: int | None = None,
                     as_of: Any = None) -> Any:
    """``MemOS.get`` through the native view: the current version, a ``version`` or the one
    current ``as_of`` a time (the same checks and errors)."""
    from memos_core.validation import check_id, check_name

    view = native_view(mos.store.vault)
    if view is None:
        return FALLBACK
    await acheck_open(mos, view)
    user = check_name(user_id, "user_id")
    mid = check_id(memory_id)
    older = version is not None or as_of is not None
    cube = mos._loaded(await view.get(mid), mid, user, allow_deleted=older)
    if not older:
        return access.as_read_by(cube, user)
    number, when = mos._version_args(version, as_of)
    old = await (view.get_version(cube.id, number) if number is not None
                 else view.get_as_of(cube.id, when))
    return access.as_read_by(mos._old_version(cube.id, old, number, when), user)


async def native_history(mos: Any, memory_id: str, *, user_id: str) -> Any:
    """``MemOS.history`` through the native view."""
    from memos_core.validation import check_id, check_name

    view = native_view(mos.store.vault)
    if view is None:
        return FALLBACK
    await acheck_open(mos, view)
    user = check_name(user_id, "user_id")
    mid = check_id(memory_id)
    cube = mos._loaded(await view.get(mid), mid, user, allow_deleted=True)
    return access.read_by(await view.history(cube.id), user)


async def native_list(mos: Any, **kwargs: Any) -> Any:
    """``MemOS.list`` through the native view (the same checked query)."""
    view = native_view(mos.store.vault)
    if view is None:
        return FALLBACK
    await acheck_open(mos, view)
    return access.listed_by(await view.list(mos._list_query(**kwargs)), kwargs["user_id"])


class twin(Generic[S, P, R]):  # noqa: N801 - used like a decorator / function
    """A descriptor: the async twin of the sync method ``method`` (see the module docstring)."""

    def __init__(self, method: Callable[Concatenate[S, P], R], *,
                 native: Callable[..., Awaitable[Any]] | None = None,
                 read: bool = False, counted: bool = True) -> None:
        self.method = method
        self.native = native
        # a call close() waits for from the moment it is queued for a thread (every twin
        # but aclose: close() does not wait for itself; it runs in a thread of its own,
        # never holding one of the executor's that the writes it waits for need)
        self.counted = counted
        # a read cancelled while queued is dropped (asyncio.to_thread), which sheds the work
        # of callers that gave up; every other call runs to its end (in_thread)
        self.read = read
        self.name = ""
        # the bound method's signature per function (a subclass may override the method):
        # inspect.signature costs about 0.1 ms, too much to pay on the event loop per lookup
        self._signatures: dict[object, inspect.Signature] = {}

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.__doc__ = f"Async twin of :meth:`{self.method.__name__}` (same arguments and result)."

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> twin[S, P, R]: ...
    @overload
    def __get__(self, obj: S, objtype: type | None = None) -> Callable[P, Awaitable[R]]: ...
    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        bound = getattr(obj, self.method.__name__)  # an override in a subclass wins
        func = getattr(bound, "__func__", None)
        native = self.native if func is self.method else None
        signature = self._signatures.get(func) if func is not None else None
        if signature is None:
            signature = inspect.signature(bound)
            if func is not None:
                self._signatures[func] = signature

        @functools.wraps(self.method)
        async def call(*args: Any, **kwargs: Any) -> Any:
            if native is not None and _binds(signature, args, kwargs):
                with obj._calls.task():  # close() waits for it (memos_core.calls)
                    result = await native(obj, *args, **kwargs)
                if result is not FALLBACK:
                    return result
            # (arguments the method does not take: its own TypeError, not the native one's)
            if self.read:
                return await asyncio.to_thread(bound, *args, **kwargs)
            if not self.counted:  # aclose
                return await in_own_thread(bound, *args, **kwargs)
            # close() waits for it from now on, even while it is queued behind busy threads
            return await in_thread(obj._calls.queued(bound), *args, **kwargs)

        call.__name__ = call.__qualname__ = self.name or f"a{self.method.__name__}"
        call.__doc__ = self.__doc__
        call.__signature__ = signature  # type: ignore[attr-defined]
        return call


def _binds(signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether the sync method takes these arguments."""
    try:
        signature.bind(*args, **kwargs)
    except TypeError:
        return False
    return True
