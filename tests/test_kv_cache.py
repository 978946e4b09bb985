"""The activation (KV) tier: exactness of cached prefixes, immutability, the chat-template
boundary, safetensors persistence, invalidation and the budget.

Fast tests run a tiny random Llama with SmolLM2's tokenizer (so its chat template); tests
marked slow repeat the exactness checks on SmolLM2-135M-Instruct."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from memos_core.errors import InvalidInputError
from memos_core.runtime import LocalModel, PrefixCache, default_tokenizer
from memos_core.runtime.generation import cache_kwargs
from memos_core.runtime.model import tiny_config
from memos_core.tiers.activation import (
    KVBlock,
    KVBlockInfo,
    KVBudget,
    KVBudgetError,
    KVCacheFormatError,
    KVCacheTier,
    MemoryRef,
    block_messages,
    block_path,
    load_block,
    read_header,
    save_block,
)

TOLERANCE = 1e-4
MEMORIES = [
    ("m1", 1, "Alice is vegetarian."),
    ("m2", 3, "Alice lives in Lyon and works as a nurse."),
    ("m3", 1, "Alice's sister Bea plays the cello."),
]
QUERIES = [
    [{"role": "user", "content": "Where does Alice live?"}],
    [{"role": "user", "content": "Hi"}],
    [
        {"role": "user", "content": "What should I cook for Alice?"},
        {"role": "assistant", "content": "Something without meat."},
        {"role": "user", "content": "And a dessert?\nKeep it short."},
    ],
]




@pytest.fixture(scope="module")
def tiny() -> LocalModel:
    return LocalModel.from_config(tiny_config(), default_tokenizer(), seed=0)


@pytest.fixture(scope="module")
def tiny_prefix(tiny: LocalModel) -> PrefixCache:
    return tiny.build_prefix(block_messages([MemoryRef(id=i, version=v, text=t) for i, v, t in MEMORIES]))


def snapshot(prefix: PrefixCache) -> list[tuple[int, int, torch.Tensor, torch.Tensor]]:
    return [(k.data_ptr(), k.shape[2], k.clone(), v.clone()) for k, v in prefix.layers()]


def assert_unchanged(prefix: PrefixCache, before: list[tuple[int, int, torch.Tensor, torch.Tensor]]) -> None:
    for (keys, values), (ptr, length, k0, v0) in zip(prefix.layers(), before):
        assert keys.data_ptr() == ptr and keys.shape[2] == length == prefix.num_tokens
        assert torch.equal(keys, k0) and torch.equal(values, v0)


def check_exactness(model: LocalModel, prefix: PrefixCache, query: list[dict[str, str]], new: int) -> float:
    """Cached-prefix logits vs full recomputation, and greedy tokens; returns max abs diff."""
    before = snapshot(prefix)
    cached = model.prefill_logits(prefix, query)  # (q, vocab)
    full = model.prefill_logits(prefix, query, recompute=True)  # (q, vocab)
    assert cached.shape == full.shape
    diff = float((cached - full).abs().max())
    assert diff <= TOLERANCE
    with_kv = model.generate(prefix, query, max_new_tokens=new)
    without = model.generate(None, prefix.messages + query, max_new_tokens=new)
    assert with_kv.token_ids == without.token_ids and with_kv.text == without.text
    assert with_kv.trace.used_kv_prefix and with_kv.trace.prefix_tokens == prefix.num_tokens
    assert with_kv.trace.prefill_tokens + prefix.num_tokens == without.trace.prefill_tokens
    assert_unchanged(prefix, before)  # generation never grew or wrote the stored cache
    return diff


# ---------------------------------------------------------------- exactness (tiny model)


@pytest.mark.parametrize("query", QUERIES, ids=["question", "short", "multi-turn"])
def test_cached_prefix_equals_recomputation_tiny(
    tiny: LocalModel, tiny_prefix: PrefixCache, query: list[dict[str, str]]
) -> None:
    check_exactness(tiny, tiny_prefix, query, new=8)


@pytest.mark.parametrize("query", QUERIES, ids=["question", "short", "multi-turn"])
def test_template_split_prefix_plus_query_is_the_full_prompt(
    tiny: LocalModel, tiny_prefix: PrefixCache, query: list[dict[str, str]]
) -> None:
    prefix_ids, query_ids = tiny.prompt_ids(tiny_prefix, query)
    full = tiny.encode(tiny.render(tiny_prefix.messages + query, add_generation_prompt=True))
    assert list(tiny_prefix.token_ids) == prefix_ids and prefix_ids + query_ids == full
    assert query_ids  # the query always adds tokens (at least the generation prompt)


def test_streaming_with_prefix_matches_and_keeps_cache(tiny: LocalModel, tiny_prefix: PrefixCache) -> None:
    before = snapshot(tiny_prefix)
    stream = tiny.generate(tiny_prefix, QUERIES[0], max_new_tokens=10, stream=True)
    text = "".join(stream)
    assert text == tiny.generate(None, tiny_prefix.messages + QUERIES[0], max_new_tokens=10).text
    assert stream.trace.used_kv_prefix
    assert_unchanged(tiny_prefix, before)


def test_forks_are_independent(tiny: LocalModel, tiny_prefix: PrefixCache) -> None:
    a, b = tiny_prefix.fork(), tiny_prefix.fork()
    ids = torch.tensor([tiny.encode("hello there")])  # (1, q)
    with torch.inference_mode():
        tiny.model(input_ids=ids, **cache_kwargs(tiny.model, a), use_cache=True)
    assert a.get_seq_length() == tiny_prefix.num_tokens + ids.shape[1]
    assert b.get_seq_length() == tiny_prefix.num_tokens


# ---------------------------------------------------------------- DynamicCache semantics pinned


def test_installed_dynamic_cache_semantics(tiny: LocalModel, tiny_prefix: PrefixCache) -> None:
    """What PrefixCache.fork relies on, checked against the installed transformers."""
    fork = tiny_prefix.fork()
    n = tiny_prefix.num_tokens
    stored_keys = tiny_prefix.layers()[0][0]
    # update() appends by rebinding (torch.cat), leaving the shared tensor as it was.
    k_new = torch.zeros(1, 2, 3, 16)  # (1, kv_heads, 3, head_dim)
    fork.layers[0].update(k_new, k_new)
    assert fork.layers[0].keys is not stored_keys and stored_keys.shape[2] == n
    # crop() takes a negative count of tokens to remove (a positive length raises from
    # transformers 5.20 on; memos_core never calls crop, so that is not checked here)
    fork.crop(-3)
    assert fork.layers[0].keys.shape[2] == n


# ---------------------------------------------------------------- persistence


def make_block(model: LocalModel, memories: list[tuple[str, int, str]] = MEMORIES) -> KVBlock:
    tier = KVCacheTier(model)
    return tier.get_or_build(memories)


def test_save_and_load_round_trip(tiny: LocalModel, tmp_path: Path) -> None:
    block = make_block(tiny)
    path = save_block(block, tmp_path)
    assert path.read_bytes()[8:9] == b"{"  # a safetensors header, not a pickle
    header = read_header(path)
    assert header["fingerprint"] == tiny.fingerprint.digest
    assert header["token_count"] == str(block.num_tokens)
    loaded = load_block(path, fingerprint_digest=tiny.fingerprint.digest, memories=block.memories)
    assert loaded is not None and loaded.memories == (("m1", 1), ("m2", 3), ("m3", 1))
    assert loaded.prefix.token_ids == block.prefix.token_ids
    assert loaded.prefix.messages == block.prefix.messages
    for (k0, v0), (k1, v1) in zip(block.prefix.layers(), loaded.prefix.layers()):
        assert torch.equal(k0, k1) and torch.equal(v0, v1)
    check_exactness(tiny, loaded.prefix, QUERIES[0], new=4)


@pytest.mark.parametrize(
    ("fingerprint", "memories"),
    [
        ("0" * 64, None),  # built by another model
        (None, [("m1", 1), ("m2", 4), ("m3", 1)]),  # m2 has moved on to version 4
        (None, [("m1", 1), ("m2", 3)]),  # different membership
    ],
    ids=["fingerprint", "version", "membership"],
)
def test_stale_cache_is_never_used(
    tiny: LocalModel, tmp_path: Path, fingerprint: str | None, memories: Any
) -> None:
    path = save_block(make_block(tiny), tmp_path)
    digest = fingerprint or tiny.fingerprint.digest
    assert load_block(path, fingerprint_digest=digest, memories=memories) is None


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing"])
def test_unreadable_cache_raises_clearly(tiny: LocalModel, tmp_path: Path, damage: str) -> None:
    path = save_block(make_block(tiny), tmp_path)
    if damage == "garbage":
        path.write_bytes(b"\x80\x04not a safetensors file")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.unlink()
    error = FileNotFoundError if damage == "missing" else KVCacheFormatError
    with pytest.raises(error):
        load_block(path, fingerprint_digest=tiny.fingerprint.digest)


# ---------------------------------------------------------------- the tier


class CountingModel:
    """Delegates to a LocalModel and counts prefix builds."""

    def __init__(self, model: LocalModel) -> None:
        self._model = model
        self.builds = 0

    def build_prefix(self, messages: Any) -> PrefixCache:
        self.builds += 1
        return self._model.build_prefix(messages)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def mem(i: int, version: int = 1) -> tuple[str, int, str]:
    return (f"id{i}", version, f"Memory number {i}: the user owns {i} green bicycles.")


def test_block_is_built_once_and_reused(tiny: LocalModel) -> None:
    counting = CountingModel(tiny)
    tier = KVCacheTier(counting)  # type: ignore[arg-type]
    first = tier.get_or_build([mem(1), mem(2)])
    assert tier.get_or_build([mem(1), mem(2)]) is first and counting.builds == 1
    assert tier.get([mem(1), mem(2)]) is first
    assert tier.get([mem(2), mem(1)]) is None  # order is part of the block
    assert tier.get([mem(1, version=2), mem(2)]) is None  # so is every version
    assert tier.messages_for([mem(1), mem(2)]) == first.prefix.messages
    assert len(tier) == 1 and tier.usage() == (first.num_tokens, first.nbytes)


def test_get_or_build_says_when_it_built(tiny: LocalModel, tmp_path: Path) -> None:
    """``on_build`` hears of a build, never of a kept block: a caller learns from the call
    itself that it wrote a block, also one dropped between its look and the call."""
    tier = KVCacheTier(tiny, directory=tmp_path)
    built: list[KVBlock] = []
    first = tier.get_or_build([mem(1)], on_build=built.append)
    assert built == [first]
    assert tier.get_or_build([mem(1)], on_build=built.append) is first and built == [first]
    assert first.block_id in tier
    tier.invalidate("id1")  # what a forget does between the caller's look and its call
    again = tier.get_or_build([mem(1)], on_build=built.append)
    assert built == [first, again] and block_path(tmp_path, again.block_id).is_file()


def test_invalidate_drops_every_block_with_the_memory(tiny: LocalModel, tmp_path: Path) -> None:
    tier = KVCacheTier(tiny, directory=tmp_path)
    a = tier.get_or_build([mem(1), mem(2)])
    b = tier.get_or_build([mem(2), mem(3)])
    c = tier.get_or_build([mem(3)])
    assert sorted(tier.invalidate("id2")) == sorted([a.block_id, b.block_id])
    assert [info.block_id for info in tier.blocks()] == [c.block_id]
    assert sorted(p.stem for p in tmp_path.glob("*.safetensors")) == [c.block_id]
    assert tier.invalidate("id2") == [] and tier.invalidate("never-seen") == []


def test_budget_evicts_least_recently_used(tiny: LocalModel) -> None:
    one = KVCacheTier(tiny).get_or_build([mem(1)]).num_tokens
    tier = KVCacheTier(tiny, budget=KVBudget(max_tokens=2 * one + 2))
    a = tier.get_or_build([mem(1)])
    b = tier.get_or_build([mem(2)])
    tier.get_or_build([mem(1)])  # touch a: b is now least recently used
    c = tier.get_or_build([mem(3)])
    assert [i.block_id for i in tier.blocks()] == [a.block_id, c.block_id]
    assert b.block_id not in tier
    assert tier.usage()[0] <= 2 * one + 2


def test_budget_takes_the_callers_eviction_order_first(tiny: LocalModel) -> None:
    one = KVCacheTier(tiny).get_or_build([mem(1)]).num_tokens
    tier = KVCacheTier(tiny, budget=KVBudget(max_tokens=2 * one + 2))
    a = tier.get_or_build([mem(1)])
    b = tier.get_or_build([mem(2)])
    evicted: list[KVBlockInfo] = []
    tier.get_or_build([mem(3)], evict_first=["unknown", b.block_id], on_evict=evicted.append)
    assert a.block_id in tier and b.block_id not in tier
    # what was evicted, with its memories: the caller audits it for their owner
    assert [(i.block_id, i.memories) for i in evicted] == [(b.block_id, (("id2", 1),))]
    tier.get_or_build([mem(3)], on_evict=evicted.append)  # kept: nothing evicted
    assert len(evicted) == 1
    assert tier.evict_to_budget(order=[a.block_id], budget=KVBudget(max_tokens=one + 2)) == [a.block_id]


def test_byte_budget_and_oversized_block(tiny: LocalModel) -> None:
    tier = KVCacheTier(tiny, budget=KVBudget(max_tokens=None, max_bytes=tiny.kv_bytes_per_token * 10))
    with pytest.raises(KVBudgetError, match="more than the whole KV budget"):
        tier.get_or_build([mem(1)])
    assert len(tier) == 0
    with pytest.raises(InvalidInputError, match="at least one memory"):
        tier.get_or_build([])
    with pytest.raises(InvalidInputError, match="appears twice"):
        tier.get_or_build([mem(1), mem(1)])


def test_tier_reopens_blocks_from_disk_lazily(tiny: LocalModel, tmp_path: Path) -> None:
    first = KVCacheTier(tiny, directory=tmp_path)
    block = first.get_or_build([mem(1), mem(2)])
    counting = CountingModel(tiny)
    reopened = KVCacheTier(counting, directory=tmp_path)  # type: ignore[arg-type]
    assert [(i.block_id, i.resident) for i in reopened.blocks()] == [(block.block_id, False)]
    again = reopened.get_or_build([mem(1), mem(2)])
    assert counting.builds == 0 and again.prefix.token_ids == block.prefix.token_ids
    assert reopened.blocks()[0].resident
    other = LocalModel.from_config(tiny_config(), tiny.tokenizer, seed=3)
    assert len(KVCacheTier(other, directory=tmp_path)) == 0  # another model's files are ignored
    assert (tmp_path / f"{block.block_id}.safetensors").exists()  # ... and left alone


def test_corrupt_file_on_disk_is_rebuilt_not_used(tiny: LocalModel, tmp_path: Path) -> None:
    block = KVCacheTier(tiny, directory=tmp_path).get_or_build([mem(1)])
    path = tmp_path / f"{block.block_id}.safetensors"
    counting = CountingModel(tiny)
    reopened = KVCacheTier(counting, directory=tmp_path)  # type: ignore[arg-type]
    path.write_bytes(path.read_bytes()[:200])  # damaged after the tier scanned it
    rebuilt = reopened.get_or_build([mem(1)])
    assert counting.builds == 1 and rebuilt.prefix.token_ids == block.prefix.token_ids


def scramble_tensor_bytes(path: Path) -> None:
    """Overwrite bytes in the middle of a KV file's tensor data, header and size unchanged:
    still a readable safetensors file, with wrong numbers in it (bit rot)."""
    raw = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(raw[:8], "little")
    middle = (start + len(raw)) // 2
    raw[middle:middle + 64] = bytes(255 - b for b in raw[middle:middle + 64])
    path.write_bytes(bytes(raw))


def test_scrambled_tensors_fail_their_checksum(tiny: LocalModel, tmp_path: Path) -> None:
    block = make_block(tiny)
    path = save_block(block, tmp_path)
    assert read_header(path)["checksum"].startswith("sha256:")
    scramble_tensor_bytes(path)
    read_header(path)  # the header still reads
    with pytest.raises(KVCacheFormatError, match="checksum"):
        load_block(path, fingerprint_digest=tiny.fingerprint.digest, memories=block.memories)


@pytest.mark.parametrize("field", ["checksum", "metadata_checksum"])
def test_a_file_without_a_checksum_is_stale(tiny: LocalModel, tmp_path: Path, field: str) -> None:
    """A file written before KV files carried a checksum (of the tensors, later also of the
    metadata) is rebuilt, never trusted."""
    from safetensors.torch import load_file, save_file

    path = save_block(make_block(tiny), tmp_path)
    header = read_header(path)
    del header[field]
    save_file(load_file(str(path)), str(path), metadata=header)
    assert load_block(path, fingerprint_digest=tiny.fingerprint.digest) is None


def damage_header(path: Path, old: bytes, new: bytes) -> None:
    """Replace ``old`` by ``new`` (same length) once in a KV file's header: it still parses."""
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = raw[8:8 + size]
    assert len(old) == len(new) and old in header
    path.write_bytes(raw[:8] + header.replace(old, new, 1) + raw[8 + size:])


