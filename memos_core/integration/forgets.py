"""Forgets an adapter applies for a while after they ran: the late writes of a running agent.

``MemOS.forget`` redacts what is stored. A running agent framework may still hold the
memory in memory (LangGraph's next checkpoint, a LlamaIndex run's state) and store it
after the forget, text and all. An adapter keeps the redactors of its ``MemOS``'s recent
forgets in a :class:`RecentForgets` and applies them to what is written in the
:data:`LATE_WRITE_S` seconds after each forget. A write under way while a forget's pass
over the stored conversations runs is caught by :class:`LateWrite` after its commit.
:func:`owned_holding` finds the stored memories a forget hook must redact without decoding
all of a user's; :func:`update_redacting` redacts one, its earlier versions with it, in one
transaction.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

from memos_core.cube import MemCube
from memos_core.governance.forget_hooks import after_pass
from memos_core.governance.redaction import MessageRedactor
from memos_core.integration.counted import acounted, counted
from memos_core.validation import check_name
from memos_core.vault import Actor, ListQuery, pages

if TYPE_CHECKING:
    from memos_core.memos import MemOS

#: How long after a forget the adapters redact the memory in what is written.
LATE_WRITE_S = 60.0
#: memories read per vault query
_PAGE = 1000


class RecentForgets:
    """The redactors of the forgets of the last :attr:`window_s` seconds, each with
    the user whose memory it was and an optional mark (a string that sorts after the ids of
    what was created before the forget, e.g. a time-ordered id made at the forget).

    In memory only (the redactors hold the forgotten text), pruned by age only: a bound on
    the count would let another user's burst of forgets push one out inside the window.
    Thread-safe."""

    #: seconds a forget is kept (:data:`LATE_WRITE_S`)
    window_s: float = LATE_WRITE_S

    def __init__(self) -> None:
        #: (added at, number, mark, owner, redactor)
        self._items: deque[tuple[float, int, str, str, MessageRedactor]] = deque()
        self._added = 0
        self._lock = threading.Lock()

    def add(self, memory: MemCube, mark: str | Callable[[], str] = "") -> MessageRedactor:
        """Keep the redactor of ``memory`` (a forget hook's argument: it knows the earlier
        versions' texts while the forget runs) once its tombstone is committed
        (:func:`~memos_core.governance.forget_hooks.after_pass`: a forget a later hook, or
        a failed tombstone, aborts is not kept); returns it. ``mark``: a string, or a function that makes it
        then."""
        redactor = MessageRedactor(memory)

        def keep() -> None:
            with self._lock:
                self._prune()
                self._added += 1
                self._items.append((time.monotonic(), self._added,
                                    mark() if callable(mark) else mark, memory.user_id, redactor))

        after_pass(memory.id, keep)
        return redactor

    @property
    def added(self) -> int:
        """How many forgets were ever added (``since=`` of :meth:`redactors`)."""
        with self._lock:
            return self._added

    def _prune(self) -> None:  # under _lock
        now = time.monotonic()
        while self._items and now - self._items[0][0] > self.window_s:
            self._items.popleft()

    def redactors(self, user_id: object = None, *, before: str | None = None,
                  since: int = 0) -> list[MessageRedactor]:
        """The redactors of ``user_id``'s recent forgets (None: every user's, for what
        belongs to no user); with ``before``, only those whose mark sorts after it; only
        those added after :attr:`added` was ``since``."""
        with self._lock:
            self._prune()
            return [redactor for _, number, mark, owner, redactor in self._items
                    if number > since and (user_id is None or owner == user_id)
                    and (before is None or before < mark)]


class LateWrite:
    """One write of an adapter that applies ``forgets`` (its late redaction) and commits,
    without holding :meth:`ForgetPasses.excluding
    <memos_core.governance.forget_hooks.ForgetPasses.excluding>` across it (an async
    write, or one whose storage call may wait for the store's write lock).

    Made before the write looks at ``forgets`` (use :func:`late_write` /
    :func:`alate_write`, which count the whole write as one call of the MemOS, so that
    ``close()`` waits for its follow-up too); after its commit, :meth:`missed` (or
    :meth:`amissed`) returns the redactors of the forgets whose pass over the stored
    conversations ran meanwhile and may have missed what it wrote. The caller redacts them
    in what it wrote, as the pass would have. Nearly always there are none, at the cost of
    two counter reads."""

    def __init__(self, mos: MemOS, forgets: RecentForgets | None) -> None:
        self._passes = mos.store.forget_passes
        self._forgets = forgets
        self._added = forgets.added if forgets is not None else 0
        self._ended = self._passes.ended()

    def missed(self, user_id: object = None, *,
               before: str | None = None) -> list[MessageRedactor]:
        """After the commit: waits for the passes running, then the redactors (of
        ``user_id``'s forgets, ``before``: as :meth:`RecentForgets.redactors`) added since
        this write began; [] at once when no pass ran."""
        if self._forgets is None or not self._passes.overlapped(self._ended):
            return []
        self._passes.wait()  # the hooks (which keep the redactors) have run
        return self._forgets.redactors(user_id, before=before, since=self._added)

    async def amissed(self, user_id: object = None, *,
                      before: str | None = None) -> list[MessageRedactor]:
        """Async :meth:`missed` (the wait, if any, in a worker thread)."""
        if self._forgets is None or not self._passes.overlapped(self._ended):
            return []
        await asyncio.to_thread(self._passes.wait)
        return self._forgets.redactors(user_id, before=before, since=self._added)


@contextmanager
def late_write(mos: MemOS, forgets: RecentForgets | None) -> Iterator[LateWrite]:
    """A :class:`LateWrite` over ``forgets``, the block counted as one call of ``mos``
    (``close()`` waits for the write and its follow-up; the closed error if ``mos`` is
    closed)."""
    with counted(mos, catch_up=False):
        yield LateWrite(mos, forgets)


@asynccontextmanager
async def alate_write(mos: MemOS, forgets: RecentForgets | None) -> AsyncIterator[LateWrite]:
    """Async :func:`late_write` (the block counted as an asyncio task of ``mos``; the
    worker threads it hands work to are inside that call). Enter it in a function made
    :func:`~memos_core.calls.whole`: a caller cancelled between the write's commit and its
    follow-up would otherwise leave what the write stored unredacted."""
    async with acounted(mos, None, catch_up=False):
        yield LateWrite(mos, forgets)


def quoting(memories: Sequence[MemCube],
            redactors: Sequence[MessageRedactor]) -> list[MemCube]:
    """The memories among ``memories`` made from a message that is not the user's own
    (metadata ``role``) whose text holds a memory of ``redactors``: an adapter made them of
    what a run held when that memory was forgotten (:meth:`LateWrite.missed`), and forgets
    them. The user's own messages are new input: kept."""
    return [m for m in memories if m.metadata.get("role") != "user"
            and any(r.text(m.text) != m.text for r in redactors)]


def owned_holding(mos: MemOS, user_id: str, redactor: MessageRedactor, *,
                  tags: Sequence[str], states: Sequence[str]) -> list[MemCube]:
    """The memories ``user_id`` owns, with one of ``tags`` and in one of ``states``, whose
    stored record may hold what ``redactor`` redacts: the vault keeps only those holding
    every string of one group of its :meth:`~MessageRedactor.tokens` (all of them when it
    has none), so a forget
    does not decode every message of a long history. A superset: the caller checks each.
    Read whole before the caller changes any (a redacted one may leave the selection). A
    damaged one cannot be read or redacted: it is left out, logged (its owner can forget it),
    so that it does not stop the forget of another memory -- or its own."""
    query = ListQuery(user_ids=(user_id,), tags=tuple(tags), states=tuple(states),
                      contains_any=redactor.tokens(), shared=False)
    return [c for page in pages(mos.vault, query, mos.store.report_damaged, _PAGE) for c in page]


def update_redacting(mos: MemOS, memory_id: str, text: str, *, user_id: str,
                     metadata: Mapping[str, Any] | None = None, reason: str | None = None,
                     rewrite_earlier: Callable[[MemCube], MemCube | None]) -> MemCube:
    """``mos.update(memory_id, text, user_id=..., metadata=..., reason=...)`` -- the same
    checks, access and notifications -- that also rewrites in place, in the same vault
    transaction, each earlier version of the memory for which ``rewrite_earlier`` returns a
    new cube (the same id and version number): a forget hook's redaction of a stored
    message, whose earlier versions history would keep. All or nothing: a crash or an error
    (``rewrite_earlier`` raising included) leaves neither the new version nor any rewrite,
    so a retried forget finds the message as it was. Returns the new version."""
    with counted(mos):
        user_id = check_name(user_id, "user_id")
        changes = mos._update_changes(text, None, metadata, None, None)
        return mos._updated(memory_id, user_id, changes, Actor(user_id, None, reason),
                            rewrite_earlier)
