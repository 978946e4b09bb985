"""MemOSStore: the LangGraph store contract, checked against LangGraph's own InMemoryStore.

The differential test runs the same random operation sequences on both stores and compares
every result; the other tests pin the MemOS-specific choices (versions, search ranking,
errors) that the reference store has no notion of.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Callable
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage
from langgraph.store.base import GetOp, InvalidNamespaceError, ListNamespacesOp, MatchCondition, PutOp, SearchOp
from langgraph.store.memory import InMemoryStore
from memos_core.testing.closing import close_during
from lc_fakes import scripted
from memos_core import InvalidInputError, MemOS

from langchain_memos import MemOSMiddleware, MemOSRetriever, MemOSStore
from langchain_memos._store_codec import prefix_tag
from langchain_memos import store as store_module


class ReferenceStore(InMemoryStore):
    """InMemoryStore without one quirk: it lists namespaces that were only read (a get
    creates an empty entry) or whose items were all deleted. A namespace exists while it
    holds an item, in both stores."""

    def _handle_list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        for ns in [ns for ns, items in self._data.items() if not items]:
            del self._data[ns]
        return super()._handle_list_namespaces(op)


# -- random operation sequences ----------------------------------------------------------

USERS = ("u1", "u2")
SPACES = (("docs",), ("notes",), ("archive", "deep"))
KEYS = ("a", "b", "c", "d")
WORDS = ("tea", "coffee", "paris", "rome", "cats", "dogs", "piano", "chess")


def _value(rng: random.Random) -> dict[str, Any]:
    return {
        "text": f"{rng.choice(WORDS)} and {rng.choice(WORDS)}",
        "n": rng.randint(0, 5),
        "tag": rng.choice(["x", "y"]),
        "nested": {"flag": rng.choice([True, False]), "items": [rng.randint(0, 2)]},
    }


def _filter(rng: random.Random) -> dict[str, Any] | None:
    return rng.choice([
        None, {"tag": "x"}, {"n": {"$gte": 3}}, {"n": {"$lt": 2}}, {"n": {"$ne": 4}},
        {"nested": {"flag": True}}, {"tag": "y", "n": {"$gt": 1}}, {"nested": {"items": [1]}},
    ])


def _namespace(rng: random.Random) -> tuple[str, ...]:
    return (rng.choice(USERS), *rng.choice(SPACES))


def _random_op(rng: random.Random, ref: ReferenceStore) -> Any:
    roll = rng.random()
    if roll < 0.45:
        index = rng.choice([None, None, False, ["text"], ["nested.flag"]])
        return PutOp(_namespace(rng), rng.choice(KEYS), _value(rng), index=index)
    if roll < 0.55:
        return PutOp(_namespace(rng), rng.choice(KEYS), None)
    if roll < 0.7:
        return GetOp(_namespace(rng), rng.choice(KEYS))
    if roll < 0.9:
        prefix = _namespace(rng)[: rng.randint(1, 3)]
        query = rng.choice([None, None, rng.choice(WORDS)])
        # Pages are compared exactly only where the order is defined the same way by both
        # stores: within one namespace, without a query. Elsewhere compare whole results.
        spaces = {ns for ns, items in ref._data.items() if items and ns[: len(prefix)] == prefix}
        if query is None and len(spaces) <= 1:
            return SearchOp(prefix, _filter(rng), rng.randint(1, 4), rng.randint(0, 3), None)
        return SearchOp(prefix, _filter(rng), 100, 0, query)
    conditions = [MatchCondition("prefix", (rng.choice(USERS),))]
    if rng.random() < 0.3:
        conditions.append(MatchCondition("suffix", (rng.choice(["docs", "notes", "deep", "*"]),)))
    if rng.random() < 0.2:
        conditions[0] = MatchCondition("prefix", (conditions[0].path[0], "*", "deep"))
    return ListNamespacesOp(tuple(conditions), rng.choice([None, 1, 2]), rng.randint(1, 5), rng.randint(0, 1))


def _normalise(op: Any, result: Any) -> Any:
    """Comparable form of a result: items without timestamps and scores."""
    if isinstance(op, GetOp):
        return None if result is None else (result.namespace, result.key, result.value)
    if isinstance(op, SearchOp):
        items = [(i.namespace, i.key, i.value) for i in result]
        exact = op.query is None and op.limit < 100
        return items if exact else sorted(items, key=lambda t: (t[0], t[1]))
    return result


def _run_differential(mos: MemOS, seed: int, steps: int, *, use_async: bool) -> int:
    rng = random.Random(seed)
    ours, ref = MemOSStore(mos, user_label=0), ReferenceStore()
    compared = 0
    for step in range(steps):
        batch = [_random_op(rng, ref) for _ in range(1 if rng.random() < 0.8 else rng.randint(2, 4))]
        expected = ref.batch(batch)
        got = asyncio.run(ours.abatch(batch)) if use_async else ours.batch(batch)
        for op, want, have in zip(batch, expected, got):
            assert _normalise(op, have) == _normalise(op, want), f"seed {seed} step {step}: {op}"
            compared += 1
    return compared


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_differential_against_langgraph_in_memory_store(mos: MemOS, seed: int) -> None:
    assert _run_differential(mos, seed, 100, use_async=False) >= 100


def test_differential_async(mos: MemOS) -> None:
    assert _run_differential(mos, 4, 60, use_async=True) >= 60


# -- MemOS-specific behaviour ------------------------------------------------------------


def test_items_are_versioned_memories(mos: MemOS) -> None:
    store = MemOSStore(mos, user_label=0)
    store.put(("alice", "prefs"), "drink", {"text": "Alice drinks green tea"})
    first = store.get(("alice", "prefs"), "drink")
    store.put(("alice", "prefs"), "drink", {"text": "Alice switched to oolong"})
    second = store.get(("alice", "prefs"), "drink")
    assert second is not None and first is not None
    assert second.value == {"text": "Alice switched to oolong"}
    assert second.created_at == first.created_at and second.updated_at > first.updated_at

    [cube] = mos.list(user_id="alice")
    assert [v.version for v in mos.history(cube.id, user_id="alice")] == [1, 2]
    # The store's item is an ordinary memory: MemOS search finds it by its text.
    assert mos.search("which tea does Alice like?", user_id="alice")[0].id == cube.id

    store.delete(("alice", "prefs"), "drink")
    assert store.get(("alice", "prefs"), "drink") is None
    assert mos.list(user_id="alice") == []


def test_query_search_is_memos_hybrid_search(mos: MemOS) -> None:
    store = MemOSStore(mos, user_label=0)
    ns = ("alice", "facts")
    store.put(ns, "1", {"text": "Alice plays the piano every evening"})
    store.put(ns, "2", {"text": "Alice's cat is called Miso"})
    store.put(ns, "3", {"text": "Alice works as a nurse in Lyon"})
    store.put(ns, "hidden", {"text": "Alice's pet is a cat"}, index=False)
    mos.add("Alice's dog is called Rex", user_id="alice")  # a memory, not a store item
    query = "what pet does she have?"
    hits = store.search(("alice",), query=query, limit=10)
    # The same search MemOS runs for the store: the user's items under the prefix tag
    # (archived ones included: a non-indexed item's memory is archived, out of default search).
    same = mos.search(query, user_id="alice", k=10, tags=[prefix_tag(("alice",))],
                      include_archived=True, record_usage=False)
    ranked = [h.memory.metadata["lg_key"] for h in same if h.memory.metadata["lg_index"] is not False]
    assert [h.key for h in hits] == [*ranked, "hidden"]  # non-indexed items follow, unscored
    scores = [h.score for h in hits]
    assert None not in scores[:3] and scores[:3] == sorted(scores[:3], reverse=True)
    assert scores[3] is None
    assert [h.key for h in store.search(("alice",), query=query, limit=1)] == ranked[:1]
    assert store.search(("alice",), query=query, filter={"text": "Alice's cat is called Miso"})[0].key == "2"
    assert store.search(("bob",), query="piano") == []  # another user's namespace


SECRET = {"card_last4": "4242", "billing_email": "alice@example.com", "api_token": "sk-live-123"}


def test_non_indexed_items_stay_out_of_search_and_prompts(mos: MemOS) -> None:
    store = MemOSStore(mos, user_label=0)
    store.put(("alice", "settings"), "billing", SECRET, index=False)  # LangGraph: not for search
    store.put(("alice", "notes"), "card", {"text": "Alice pays her bills with a Visa card"})

    # the store itself shows the item exactly as before: get, search without a query,
    # namespaces, and a query search after the ranked items, unscored
    assert store.get(("alice", "settings"), "billing").value == SECRET
    assert [(i.key, i.value) for i in store.search(("alice",))] == [
        ("billing", SECRET), ("card", {"text": "Alice pays her bills with a Visa card"})]
    assert store.list_namespaces(prefix=("alice",)) == [("alice", "notes"), ("alice", "settings")]
    found = store.search(("alice",), query="billing card api token")
    assert [(i.key, i.score is None) for i in found] == [("card", False), ("billing", True)]

    # ... but nothing of it is searchable memory: not its text, not a hit
    hits = mos.search("billing card api token sk-live-123", user_id="alice", k=10)
    assert [h.memory.metadata["lg_key"] for h in hits] == ["card"]
    docs = MemOSRetriever(mos, user_id="alice", k=10).invoke("billing api token")
    assert [d.metadata["id"] for d in docs] == [hits[0].id]  # the indexed item only
    [hidden] = mos.list(user_id="alice", tags=[prefix_tag(("alice", "settings"))])
    assert "sk-live" not in hidden.text and hidden.text == store_module.NOT_INDEXED_TEXT

    # an agent with the store and the middleware: the secret never reaches the prompt
    model = scripted("Your Visa card.")
    agent = create_agent(model, store=store, middleware=[MemOSMiddleware(mos)])
    agent.invoke({"messages": [HumanMessage("Which card do I use for billing? And my api token?")]},
                 {"configurable": {"user_id": "alice"}})
    prompt = "\n".join(m.text for m in model.calls[0])
    assert "Visa" in prompt and "sk-live" not in prompt and "4242" not in prompt


def test_an_item_changes_between_indexed_and_not(mos: MemOS) -> None:
    store = MemOSStore(mos, user_label=0)
    ns = ("alice", "settings")

    def searched() -> list[str]:
        return [h.memory.metadata["lg_key"] for h in mos.search("Alice's billing card", user_id="alice")]

    store.put(ns, "billing", {"text": "Alice's billing card is a Visa"})
    assert searched() == ["billing"]
    store.put(ns, "billing", SECRET, index=False)
    assert searched() == [] and store.get(ns, "billing").value == SECRET
    store.put(ns, "billing", SECRET, index=False)  # again: still one memory, still hidden
    store.put(ns, "billing", {"text": "Alice's billing card is a Mastercard"})
    assert searched() == ["billing"]
    assert [h.value for h in store.search(ns, query="billing card")] == [
        {"text": "Alice's billing card is a Mastercard"}]
    assert len(mos.list(user_id="alice")) == 1

    # index fields the value does not have: not indexed either (as in LangGraph's store)
    by_text = MemOSStore(mos, user_label=0, index_fields=["text"])
    by_text.put(ns, "pin", {"pin": "9876"})
    assert "pin" not in searched() and by_text.get(ns, "pin").value == {"pin": "9876"}
    assert all("9876" not in c.text for c in mos.list(user_id="alice"))

    # a memory archived by something else (compress, the scheduler) is left as it is
    store.put(ns, "plan", {"text": "Alice's billing plan is yearly"})
    plan = next(c for c in mos.list(user_id="alice") if c.metadata["lg_key"] == "plan")
    mos.set_state(plan.id, "archived", user_id="alice")
    store.put(ns, "plan", {"text": "Alice's billing plan is monthly"})
    assert mos.get(plan.id, user_id="alice").state.value == "archived"


@pytest.mark.parametrize("last_indexed", [True, False])
def test_the_last_put_of_a_key_decides_whether_it_is_searchable(
        mos: MemOS, monkeypatch: pytest.MonkeyPatch, last_indexed: bool) -> None:
    """Two stores (workers) put one key, one indexed and one not; the last put lands right
    after the other one's commit. The item is what the last put wrote, searchable exactly
    if that put indexed it: a put's state is part of its own version, not a later write on
    whatever version is current by then (which was the last put's)."""
    ns = ("alice", "diet")
    first, last = MemOSStore(mos, user_label=0), MemOSStore(mos, user_label=0)
    last_index = None if last_indexed else False
    first_index = False if last_indexed else None
    first.put(ns, "diet", {"text": "Alice eats fish"}, index=last_index)  # version 1
    put_by_key = store_module.put_by_key
    raced: list[bool] = []

    def then_the_other_worker(*args: Any, **kwargs: Any) -> Any:
        stored = put_by_key(*args, **kwargs)
        if not raced:  # the first put has committed: the other worker puts now
            raced.append(True)
            last.put(ns, "diet", {"text": "Alice is vegan now"}, index=last_index)
        return stored

    monkeypatch.setattr(store_module, "put_by_key", then_the_other_worker)
    first.put(ns, "diet", {"text": "a draft"}, index=first_index)  # version 2, then 3 (last)
    assert raced == [True]

    assert first.get(ns, "diet").value == {"text": "Alice is vegan now"}
    [cube] = mos.list(user_id="alice")
    found = [h.id for h in mos.search("Alice is vegan now", user_id="alice")]
    assert (cube.state.value, found) == (
        ("generated", [cube.id]) if last_indexed else ("archived", []))
    # one version per put, with its state: no state-only versions
    searchable, hidden = "generated", "archived"
    states = [searchable, hidden, searchable] if last_indexed else [hidden, searchable, hidden]
    assert [v.state.value for v in mos.history(cube.id, user_id="alice")] == states


def test_index_fields_choose_the_searchable_text(mos: MemOS) -> None:
    store = MemOSStore(mos, user_label=0, index_fields=["summary"])
    store.put(("alice", "docs"), "d1", {"summary": "quarterly sales report", "body": "zebra"})
    [cube] = mos.list(user_id="alice")
    assert cube.text == "quarterly sales report"
    store.put(("alice", "docs"), "d2", {"summary": "x", "body": "zebra"}, index=["body"])
    assert {c.text for c in mos.list(user_id="alice")} == {"quarterly sales report", "zebra"}


def test_values_round_trip_exactly(mos: MemOS) -> None:
    store = MemOSStore(mos, user_label=0)
    value = {"s": "é\u2603", "i": 2**53 + 1, "f": 0.1, "b": False, "n": None,
             "l": [1, [2, {"x": []}]], "d": {"deep": {"deeper": "yes"}}}
    store.put(("alice",), "k", value)
    assert store.get(("alice",), "k").value == value


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda s: s.put(("alice",), "k", {"when": object()}), InvalidInputError, "not JSON"),
        (lambda s: s.put(("alice",), "k", {"t": (1, 2)}), InvalidInputError, "round-trip"),
        (lambda s: s.put(("alice",), "k", {1: "x"}), InvalidInputError, "round-trip"),
        (lambda s: s.put(("alice",), "k", {"f": float("nan")}), InvalidInputError, "not JSON"),
        (lambda s: s.put(("alice",), "k", ["not", "a", "dict"]), InvalidInputError, "must be a dict"),
        (lambda s: s.put(("alice",), "k", {"a": 1}, index="text"), InvalidInputError, "index"),
        (lambda s: s.put((), "k", {"a": 1}), InvalidNamespaceError, "empty"),
        (lambda s: s.put(("a.b",), "k", {"a": 1}), InvalidNamespaceError, "period"),
        (lambda s: s.batch([PutOp(("al.ice",), "k", {"a": 1})]), InvalidNamespaceError, "'.'"),
        (lambda s: s.batch([PutOp(["alice"], "k", {"a": 1})]), InvalidNamespaceError, "tuple"),
        (lambda s: s.batch([GetOp(("alice", ""), "k")]), InvalidNamespaceError, "non-empty"),
        (lambda s: s.batch([GetOp(("alice",), 7)]), InvalidInputError, "key must be a str"),
        (lambda s: s.search(()), InvalidNamespaceError, "must name the user"),
        (lambda s: s.search(("alice",), filter={"n": {"$regex": "x"}}), InvalidInputError, "operators"),
        (lambda s: s.search(("alice",), limit=-1), InvalidInputError, "limit"),
        (lambda s: s.list_namespaces(), InvalidNamespaceError, "does not name a user"),
        (lambda s: s.list_namespaces(prefix=("*", "docs")), InvalidNamespaceError, "does not name a user"),
        (lambda s: s.put(("alice",), "k", {"a": 1}, ttl=5), NotImplementedError, "TTL"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(module_mos: MemOS, call: Callable[[MemOSStore], Any],
                                                 error: type[Exception], words: str) -> None:
    store = MemOSStore(module_mos, user_label=0)
    with pytest.raises(error, match=re.escape(words)):
        call(store)
    assert module_mos.list(user_id="alice") == []  # nothing was written


def test_a_bad_op_in_a_batch_writes_nothing(mos: MemOS) -> None:
    store = MemOSStore(mos, user_label=0)
    with pytest.raises(InvalidInputError):
        store.batch([PutOp(("alice",), "good", {"a": 1}), PutOp(("alice",), "bad", {"a": {1, 2}})])
    assert store.get(("alice",), "good") is None


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (PutOp(("alice", "notes"), "big", {"text": "word " * 250_000}), "1,000,000"),
        (PutOp(("alice", "x" * 300), "k", {"text": "hi"}), "256 characters"),
        (PutOp(("alice", "notes"), "deep", _nested(40)), "nested"),
    ],
    ids=["text over 1 MB", "namespace label over 256 characters", "value nested 40 deep"],
)
def test_a_put_over_the_cores_limits_fails_before_any_put_of_its_batch(
        mos: MemOS, bad: PutOp, words: str, mode: str) -> None:
    """The core's limits (text size, tag length, metadata depth) are checked for every put
    before the first one is stored: a batch used to store its first put, then fail."""
    store = MemOSStore(mos, user_label=0)
    batch = [PutOp(("alice", "notes"), "first", {"text": "the first item"}), bad]
    with pytest.raises(InvalidInputError, match=re.escape(words)):
        asyncio.run(store.abatch(batch)) if mode == "async" else store.batch(batch)
    assert store.get(("alice", "notes"), "first") is None
    assert mos.list(user_id="alice") == []


