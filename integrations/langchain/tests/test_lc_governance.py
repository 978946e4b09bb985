"""Governance through the LangChain components: user B cannot read, search, update, forget or
be answered from user A's memories through ``MemOSRetriever``, the memory tools, the agent
middleware or ``MemOSStore``; can after A shares (a memory or the namespace); cannot after A
revokes. Sensitive memories reach the model redacted. The rules live in the core; these
tests show every component inherits them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncio

import pytest
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage
from langchain_core.tools import BaseTool
from lc_fakes import scripted
from memos_core import InvalidInputError, MemCube, MemOS

from langchain_memos import MemOSMiddleware, MemOSRetriever, MemOSStore, create_memory_tools
from langchain_memos import _store_codec as codec

SEEN, UNSEEN, DENIED, DONE = "seen", "unseen", "denied", "done"
QUERY = "where does Alice keep the kayak"


@dataclass
class UserContext:
    user_id: str


def _tool(tools: dict[str, BaseTool], name: str, **args: Any) -> Any:
    return tools[name].invoke({"type": "tool_call", "name": name, "args": args, "id": "c1"})


def _seen(found: bool) -> str:
    return SEEN if found else UNSEEN


def _prompt_of(mos: MemOS, user: str) -> str:
    """Everything the model was sent in one agent turn of ``user`` (recall included)."""
    model = scripted("ok")
    agent = create_agent(model, tools=[], context_schema=UserContext,
                         middleware=[MemOSMiddleware(mos, k=10, record=False)])
    agent.invoke({"messages": [HumanMessage(QUERY + "?")]}, context=UserContext(user))
    return "\n".join(m.text for m in model.calls[0])


def _probes(mos: MemOS, mem: MemCube, bob: str) -> dict[str, Callable[[], str]]:
    tools = {t.name: t for t in create_memory_tools(mos, user_id=bob)}
    store = MemOSStore(mos, user_label=0)

    def tool_outcome(name: str, **args: Any) -> str:
        reply = _tool(tools, name, **args)
        return DENIED if reply.status == "error" and "AccessDeniedError" in reply.content else DONE

    return {
        "retriever": lambda: _seen(mem.id in {d.id for d in MemOSRetriever(mos=mos, user_id=bob, k=10).invoke(QUERY)}),
        "search tool": lambda: _seen(mem.id in {a["id"] for a in _tool(tools, "search_memories", query=QUERY, k=10).artifact or []}),
        "middleware": lambda: _seen(mem.text in _prompt_of(mos, bob)),
        "store": lambda: _seen(any(i.value.get("text") == mem.text
                                   for i in store.search((bob,), query=QUERY, limit=50))),
        "update tool": lambda: tool_outcome("update_memory", memory_id=mem.id, text="Bob edited this kayak note"),
        "forget tool": lambda: tool_outcome("forget_memory", memory_id=mem.id),
    }


#: probe -> outcome per phase (before any share, read share, write share, revoked)
EXPECTED = {
    "retriever": (UNSEEN, SEEN, SEEN, UNSEEN),
    "search tool": (UNSEEN, SEEN, SEEN, UNSEEN),
    "middleware": (UNSEEN, SEEN, SEEN, UNSEEN),
    "store": (UNSEEN, UNSEEN, UNSEEN, UNSEEN),  # the store is per user namespace: B's holds B's
    "update tool": (DENIED, DENIED, DONE, DENIED),
    "forget tool": (DENIED, DENIED, DENIED, DENIED),  # owner only
}


@pytest.mark.parametrize("kind", ["memory", "namespace"])
def test_b_cannot_reach_a_through_any_component_until_shared(mos: MemOS, kind: str) -> None:
    mem = mos.add("Alice keeps the kayak in the boathouse by the lake.", user_id="alice")
    MemOSStore(mos, user_label=0).put(("bob", "notes"), "k1", {"text": "Bob keeps a canoe."})
    grant = {
        "memory": {"read": lambda: mos.share(mem.id, with_user_id="bob", user_id="alice"),
                   "write": lambda: mos.share(mem.id, with_user_id="bob", user_id="alice", scope="write"),
                   "revoke": lambda: mos.revoke(mem.id, with_user_id="bob", user_id="alice")},
        "namespace": {"read": lambda: mos.share_namespace(with_user_id="bob", user_id="alice"),
                      "write": lambda: mos.share_namespace(with_user_id="bob", user_id="alice", scope="write"),
                      "revoke": lambda: mos.revoke_namespace(with_user_id="bob", user_id="alice")},
    }[kind]
    got: dict[str, list[str]] = {name: [] for name in EXPECTED}
    for phase in ("none", "read", "write", "revoke"):
        if phase != "none":
            grant[phase]()
        current = mos.get(mem.id, user_id="alice")  # the update tool may have changed its text
        for name, probe in _probes(mos, current, "bob").items():
            got[name].append(probe())
    wrong = {name: outcome for name, outcome in got.items() if tuple(outcome) != EXPECTED[name]}
    assert not wrong, f"(before, read, write, revoked) differ: {wrong}"


def test_the_store_acts_as_the_user_its_namespace_names(mos: MemOS) -> None:
    """MemOSStore's principal is the namespace label it was told (here the first): the
    application decides which namespace a run may use. Items of another user's namespace are
    those user's memories, with that user's rules."""
    store = MemOSStore(mos, user_label=0)
    store.put(("alice", "prefs"), "seat", {"text": "Alice prefers aisle seats"})
    assert store.search(("bob",), query="aisle seats") == []
    assert store.get(("bob", "prefs"), "seat") is None
    cube = mos.list(user_id="alice")[0]
    mos.share(cube.id, with_user_id="bob", user_id="alice")
    assert store.get(("bob", "prefs"), "seat") is None  # shared, but not an item of bob's


def test_sensitive_memories_reach_the_model_redacted(mos: MemOS) -> None:
    mos.add("Alice's kayak lock code is 3390.", user_id="alice", sensitivity=["secret"])
    prompt = _prompt_of(mos, "alice")
    assert "3390" not in prompt and "[redacted: secret]" in prompt
    docs = MemOSRetriever(mos=mos, user_id="alice").invoke(QUERY)
    assert docs[0].page_content == "[redacted: secret]"


def test_sensitive_store_items_are_found_redacted_by_their_owner(mos: MemOS) -> None:
    """A store item tagged sensitive stays findable by its owner's searches (query or not) --
    its value redacted by the core's rule, unless the store's allowance covers the tag --
    while ``get`` (a record read) returns it whole and other users' namespaces never hold it."""
    ns, secret = ("alice", "contacts"), "555-0101"
    MemOSStore(mos, user_label=0, sensitivity=["pii"]).put(ns, "dentist", {"text": f"Alice's dentist phone is {secret}"})
    MemOSStore(mos, user_label=0).put(ns, "gym", {"text": "Alice's gym phone is 555-0199"})
    redacted = {"text": "[redacted: pii]", "redacted_sensitivity": ["pii"]}
    store = MemOSStore(mos, user_label=0)

    for query in ("dentist phone number", None):
        found = {i.key: i.value for i in store.search(("alice",), query=query)}
        assert found == {"dentist": redacted, "gym": {"text": "Alice's gym phone is 555-0199"}}
    probe = store.search(("alice",), query="dentist phone", filter={"text": f"Alice's dentist phone is {secret}"})
    assert probe == []  # a filter cannot test the hidden value
    allowed = MemOSStore(mos, user_label=0, allow_sensitive=["pii"]).search(("alice",), query="dentist phone")
    assert allowed[0].key == "dentist" and secret in allowed[0].value["text"]
    assert secret in store.get(ns, "dentist").value["text"]  # type: ignore[union-attr]
    assert store.search(("bob",), query="dentist phone") == []
    dentist = mos.list(user_id="alice", metadata={"lg_key": "dentist"})[0]
    mos.share(dentist.id, with_user_id="bob", user_id="alice")
    assert all(secret not in h.text for h in mos.search("dentist phone", user_id="bob"))


