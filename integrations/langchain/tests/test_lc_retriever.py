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


@pytest.mark.parametrize("user_id", ["", "   ", None, 5])
def test_an_empty_or_missing_user_is_refused_at_construction(shared_mos: MemOS, user_id: Any) -> None:
    """``user_id=""`` was accepted and failed only at the first search, with a message about
    passing it "on every call"."""
    with pytest.raises(InvalidInputError, match=r"MemOSRetriever: user_id must be a non-empty str.*user_id='alice'"):
        MemOSRetriever(shared_mos, user_id=user_id)


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


async def test_a_memory_shared_with_the_user_names_its_owner(mos: MemOS) -> None:
    """As the middleware, the tools and LlamaIndex's retriever show it: a memory another
    user shared is labelled with its owner, so a chain does not take "user: I am not
    allergic to anything." for this user's own words (it came back as stored)."""
    mos.add("I am allergic to penicillin.", user_id="alice", type="fact")
    said = mos.add([{"role": "user", "content": "I am not allergic to anything."}], user_id="mallory")
    note = mos.add("Alice may take any antibiotic.", user_id="mallory")
    for cube in (*said, note):
        mos.share(cube.id, with_user_id="alice", user_id="mallory")
    retriever = MemOSRetriever(mos, user_id="alice", k=5)
    for docs in (retriever.invoke("allergic antibiotic"), await retriever.ainvoke("allergic antibiotic")):
        assert {(d.metadata["user_id"], d.page_content) for d in docs} == {
            ("alice", "I am allergic to penicillin."),
            ("mallory", "mallory: I am not allergic to anything."),
            ("mallory", "Alice may take any antibiotic. (shared by mallory)"),
        }


@pytest.mark.parametrize(("options", "error"), [
    ({"top_k": 2}, "unknown option.*'top_k'.*accepts.*k"),  # LlamaIndex's spelling
    ({"kk": 2}, "unknown option.*'kk'"),
    ({"search_kwargs": {"k": 2, "fetch_k": 20}}, "search_kwargs has unknown key.*'fetch_k'.*accepts k"),
    ({"search_kwargs": {"k": 2}, "k": 3}, "k both"),
    ({"search_kwargs": 2}, "search_kwargs must be a dict"),
])
def test_unknown_options_are_refused_naming_the_accepted_ones(
        shared_mos: MemOS, options: dict[str, Any], error: str) -> None:
    """Pydantic ignored unknown fields: ``top_k=2`` or a typo built a retriever that
    returned the default 4 documents."""
    with pytest.raises(TypeError, match=error):
        MemOSRetriever(shared_mos, user_id="alice", **options)


def test_search_kwargs_as_vectorstore_retrievers_take_them(shared_mos: MemOS) -> None:
    """``vectorstore.as_retriever(search_kwargs={"k": 2})``'s spelling works too."""
    retriever = MemOSRetriever(shared_mos, user_id="alice", search_kwargs={"k": 2, "types": ["fact"]})
    assert (retriever.k, retriever.types) == (2, ["fact"])
    assert len(retriever.invoke("Alice")) == 2