HEADER_DAMAGE = {  # what a flipped byte or two in a header can do and still be JSON
    "dtype": (b'"dtype":"F32"', b'"dtype":"F16"', "does not match its data offsets"),
    "shape": (b'"shape":[1,', b'"shape":[2,', "does not match its data offsets"),
    "offsets": (b'"data_offsets":[0,', b'"data_offsets":[8,', "does not match its data"),
    "text": (b"vegetarian", b"carnivores", "metadata"),
}


@pytest.mark.parametrize("damage", sorted(HEADER_DAMAGE))
def test_a_damaged_header_that_still_parses_raises_clearly(tiny: LocalModel, tmp_path: Path,
                                                           damage: str) -> None:
    """A header damaged so that it is still valid JSON: a tensor's dtype, shape or offsets
    no longer agree with its bytes (safetensors would raise its own ``SafetensorError``, a
    plain ``Exception``), or a memory's text in ``messages`` changed (not covered by the
    tensors' checksum): ``KVCacheFormatError``, never a block with the damaged text."""
    old, new, message = HEADER_DAMAGE[damage]
    block = make_block(tiny)
    path = save_block(block, tmp_path)
    damage_header(path, old, new)
    with pytest.raises(KVCacheFormatError, match=message):
        load_block(path, fingerprint_digest=tiny.fingerprint.digest, memories=block.memories)
    if damage != "text":  # the layout is checked with the header alone (no torch)
        with pytest.raises(KVCacheFormatError, match=message):
            read_header(path)


