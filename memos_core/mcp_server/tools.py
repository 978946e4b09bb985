"""What the MCP tools, resources and prompt do, free of the MCP SDK.

:class:`MemoryService` holds one :class:`~memos_core.MemOS` and answers for a principal that
the *transport* established (the stdio user, or the owner of an HTTP bearer token); no method
takes a user from the caller's arguments. Every answer is a JSON-friendly dict; a memory
error (bad input, unknown id, denied) propagates as the project's exception and the server
turns it into a tool error. Texts that leave the server are redacted the way
:meth:`MemOS.search` redacts them (see :mod:`memos_core.governance.sensitivity`): a memory
with a sensitivity tag the server does not allow comes back as ``[redacted: tag]``.

The methods use the facade's async twins, so a server's event loop never blocks on the
embedder, SQLite or the index, and concurrent clients are served in parallel.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from pydantic_core import to_jsonable_python

from memos_core.cube import State, utcnow
from memos_core.governance import sensitivity as sensitivity_rules
from memos_core.governance.access import shown_text
from memos_core.integration.tools import forget_reply
from memos_core.lifecycle import ttl_elapsed

if TYPE_CHECKING:
    from memos_core.cube import MemCube
    from memos_core.memos import MemOS
    from memos_core.results import SearchHit


def when_json(when: datetime | None) -> str | None:
    """A datetime as the cubes' own JSON and the command line write it (ISO 8601, ``Z`` for
    UTC), so that every tool result -- a memory, an audit record, a forget receipt -- uses
    one form."""
    return None if when is None else str(to_jsonable_python(when))


def memory_json(cube: MemCube, redacted: Sequence[str] = ()) -> dict[str, Any]:
    """The fields of a memory an agent needs (no embeddings, no internal provenance)."""
    return {
        "id": cube.id, "version": cube.version, "text": cube.text, "type": cube.type.value,
        "state": cube.state.value, "tags": list(cube.tags),
        "session_id": cube.namespace.session_id, "owner": cube.namespace.user_id,
        "occurred_at": when_json(cube.occurred_at),
        "created_at": when_json(cube.created_at), "updated_at": when_json(cube.updated_at),
        "superseded_by": cube.superseded_by, "sensitivity": list(cube.governance.sensitivity),
        "redacted": list(redacted),
    }


def hit_json(hit: SearchHit) -> dict[str, Any]:
    """A search hit: the memory plus its fused score and why it matched."""
    return {**memory_json(hit.memory, hit.redacted), "score": round(hit.score, 6),
            "why": hit.explain(), "signals": {k: round(v, 6) for k, v in hit.signals.items()},
            "ranks": dict(hit.ranks)}


class MemoryService:
    """The operations behind the MCP surface, for one MemOS.

    ``allow_sensitive`` is what search's ``allow_sensitive`` would be (default: the store's
    ``config.allow_sensitive``); it applies to every text the service returns.
    """

    def __init__(self, mos: MemOS, *, allow_sensitive: Sequence[str] | str | None = None,
                 default_k: int = 5) -> None:
        self.mos = mos
        allow = mos.config.allow_sensitive if allow_sensitive is None else allow_sensitive
        self.allowed = sensitivity_rules.allowance(allow)
        self._allow_arg: Any = "*" if sensitivity_rules.ALL in self.allowed else tuple(self.allowed)
        self.default_k = default_k

    def _shown(self, cube: MemCube, tags: Sequence[str] | None = None) -> dict[str, Any]:
        """``cube`` as it may leave the server; ``tags`` overrides the tags to check."""
        withheld = sensitivity_rules.withheld(cube.governance.sensitivity if tags is None else tags,
                                              self.allowed)
        return memory_json(sensitivity_rules.redact(cube, withheld), withheld)

    # -- tools ------------------------------------------------------------------------------

    async def store(self, user: str, text: str, *, type: str | None = None,
                    tags: Sequence[str] = (), session_id: str | None = None,
                    occurred_at: str | None = None, sensitivity: Sequence[str] = (),
                    supersedes: str | None = None) -> dict[str, Any]:
        added = await self.mos.aadd(text, user_id=user, session_id=session_id, type=type,
                                   tags=tuple(tags or ()), occurred_at=occurred_at,
                                   sensitivity=tuple(sensitivity or ()), supersedes=supersedes,
                                   origin="extraction", reason="mcp store")
        cube = cast("MemCube", added)  # a text (not a message list) adds one memory
        return {"stored": self._shown(cube)}

    async def search(self, user: str, query: str, *, k: int | None = None,
                     session_id: str | None = None, types: Sequence[str] | None = None,
                     tags: Sequence[str] | None = None, occurred_after: str | None = None,
                     occurred_before: str | None = None, include_archived: bool = False
                     ) -> dict[str, Any]:
        hits = await self._hits(user, query, k=k, session_id=session_id, types=types, tags=tags,
                                occurred_after=occurred_after, occurred_before=occurred_before,
                                include_archived=include_archived)
        return {"query": query, "hits": [hit_json(h) for h in hits]}

    async def _hits(self, user: str, query: str, *, k: int | None = None,
                    session_id: str | None = None, types: Sequence[str] | None = None,
                    tags: Sequence[str] | None = None, occurred_after: str | None = None,
                    occurred_before: str | None = None, include_archived: bool = False
                    ) -> list[SearchHit]:
        return await self.mos.asearch(
            query, user_id=user, k=k or self.default_k, session_id=session_id,
            types=types or None, tags=tags or None, occurred_after=occurred_after,
            occurred_before=occurred_before, include_archived=include_archived,
            allow_sensitive=self._allow_arg)

    async def get(self, user: str, memory_id: str, *, version: int | None = None
                  ) -> dict[str, Any]:
        cube = await self.mos.aget(memory_id, user_id=user, version=version)
        if version is None:
            return {"memory": self._shown(cube)}
        # an old version is redacted by every tag the memory ever had
        versions = await self.mos.ahistory(memory_id, user_id=user)
        return {"memory": self._shown(cube, sensitivity_rules.history_sensitivity(versions))}

    async def update(self, user: str, memory_id: str, *, text: str | None = None,
                     tags: Sequence[str] | None = None, type: str | None = None
                     ) -> dict[str, Any]:
        cube = await self.mos.aupdate(memory_id, text, user_id=user,
                                      tags=None if tags is None else tuple(tags), type=type,
                                      reason="mcp update")
        return {"updated": self._shown(cube)}

    async def forget(self, user: str, memory_id: str, *, reason: str | None = None
                     ) -> dict[str, Any]:
        receipt = await self.mos.aforget(memory_id, user_id=user, reason=reason or "mcp forget")
        # the note says, in words, which summaries were only flagged (they may repeat it)
        return {"forgotten": receipt.model_dump(mode="json"), "note": forget_reply(receipt)}

    async def compress(self, user: str, memory_ids: Sequence[str], summary: str
                       ) -> dict[str, Any]:
        cube = await self.mos.acompress(list(memory_ids), summary, user_id=user,
                                        reason="mcp compress")
        # the sources as stored: an id may have been given in another spelling of its UUID
        return {"summary": self._shown(cube), "archived": list(cube.provenance.derived_from)}

    async def history(self, user: str, memory_id: str) -> dict[str, Any]:
        versions = await self.mos.ahistory(memory_id, user_id=user)
        tags = sensitivity_rules.history_sensitivity(versions)
        return {"memory_id": versions[-1].id if versions else memory_id,
                "versions": [self._shown(v, tags) for v in versions]}

    async def share(self, user: str, memory_id: str, with_user: str, *, scope: str = "read"
                    ) -> dict[str, Any]:
        cube = await self.mos.ashare(memory_id, with_user_id=with_user, user_id=user,
                                     scope=scope, reason="mcp share")
        return {"memory_id": cube.id, "version": cube.version,
                "readers": list(cube.governance.readers), "writers": list(cube.governance.writers)}

    async def revoke(self, user: str, memory_id: str, with_user: str) -> dict[str, Any]:
        cube = await self.mos.arevoke(memory_id, with_user_id=with_user, user_id=user,
                                      reason="mcp revoke")
        return {"memory_id": cube.id, "version": cube.version,
                "readers": list(cube.governance.readers), "writers": list(cube.governance.writers)}

    # -- resources and prompt ---------------------------------------------------------------

    async def recent(self, user: str, limit: int = 20) -> dict[str, Any]:
        """The principal's ``limit`` newest memories (their own and those shared with them),
        leaving out those whose TTL has run out, as search does."""
        now = utcnow()
        live: list[MemCube] = []
        page, offset = max(limit, 100), 0
        while len(live) < limit:
            cubes = await self.mos.alist(user_id=user, limit=page, offset=offset,
                                         newest_first=True, include_superseded=False)
            live += [c for c in cubes
                     if not ttl_elapsed(c.created_at, c.governance.ttl_seconds, now)]
            if len(cubes) < page:
                break
            offset += page
        return {"user": user, "memories": [self._shown(c) for c in live[:limit]]}

    async def audit(self, user: str, memory_id: str, limit: int = 100) -> dict[str, Any]:
        """The audit trail of one memory the principal may read, oldest first.

        A reason is free text and may repeat the memory, so it is shown only where the
        memory's text would be: a memory that any of its versions marks with a sensitivity
        tag this server does not allow gets ``[redacted: tag]`` for each reason (``redacted``
        lists the tags), as :meth:`history` redacts its texts; a forgotten memory's reasons
        are withheld (``[forgotten]``) -- forget removes them, but records written before
        the vault committed to reasons keep theirs."""
        records = await asyncio.to_thread(self.mos.audit_log, user_id=user, memory_id=memory_id,
                                          limit=limit)
        versions = await self.mos.ahistory(memory_id, user_id=user)  # after the access check
        withheld = sensitivity_rules.withheld(sensitivity_rules.history_sensitivity(versions),
                                              self.allowed)
        forgotten = bool(versions) and versions[-1].state is State.DELETED
        placeholder = ("[forgotten]" if forgotten else
                       sensitivity_rules.redacted_text(withheld) if withheld else None)
        return {"memory_id": memory_id, "redacted": list(withheld), "records": [
            {"seq": r.seq, "at": when_json(r.at), "user_id": r.user_id, "agent_id": r.agent_id,
             "action": r.action, "version": r.version,
             "reason": placeholder if placeholder and r.reason is not None else r.reason}
            for r in records]}

    async def recall_prompt(self, user: str, question: str, k: int | None = None) -> str:
        """A user message that hands the model the memories relevant to ``question``."""
        hits = await self._hits(user, question, k=k)
        # a memory another user shared names them, as in MemOS.chat's prompt
        lines = [f"- [{h.memory.id}] {shown_text(h.memory, user)}  (why: {h.explain()})"
                 for h in hits]
        memories = "\n".join(lines) or "- (no stored memory matches)"
        return ("Answer the question using what you remember about me. These memories were "
                f"recalled for it, most relevant first:\n{memories}\n\nQuestion: {question}")
