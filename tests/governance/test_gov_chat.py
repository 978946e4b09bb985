"""Answering with memory (``mos.chat`` on a tiny local model) obeys the same rules: B is not
answered from A's memories until A shares them, nor after A revokes; sensitive memories reach
the prompt redacted and never enter a KV cache.

The tiny model's words are noise; the trace says exactly which memories went into the prompt
and with which text, and that is what these tests check.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memos_core import MemOS, MemOSConfig
from memos_core.cube import utcnow
from memos_core.scheduler import SchedulerConfig

EAGER = SchedulerConfig.preset("eager", min_heat_to_promote=0.9, demote_below_heat=0.5)
QUESTION = "What does Alice keep in the garden shed?"


@pytest.fixture
def store(tmp_path: Path, tiny_model: Any) -> Iterator[MemOS]:
    mos = MemOS(tmp_path / "d", config=MemOSConfig(show_progress=False))
    mos.attach_model(tiny_model)
    yield mos
    mos.close()


def used(mos: MemOS, user: str) -> dict[str, str]:
    trace = mos.chat(QUESTION, user_id=user, max_new_tokens=2).trace
    return {m.id: m.text for m in trace.memories}


@pytest.mark.parametrize("kind", ["memory", "namespace"])
def test_b_is_answered_from_a_only_while_shared(store: MemOS, kind: str) -> None:
    shed = store.add("Alice keeps a red kayak in the garden shed.", user_id="alice")
    store.add("Bob keeps bikes in his garage.", user_id="bob")
    share = (lambda: store.share(shed.id, with_user_id="bob", user_id="alice")) if kind == "memory" \
        else (lambda: store.share_namespace(with_user_id="bob", user_id="alice"))
    revoke = (lambda: store.revoke(shed.id, with_user_id="bob", user_id="alice")) if kind == "memory" \
        else (lambda: store.revoke_namespace(with_user_id="bob", user_id="alice"))
    seen = [shed.id in used(store, "bob")]
    share()
    seen.append(shed.id in used(store, "bob"))
    revoke()
    seen.append(shed.id in used(store, "bob"))
    assert seen == [False, True, False]


def test_sensitive_memories_reach_prompts_redacted_and_never_reach_kv(store: MemOS) -> None:
    pii = store.add("Alice's garden shed code is 8812.", user_id="alice", sensitivity=["pii"])
    secret = store.add("Alice hides the shed key under the gnome.", user_id="alice",
                       sensitivity=["secret"])
    plain = store.add("Alice keeps seed trays in the garden shed.", user_id="alice")
    store.vault.record_usage([pii.id, secret.id, plain.id], utcnow(), store.config.heat_half_life_s)
    store.schedule(config=EAGER)

    trace = store.chat(QUESTION, user_id="alice", max_new_tokens=2).trace

    texts = {m.id: (m.text, m.tier.value) for m in trace.memories}
    assert texts[secret.id] == ("[redacted: secret]", "plaintext")
    assert plain.id in trace.from_activation and texts[plain.id][0] == plain.text
    for hidden in (pii, secret):  # redacted in search, so never in a KV cache either
        assert hidden.id not in trace.from_activation
    assert texts[pii.id] == ("[redacted: pii]", "plaintext")
