"""The framework adapters in server mode: constructors take a ``postgresql://`` URL, and two
MemOS instances on one database (two "processes") share the LangGraph store's items."""

from __future__ import annotations

import pytest

from memos_core import MemOS, MemOSConfig
from memos_core.errors import InvalidInputError
from memos_core import resolve_memos

langgraph_store = pytest.importorskip("langchain_memos")


@pytest.fixture
def two(pg_url):
    a = MemOS(pg_url, config=MemOSConfig(show_progress=False))
    b = MemOS(pg_url, config=MemOSConfig(show_progress=False))
    yield a, b
    a.close()
    b.close()


def test_resolve_memos_shares_one_instance_per_url(pg_url):
    first = resolve_memos(pg_url)
    try:
        assert isinstance(first, MemOS) and resolve_memos(pg_url) is first
        assert resolve_memos(first) is first and resolve_memos("./dir") == "./dir"
    finally:
        first.close()
    assert resolve_memos(pg_url) is not first  # a closed one is replaced
    resolve_memos(pg_url).close()


def test_adapters_accept_a_database_url(pg_url):
    from langchain_memos import MemOSStore

    store = MemOSStore(pg_url, user_label=0)
    try:
        store.put(("alice", "notes"), "k1", {"text": "The spare key is under the mat."})
        assert store.get(("alice", "notes"), "k1").value["text"].startswith("The spare key")
        assert store.mos is resolve_memos(pg_url)
    finally:
        store.mos.close()
    with pytest.raises(InvalidInputError):
        MemOSStore("./not-a-memos", user_label=0)


def test_langgraph_store_items_are_shared_between_processes(two):
    from langchain_memos import MemOSStore

    a, b = two
    store_a, store_b = MemOSStore(a, user_label=0), MemOSStore(b, user_label=0)
    store_a.put(("alice", "prefs"), "drink", {"text": "Alice drinks oolong tea."})
    item = store_b.get(("alice", "prefs"), "drink")
    assert item is not None and item.value == {"text": "Alice drinks oolong tea."}
    hits = store_b.search(("alice",), query="what does alice drink")
    assert [h.key for h in hits][:1] == ["drink"]
    store_b.put(("alice", "prefs"), "drink", {"text": "Alice drinks black coffee."})
    assert store_a.get(("alice", "prefs"), "drink").value["text"] == "Alice drinks black coffee."
    store_a.delete(("alice", "prefs"), "drink")
    assert store_b.get(("alice", "prefs"), "drink") is None
    assert store_b.search(("alice",), query="coffee") == []
    assert store_b.search(("bob",), query="coffee") == []