def test_constructor_checks_the_memory_type_and_agent(module_mos: MemOS) -> None:
    with pytest.raises(InvalidInputError, match="memory_type"):
        MemOSStore(module_mos, user_label=0, memory_type="gossip")
    with pytest.raises(InvalidInputError, match="agent_id"):
        MemOSStore(module_mos, user_label=0, agent_id="")


def test_constructor_refuses_other_objects() -> None:
    with pytest.raises(InvalidInputError, match="MemOS"):
        MemOSStore("./data")  # type: ignore[arg-type]


async def test_async_api(mos: MemOS) -> None:
    store = MemOSStore(mos, user_label=0)
    await store.aput(("alice", "a"), "k", {"text": "Alice likes chess"})
    assert (await store.aget(("alice", "a"), "k")).value == {"text": "Alice likes chess"}
    assert [i.key for i in await store.asearch(("alice",), query="board games")] == ["k"]
    assert await store.alist_namespaces(prefix=("alice",)) == [("alice", "a")]
    await store.adelete(("alice", "a"), "k")
    assert await store.aget(("alice", "a"), "k") is None


def test_items_survive_a_restart(make_mos: Callable[..., MemOS]) -> None:
    mos = make_mos("restart")
    MemOSStore(mos, user_label=0).put(("alice", "prefs"), "lang", {"text": "Alice prefers French"})
    mos.close()
    again = make_mos("restart")
    item = MemOSStore(again, user_label=0).get(("alice", "prefs"), "lang")
    assert item is not None and item.value == {"text": "Alice prefers French"}


