"""KV blocks on disk: one safetensors file per block, never pickle.

File layout (``<block_id>.safetensors``):

* tensors ``k.<layer>`` and ``v.<layer>``: ``(1, kv_heads, tokens, head_dim)``, the model dtype;
  ``token_ids``: ``(tokens,)`` int64.
* string metadata: ``format`` (``memos-kv/1``), ``block_id``, ``fingerprint`` (the model
  fingerprint digest), ``memories`` (JSON ``[[id, version], ...]`` in block order),
  ``token_count``, ``messages`` (JSON chat messages of the prefix), ``created_at``,
  ``checksum`` (``sha256:`` over every tensor's name, dtype, shape and bytes) and
  ``metadata_checksum`` (``sha256:`` over every other metadata field, ``checksum`` included).

Loading contract: a file built by another model (fingerprint differs) or from other memory
versions than the caller expects is *stale* and :func:`load_block` returns ``None`` for it
(the caller rebuilds); it is never used, and neither is one written before files carried
both checksums (the second came in a later release: such a file is rebuilt once). A file
that cannot be read, whose header's shapes, dtypes and offsets disagree, whose contents
contradict its metadata or whose tensors or metadata do not match their checksum (bit rot, a
partial overwrite) raises :class:`KVCacheFormatError`.
Writes are atomic (temporary file, then rename), so readers never see half a file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from dataclasses import dataclass
from typing import Any

from memos_core.errors import CorruptDataError
from memos_core.results import DerivedForm
from memos_core.runtime.prefix import PrefixCache
from memos_core.tiers import tempfiles


logger = logging.getLogger(__name__)

FORMAT = "memos-kv/1"
SUFFIX = ".safetensors"
#: The largest safetensors header read_header accepts (a damaged length must not read GBs).
_MAX_HEADER = 100 * 2**20
#: Bytes per element of each safetensors dtype (what a header's shapes and offsets must agree on).
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
                "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1,
                "BOOL": 1}


@dataclass(frozen=True)
class KVBlock:
    """A memory block and its (immutable) prefix KV cache.

    Pass ``block.prefix`` to :meth:`LocalModel.generate`.
    """

    block_id: str
    memories: tuple[tuple[str, int], ...]  # (id, version) in block order
    prefix: PrefixCache

    @property
    def num_tokens(self) -> int:
        return self.prefix.num_tokens

    @property
    def nbytes(self) -> int:
        return self.prefix.nbytes

    @property
    def memory_ids(self) -> tuple[str, ...]:
        return tuple(memory_id for memory_id, _ in self.memories)

    def contains(self, memory_id: str) -> bool:
        """Whether any version of ``memory_id`` is in this block."""
        return any(memory_id == mid for mid, _ in self.memories)


class KVCacheFormatError(CorruptDataError):
    """A KV cache file is unreadable or inconsistent; delete it and let the tier rebuild it."""


def block_path(directory: str | os.PathLike[str], block_id: str) -> Path:
    """Where the block with this id lives under ``directory``."""
    return Path(directory) / f"{block_id}{SUFFIX}"


def save_block(block: KVBlock, directory: str | os.PathLike[str]) -> Path:
    """Write ``block`` to ``directory`` atomically and return the file's path.

    Overwrites a previous file of the same block id (same content address, same content).
    """
    import torch
    from safetensors.torch import save_file

    prefix = block.prefix
    tensors = {}
    for index, (keys, values) in enumerate(prefix.layers()):
        tensors[f"k.{index}"] = keys.contiguous()
        tensors[f"v.{index}"] = values.contiguous()
    tensors["token_ids"] = torch.tensor(prefix.token_ids, dtype=torch.int64)  # (tokens,)
    metadata = {
        "format": FORMAT,
        "block_id": block.block_id,
        "fingerprint": prefix.fingerprint_digest,
        "memories": json.dumps([list(key) for key in block.memories]),
        "token_count": str(prefix.num_tokens),
        "messages": json.dumps(prefix.messages),
        "created_at": datetime.now(timezone.utc).isoformat(),
        "checksum": checksum(tensors),
    }
    metadata["metadata_checksum"] = metadata_checksum(metadata)
    target = block_path(directory, block.block_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfiles.replacing(target) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return target


def checksum(tensors: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` over each tensor's name, dtype, shape and bytes, by name: what a
    KV file records at save and :func:`load_block` checks (about 15 ms for 23 MB)."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return f"sha256:{digest.hexdigest()}"


def metadata_checksum(metadata: Mapping[str, str]) -> str:
    """``sha256:<hex>`` over every metadata field but this one (names and values, by name):
    what a KV file records at save and :func:`load_block` checks. It covers ``messages`` --
    the text the block was built from -- which the tensors' checksum does not, and the tensors'
    checksum itself, so a header and tensors are checked as one."""
    fields = {name: value for name, value in metadata.items() if name != "metadata_checksum"}
    encoded = json.dumps(fields, sort_keys=True, ensure_ascii=False).encode()
    return f"sha256:{hashlib.sha256(encoded).hexdigest()}"


def read_header(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata of a KV file, without loading its tensors.

    Raises:
        KVCacheFormatError: not a readable memos KV file.
    """
    # the safetensors header, read directly (8-byte little-endian length, then JSON): safe_open
    # would import torch, a second of a plain `memos list` that opens a directory with blocks
    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if not 2 <= size <= _MAX_HEADER:
                raise ValueError(f"header length {size}")
            header = json.loads(handle.read(size))
            data = os.fstat(handle.fileno()).st_size - 8 - size
        metadata = header.get("__metadata__") or {}
        if not isinstance(metadata, dict):
            raise ValueError("__metadata__ is not an object")
        _check_layout({k: t for k, t in header.items() if k != "__metadata__"}, data)
    except (OSError, ValueError, AttributeError, TypeError, KeyError, IndexError) as exc:
        raise KVCacheFormatError(f"cannot read KV cache file {path}: {exc}") from exc
    if metadata.get("format") != FORMAT:
        raise KVCacheFormatError(
            f"{path} is not a {FORMAT} file (format={metadata.get('format')!r}); delete it"
        )
    return dict(metadata)


