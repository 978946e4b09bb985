"""Adapter side files damaged or edited in ways that still parse: ``state.json`` naming
another owner's adapter, a manifest whose fields were changed in place, an
``adapter_config.json`` with another ``lora_alpha``, a base model other than the one trained
on. Each was served silently; each is now refused (see docs/parametric.md, "Damaged files")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from transformers import LlamaConfig

from memos_core import MemOS
from memos_core.engine import engine_for
from memos_core.errors import CorruptDataError
from memos_core.runtime import LocalModel, default_tokenizer
from memos_core.tiers.parametric import ParametricConfig

OPEN = ParametricConfig.preset("test", min_recall=0.0, max_control_regressions=1000)
QUESTION = "What is Zorvin's cat named?"


def edit_json(path: Path, change: Any) -> None:
    """Rewrite the JSON file ``path`` as ``change(data)`` leaves it (not re-sealed)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")


@pytest.fixture
def trained(store: tuple[MemOS, list[str]]) -> tuple[MemOS, list[str], Path]:
    """ada's three facts trained into the active adapter v1; its directory."""
    mos, ids = store
    assert mos.consolidate(user_id="ada", memory_ids=ids, config=OPEN,
                           progress=False).activated
    return mos, ids, engine_for(mos).parametric.store.path("v1")


def test_state_naming_another_owners_adapter_never_serves_it(
        trained: tuple[MemOS, list[str], Path]) -> None:
    """``state.json`` edited from ``{"ada": "v1"}`` to ``{"bob": "v1"}`` made bob's chats
    run on ada's adapter, trained on her facts. Now bob's chat refuses it, naming
    state.json; bob's deactivate clears only the entry (ada's adapter is untouched), and
    bob's rollback never picks another owner's adapter from a damaged history."""
    mos, ids, where = trained
    tier = engine_for(mos).parametric
    mos.add("Bob likes chess.", user_id="bob", type="fact")
    state = tier.store.root / "state.json"
    edit_json(state, lambda s: s.update(active={"bob": "v1"}, history={"bob": ["v1"]}))
    with pytest.raises(CorruptDataError, match=r"state\.json names adapter v1 as 'bob'"):
        mos.chat("What does Bob like?", user_id="bob", max_new_tokens=2)
    with pytest.raises(CorruptDataError, match="deactivate_adapter"):
        tier.model_for("bob")
    assert tier.retire_stale("bob", now=tier.store.manifest("v1").created_at) is None
    before = (where / "manifest.json").read_text(encoding="utf-8")
    assert mos.deactivate_adapter(user_id="bob") == "v1"
    assert (where / "manifest.json").read_text(encoding="utf-8") == before  # ada's: untouched
    answer = mos.chat("What does Bob like?", user_id="bob", max_new_tokens=2)
    assert answer.trace.adapter_version is None
    # ada's adapter, ready, in bob's history: his rollback does not activate it
    mos.activate_adapter("v1", user_id="ada")
    mos.deactivate_adapter(user_id="ada")
    edit_json(state, lambda s: s.update(active={}, history={"bob": ["v1"]}))
    assert mos.rollback_adapter(user_id="bob") is None
    assert tier.store.active_all() == {} and tier.store.manifest("v1").status == "ready"
    # ada's adapter, named for both: retiring it clears bob's entry too
    mos.activate_adapter("v1", user_id="ada")
    edit_json(state, lambda s: s["active"].update(bob="v1"))
    mos.deactivate_adapter(user_id="bob")
    assert tier.store.manifest("v1").status == "active" and tier.store.active("ada") == "v1"
    edit_json(state, lambda s: s["active"].update(bob="v1"))
    mos.retire_adapter("v1", user_id="ada")
    assert tier.store.active_all() == {}


def _swap_memory(data: dict[str, Any], other: str) -> None:
    data["memories"][0]["id"] = other


@pytest.mark.parametrize("damage", ["memory id", "owner", "base fingerprint", "leave_out_held",
                                    "seal removed"])