def test_a_scrambled_file_on_disk_is_dropped_and_rebuilt(tiny: LocalModel, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    block = KVCacheTier(tiny, directory=tmp_path).get_or_build([mem(1)])
    path = tmp_path / f"{block.block_id}.safetensors"
    scramble_tensor_bytes(path)
    counting = CountingModel(tiny)
    reopened = KVCacheTier(counting, directory=tmp_path)  # type: ignore[arg-type]
    with caplog.at_level("WARNING", logger="memos_core.tiers.activation.tier"):
        rebuilt = reopened.get_or_build([mem(1)])
    assert counting.builds == 1 and "checksum" in caplog.text
    assert rebuilt.prefix.token_ids == block.prefix.token_ids
    again = load_block(path, fingerprint_digest=tiny.fingerprint.digest, memories=block.memories)
    assert again is not None  # the file was written again, whole
    for (k0, v0), (k1, v1) in zip(block.prefix.layers(), again.prefix.layers()):
        assert torch.equal(k0, k1) and torch.equal(v0, v1)


@pytest.mark.parametrize("damage", ["dtype", "text"])
def test_a_damaged_header_on_disk_is_dropped_and_rebuilt(
        tiny: LocalModel, tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str) -> None:
    """Damaged after the tier registered the file: the load fails with a warning, the file
    is deleted and the block built again from the memories (the docs' promise)."""
    block = KVCacheTier(tiny, directory=tmp_path).get_or_build([mem(1)])
    path = tmp_path / f"{block.block_id}.safetensors"
    counting = CountingModel(tiny)
    reopened = KVCacheTier(counting, directory=tmp_path)  # type: ignore[arg-type]
    old = b'"dtype":"F32"' if damage == "dtype" else b"bicycles"
    damage_header(path, old, b'"dtype":"F16"' if damage == "dtype" else b"unicycle")
    with caplog.at_level("WARNING", logger="memos_core.tiers.activation.tier"):
        rebuilt = reopened.get_or_build([mem(1)])
    assert counting.builds == 1 and str(path) in caplog.text
    assert rebuilt.prefix.messages == block.prefix.messages
    again = load_block(path, fingerprint_digest=tiny.fingerprint.digest, memories=block.memories)
    assert again is not None and again.prefix.messages == block.prefix.messages


def test_a_file_holding_other_text_than_its_memories_is_not_used(
        tiny: LocalModel, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Its checksums agree (written so), but its messages are not the memories' text as
    composed now: the tier drops the file and builds the block from the memories."""
    from safetensors.torch import load_file, save_file

    from memos_core.tiers.activation.storage import metadata_checksum

    block = KVCacheTier(tiny, directory=tmp_path).get_or_build([mem(1)])
    path = tmp_path / f"{block.block_id}.safetensors"
    header = read_header(path)
    header["messages"] = header["messages"].replace("green bicycles", "red unicycles")
    header["metadata_checksum"] = metadata_checksum(header)
    save_file(load_file(str(path)), str(path), metadata=header)
    assert load_block(path, fingerprint_digest=tiny.fingerprint.digest) is not None
    counting = CountingModel(tiny)
    reopened = KVCacheTier(counting, directory=tmp_path)  # type: ignore[arg-type]
    with caplog.at_level("WARNING", logger="memos_core.tiers.activation.tier"):
        rebuilt = reopened.get_or_build([mem(1)])
    assert counting.builds == 1 and "other text" in caplog.text
    assert rebuilt.prefix.messages == block.prefix.messages
    assert "red unicycles" not in path.read_bytes().decode("utf-8", "replace")


def test_memory_refs_accept_cubes_and_tuples(tiny: LocalModel) -> None:
    from memos_core.cube import MemCube, Namespace

    cube = MemCube(namespace=Namespace(user_id="u"), text="Alice is vegetarian.", version=2)
    tier = KVCacheTier(tiny)
    block = tier.get_or_build([cube])
    assert block.memories == ((cube.id, 2),) and block.contains(cube.id)
    assert tier.get([(cube.id, 2, cube.text)]) is block
    with pytest.raises(InvalidInputError, match="cannot use"):
        tier.get_or_build([42])
    with pytest.raises(InvalidInputError, match="bad memory"):
        tier.get_or_build([("m", 0, "version 0 does not exist")])


def test_memory_tokens_add_up_to_the_block(tiny: LocalModel) -> None:
    tier = KVCacheTier(tiny)
    one = tier.get_or_build([mem(1)]).num_tokens
    two = tier.get_or_build([mem(1), mem(2)]).num_tokens
    assert two - one == tier.memory_tokens(mem(2)[2])


# ---------------------------------------------------------------- SmolLM2


@pytest.fixture(scope="module")
def smol() -> LocalModel:
    return LocalModel.default()


@pytest.mark.slow
def test_cached_prefix_equals_recomputation_smollm2(smol: LocalModel) -> None:
    facts = [
        (f"f{i}", 1, f"Fact {i}: the user's friend number {i} lives in city {i * 7} and likes tea.")
        for i in range(12)
    ]
    block = KVCacheTier(smol).get_or_build(facts)
    assert block.num_tokens > 200
    check_exactness(smol, block.prefix, QUERIES[2], new=5)  # the multi-turn query


@pytest.mark.slow
def test_smollm2_answers_from_the_kv_prefix(smol: LocalModel) -> None:
    block = KVCacheTier(smol).get_or_build([("m", 1, "The user's name is Zorblax and the user lives in Paris.")])
    result = smol.generate(block.prefix, [{"role": "user", "content": "What is my name?"}], max_new_tokens=12)
    assert "Zorblax" in result.text and result.trace.used_kv_prefix


def test_opening_a_store_settles_its_kv_files_without_importing_torch(
        tiny: LocalModel, tmp_path: Path) -> None:
    """Blocks of memory versions that are gone, unreadable files and a dead writer's
    temporary file are deleted when a data directory opens (a process killed between a
    tombstone and its purge left them); reading block headers no longer imports torch, a
    second of every `memos list`."""
    import os
    import subprocess
    import sys

    from memos_core import MemOS, MemOSConfig

    data = tmp_path / "data"
    MemOS(data, config=MemOSConfig(show_progress=False)).close()
    kv = data / "kv"
    stale = save_block(make_block(tiny), kv)  # its memories are not in this vault
    (kv / "garbage.safetensors").write_bytes(b"not a block")
    orphan = kv / ".x.safetensors.tmp-999999999-abc"  # no process has that pid
    orphan.write_bytes(b"ZEBRA4417 text of a memory")
    script = ("import sys; from memos_core import MemOS, MemOSConfig; "
              f"MemOS({str(data)!r}, config=MemOSConfig(show_progress=False)).close(); "
              "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True)
    assert out.stdout.strip() == "False"
    assert not stale.exists() and not orphan.exists()
    assert not (kv / "garbage.safetensors").exists()