# ---------------------------------------------------------------- whose item is it


def test_the_store_must_be_told_which_label_is_the_user(mos: MemOS) -> None:
    with pytest.raises(InvalidInputError, match="user_label=1 for \\('memories', user_id\\)"):
        MemOSStore(mos)
    with pytest.raises(InvalidInputError, match="exactly one"):
        MemOSStore(mos, user_label=0, user_id="alice")
    with pytest.raises(InvalidInputError, match="label position"):
        MemOSStore(mos, user_label="1")  # type: ignore[arg-type]


@pytest.mark.parametrize(("layout", "store_args"), [
    (lambda user: ("memories", user), {"user_label": 1}),          # LangGraph docs: ("memories", user_id)
    (lambda user: (user, "memories"), {"user_label": 0}),          # (user_id, "memories")
    (lambda user: ("app", user, "prefs"), {"user_label": 1}),
    (lambda user: ("memories", user), {"user_label": lambda ns: ns[1] if len(ns) > 1 else None}),
])
def test_common_namespace_layouts_keep_users_apart(mos: MemOS, layout: Any,
                                                   store_args: dict[str, Any]) -> None:
    store = MemOSStore(mos, **store_args)
    store.put(layout("alice"), "bike", {"text": "Alice rides a green Brompton"})
    store.put(layout("bob"), "bike", {"text": "Bob rides a red racer"})

    assert ["Alice rides" in c.text for c in mos.list(user_id="alice")] == [True]
    assert ["Bob rides" in c.text for c in mos.list(user_id="bob")] == [True]
    assert mos.list(user_id="memories") == [] and mos.list(user_id="app") == []
    hits = store.search(layout("alice"), query="which bike")
    assert [h.value["text"] for h in hits] == ["Alice rides a green Brompton"]
    assert store.get(layout("bob"), "bike").value == {"text": "Bob rides a red racer"}
    assert store.list_namespaces(prefix=layout("alice")) == [layout("alice")]


