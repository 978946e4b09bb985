"""The activation (KV) tier: memory blocks whose prefix KV caches are computed once and kept.

A *block* is an ordered set of memory versions composed into one system message
(:mod:`.compose`); its KV cache (a :class:`~memos_core.runtime.PrefixCache`) is computed the
first time it is asked for and reused by every query after. Guarantees:

* **Exact**: a block is addressed by the model fingerprint and its memories' ids, versions
  and text; a cached block is only ever returned for exactly those. Loading from disk checks
  the fingerprint, the versions and both checksums (:func:`.storage.load_block`), and that
  the file's messages are the memories' text as composed now; a file that fails is logged,
  deleted and built again.
* **Immutable**: a block's cache is never grown; generation works on ``prefix.fork()``.
* **Invalidated**: :meth:`KVCacheTier.invalidate` drops every block (in memory and on disk)
  that contains a memory -- call it when a memory is updated, forgotten or expired.
* **Bounded**: the blocks kept (in memory and on disk together) stay within a
  :class:`KVBudget`. Eviction takes the caller's order first (the scheduler's plan) and then
  least recently used.

Thread-safe: one lock serialises the tier's bookkeeping and builds.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from memos_core.errors import InvalidInputError
from memos_core.tiers.activation import storage
from memos_core.tiers.activation.storage import KVBlock
from memos_core.tiers.activation.compose import (
    DEFAULT_INSTRUCTIONS,
    MemoryRef,
    as_refs,
    block_id,
    block_messages,
    bullet,
)

if TYPE_CHECKING:
    from memos_core.runtime.model import LocalModel

logger = logging.getLogger(__name__)


class KVBudgetError(InvalidInputError):
    """A single block is larger than the whole budget; raise the budget or use fewer memories."""


class KVBudget(BaseModel):
    """Upper bounds on the KV caches the tier keeps; ``None`` leaves a dimension unbounded."""

    model_config = ConfigDict(frozen=True)

    max_tokens: int | None = Field(
        default=8192, ge=1, description="Total prefix tokens over all kept blocks."
    )
    max_bytes: int | None = Field(
        default=None, ge=1, description="Total bytes of key/value tensors over all kept blocks."
    )

    def fits(self, tokens: int, nbytes: int) -> bool:
        """Whether a total of ``tokens`` and ``nbytes`` is within the budget."""
        return (self.max_tokens is None or tokens <= self.max_tokens) and (
            self.max_bytes is None or nbytes <= self.max_bytes
        )


class KVBlockInfo(BaseModel):
    """Bookkeeping for one kept block (what :meth:`KVCacheTier.blocks` lists)."""

    model_config = ConfigDict(frozen=True)

    block_id: str
    memories: tuple[tuple[str, int], ...]
    tokens: int
    nbytes: int
    resident: bool = Field(description="Loaded in memory (else only on disk).")


@dataclass
class _Entry:
    memories: tuple[tuple[str, int], ...]
    tokens: int
    nbytes: int
    block: KVBlock | None  # None: on disk only, loaded on first use


def _info(bid: str, entry: _Entry) -> KVBlockInfo:
    return KVBlockInfo(block_id=bid, memories=entry.memories, tokens=entry.tokens,
                       nbytes=entry.nbytes, resident=entry.block is not None)


class KVCacheTier:
    """Keeps the KV caches of memory blocks for one model.

    Args:
        model: the runtime whose caches these are.
        directory: where blocks are persisted (safetensors); ``None`` keeps them in memory only.
            Files of other models in it are ignored, never used nor deleted.
        budget: bounds on the blocks kept.
        instructions: text opening every block's system message.
    """

    def __init__(
        self,
        model: LocalModel,
        *,
        directory: str | os.PathLike[str] | None = None,
        budget: KVBudget | None = None,
        instructions: str = DEFAULT_INSTRUCTIONS,
    ) -> None:
        self.model = model
        self.directory = Path(directory) if directory is not None else None
        self.budget = budget if budget is not None else KVBudget()
        self.instructions = instructions
        self._digest = model.fingerprint.digest
        self._lock = threading.RLock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        if self.directory is not None:
            self._scan_directory()

    # ------------------------------------------------------------------ composition

    def messages_for(self, memories: Iterable[Any]) -> list[dict[str, str]]:
        """The block's chat messages; send them as prompt text for the uncached path."""
        return block_messages(as_refs(memories), self.instructions)

    def memory_tokens(self, text: str) -> int:
        """Tokens one memory adds to a block (its bullet line), for the scheduler's budget.

        A block also carries a fixed overhead (instructions and chat-template markers), so
        give the tier's budget some headroom over the scheduler's ``promote_token_budget``.
        """
        return len(self.model.encode(self.model.escape(bullet(text)) + "\n"))

    def block_id_for(self, memories: Iterable[Any]) -> str:
        """Content address of the block these memories (in this order) compose."""
        return self._block_id(as_refs(memories))

    def _block_id(self, refs: Sequence[MemoryRef]) -> str:
        return block_id(refs, fingerprint_digest=self._digest, instructions=self.instructions)

    # ------------------------------------------------------------------ lookup and build

    def get(self, memories: Iterable[Any]) -> KVBlock | None:
        """The kept block for exactly these memory versions, or ``None`` (never builds)."""
        refs = as_refs(memories)
        with self._lock:
            return self._resident(self._block_id(refs), refs)

    def get_or_build(self, memories: Iterable[Any], *, evict_first: Sequence[str] = (),
                     on_build: Callable[[KVBlock], None] | None = None,
                     on_evict: Callable[[KVBlockInfo], None] | None = None) -> KVBlock:
        """The block for these memories, computing its KV cache if it is not kept yet.

        ``memories``: :class:`MemoryRef`, ``(id, version, text)`` tuples or cubes, in the order
        they should appear. To make room, blocks in ``evict_first`` (block ids) go first, then
        the least recently used; the new block is persisted when the tier has a directory.
        ``on_build`` is called with the block (kept and persisted by then) only when this call
        built it, not when it was kept already: a caller that read ``memories`` before a
        forget may only find out here that it wrote their text again, and must then check
        them and drop the block (asking ``block_id in tier`` beforehand cannot tell, since a
        forget may drop the block in between). ``on_evict`` is called with each block
        evicted to make room (dropped, its file deleted, by then; also when the build then
        fails), so a caller can tell its owner and audit it. Both are called under the
        tier's lock: keep them short (``list.append``) and do the work after the call.

        Raises:
            InvalidInputError: no memories, or malformed ones.
            KVBudgetError: the block alone exceeds the budget.
        """
        refs = as_refs(memories)
        if not refs:
            raise InvalidInputError("a KV block needs at least one memory")
        bid = self._block_id(refs)
        with self._lock:
            found = self._resident(bid, refs)
            if found is not None:
                return found
            messages = block_messages(refs, self.instructions)
            text = self.model.render(messages, add_generation_prompt=False)
            tokens = len(self.model.encode(text))
            nbytes = tokens * self.model.kv_bytes_per_token
            if not self.budget.fits(tokens, nbytes):
                raise KVBudgetError(
                    f"a block of {len(refs)} memories takes {tokens} tokens ({nbytes} bytes), "
                    f"more than the whole KV budget {self.budget}; raise it or use fewer memories"
                )
            for info in self._make_room(tokens, nbytes, evict_first):
                if on_evict is not None:
                    on_evict(info)
            block = KVBlock(
                block_id=bid,
                memories=tuple(ref.key for ref in refs),
                prefix=self.model.build_prefix(messages),
            )
            if self.directory is not None:
                storage.save_block(block, self.directory)
            self._entries[bid] = _Entry(block.memories, block.num_tokens, block.nbytes, block)
            if on_build is not None:
                on_build(block)
            return block

    def _resident(self, bid: str, refs: Sequence[MemoryRef]) -> KVBlock | None:
        """Entry ``bid`` as a loaded block (loading it from disk if needed), marked used."""
        entry = self._entries.get(bid)
        if entry is None:
            return None
        if entry.block is None:
            entry.block = self._load(bid, refs)
            if entry.block is None:
                self._drop(bid)
                return None
        self._entries.move_to_end(bid)
        return entry.block

    def _load(self, bid: str, refs: Sequence[MemoryRef]) -> KVBlock | None:
        """Block ``bid`` from its file if it holds exactly ``refs`` -- their versions and, in
        its messages, their text as composed now, and the tokens the model makes of that text
        now -- else ``None`` (the caller drops the entry, and with it the file). A damaged
        file is logged as a warning."""
        if self.directory is None:  # disk-only entries exist only with a directory
            return None
        path = storage.block_path(self.directory, bid)
        try:
            block = storage.load_block(path, fingerprint_digest=self._digest,
                                       memories=tuple(ref.key for ref in refs))
            if block is not None and block.prefix.messages != block_messages(
                    refs, self.instructions):
                # the id hashes the memories' text, so a file under it holding other text is
                # damaged: its prefix must never answer, nor its text reach a prompt
                raise storage.KVCacheFormatError(
                    f"KV cache file {path} holds other text than the memories it was built "
                    "from (damaged on disk)")
            if block is not None and block.prefix.token_ids != tuple(self.model.encode(
                    self.model.render(block.prefix.messages, add_generation_prompt=False))):
                # a prompt starting with this text would not start with these tokens (a
                # file written before message text was escaped, or damaged): never reuse it
                raise storage.KVCacheFormatError(
                    f"KV cache file {path} holds other tokens than its text makes now")
        except FileNotFoundError:
            return None
        except storage.KVCacheFormatError as exc:
            logger.warning("%s; the block is dropped and built again when next used", exc)
            return None
        return block if block is not None and block.block_id == bid else None

    # ------------------------------------------------------------------ invalidation, eviction

    def invalidate(self, memory_id: str) -> list[str]:
        """Drop every kept block containing any version of ``memory_id``; return their ids.

        Idempotent: an unknown memory drops nothing. Call on update, forget and expiry.
        """
        with self._lock:
            doomed = [
                bid
                for bid, entry in self._entries.items()
                if any(mid == memory_id for mid, _ in entry.memories)
            ]
            for bid in doomed:
                self._drop(bid)
            return doomed

    def drop(self, block_id_: str) -> bool:
        """Drop one block (memory and disk). Returns whether it was kept."""
        with self._lock:
            return self._drop(block_id_)

    def clear(self) -> list[str]:
        """Drop every block; return their ids."""
        with self._lock:
            ids = list(self._entries)
            for bid in ids:
                self._drop(bid)
            return ids

    def evict_to_budget(
        self, order: Sequence[str] = (), budget: KVBudget | None = None
    ) -> list[str]:
        """Evict blocks until the kept total fits ``budget`` (default: the tier's).

        Blocks named in ``order`` (block ids; unknown ids are skipped) go first, in that
        order, then the least recently used. Returns the evicted ids.
        """
        with self._lock:
            return [info.block_id
                    for info in self._evict_until(budget or self.budget, 0, 0, order)]

    def _make_room(self, tokens: int, nbytes: int, order: Sequence[str]) -> list[KVBlockInfo]:
        return self._evict_until(self.budget, tokens, nbytes, order)

    def _evict_until(
        self, budget: KVBudget, extra_tokens: int, extra_bytes: int, order: Sequence[str]
    ) -> list[KVBlockInfo]:
        """Evict (``order`` first, then least recently used) until the kept blocks plus
        ``extra_*`` fit ``budget``; returns what was evicted, as it was listed before."""
        evicted: list[KVBlockInfo] = []
        first = [bid for bid in dict.fromkeys(order) if bid in self._entries]
        candidates = first + [bid for bid in self._entries if bid not in set(first)]
        for bid in candidates:
            tokens, nbytes = self.usage()
            if budget.fits(tokens + extra_tokens, nbytes + extra_bytes):
                break
            evicted.append(_info(bid, self._entries[bid]))
            self._drop(bid)
        return evicted

    def _drop(self, bid: str) -> bool:
        entry = self._entries.pop(bid, None)
        if self.directory is not None:
            storage.block_path(self.directory, bid).unlink(missing_ok=True)
        return entry is not None

    # ------------------------------------------------------------------ inspection

    def usage(self) -> tuple[int, int]:
        """``(tokens, bytes)`` over all kept blocks."""
        with self._lock:
            return (
                sum(e.tokens for e in self._entries.values()),
                sum(e.nbytes for e in self._entries.values()),
            )

    def blocks(self) -> list[KVBlockInfo]:
        """Kept blocks, least recently used first."""
        with self._lock:
            return [_info(bid, e) for bid, e in self._entries.items()]

    def __contains__(self, block_id_: object) -> bool:
        return block_id_ in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    # ------------------------------------------------------------------ persistence

    def _scan_directory(self) -> None:
        """Register this model's block files (headers only), oldest first; skip all others."""
        if self.directory is None or not self.directory.is_dir():
            return
        files = sorted(
            self.directory.glob(f"*{storage.SUFFIX}"), key=lambda p: p.stat().st_mtime_ns
        )
        for path in files:
            try:
                header = storage.read_header(path)
                memories = storage.header_memories(header)
                tokens = int(header["token_count"])
            except (storage.KVCacheFormatError, KeyError, ValueError):
                continue
            bid = header.get("block_id", "")
            if header.get("fingerprint") != self._digest or path.name != f"{bid}{storage.SUFFIX}":
                continue
            nbytes = tokens * self.model.kv_bytes_per_token
            self._entries[bid] = _Entry(memories, tokens, nbytes, None)
        if not self.budget.fits(*self.usage()):
            self._evict_until(self.budget, 0, 0, ())