def _check_layout(tensors: Mapping[str, Any], data: int) -> None:
    """Check what safetensors checks before it reads a tensor: each tensor's bytes (its
    dtype's size times its shape) are exactly its data offsets, and the tensors lie end to
    end from the start of the data to the end of the file (``data`` bytes).

    A header damaged so that it still parses (a dtype changed to one of another size, a
    shape or an offset changed) must fail here, where it is a :class:`KVCacheFormatError`,
    and not in safetensors, whose error is a plain ``Exception``.

    Raises:
        ValueError: the layout is not that of a whole, consistent file.
    """
    spans = []
    for name, tensor in tensors.items():
        size = _DTYPE_BYTES.get(tensor["dtype"])
        if size is None:
            raise ValueError(f"tensor {name!r} has an unknown dtype {tensor['dtype']!r}")
        begin, end = tensor["data_offsets"]
        count = 1
        for dim in tensor["shape"]:
            if not isinstance(dim, int) or dim < 0:
                raise ValueError(f"tensor {name!r} has a bad shape {tensor['shape']!r}")
            count *= dim
        if not isinstance(begin, int) or not isinstance(end, int) or end - begin != size * count:
            raise ValueError(f"tensor {name!r}: {tensor['dtype']} x {tensor['shape']} does not "
                             f"match its data offsets {[begin, end]}")
        spans.append((begin, end, name))
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise ValueError(f"tensor {name!r} does not start where the one before it ends")
        position = end
    if position != data:
        raise ValueError("incomplete file: its tensors do not fill it")