def test_a_namespace_without_the_user_is_a_clear_error(mos: MemOS) -> None:
    store = MemOSStore(mos, user_label=1)
    with pytest.raises(InvalidNamespaceError, match="no label at position 1"):
        store.put(("memories",), "k", {"text": "whose?"})
    with pytest.raises(InvalidNamespaceError, match="no label at position 1"):
        store.search(("memories",), query="anything")  # across users: refused
    with pytest.raises(InvalidNamespaceError, match="does not name a user"):
        store.list_namespaces(prefix=("memories", "*"))
    with pytest.raises(InvalidNamespaceError, match="counts from the end"):
        MemOSStore(mos, user_label=-1).search(("memories", "alice"), query="x")
    fn_store = MemOSStore(mos, user_label=lambda ns: None)
    with pytest.raises(InvalidNamespaceError, match="function returned no user id"):
        fn_store.put(("memories", "alice"), "k", {"text": "x"})
    assert mos.list(user_id="memories") == [] and mos.list(user_id="alice") == []


@pytest.mark.parametrize(("user_label", "raised"), [
    (lambda ns: ns[1], "IndexError"),                     # a prefix shorter than it reads
    (lambda ns: {"users": ns[-1]}[ns[0]], "KeyError"),    # a layout it does not know
])
def test_a_user_label_function_that_cannot_read_a_namespace_is_a_namespace_error(
        mos: MemOS, user_label: Callable[[tuple[str, ...]], str], raised: str) -> None:
    """Its IndexError / KeyError escaped from search, list_namespaces and put."""
    store = MemOSStore(mos, user_label=user_label)
    calls: list[Callable[[], Any]] = [
        lambda: store.search(("memories",), query="x"),
        lambda: store.list_namespaces(prefix=("memories",)),
        lambda: store.put(("memories",), "k", {"text": "whose?"}),
    ]
    for call in calls:
        with pytest.raises(InvalidNamespaceError,
                           match=rf"\('memories',\) does not name a user: the user_label function raised {raised}"):
            call()
    assert mos.list(user_id="memories") == []