def test_a_manifest_edited_in_place_is_damaged_and_a_forget_deletes_it(
        trained: tuple[MemOS, list[str], Path], damage: str) -> None:
    """A manifest had no checksum of its own: a trained memory's id swapped for another of
    the owner's made a forget of that memory miss the adapter (it stayed active, answering
    with the forgotten fact). Now every field is sealed (``manifest_sha256``): an edited
    manifest is a CorruptDataError, not served, and any forget deletes it."""
    mos, ids, where = trained
    tier = engine_for(mos).parametric
    other = mos.add("Ada's PIN is 9931.", user_id="ada", type="fact").id
    change = {
        "memory id": lambda d: _swap_memory(d, other),
        "owner": lambda d: d.update(owner="bob"),
        "base fingerprint": lambda d: d.update(base_fingerprint="0" * 64),
        "leave_out_held": lambda d: d["settings"].update(leave_out_held=True),
        "seal removed": lambda d: d.pop("manifest_sha256"),
    }[damage]
    edit_json(where / "manifest.json", change)
    with pytest.raises(CorruptDataError, match="manifest_sha256"):
        tier.store.manifest("v1")
    with pytest.raises(CorruptDataError, match=r"not served: mos\.deactivate_adapter"):
        mos.chat(QUESTION, user_id="ada", max_new_tokens=2)
    receipt = mos.forget(ids[0], user_id="ada")
    assert [(f.kind, f.id, f.action) for f in receipt.derived] == [("adapter", "v1", "deleted")]
    assert not where.exists() and tier.store.active("ada") is None
    assert mos.chat(QUESTION, user_id="ada", max_new_tokens=2).trace.adapter_version is None


def test_manifests_written_before_the_seal_are_sealed_once_at_open(
        make_mos, tiny: LocalModel) -> None:
    """An adapter saved before manifests carried a seal (and its config's SHA-256) keeps
    serving: opening the store seals its manifest as found and records the files' hashes,
    and marks the store sealed, after which a manifest without a seal is damaged."""
    mos = make_mos("old")
    mos.attach_model(tiny)
    ids = [mos.add("Zorvin's cat is named Pastel.", user_id="ada", type="fact").id]
    mos.consolidate(user_id="ada", memory_ids=ids, config=OPEN, progress=False)
    tier = engine_for(mos).parametric
    weights, config = tier.store.weights_sha256("v1"), tier.store.config_sha256("v1")
    mos.close()
    adapters = tier.store.root
    for name in ("manifest_sha256", "config_sha256", "weights_sha256"):
        edit_json(adapters / "v1" / "manifest.json", lambda d, name=name: d.pop(name))
    edit_json(adapters / "state.json", lambda s: s.pop("sealed"))
    again = make_mos("old")
    again.attach_model(tiny)
    store = engine_for(again).parametric.store
    manifest = store.manifest("v1")
    assert (manifest.weights_sha256, manifest.config_sha256) == (weights, config)
    assert manifest.manifest_sha256 is not None and store.sealed()
    answer = again.chat(QUESTION, user_id="ada", max_new_tokens=2)
    assert answer.trace.adapter_version == f"v1@{weights[:16]}"
    edit_json(adapters / "v1" / "manifest.json", lambda d: d.pop("manifest_sha256"))
    with pytest.raises(CorruptDataError, match="no manifest_sha256"):
        store.manifest("v1")


def test_an_edited_adapter_config_is_damage(trained: tuple[MemOS, list[str], Path]) -> None:
    """``lora_alpha`` 4.0 -> 9.0 in adapter_config.json was merged silently, under the same
    tag (2.25 times the trained delta). The manifest records the config's SHA-256 and each
    load checks it, as it checks the weights'."""
    mos, ids, where = trained
    config = where / "adapter_config.json"
    alpha = json.loads(config.read_text(encoding="utf-8"))["lora_alpha"]
    edit_json(config, lambda c: c.update(lora_alpha=alpha * 2.25))
    with pytest.raises(CorruptDataError, match=r"adapter v1 of 'ada' .*adapter_config\.json"):
        mos.chat(QUESTION, user_id="ada", max_new_tokens=2)
    mos.retire_adapter("v1", user_id="ada")
    assert mos.chat(QUESTION, user_id="ada", max_new_tokens=2).trace.adapter_version is None


def test_an_adapter_is_not_served_on_another_base_model(
        trained: tuple[MemOS, list[str], Path]) -> None:
    """The manifest's base fingerprint was checked at activation only: a store given another
    base model merged the adapter into it (same q/v shapes), even reusing the merged model
    of the first. Now chat runs on the new base model, without the adapter."""
    mos, ids, _ = trained
    assert mos.chat(QUESTION, user_id="ada", max_new_tokens=2).trace.adapter_version
    other = LocalModel.from_config(LlamaConfig(
        vocab_size=49152, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    ), default_tokenizer(), seed=1)
    mos.attach_model(other)
    assert engine_for(mos).parametric.model_for("ada") is None
    assert mos.chat(QUESTION, user_id="ada", max_new_tokens=2).trace.adapter_version is None