def header_memories(metadata: dict[str, str]) -> tuple[tuple[str, int], ...]:
    """The ``(id, version)`` pairs recorded in a KV file's metadata."""
    try:
        return tuple((str(i), int(v)) for i, v in json.loads(metadata["memories"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise KVCacheFormatError(f"bad 'memories' metadata in KV cache file: {exc}") from exc


def _read_tensors(path: str | os.PathLike[str]) -> dict[str, Any]:
    """All tensors of a file, read into memory the process owns.

    Not memory-mapped: a mapped file that something truncates later would crash the process
    (SIGBUS) on the next query, and a few tens of milliseconds of reading buy that safety.
    """
    from safetensors.torch import load_file

    try:
        return load_file(str(path), backend="pread")
    except TypeError:  # safetensors < 0.8 has no backend argument (and maps the file)
        return load_file(str(path))


def load_block(
    path: str | os.PathLike[str],
    *,
    fingerprint_digest: str,
    memories: Sequence[tuple[str, int]] | None = None,
) -> KVBlock | None:
    """Load a block if it was built by this model from these memory versions, else ``None``.

    ``memories``: the expected ``(id, version)`` pairs in block order; ``None`` skips that
    check (the fingerprint is always checked). See the module docstring for the contract.

    Raises:
        KVCacheFormatError: the file is unreadable or inconsistent.
        FileNotFoundError: there is no such file.
    """

    if not Path(path).is_file():
        raise FileNotFoundError(f"no KV cache file at {path}")
    metadata = read_header(path)
    if metadata.get("fingerprint") != fingerprint_digest:
        return None
    recorded = header_memories(metadata)
    if memories is not None and recorded != tuple((str(i), int(v)) for i, v in memories):
        return None
    if "checksum" not in metadata or "metadata_checksum" not in metadata:
        return None  # written before files carried both: rebuilt, not trusted
    if metadata_checksum(metadata) != metadata["metadata_checksum"]:
        raise KVCacheFormatError(
            f"KV cache file {path} is inconsistent: its metadata (among it the memories' text) "
            "does not match the checksum it was saved with (damaged on disk); delete it")
    try:
        tensors = _read_tensors(path)
    except Exception as exc:  # noqa: BLE001 - safetensors' SafetensorError is a plain Exception
        raise KVCacheFormatError(
            f"cannot read the tensors of KV cache file {path}: {type(exc).__name__}: {exc}; "
            "delete it") from exc
    try:
        if checksum(tensors) != metadata["checksum"]:
            raise ValueError("its tensors do not match the checksum it was saved with "
                             "(damaged on disk)")
        token_ids = tensors.pop("token_ids").tolist()
        count = int(metadata["token_count"])
        layers = [(tensors[f"k.{i}"], tensors[f"v.{i}"]) for i in range(len(tensors) // 2)]
        if len(token_ids) != count or 2 * len(layers) != len(tensors):
            raise ValueError("token count or layer tensors disagree with the metadata")
        prefix = PrefixCache(
            messages=json.loads(metadata["messages"]),
            token_ids=token_ids,
            layers=layers,
            fingerprint_digest=fingerprint_digest,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise KVCacheFormatError(f"KV cache file {path} is inconsistent: {exc}; delete it") from exc
    return KVBlock(block_id=metadata["block_id"], memories=recorded, prefix=prefix)


def kv_files_holding(kv_dir: Path, memory_ids: Iterable[str]) -> list[Path]:
    """KV cache files under ``kv_dir`` whose header lists any of ``memory_ids`` (any
    version, any model). Unreadable files are listed too: a file we cannot read might hold
    the memory, and the tier rebuilds what it needs. So are temporary files that a crashed
    writer left behind (:func:`memos_core.tiers.tempfiles.writer_gone`; they may hold any
    memory's text, and nothing else removes them)."""
    ids = set(memory_ids)
    unknown, blocks = _scan(kv_dir)
    return unknown + [path for path, members in blocks if any(mid in ids for mid, _ in members)]


def _scan(kv_dir: Path) -> tuple[list[Path], list[tuple[Path, tuple[tuple[str, int], ...]]]]:
    """The files under ``kv_dir`` that may hold any memory's text -- temporary files whose
    writer is gone, blocks that cannot be read -- and the readable blocks with the
    ``(id, version)`` pairs their headers list. A directory named like a block is neither."""
    if not kv_dir.is_dir():
        return [], []
    unknown = [path for path in sorted(kv_dir.glob(f".*{SUFFIX}.tmp-*"))
               if path.is_file() and tempfiles.writer_gone(path)]
    blocks = []
    for path in sorted(kv_dir.glob(f"*{SUFFIX}")):
        if not path.is_file():
            continue
        try:
            blocks.append((path, header_memories(read_header(path))))
        except (KVCacheFormatError, OSError) as exc:
            # every caller deletes what it finds here; a block is built again when needed
            logger.warning("%s; the file is deleted and its block built again when needed", exc)
            unknown.append(path)
    return unknown, blocks


def stale_kv_files(kv_dir: Path, vault: Any) -> list[Path]:
    """KV files under ``kv_dir`` built from a memory version that is not current and live in
    ``vault`` any more (updated, forgotten, expired): what a process that did not hear of
    the change (it was closed, or killed before its purge) must not serve. Also files that
    cannot be read and temporary files whose writer is gone (either may hold any memory's
    text; a block is rebuilt when it is needed)."""
    from memos_core.lifecycle import INDEXED

    unknown, blocks = _scan(kv_dir)
    wanted = sorted({mid for _, members in blocks for mid, _ in members})
    # a block of a damaged memory goes too: a derived copy of a memory no one can read
    current = vault.get_many(wanted, on_damaged=lambda error: None) if wanted else {}
    return unknown + [path for path, members in blocks
                      if any(mid not in current or current[mid].version != version
                             or current[mid].state not in INDEXED for mid, version in members)]


def kv_file_purger(kv_dir: Path) -> Callable[[str], Callable[[], list[DerivedForm]]]:
    """The store's derived-form purger for KV files (:data:`memos_core.store.DerivedPurger`):
    before a forget's tombstone it lists the files under ``kv_dir`` holding the memory
    (whether or not a KV engine runs); after it, it deletes those still there."""

    def start(memory_id: str) -> Callable[[], list[DerivedForm]]:
        files = kv_files_holding(kv_dir, [memory_id])

        def finish() -> list[DerivedForm]:
            for path in files:
                path.unlink(missing_ok=True)
            return [DerivedForm(kind="kv_block", id=path.name, action="deleted") for path in files]

        return finish

    return start
