"""Governance through the LlamaIndex components: user B cannot read, search, update, forget or
be answered from user A's memories through ``MemOSRetriever``, ``MemOSMemoryBlock``,
``MemOSMemory`` or the memory tools; can after A shares (a memory or the namespace); cannot
after A revokes. Sensitive memories reach the prompt redacted. The rules live in the core;
these tests show every component inherits them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from llama_index.core.llms import ChatMessage
from memos_core import AccessDeniedError, MemCube, MemOS

from llama_index.memory.memos import MemOSMemory, MemOSMemoryBlock, MemOSRetriever, memos_tools

SEEN, UNSEEN, DENIED, DONE = "seen", "unseen", "denied", "done"
QUERY = "Where does Alice keep the kayak?"


def _prompt(messages: list[ChatMessage]) -> str:
    return "\n".join(m.content or "" for m in messages)


def _outcome(call: Callable[[], Any]) -> str:
    try:
        call()
    except AccessDeniedError:
        return DENIED
    return DONE


def _probes(mos: MemOS, mem: MemCube, bob: str) -> dict[str, Callable[[], str]]:
    tools = {t.metadata.name: t for t in memos_tools(mos, user_id=bob)}
    block = MemOSMemoryBlock(mos=mos, user_id=bob, k=10)

    def seen(found: bool) -> str:
        return SEEN if found else UNSEEN

    def memory_prompt() -> str:
        memory = MemOSMemory.from_defaults(mos=mos, user_id=bob, k=10)
        return _prompt(memory.get(input=QUERY))

    user_turn = [ChatMessage(role="user", content=QUERY)]
    return {
        "retriever": lambda: seen(mem.id in {n.node.node_id for n in MemOSRetriever(mos, user_id=bob, k=10).retrieve(QUERY)}),
        "block": lambda: seen(mem.text in asyncio.run(block.aget(messages=user_turn))),
        "memory": lambda: seen(mem.text in memory_prompt()),
        "search tool": lambda: seen(mem.id in tools["search_memories"].call(query=QUERY, k=10).content),
        "update tool": lambda: _outcome(lambda: tools["update_memory"].call(memory_id=mem.id, text="Bob edited the kayak note")),
        "forget tool": lambda: _outcome(lambda: tools["forget_memory"].call(memory_id=mem.id)),
    }


#: probe -> outcome per phase (before any share, read share, write share, revoked)
EXPECTED = {
    "retriever": (UNSEEN, SEEN, SEEN, UNSEEN),
    "block": (UNSEEN, SEEN, SEEN, UNSEEN),
    "memory": (UNSEEN, SEEN, SEEN, UNSEEN),
    "search tool": (UNSEEN, SEEN, SEEN, UNSEEN),
    "update tool": (DENIED, DENIED, DONE, DENIED),
    "forget tool": (DENIED, DENIED, DENIED, DENIED),  # owner only
}


@pytest.mark.parametrize("kind", ["memory", "namespace"])
def test_b_cannot_reach_a_through_any_component_until_shared(mos: MemOS, kind: str) -> None:
    mem = mos.add("Alice keeps the kayak in the boathouse by the lake.", user_id="alice")
    mos.add("Bob keeps a canoe in his garage.", user_id="bob")
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


def test_sensitive_memories_reach_the_prompt_redacted(mos: MemOS) -> None:
    mos.add("Alice's kayak lock code is 3390.", user_id="alice", sensitivity=["secret"])
    memory = MemOSMemory.from_defaults(mos=mos, user_id="alice")
    prompt = _prompt(memory.get(input=QUERY))
    assert "3390" not in prompt and "[redacted: secret]" in prompt
    node = MemOSRetriever(mos, user_id="alice").retrieve(QUERY)[0]
    assert node.node.get_content() == "[redacted: secret]"
