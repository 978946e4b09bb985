"""The adapters' storage calls, counted as calls of their MemOS.

Besides the facade's public methods, an adapter reaches the vault through this package
(conversation logs, thread checkpoints, keyed items). Each such call runs as a facade method
does (the ``@running`` decorator and the native twins of :mod:`memos_core.aio`): counted
while it runs (:class:`memos_core.calls.RunningCalls`), so ``close()`` waits for it before
it closes the database, and refused with the facade's closed error
(:class:`~memos_core.errors.InvalidInputError`, :data:`~memos_core.errors.CLOSED`) once the
MemOS is closed or another thread is closing it -- never the driver's raw error of a closed
database halfway through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from memos_core.aio import acheck_open
from memos_core.errors import CLOSED, InvalidInputError
from memos_core.memos import MemOS

__all__ = ["acounted", "counted"]


@contextmanager
def counted(mos: MemOS, *, catch_up: bool = True) -> Iterator[None]:
    """One storage call of an adapter on ``mos``, in the calling thread: counted for its
    duration (a call nested in a running facade call, such as a forget hook's, counts
    once); raises the closed error if ``mos`` is closed or closing. ``catch_up``: first
    apply other processes' changes in server mode, as ``MemOS._check_open`` does (False
    for storage whose rows nothing derived in this process mirrors)."""
    with mos._calls.call():
        _check_open(mos, catch_up)
        yield


@asynccontextmanager
async def acounted(mos: MemOS, view: Any, *, catch_up: bool = True) -> AsyncIterator[None]:
    """:func:`counted` for a native async call through ``view`` (the vault's native async
    view): counted as an asyncio task is (``RunningCalls.task``); the catch-up, if any,
    reads the change feed through ``view``."""
    with mos._calls.task():
        if catch_up:
            await acheck_open(mos, view)
        else:
            _check_open(mos, False)
        yield


def _check_open(mos: MemOS, catch_up: bool) -> None:
    if catch_up:
        mos._check_open()
    elif mos.closed:
        raise InvalidInputError(CLOSED)
