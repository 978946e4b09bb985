"""``MemOSRetriever``: MemOS hybrid search as a LangChain ``BaseRetriever``.

For existing chains (``retriever | format_docs | prompt | model``) and for
``create_retriever_tool``. Each hit becomes a ``Document`` whose ``page_content`` is the
memory text (a memory another user shared names its owner, as every prompt path shows it)
and whose ``metadata`` says which memory it is and why it matched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from memos_core import InvalidInputError, MemOS, SearchHit, resolve_memos
from memos_core.integration import check_name, shown_text
from pydantic import ConfigDict, Field

#: The most hits one ``MemOS.search`` returns; a larger per-call ``k`` is capped to it.
MAX_K = 1000


class MemOSRetriever(BaseRetriever):
    """Retrieve a user's memories: ``MemOSRetriever(mos, user_id="alice", k=4)`` (``mos``
    positional or keyword, as in the LlamaIndex package).

    Contracts: returns at most ``k`` documents, best first (``k`` may be overridden per
    call: ``retriever.invoke(query, k=2)``; a per-call ``k`` above :data:`MAX_K` is capped
    to it, one below 1 raises ``InvalidInputError``); only memories ``user_id`` may read; superseded
    and archived memories are left out unless ``include_superseded`` / ``include_archived``.
    ``metadata["score"]`` is the fused rank score (higher is better, comparable within one
    query only). A memory another user shared with ``user_id`` keeps its place, its text
    naming the owner ("alice: I'm allergic to peanuts.", else "... (shared by alice)":
    ``memos_core.integration.shown_text``), so a chain does not take it for the user's own;
    ``metadata["user_id"]`` is the owner. Every returned memory counts as an access in MemOS
    usage statistics. Errors from MemOS (e.g. an empty query) propagate as ``memos_core``
    exceptions.

    Options are the fields below; ``search_kwargs={"k": 2}`` (what
    ``vectorstore.as_retriever`` takes) is accepted for them too. Anything else (``top_k``,
    a typo) raises ``TypeError`` naming the accepted options, rather than being ignored.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    mos: MemOS = Field(description="The memory system to search.")
    user_id: str = Field(description="The principal whose memories are searched.")
    k: int = Field(default=4, ge=1, le=MAX_K, description="Documents per query.")
    session_id: str | None = Field(default=None, description="Only this session's memories.")
    agent_id: str | None = Field(default=None, description="Only this agent's memories.")
    types: list[str] | None = Field(default=None, description="Only these memory types.")
    tags: list[str] | None = Field(default=None, description="Only memories with any of these tags.")
    include_superseded: bool = Field(default=False, description="Also superseded memories.")
    include_archived: bool = Field(default=False, description="Also archived memories.")

    def __init__(self, mos: MemOS | str | None = None, /, **kwargs: Any) -> None:
        if mos is not None:
            if "mos" in kwargs:
                raise TypeError("MemOSRetriever got mos both positionally and as mos=")
            kwargs["mos"] = mos
        if "mos" in kwargs:  # a postgresql:// URL: the process's shared MemOS
            kwargs["mos"] = resolve_memos(kwargs["mos"])
        options = _options(kwargs)
        if "user_id" in options:  # a missing one is pydantic's "Field required"
            options["user_id"] = _check_user(options["user_id"])
        super().__init__(**options)

    def _search_kwargs(self, k: int | None) -> dict[str, Any]:
        if isinstance(k, int) and not isinstance(k, bool):
            k = min(k, MAX_K)  # more than the facade returns: as many as it can
        return {
            "user_id": self.user_id, "k": self.k if k is None else k,
            "session_id": self.session_id, "agent_id": self.agent_id, "types": self.types,
            "tags": self.tags, "include_superseded": self.include_superseded,
            "include_archived": self.include_archived,
        }

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        hits = self.mos.search(query, **self._search_kwargs(k))
        return [_document(h, self.user_id) for h in hits]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        hits = await self.mos.asearch(query, **self._search_kwargs(k))
        return [_document(h, self.user_id) for h in hits]


def _check_user(user_id: object) -> str:
    """``user_id`` as MemOS accepts it, checked now: an empty one ("") was accepted and
    only failed at the first search, with a message about passing it "on every call"."""
    if not isinstance(user_id, str) or not user_id.strip():
        raise InvalidInputError(
            f"MemOSRetriever: user_id must be a non-empty str, got {user_id!r}; construct it "
            "with the user whose memories it searches: MemOSRetriever(mos, user_id='alice').")
    return check_name(user_id, "user_id")  # its length and characters, as MemOS checks them


#: What ``search_kwargs`` may hold: the retriever's search options.
SEARCH_OPTIONS = ("k", "session_id", "agent_id", "types", "tags", "include_superseded",
                  "include_archived")


def _options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The constructor's keywords with ``search_kwargs`` (``vectorstore.as_retriever``'s
    spelling) spread into the fields it names; TypeError for a keyword or search option
    the retriever does not have (pydantic would ignore it: ``top_k=2`` gave 4 documents)."""
    options = dict(kwargs)
    search = options.pop("search_kwargs", None)
    search = {} if search is None else search
    if not isinstance(search, Mapping):
        raise TypeError(f"search_kwargs must be a dict such as {{'k': 2}}, got {search!r}.")
    fields = MemOSRetriever.model_fields
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise TypeError(
            f"MemOSRetriever got unknown option(s) {', '.join(map(repr, unknown))}; it accepts "
            f"{', '.join(sorted(fields))} (and search_kwargs with "
            f"{', '.join(SEARCH_OPTIONS)}).")
    unknown = sorted(set(search) - set(SEARCH_OPTIONS))
    if unknown:
        raise TypeError(
            f"MemOSRetriever's search_kwargs has unknown key(s) {', '.join(map(repr, unknown))}; "
            f"it accepts {', '.join(SEARCH_OPTIONS)}.")
    twice = sorted(set(search) & set(options))
    if twice:
        raise TypeError(f"MemOSRetriever got {', '.join(twice)} both as an option and in "
                        "search_kwargs; give each once.")
    return {**options, **search}


def _document(hit: SearchHit, viewer: str) -> Document:
    cube = hit.memory
    return Document(
        id=cube.id,
        page_content=shown_text(cube, viewer),
        metadata={
            "id": cube.id,
            "score": hit.score,
            "why": hit.explain(),
            "type": cube.type.value,
            "tags": list(cube.tags),
            "user_id": cube.user_id,
            "session_id": cube.session_id,
            "version": cube.version,
            "created_at": cube.created_at.isoformat(),
            "occurred_at": cube.occurred_at.isoformat() if cube.occurred_at else None,
        },
    )