def test_single_user_store_and_langgraph_index_config(mos: MemOS) -> None:
    store = MemOSStore(mos, user_id="alice",
                       index={"dims": 1536, "embed": "openai:text-embedding-3-small",
                              "fields": ["text"]})
    assert store.index_fields == ["text"] and store.index_config["dims"] == 1536
    store.put(("memories",), "1", {"text": "Alice likes oolong tea", "kind": "drink"})
    store.put(("notes", "work"), "2", {"text": "Alice works at the harbour"})
    assert {c.text for c in mos.list(user_id="alice")} == {
        "Alice likes oolong tea", "Alice works at the harbour"}  # only the indexed field
    assert [h.key for h in store.search(("memories",), query="tea")] == ["1"]
    with pytest.raises(InvalidInputError, match="disagree"):
        MemOSStore(mos, user_id="alice", index={"fields": ["a"]}, index_fields=["b"])
    with pytest.raises(InvalidInputError, match="dims"):
        MemOSStore(mos, user_id="alice", index={"dims": 0})
    with pytest.raises(InvalidInputError, match="unknown keys"):
        MemOSStore(mos, user_id="alice", index={"field": ["text"]})


# -- the MemOS closed under the store: its closed error, never the driver's ---------------

_AFTER_CLOSE: dict[str, Callable[[MemOSStore], object]] = {
    "get": lambda s: s.get(("alice", "notes"), "k"),
    "put": lambda s: s.put(("alice", "notes"), "k", {"text": "Tea."}),
    "search (listing)": lambda s: s.search(("alice",)),
    "aget": lambda s: asyncio.run(s.aget(("alice", "notes"), "k")),
    "aput": lambda s: asyncio.run(s.aput(("alice", "notes"), "k", {"text": "Tea."})),
    "asearch (listing)": lambda s: asyncio.run(s.asearch(("alice",))),
}


