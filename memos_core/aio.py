"""Async twins of the Memory API, generated from the sync methods.

``aadd = twin(add)`` in the class body makes ``await mos.aadd(...)``: it takes exactly the
arguments of ``add`` and returns what ``add`` returns (the types come from the sync
signature through :class:`typing.ParamSpec`, so a type checker sees them too), running the
sync method in a worker thread (``asyncio.to_thread``) so the event loop never blocks on
embedding, SQLite or the index. The facade is thread-safe, so many tasks may await at once.
``tests/test_memos.py`` checks that every public method has its twin.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")

__all__ = ["twin"]


class twin(Generic[S, P, R]):  # noqa: N801 - used like a decorator / function
    """A descriptor: the async twin of the sync method ``method`` (see the module docstring)."""

    def __init__(self, method: Callable[Concatenate[S, P], R]) -> None:
        self.method = method
        self.name = ""

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

        @functools.wraps(self.method)
        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(bound, *args, **kwargs)

        call.__name__ = call.__qualname__ = self.name or f"a{self.method.__name__}"
        call.__doc__ = self.__doc__
        call.__signature__ = inspect.signature(bound)  # type: ignore[attr-defined]
        return call
