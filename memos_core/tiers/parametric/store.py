"""Adapters on disk: ``<data_dir>/adapters/<version>/`` with peft's safetensors weights and a
``manifest.json``; ``state.json`` (which version is active for which owner, and the
activation history rollback walks back through); ``queue.json`` (retrains requested).

Versions are ``v1``, ``v2``, ... in creation order, never reused. Writes go through a
temporary file and ``os.replace`` so a crash leaves either the old or the new JSON. A new
adapter is written whole into a temporary directory (:func:`memos_core.tiers.tempfiles.temp_path`)
and renamed to its version, so a version directory always has its manifest; what a crash
leaves (a temporary directory whose writer is gone, a version directory without a manifest,
e.g. from an interrupted delete) is listed by :meth:`AdapterStore.leftovers`. Weights are
never pickled: peft writes ``adapter_model.safetensors``.

Every manifest is sealed: ``manifest_sha256`` is a SHA-256 over the canonical JSON of all its
other fields (:func:`manifest_checksum`), checked on every read, so a manifest damaged or
edited in place (another memory id, owner or base fingerprint: what a forget and serving go
by) is a :class:`CorruptDataError`, like one that does not parse; ``weights_sha256`` and
``config_sha256`` tie the adapter's two files to it. Manifests written before they carried
the seal are sealed once, as found, when the store is opened (:meth:`AdapterStore.adopt`);
from then on ``state.json`` says the store is sealed (``"sealed": true``) and a manifest
without one is damaged too (see docs/parametric.md, "Damaged files").
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
from datetime import datetime
from pathlib import Path
from stat import S_ISREG
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from memos_core.cube import utcnow
from memos_core.errors import CorruptDataError, InvalidInputError, MemOSError, first_line
from memos_core.runtime.loader import file_sha256
from memos_core.tiers import tempfiles
from memos_core.tiers.parametric.evaluation import Evaluation, GateDecision
from memos_core.tiers.parametric.trainer import TrainingReport

MANIFEST = "manifest.json"
WEIGHTS = "adapter_model.safetensors"
#: peft's LoRA settings (rank, alpha, target modules): they scale the merged weights.
CONFIG = "adapter_config.json"
#: The names :meth:`AdapterStore.next_version` gives.
_VERSION = re.compile(r"v[0-9]+")
Status = Literal["rejected", "ready", "active", "retired"]


class MemoryRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    version: int = Field(ge=1)


class AdapterManifest(BaseModel):
    """Everything an adapter was made from and how it fared.

    ``status``: ``rejected`` (failed the gate), ``ready`` (passed, not serving), ``active``
    (serving its owner's chats), ``retired`` (weights deleted; ``retired_reason`` says why).
    """

    model_config = ConfigDict(frozen=True)

    version: str
    owner: str = Field(description="User whose memories it holds; only they are served by it.")
    created_at: datetime = Field(default_factory=utcnow)
    base_model_id: str
    base_fingerprint: str = Field(description="Digest of the base model's fingerprint.")
    memories: tuple[MemoryRef, ...]
    settings: dict[str, Any] = Field(description="The ParametricConfig it was trained with.")
    training: TrainingReport
    evaluation: Evaluation
    decision: GateDecision
    status: Status = "ready"
    retired_reason: str | None = None
    weights_sha256: str | None = Field(
        default=None, description="SHA-256 of the weights file as saved; checked before each "
        "load (None: no weights saved, or saved before adapters carried one).")
    config_sha256: str | None = Field(
        default=None, description="SHA-256 of adapter_config.json as saved (its lora_alpha "
        "scales the merged weights); checked with the weights (None: as weights_sha256).")
    manifest_sha256: str | None = Field(
        default=None, description="SHA-256 of the canonical JSON of every other field "
        "(manifest_checksum), written with each manifest and checked on every read (None: "
        "only in a manifest written before manifests carried one).")

    @property
    def memory_ids(self) -> frozenset[str]:
        return frozenset(m.id for m in self.memories)


class RetrainRequest(BaseModel):
    """A queued retrain: consolidate ``memory_ids`` again for ``owner`` (minus what was
    forgotten); made when an adapter is retired by a forget."""

    model_config = ConfigDict(frozen=True)

    owner: str
    memory_ids: tuple[str, ...]
    replaces: str = Field(description="The retired adapter version.")
    reason: str
    requested_at: datetime = Field(default_factory=utcnow)


def _read(file: Path, parse: Any, what: str) -> Any:
    """``parse(text of file)``; a file whose content cannot be parsed is a
    :class:`CorruptDataError` naming it (no traceback from json or pydantic), one that cannot
    be read (an I/O error, which may pass) a :class:`MemOSError`."""
    try:
        text = file.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise CorruptDataError(f"{file} is not a readable {what} ({exc}). Restore it from a "
                               "backup, or delete it (memos-core rebuilds what it can).") from None
    except OSError as exc:
        raise MemOSError(f"{file} could not be read ({exc.strerror}); retry.") from exc
    try:
        return parse(text)
    except (ValueError, TypeError, KeyError, ValidationError) as exc:
        raise CorruptDataError(f"{file} is not a readable {what} ({first_line(exc)}). Restore it from a "
                               "backup, or delete it (memos-core rebuilds what it can).") from None


def manifest_checksum(fields: Mapping[str, Any]) -> str:
    """SHA-256 (hex) over the canonical JSON (keys sorted) of every field of a manifest but
    ``manifest_sha256``, as it is on disk: what :meth:`AdapterStore.manifest` checks. Fields
    a later release adds are covered once written; reading never normalises them first."""
    rest = {name: value for name, value in fields.items() if name != "manifest_sha256"}
    encoded = json.dumps(rest, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def _sealed(manifest: AdapterManifest) -> dict[str, Any]:
    """The manifest as the JSON object to write, with its ``manifest_sha256``."""
    fields = manifest.model_dump(mode="json")
    fields["manifest_sha256"] = manifest_checksum(fields)
    return fields


def _manifest_of(text: str, store_sealed: Callable[[], bool]) -> AdapterManifest:
    """Parse a manifest and check its seal. One without a seal is taken as written before
    manifests carried one, unless ``store_sealed()`` says every manifest of the store has
    been sealed (then the seal was lost: damage)."""
    fields = json.loads(text)
    if not isinstance(fields, dict):
        raise ValueError("needs a JSON object")
    recorded = fields.get("manifest_sha256")
    if recorded is None:
        if store_sealed():
            raise ValueError("it has no manifest_sha256, which every manifest of this store "
                             "carries (damaged or edited on disk)")
    elif recorded != manifest_checksum(fields):
        raise ValueError("its fields do not match the manifest_sha256 it was written with "
                         "(damaged or edited on disk)")
    return AdapterManifest.model_validate(fields)


def _state_of(text: str) -> dict[str, Any]:
    state = json.loads(text)
    if not (isinstance(state, dict) and isinstance(state.get("active"), dict)
            and isinstance(state.get("history"), dict)):
        raise ValueError("needs 'active' and 'history' objects")
    return state


def _queue_of(text: str) -> list[RetrainRequest]:
    rows = json.loads(text)
    if not isinstance(rows, list):
        raise ValueError("needs a list of retrain requests")
    return [RetrainRequest.model_validate(r) for r in rows]


def _write_json(path: Path, data: Any) -> None:
    """Write ``path`` whole or not at all, through a temporary file of this process's own
    (removed if the write fails; a crash's is found by :meth:`AdapterStore.leftovers`)."""
    with tempfiles.replacing(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str), encoding="utf-8")


class AdapterStore:
    """The adapters directory. Thread-safe (one lock per store object); nothing is created
    on disk until the first write."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._lock = threading.RLock()
        #: version -> (the manifest file's inode, size and mtime, its parsed manifest)
        self._parsed: dict[str, tuple[tuple[int, int, int], AdapterManifest]] = {}

    # -- versions and manifests -------------------------------------------------------------

    def path(self, version: str) -> Path:
        if not version or "/" in version or version.startswith(".") or len(version) > 64:
            raise InvalidInputError(f"not an adapter version: {version!r}")
        return self.root / version

    def versions(self) -> list[str]:
        """Versions with a manifest, oldest first (not the temporary directories of
        :meth:`save`, which are dot names)."""
        found = [p.name for p in self._children()
                 if not p.name.startswith(".") and (p / MANIFEST).is_file()]
        return sorted(found, key=lambda v: int(v[1:]) if v[1:].isdigit() else 0)

    def next_version(self) -> str:
        """The version after every ``v<n>`` directory, with a manifest or not (a leftover's
        number is not given again while it is on disk)."""
        with self._lock:
            numbers = [int(p.name[1:]) for p in self._children() if _VERSION.fullmatch(p.name)]
            return f"v{max(numbers, default=0) + 1}"

    def _children(self) -> list[Path]:
        return sorted(self.root.iterdir()) if self.root.is_dir() else []

    def leftovers(self) -> list[Path]:
        """What crashes left in the adapters directory, to delete (any of it may hold
        memories' text: weights, a manifest's evaluation): temporary directories of
        :meth:`save` and temporary files of a JSON write (the state, the queue, a rewritten
        manifest) whose writer is gone (:func:`memos_core.tiers.tempfiles.writer_gone`),
        and version directories (``v<n>``) without a ``manifest.json`` -- no writer makes
        one (:meth:`save` renames a complete directory into place), so it is what an
        interrupted delete, or a crash of a version before that rule, left. Unknown
        versions hold unknown memories: a forget cannot rule them out."""
        children = self._children()
        inside = [p for v in children if v.is_dir() and _VERSION.fullmatch(v.name)
                  for p in sorted(v.iterdir()) if p.is_file()]
        return [p for p in children + inside if (
            (tempfiles.is_temp_name(p.name) and tempfiles.writer_gone(p))
            or (p.is_dir() and _VERSION.fullmatch(p.name) is not None
                and not (p / MANIFEST).exists()))]

    def discard(self, where: Path) -> bool:
        """Delete the adapter directory ``where`` (a version, or a leftover) with everything
        in it, or a leftover file, first making a version no owner's active one; returns
        whether it was there."""
        with self._lock:
            if not where.name.startswith("."):  # a version: the state may name it
                for owner, active in self.active_all().items():
                    if active == where.name:
                        self.set_active(owner, None)
            try:
                if where.is_dir():
                    shutil.rmtree(where)
                else:
                    where.unlink()
            except FileNotFoundError:
                return False
            return True

    def manifest(self, version: str) -> AdapterManifest:
        """The manifest of ``version``, its seal checked (see the module docstring).

        Raises:
            InvalidInputError: no such adapter.
            CorruptDataError: its manifest cannot be read, or does not match its seal.
        """
        file = self.path(version) / MANIFEST
        try:
            info = file.stat()
        except OSError:
            info = None
        if info is None or not S_ISREG(info.st_mode):
            raise InvalidInputError(f"no adapter {version!r} under {self.root}")
        # parsed once per file as written: the listeners read every manifest on each update
        # (another process rewrites one with os.replace: a new inode, size or time)
        key = (info.st_ino, info.st_size, info.st_mtime_ns)
        cached = self._parsed.get(version)
        if cached is not None and cached[0] == key:
            return cached[1]
        manifest: AdapterManifest = _read(file, lambda text: _manifest_of(text, self.sealed),
                                          "adapter manifest")
        self._parsed[version] = (key, manifest)
        return manifest

    def manifests(self) -> list[AdapterManifest]:
        """Every adapter's manifest, oldest first.

        Raises:
            CorruptDataError: one cannot be read (:meth:`readable_manifests` skips it).
        """
        return [self.manifest(v) for v in self.versions()]

    def readable_manifests(self) -> tuple[list[AdapterManifest], list[str]]:
        """The manifests that can be read, and the versions whose manifest cannot."""
        found, corrupt = [], []
        for version in self.versions():
            try:
                found.append(self.manifest(version))
            except CorruptDataError:
                corrupt.append(version)
        return found, corrupt

    def save(self, peft_model: Any | None, manifest: AdapterManifest) -> Path:
        """Write a new adapter: the weights (safetensors; none when ``peft_model`` is None)
        and peft's config, recorded by their SHA-256 in the manifest, and the sealed
        manifest, into a temporary directory renamed to the version at the end, so a crash
        never leaves a version without its manifest. The first adapter of a store marks it
        sealed. Returns the adapter directory.

        Raises:
            InvalidInputError: the version exists already.
        """
        with self._lock:
            where = self.path(manifest.version)
            if where.exists():
                raise InvalidInputError(f"adapter {manifest.version} exists under {self.root}")
            first = not self.versions()
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfiles.writing(tempfiles.temp_path(where)) as staging:
                try:
                    staging.mkdir()
                    if peft_model is not None:
                        peft_model.save_pretrained(str(staging), safe_serialization=True)
                        manifest = manifest.model_copy(update={
                            "weights_sha256": file_sha256(staging / WEIGHTS),
                            "config_sha256": file_sha256(staging / CONFIG)})
                    _write_json(staging / MANIFEST, _sealed(manifest))
                    os.replace(staging, where)
                finally:
                    if staging.exists():
                        shutil.rmtree(staging, ignore_errors=True)
            if first:  # no manifest without a seal here: none may lose it unnoticed
                self.seal()
            return where

    def write_manifest(self, manifest: AdapterManifest) -> None:
        """Write ``manifest`` (sealed anew: its ``manifest_sha256`` is recomputed)."""
        with self._lock:
            _write_json(self.path(manifest.version) / MANIFEST, _sealed(manifest))

    def adopt(self) -> list[str]:
        """Seal, as found, every readable manifest written before manifests carried a seal
        (recording its weights' and config's SHA-256 where those files are there and it has
        none), then mark the store sealed: from then on a manifest without a seal is
        damaged. Returns the versions sealed. Idempotent; called when a store is opened.

        Trust on first use: damage done before this runs goes unnoticed (as it did before);
        retraining every adapter of an upgraded store instead would cost minutes per owner
        for what was, until then, served."""
        adopted: list[str] = []
        with self._lock:
            if not self.root.is_dir() or self.sealed():
                return adopted
            for version in self.versions():
                try:
                    manifest = self.manifest(version)
                except CorruptDataError:
                    continue  # (a forget deletes it)
                if manifest.manifest_sha256 is not None:
                    continue
                update: dict[str, str] = {}
                for field, name in (("weights_sha256", WEIGHTS), ("config_sha256", CONFIG)):
                    file = self.path(version) / name
                    if getattr(manifest, field) is None and file.is_file():
                        update[field] = file_sha256(file)
                self.write_manifest(manifest.model_copy(update=update))
                adopted.append(version)
            self.seal()
        return adopted

    def weights_sha256(self, version: str) -> str:
        """SHA-256 (hex) of the adapter's weights file as it is on disk now.

        Raises:
            FileNotFoundError: it has no weights file.
        """
        return file_sha256(self.path(version) / WEIGHTS)

    def config_sha256(self, version: str) -> str:
        """SHA-256 (hex) of the adapter's ``adapter_config.json`` as it is on disk now.

        Raises:
            FileNotFoundError: it has none.
        """
        return file_sha256(self.path(version) / CONFIG)

    def has_weights(self, version: str) -> bool:
        return (self.path(version) / WEIGHTS).is_file()

    def delete_weights(self, version: str) -> bool:
        """Remove everything but the manifest; returns whether weights were there."""
        with self._lock:
            where = self.path(version)
            had = self.has_weights(version)
            if where.is_dir():
                for item in where.iterdir():
                    if item.name == MANIFEST:
                        continue
                    shutil.rmtree(item) if item.is_dir() else item.unlink(missing_ok=True)
            return had

    # -- activation state -------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        file = self.root / "state.json"
        if not file.is_file():
            return {"active": {}, "history": {}}
        state: dict[str, Any] = _read(file, _state_of, "adapter state file")
        return state

    def active(self, owner: str) -> str | None:
        """The version serving ``owner``, or None."""
        with self._lock:
            version = self._state()["active"].get(owner)
            return None if version is None else str(version)

    def active_all(self) -> dict[str, str]:
        with self._lock:
            return dict(self._state()["active"])

    def sealed(self) -> bool:
        """Whether every manifest of the store carries a seal (:meth:`adopt`, :meth:`save`)."""
        with self._lock:
            return self._state().get("sealed") is True

    def seal(self) -> None:
        """Record in ``state.json`` that every manifest of the store carries a seal."""
        with self._lock:
            self.root.mkdir(parents=True, exist_ok=True)
            state = self._state()
            if state.get("sealed") is not True:
                state["sealed"] = True
                _write_json(self.root / "state.json", state)

    def history(self, owner: str) -> list[str]:
        """Versions activated for ``owner``, oldest first (rollback walks back through it)."""
        with self._lock:
            return list(self._state()["history"].get(owner, []))

    def set_active(self, owner: str, version: str | None) -> None:
        """Make ``version`` the active one (appended to the history), or none."""
        with self._lock:
            self.root.mkdir(parents=True, exist_ok=True)
            state = self._state()
            if version is None:
                state["active"].pop(owner, None)
            else:
                state["active"][owner] = version
                history = [v for v in state["history"].get(owner, []) if v != version]
                state["history"][owner] = [*history, version]
            _write_json(self.root / "state.json", state)

    # -- retrain queue ----------------------------------------------------------------------

    def queue(self) -> list[RetrainRequest]:
        """Pending retrains, oldest first."""
        file = self.root / "queue.json"
        with self._lock:
            if not file.is_file():
                return []
            queue: list[RetrainRequest] = _read(file, _queue_of, "retrain queue")
            return queue

    def enqueue(self, request: RetrainRequest) -> None:
        """Queue a retrain. An owner has one pending request: a new one takes in the memories
        of the one pending (a forget during a retrain queues the rest of the adapter it
        retired, and the retrain then queues what it trained: neither may drop the other's
        memories; forgotten ones are left out when it runs)."""
        with self._lock:
            self.root.mkdir(parents=True, exist_ok=True)
            queue = self.queue()
            mine = [r for r in queue if r.owner == request.owner]
            if mine:
                merged = sorted(set(request.memory_ids).union(*(r.memory_ids for r in mine)))
                request = request.model_copy(update={"memory_ids": tuple(merged)})
            _write_json(self.root / "queue.json",
                        [r.model_dump(mode="json")
                         for r in [*(r for r in queue if r.owner != request.owner), request]])

    def pending(self, owner: str) -> RetrainRequest | None:
        """``owner``'s pending retrain, if any, left in the queue: a retrain takes it off with
        :meth:`done` once it has finished, so one interrupted (a kill, a close) runs again."""
        mine = [r for r in self.queue() if r.owner == owner]
        return mine[-1] if mine else None

    def done(self, request: RetrainRequest) -> None:
        """Take ``request`` off the queue, unless a newer request of its owner replaced it
        meanwhile (a forget during the retrain: that one still has to run)."""
        with self._lock:
            pending = self.queue()
            if request in pending:
                _write_json(self.root / "queue.json",
                            [r.model_dump(mode="json") for r in pending if r != request])