@pytest.mark.parametrize("kwargs", [{"sensitivity": [""]}, {"sensitivity": [1]}, {"allow_sensitive": [None]}])
def test_store_refuses_bad_sensitivity_arguments(mos: MemOS, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError, match="sensitiv"):
        MemOSStore(mos, user_label=0, **kwargs)


@pytest.mark.parametrize("query", [None, "what does Alice eat"])
def test_memories_shared_with_the_user_never_become_store_items(mos: MemOS, query: str | None) -> None:
    """A store item is a memory its user owns, bound to its key. Mallory's own store can
    write "Alice's" item (her memory, same namespace and key) and the MCP tools can set the
    store's tag; shared with Alice, neither shadows, adds to or breaks Alice's items (they
    were listed and searched as hers, a tag alone raised KeyError). Nor is a memory of
    Alice's that only looks like an item. Pages stay full."""
    ns, food = ("alice", "memories"), {"diet": "Alice is vegetarian.", "lunch": "Alice eats salad for lunch.",
                                       "snack": "Alice eats apples as a snack."}
    alices, mallorys = MemOSStore(mos, user_label=0), MemOSStore(mos, user_id="mallory")
    for key, text in food.items():  # mallory's interleaved, to catch pages cut before filtering
        alices.put(ns, key, {"text": text})
        mallorys.put(ns, key, {"text": "Alice eats steak every day."})
    mos.add("Alice eats steak at every meal.", user_id="mallory", tags=[codec.prefix_tag(ns)])
    for cube in mos.list(user_id="mallory"):
        mos.share(cube.id, with_user_id="alice", user_id="mallory")
    mos.add("Alice eats steak, says this look-alike.", user_id="alice", tags=codec.namespace_tags(ns),
            metadata={codec.META_NS: codec.ns_json(ns), codec.META_KEY: "diet",
                      codec.META_VALUE: {"text": "Alice eats steak."}})

    def page(limit: int, offset: int, mode: str) -> list[tuple[str, str]]:
        if mode == "sync":
            items = alices.search(ns, query=query, limit=limit, offset=offset)
        else:
            items = asyncio.run(alices.asearch(ns, query=query, limit=limit, offset=offset))
        return [(i.key, i.value["text"]) for i in items]

    for mode in ("sync", "async"):
        found = page(10, 0, mode)
        assert sorted(found) == sorted(food.items()), mode
        pages = page(2, 0, mode) + page(2, 2, mode)
        assert len(page(2, 0, mode)) == 2 and sorted(pages) == sorted(food.items()), mode
        if query is None:  # first-put order
            assert found == list(food.items()) == pages
    assert alices.get(ns, "diet").value == {"text": food["diet"]}  # type: ignore[union-attr]
    assert alices.list_namespaces(prefix=("alice",)) == [ns]


