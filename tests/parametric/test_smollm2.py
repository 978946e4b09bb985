"""End to end on SmolLM2-135M: five invented facts, a short training, the gate, chat, forget.

With the default settings; the test asserts that the gate's decision follows the measured
numbers and that every path after it (active or rejected) is consistent.
"""

from __future__ import annotations

import pytest

from memos_core.engine import engine_for
from memos_core.tiers.parametric import ParametricConfig, gate

FACTS = (
    "Zorvin's cat is named Pastel.",
    "Mirela's favourite colour is teal.",
    "Quenby's hometown is Tromso.",
    "Dastra's brother is called Olek.",
    "Fenwick's car is a Volvo.",
)
DEFAULT = ParametricConfig()


@pytest.fixture(scope="module")
def smol():  # noqa: ANN201 - LocalModel
    from memos_core.runtime import LocalModel

    return LocalModel.default()


@pytest.mark.slow
def test_smollm2_consolidation_end_to_end(make_mos, smol) -> None:
    mos = make_mos("smol")
    mos.attach_model(smol)
    ids = [mos.add(text, user_id="ada", type="fact").id for text in FACTS]
    result = mos.consolidate(user_id="ada", memory_ids=ids, progress=False)
    manifest, ev = result.manifest, result.manifest.evaluation
    assert ev.recall_total == len(FACTS) and ev.controls >= DEFAULT.min_controls
    assert len(manifest.training.losses) == DEFAULT.steps_for(len(FACTS))
    assert manifest.training.losses[-1] < manifest.training.losses[0]  # it does learn
    expected = gate(ev.recall, ev.control_regressions, DEFAULT, controls=ev.controls,
                    context_regressions=ev.context_regressions, context_right=ev.context_right)
    assert manifest.decision == expected and result.activated is expected.passed
    tier = engine_for(mos).parametric
    assert (tier.store.active("ada") == manifest.version) is expected.passed
    assert tier.store.has_weights(manifest.version) is expected.passed

    answer = mos.chat("What is Zorvin's cat named?", user_id="ada", max_new_tokens=12)
    if expected.passed:
        assert answer.trace.adapter_version is not None
        assert set(answer.trace.from_parametric) <= ev.answered_in_chat() <= set(ids)
        receipt = mos.forget(ids[0], user_id="ada")
        assert [f.id for f in receipt.derived if f.kind == "adapter"] == [manifest.version]
        assert tier.store.active("ada") is None and tier.store.queue()
    else:
        assert answer.trace.adapter_version is None and not answer.trace.from_parametric
