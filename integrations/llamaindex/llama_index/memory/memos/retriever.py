"""``MemOSRetriever``: a user's MemOS memories as a llama-index retriever."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import NodeWithScore, QueryBundle, QueryType
from memos_core import InvalidInputError, MemOS
from memos_core.integration import check_k, check_name

from llama_index.memory.memos._checks import (
    check_mos,
    check_scope,
    scope_filters,
)
from llama_index.memory.memos._convert import hit_to_node


class MemOSRetriever(BaseRetriever):
    """Retrieves ``user_id``'s memories by hybrid search (e.g. the context retriever of
    ``CondensePlusContextChatEngine``).

    ``MemOSRetriever(mos, user_id="alice", k=5)``. Returns at most ``k`` nodes, best first;
    a node's id is the memory id, its text the memory text (a memory another user shared
    names that user: "alice: I'm allergic to peanuts.", or "... (shared by alice)"), its
    score MemOS's fused score (higher is better, comparable within one query only) and its
    metadata ``memory_id``, ``owner``, ``type``, ``session_id``, ``created_at``,
    ``occurred_at``, ``tags``, ``version`` and ``explain`` (which signals found it; hidden
    from the LLM and the embedder). An empty
    query returns no nodes; a query that is neither a str nor a ``QueryBundle`` of one raises
    :class:`memos_core.InvalidInputError`. ``search_scope`` is ``'user'``, ``'agent'`` or ``'session'`` as
    in :class:`MemOSMemoryBlock`.
    """

    def __init__(
        self,
        mos: MemOS,
        *,
        user_id: str,
        k: int = 5,
        agent_id: str | None = None,
        session_id: str | None = None,
        search_scope: str = "user",
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        self.mos = check_mos(mos, "MemOSRetriever")
        self.user_id = str(check_name(user_id, "user_id"))
        self.k = check_k(k)
        self.agent_id = check_name(agent_id, "agent_id", optional=True)
        self.session_id = check_name(session_id, "session_id", optional=True)
        self.search_scope = check_scope(
            search_scope, agent_id=self.agent_id, session_id=self.session_id
        )
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    def retrieve(self, str_or_query_bundle: QueryType) -> list[NodeWithScore]:
        """The best ``k`` memories for the query (see the class docstring)."""
        return super().retrieve(_check_query(str_or_query_bundle))

    async def aretrieve(self, str_or_query_bundle: QueryType) -> list[NodeWithScore]:
        """The async twin of :meth:`retrieve`."""
        return await super().aretrieve(_check_query(str_or_query_bundle))

    def _search_kwargs(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "k": self.k,
                **scope_filters(self.search_scope, self.agent_id, self.session_id)}

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        if not query_bundle.query_str.strip():
            return []
        hits = self.mos.search(query_bundle.query_str, **self._search_kwargs())
        return [hit_to_node(h, self.user_id) for h in hits]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        if not query_bundle.query_str.strip():
            return []
        hits = await self.mos.asearch(query_bundle.query_str, **self._search_kwargs())
        return [hit_to_node(h, self.user_id) for h in hits]


def _check_query(query: object) -> QueryType:
    """A query str or a ``QueryBundle`` of one; checked here, because llama-index would fail
    on anything else with a pydantic error about its own event class."""
    if isinstance(query, str) or (isinstance(query, QueryBundle)
                                  and isinstance(query.query_str, str)):
        return query
    got = query.query_str if isinstance(query, QueryBundle) else query
    raise InvalidInputError(
        f"MemOSRetriever needs the query as a str (or a QueryBundle of one), got "
        f"{type(got).__name__}; pass the text to search for, e.g. retrieve('tea')."
    )
