"""MemOSRetriever: langchain-tests' standard retriever suite plus MemOS specifics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.tools import create_retriever_tool
from langchain_tests.integration_tests import RetrieversIntegrationTests
from memos_core import InvalidInputError, MemOS, MemOSConfig

from langchain_memos import MemOSRetriever

FACTS = [
    "Alice is allergic to peanuts.",
    "Alice's sister lives in Oslo.",
    "Alice runs a marathon every spring.",
    "Alice prefers window seats on flights.",
    "Alice's favourite composer is Satie.",
]


@pytest.fixture(scope="module")
def shared_mos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemOS]:
    mos = MemOS(tmp_path_factory.mktemp("retriever"), config=MemOSConfig(show_progress=False))
    mos.add_many(FACTS, user_id="alice", type="fact")
    mos.add("Bob is allergic to shellfish.", user_id="bob")
    yield mos
    mos.close()


class TestMemOSRetrieverStandard(RetrieversIntegrationTests):
    """The shipped conformance tests; the retriever needs the shared MemOS set on the class."""

    mos: MemOS

    @pytest.fixture(autouse=True)
    def _attach(self, shared_mos: MemOS) -> None:
        self.mos = shared_mos

    @property
    def retriever_constructor(self) -> type[MemOSRetriever]:
        return MemOSRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"mos": self.mos, "user_id": "alice"}

    @property
    def retriever_query_example(self) -> str:
        return "what is Alice allergic to?"


def test_documents_are_the_hits_in_order(shared_mos: MemOS) -> None:
    query = "what is Alice allergic to?"
    docs = MemOSRetriever(mos=shared_mos, user_id="alice", k=3).invoke(query)
    hits = shared_mos.search(query, user_id="alice", k=3, record_usage=False)
    assert [d.id for d in docs] == [h.id for h in hits]
    assert [d.page_content for d in docs] == [h.text for h in hits]
    meta = docs[0].metadata
    assert meta["id"] == docs[0].id and meta["type"] == "fact" and meta["user_id"] == "alice"
    assert meta["why"] == hits[0].explain() and meta["score"] == hits[0].score
    assert [d.metadata["score"] for d in docs] == sorted((d.metadata["score"] for d in docs), reverse=True)
    assert "Alice is allergic to peanuts." in {d.page_content for d in docs}


async def test_users_are_isolated_and_async_works(shared_mos: MemOS) -> None:
    docs = await MemOSRetriever(mos=shared_mos, user_id="bob", k=5).ainvoke("allergic")
    assert [d.page_content for d in docs] == ["Bob is allergic to shellfish."]


def test_filters_and_retriever_tool(shared_mos: MemOS) -> None:
    assert MemOSRetriever(mos=shared_mos, user_id="alice", types=["episode"]).invoke("Oslo") == []
    tool = create_retriever_tool(MemOSRetriever(mos=shared_mos, user_id="alice", k=1),
                                 "recall", "Search what we know about the user.")
    assert tool.invoke({"query": "where does her sister live"}) == "Alice's sister lives in Oslo."


def test_bad_input(shared_mos: MemOS) -> None:
    with pytest.raises(ValueError, match="k"):
        MemOSRetriever(mos=shared_mos, user_id="alice", k=0)
    with pytest.raises(ValueError, match="mos"):
        MemOSRetriever(mos="not a MemOS", user_id="alice")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="empty"):
        MemOSRetriever(mos=shared_mos, user_id="alice").invoke("  ")


def test_mos_is_positional_or_keyword_as_in_llamaindex(shared_mos: MemOS) -> None:
    positional = MemOSRetriever(shared_mos, user_id="alice", k=1).invoke("Oslo")
    keyword = MemOSRetriever(mos=shared_mos, user_id="alice", k=1).invoke("Oslo")
    assert [d.id for d in positional] == [d.id for d in keyword] and len(positional) == 1
    with pytest.raises(TypeError, match="both"):
        MemOSRetriever(shared_mos, mos=shared_mos, user_id="alice")


def test_a_per_call_k_above_the_maximum_is_capped(shared_mos: MemOS) -> None:
    """A per-call ``k`` above what one search returns gets as many as it can (it raised);
    one below 1 is still an error."""
    retriever = MemOSRetriever(shared_mos, user_id="alice")
    assert len(retriever.invoke("Alice", k=5000)) == len(FACTS)
    with pytest.raises(InvalidInputError, match="k"):
        retriever.invoke("Alice", k=0)