def test_a_query_search_reads_a_key_binding_only_for_items_that_match(mos: MemOS, monkeypatch) -> None:
    """The binding check is one vault read per hit: it comes last (after the owner, the
    key metadata and the filter) and once per memory however often the search widens."""
    from langchain_memos import store as store_module

    ns = ("alice", "memories")
    alices = MemOSStore(mos, user_label=0)
    for i in range(30):
        alices.put(ns, f"k{i}", {"text": f"Alice note {i} about her kayak.", "n": i})
    reads: list[object] = []
    real = store_module.get_by_key
    monkeypatch.setattr(store_module, "get_by_key", lambda *a: reads.append(a) or real(*a))
    assert alices.search(ns, query="kayak", filter={"n": 1000}, limit=5) == []
    assert reads == []  # nothing matched the filter: no binding read
    found = alices.search(ns, query="kayak", filter={"n": 7}, limit=5)
    assert [i.key for i in found] == ["k7"] and len(reads) == 1
    for meta in ({}, {codec.META_VALUE: "not a dict"}):  # tagged memories that are no item
        mos.add("Alice's kayak note, by hand.", user_id="alice", tags=codec.namespace_tags(ns),
                metadata={codec.META_NS: codec.ns_json(ns), codec.META_KEY: "stray", **meta})
    found = alices.search(ns, query="kayak note by hand", limit=40)
    assert len(found) == 30 and "stray" not in {i.key for i in found}
    assert alices.search(ns, query="kayak note by hand", filter={"n": 1000}) == []