@pytest.mark.parametrize("call", list(_AFTER_CLOSE.values()), ids=list(_AFTER_CLOSE))
def test_calls_after_the_mos_closed_raise_its_closed_error(
        make_mos: Callable[..., MemOS], call: Callable[[MemOSStore], object]) -> None:
    mos = make_mos()
    store = MemOSStore(mos, user_label=0)
    store.put(("alice", "notes"), "k", {"text": "Coffee."})
    mos.close()
    with pytest.raises(InvalidInputError, match="This MemOS is closed"):
        call(store)


@pytest.mark.parametrize(("call", "vault_method"), [
    (lambda s: s.get(("alice", "notes"), "k"), "get_keyed"),
    (lambda s: asyncio.run(s.aget(("alice", "notes"), "k")), "get_keyed"),
    (lambda s: s.search(("alice",)), "list_keyed"),
    (lambda s: asyncio.run(s.asearch(("alice",))), "list_keyed"),
], ids=["get", "aget", "search (listing)", "asearch (listing)"])
def test_close_waits_for_a_read_in_flight(make_mos: Callable[..., MemOS],
                                          monkeypatch: pytest.MonkeyPatch,
                                          call: Callable[[MemOSStore], Any],
                                          vault_method: str) -> None:
    """A write holds the store's write lock, which close takes too; a keyed read must be
    waited for as a call."""
    mos = make_mos()
    store = MemOSStore(mos, user_label=0)
    store.put(("alice", "notes"), "k", {"text": "Alice drinks tea."})
    outcome = close_during(mos, monkeypatch, vault_method, lambda: call(store))
    assert "error" not in outcome, outcome
    found = outcome["result"]
    item = found[0] if isinstance(found, list) else found
    assert item is not None and item.value == {"text": "Alice drinks tea."}
