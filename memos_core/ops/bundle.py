"""Export / import bundles: a directory with a manifest, memories (every version) and edges.

Layout (format version 1)::

    bundle/
      manifest.json     {"format": "memos-bundle", "format_version": 1, "files": {name: {sha256, bytes}}, ...}
      memories.jsonl    one line per memory: {"id": ..., "versions": [MemCube JSON, oldest first]},
                        and "key": {"namespace": [labels], "key": ...} if an item key
                        (put_by_key, a LangGraph store item) names the memory
      edges.jsonl       one line per relation: {"src": ..., "dst": ..., "kind": ...}

Import checks everything first -- manifest schema, file names (no paths), sizes and hashes
(truncation), every line against the MemCube schema, version numbering, relation endpoints --
and only then writes, in one vault transaction. A bad bundle changes nothing.

References out of the bundle are not imported: a ``superseded_by`` that names no memory of
the importer's among the bundle's is dropped (``valid_to`` stays), so that a bundle cannot
make another user's memory a successor (whether one may supersede a memory depends on its
successor being live: :func:`memos_core.ops.writes.check_supersedable`). A ``key`` is bound
in the same transaction to its memory if this import writes it; a key bound already in the
store keeps its memory (``result["keys"]`` counts those bound). An older bundle, with no
``key``, imports as before, and an older importer ignores them.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import math
import os
import shutil
import stat
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from memos_core.cube import MemCube, Namespace, State, is_canonical_id, utcnow
from memos_core.errors import (
    BundleError,
    ConflictError,
    CorruptDataError,
    InvalidInputError,
    MemOSError,
)
from memos_core.governance.derived import FLAG_KEY
from memos_core.governance.sensitivity import history_sensitivity
from memos_core.ops.share import retrying
from memos_core.store import MemoryStore
from memos_core.tiers import tempfiles
from memos_core.validation import (
    check_id,
    check_int,
    check_metadata,
    check_name,
    check_tags,
    check_text,
    shown,
    shown_path,
    unstorable,
)
from memos_core.vault import Actor, Edge, ItemKey, ListQuery, pages, scrub

FORMAT = "memos-bundle"
FORMAT_VERSION = 1
FILES = ("memories.jsonl", "edges.jsonl")
MAX_BUNDLE_FILE_BYTES = 2 * 1024**3
#: an export's manifest is a few hundred bytes (and the ids of any damaged memories it left
#: out); a bigger one is not read into memory
MAX_MANIFEST_BYTES = 16 * 1024**2
#: how far a bundle's creation times may run ahead of this machine's clock
_CLOCK_SKEW = timedelta(days=1)
#: item-key bindings read per page on export
_KEY_PAGE = 1000
#: the character a vault joins namespace labels with: no label or key holds it
_KEY_SEP = "\x1f"


def export_bundle(store: MemoryStore, path: Path, user_id: str, *,
                  include_sensitive: bool = False) -> Path:
    """Write every memory owned by ``user_id`` (all versions, tombstones too) and its edges.

    A memory that any version marks sensitive is left out -- with its whole history and its
    relations -- unless ``include_sensitive``; ``manifest["withheld_sensitive"]`` counts them.
    A memory whose stored record is damaged (a version of it cannot be read) is left out
    too, logged by the store (:meth:`MemoryStore.report_damaged`), and
    ``manifest["damaged"]`` lists its id: its owner can forget it, or restore the vault
    from a backup.

    The files are written into a new private directory (mode 0700) next to ``path``, which
    is then renamed to ``path`` (an existing empty directory is replaced): nothing is
    written through a link someone planted in ``path``, and other users cannot read the
    bundle. Its name carries this process's id (:func:`tempfiles.temp_path`): such a
    directory that an export killed before its rename left there (every memory's text) is
    deleted by the next export to ``path``.
    """
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise InvalidInputError(f"Export target {shown_path(path)} exists and is not an empty directory.")
    work = tempfiles.temp_path(path)
    with tempfiles.writing(work):  # before it exists: another export must not take it
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _remove_leftovers(path)
            work.mkdir(mode=0o700)
        except OSError as exc:  # a file on the way, no permission, a read-only disk
            raise MemOSError(f"Cannot create the bundle {shown_path(path)} ({exc.strerror}).") from None
        _export_into(store, work, path, user_id, include_sensitive)
    return path


def _remove_leftovers(path: Path) -> None:
    """Delete the working directories of exports to ``path`` whose process is gone: only
    names exactly as :func:`tempfiles.temp_path` makes them (a user's own ``.bundle.tmp-x``
    is not one), directories, not links."""
    for old in path.parent.glob(f".{glob.escape(path.name)}.tmp-*"):
        if tempfiles.made_for(path, old) and old.is_dir() and not old.is_symlink() \
                and tempfiles.writer_gone(old):
            shutil.rmtree(old, ignore_errors=True)


def _export_into(store: MemoryStore, work: Path, path: Path, user_id: str,
                 include_sensitive: bool) -> None:
    """:func:`export_bundle`'s writing into ``work`` and rename to ``path``."""
    try:
        count, withheld, live, damaged = _write_bundle(store, work, user_id, include_sensitive)
        with store.write_lock:  # no forget of this process between the check and the rename
            if any(c.state is State.DELETED for c in store.vault.get_many(sorted(live)).values()):
                # forgotten while the files were written: write them again, without its text
                shutil.rmtree(work)
                work.mkdir(mode=0o700)
                count, withheld, _, damaged = _write_bundle(store, work, user_id,
                                                            include_sensitive)
            try:
                os.rename(work, path)
            except OSError as exc:
                raise MemOSError(f"Could not create the bundle {shown_path(path)} ({exc.strerror}); export "
                                 "to a path that does not exist yet.") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    store.vault.audit(Actor(user_id), "export", details={
        "memories": count, "withheld_sensitive": withheld, "damaged": len(damaged),
        "path": str(path)})


def _write_bundle(store: MemoryStore, path: Path, user_id: str,
                  include_sensitive: bool) -> tuple[int, int, set[str], list[str]]:
    """The bundle's files in the new directory ``path``; (memories written, withheld, the
    ids of the live ones written, the ids of the damaged ones left out)."""
    ids: set[str] = set()
    live: set[str] = set()
    damaged: list[str] = []
    withheld = 0

    def left_out(error: CorruptDataError) -> None:
        store.report_damaged(error)
        if error.memory_id:
            damaged.append(error.memory_id)

    keys = _bindings(store, user_id)
    with open(path / "memories.jsonl", "w", encoding="utf-8") as out:
        # only what the user owns: memories shared with them are not theirs to export
        for page in pages(store.vault, ListQuery(user_ids=(user_id,), shared=False), left_out):
            for cube in page:
                try:
                    history = store.vault.history(cube.id)
                except CorruptDataError as exc:  # an older version is damaged
                    store.report_damaged(CorruptDataError(str(exc), memory_id=cube.id))
                    damaged.append(cube.id)
                    continue
                if not include_sensitive and history_sensitivity(history):
                    withheld += 1
                    continue
                ids.add(cube.id)
                if cube.state is not State.DELETED:  # a tombstone joins no relation
                    live.add(cube.id)
                row: dict[str, Any] = {
                    "id": cube.id, "versions": [json.loads(v.model_dump_json()) for v in history]}
                item = keys.get(cube.id)
                if item is not None and cube.state is not State.DELETED:
                    row["key"] = {"namespace": list(item.namespace), "key": item.key}
                out.write(json.dumps(row) + "\n")
    with open(path / "edges.jsonl", "w", encoding="utf-8") as out:
        for edge in store.vault.graph_edges(sorted(live)):  # those touching the user's
            if edge.src in live and edge.dst in live:
                out.write(json.dumps({"src": edge.src, "dst": edge.dst, "kind": edge.kind}) + "\n")
    files = {name: _file_info(path / name) for name in FILES}
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_at": utcnow().isoformat(),
        "user_id": user_id,
        "memories": len(ids),
        "withheld_sensitive": withheld,
        "damaged": damaged,
        "files": files,
    }
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return len(ids), withheld, live, damaged


def _bindings(store: MemoryStore, user_id: str) -> dict[str, ItemKey]:
    """The item keys of ``user_id``, by the id of the memory each names (one at most)."""
    found: dict[str, ItemKey] = {}
    while True:
        page = store.vault.list_keyed(user_id, limit=_KEY_PAGE, offset=len(found))
        found.update((memory_id, item) for item, memory_id in page)
        if len(page) < _KEY_PAGE:
            return found


def _file_info(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return {"sha256": digest.hexdigest(), "bytes": size}


def _read_regular(target: Path, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of the regular file ``target`` (one more than ``limit``
    shows a longer file), not through a link, without waiting on a named pipe."""
    name = target.name
    try:  # non-blocking: opening a named pipe would wait for a writer
        fd = os.open(target, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
                     | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        raise BundleError(f"Bundle file {name} is missing or not a regular file.") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise BundleError(f"Bundle file {name} is missing or not a regular file.")
        os.set_blocking(fd, True)
        return f.read(limit + 1)


def _read_verified(target: Path, info: dict[str, Any]) -> bytes:
    """The bytes of a bundle file, read once and checked against its manifest entry (the
    import parses these bytes: a file swapped after the check is never read)."""
    name = target.name
    data = _read_regular(target, info["bytes"])
    if len(data) != info["bytes"] or hashlib.sha256(data).hexdigest() != info["sha256"]:
        shown = f"{len(data)}" if len(data) <= info["bytes"] else f"more than {info['bytes']}"
        raise BundleError(
            f"Bundle file {name} does not match its manifest ({shown} bytes, expected "
            f"{info['bytes']}): it is truncated or was modified."
        )
    return data


def _read_manifest(path: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest and the bundle's files (their verified bytes, by name)."""
    if not path.is_dir():
        raise BundleError(f"{shown_path(path)} is not a bundle directory (expected a folder with manifest.json).")
    mfile = path / "manifest.json"
    if not mfile.is_file() or mfile.is_symlink():
        raise BundleError(f"{shown_path(path)} has no manifest.json; is it a bundle made by `memos export`?")
    data = _read_regular(mfile, MAX_MANIFEST_BYTES)  # read whole, it is not a data file
    if len(data) > MAX_MANIFEST_BYTES:
        raise BundleError(f"manifest.json is larger than {MAX_MANIFEST_BYTES:,} bytes: it is not "
                          "a bundle manifest.")
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"manifest.json is not valid JSON: {exc}.") from None
    except RecursionError:
        raise BundleError("manifest.json is nested too deeply to be a bundle manifest.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"manifest.json does not describe a {FORMAT!r} bundle.")
    version = manifest.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version != FORMAT_VERSION:
        # exactly the int: true and 1.0 equal 1 in Python, but no export writes them
        raise BundleError(
            f"Bundle format version {manifest.get('format_version')!r} is not supported "
            f"(this memos-core reads version {FORMAT_VERSION})."
        )
    declared = manifest.get("memories", 0)
    if isinstance(declared, bool) or not isinstance(declared, int) or declared < 0:
        raise BundleError(f"manifest.json 'memories' must be a count, got {declared!r}.")
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != set(FILES):
        raise BundleError(f"manifest.json must list exactly the files {list(FILES)}.")
    contents: dict[str, bytes] = {}
    for name, info in files.items():
        if os.path.basename(name) != name or name in ("", ".", ".."):
            raise BundleError(f"manifest.json names a path, not a file name: {name!r}.")
        if not isinstance(info, dict) or not isinstance(info.get("sha256"), str) \
                or not isinstance(info.get("bytes"), int):
            raise BundleError(f"manifest.json entry for {name} needs 'sha256' and 'bytes'.")
        if not 0 <= info["bytes"] <= MAX_BUNDLE_FILE_BYTES:
            raise BundleError(f"Bundle file {name} is larger than the import limit.")
        contents[name] = _read_verified(path / name, info)
    return manifest, contents


def _jsonl(name: str, data: bytes) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file's ``data`` (lines as a text-mode file splits
    them)."""
    rows = []
    with io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="strict") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BundleError(f"{name} line {n} is not valid JSON: {exc}.") from None
            except RecursionError:
                raise BundleError(f"{name} line {n} is nested too deeply.") from None
            if not isinstance(row, dict):
                raise BundleError(f"{name} line {n} is not a JSON object.")
            rows.append(row)
    return rows


def _parse_history(row: dict[str, Any], n: int, user_id: str) -> list[MemCube]:
    mid = row.get("id")
    versions = row.get("versions")
    if not isinstance(mid, str) or not isinstance(versions, list) or not versions:
        raise BundleError(f"memories.jsonl line {n}: needs 'id' and a non-empty 'versions' list.")
    try:
        if check_id(mid) != mid:  # another spelling of some memory's UUID: it would share
            # that memory's index point (and hide it from its owner's search)
            raise BundleError(f"memories.jsonl line {n}: memory id {mid[:80]!r} is not in "
                              "canonical form (lower-case UUID with hyphens).")
        cubes = [MemCube.model_validate(v) for v in versions]
    except (ValidationError, KeyError, InvalidInputError) as exc:
        raise BundleError(f"memories.jsonl line {n}: invalid memory: {exc}".splitlines()[0]) from None
    forgotten = cubes[-1].state is State.DELETED
    for i, cube in enumerate(cubes, start=1):
        if cube.id != mid or cube.version != i:
            raise BundleError(
                f"memories.jsonl line {n}: versions of {mid} must be numbered 1..{len(cubes)} "
                "and share its id."
            )
        if cube.state is State.DELETED and i != len(cubes):
            raise BundleError(
                f"memories.jsonl line {n}: version {i} of {mid} is deleted but version {i + 1} "
                "follows it; a forgotten memory's tombstone is its last version."
            )
        if cube.scrubbed and not forgotten:
            raise BundleError(
                f"memories.jsonl line {n}: version {i} of {mid} is marked scrubbed but the "
                "memory was not forgotten."
            )
    if forgotten:  # a tombstone carries no content, whatever the bundle says
        cubes = [_scrubbed(c) for c in cubes]
    for i, cube in enumerate(cubes, start=1):  # what is left of a tombstone is stored too
        try:
            _check_fields(cube)
        except InvalidInputError as exc:
            raise BundleError(f"memories.jsonl line {n}: version {i} of {mid}: {exc}") from None
        if i > 1 and not _follows(cubes[i - 2], cube):  # (times checked aware above)
            raise BundleError(
                f"memories.jsonl line {n}: version {i} of {mid} must keep the created_at of "
                f"version 1 and be written after version {i - 1} (its updated_at is earlier): "
                "as of a time, get would give a version before the memory existed."
            )
    owner = Namespace(user_id=user_id)
    # Grants are local to the store that made them: an imported memory is shared with nobody
    # (a bundle must not be able to hand the importer's memories to the users it names).
    return [
        c.model_copy(update={
            "namespace": owner.model_copy(update={
                "agent_id": c.namespace.agent_id, "session_id": c.namespace.session_id}),
            "governance": c.governance.model_copy(update={"readers": (), "writers": ()}),
        })
        for c in cubes
    ]


def _parse_key(row: dict[str, Any], n: int, user_id: str,
               history: list[MemCube]) -> ItemKey | None:
    """The item key of line ``n`` (``row["key"]``), for ``user_id``; None if it has none."""
    raw = row.get("key")
    if raw is None:
        return None
    labels = raw.get("namespace") if isinstance(raw, dict) else None
    key = raw.get("key") if isinstance(raw, dict) else None
    if not isinstance(labels, list) or not isinstance(key, str) or unstorable(raw) is not None \
            or not all(isinstance(part, str) and part and _KEY_SEP not in part
                       for part in [*labels, key]):
        raise BundleError(
            f"memories.jsonl line {n}: 'key' must be {{\"namespace\": [labels], \"key\": key}}, "
            "the labels and the key non-empty strings without control characters U+0000 or "
            "U+001F.")
    if history[-1].state is State.DELETED:
        raise BundleError(f"memories.jsonl line {n}: memory {history[-1].id} is forgotten and "
                          "has a 'key'; a forget removes a memory's key.")
    return ItemKey(user_id, tuple(labels), key)


def _follows(earlier: MemCube, later: MemCube) -> bool:
    """Whether ``later`` can be the version after ``earlier``: every version keeps the
    memory's ``created_at`` (a TTL counts from it), and ``updated_at`` does not go back by
    more than the clocks of two writing machines may disagree."""
    return (later.created_at == earlier.created_at
            and later.updated_at >= earlier.updated_at - _CLOCK_SKEW)


def _check_fields(cube: MemCube) -> None:
    """The checks a write through the API makes, for one version from a bundle: what
    ``add`` would refuse must not reach the vault by import (metadata nested deeper than
    the JSON reader reads back made a record no call could read or forget). A scrubbed
    version (a tombstone's) has no text to check; the rest of it is stored all the same.
    Only ``add`` sets ``created_at`` and ``updated_at``: a bundle's may not lie in the
    future (a TTL counted from the year 9999 has no end a datetime can hold)."""
    if not cube.scrubbed:
        check_text(cube.text)
    check_metadata(cube.metadata, reserved_ok=True)  # the forget flag: _check_references
    check_tags(cube.tags)
    check_tags(cube.governance.sensitivity, "sensitivity")
    check_name(cube.namespace.agent_id, "agent_id", optional=True)
    check_name(cube.namespace.session_id, "session_id", optional=True)
    ttl = cube.governance.ttl_seconds  # any finite one: older versions took more than the
    if ttl is not None and not 0 < ttl < math.inf:  # API's MAX_SECONDS, and uses cap it
        raise InvalidInputError(f"ttl_seconds must be a finite number above 0, got {ttl!r}")
    check_int(cube.governance.priority, "priority")
    _check_references(cube)
    bad = unstorable(cube.model_dump(mode="json"))  # ids, provenance, entities, ...
    if bad is not None:
        raise InvalidInputError(f"a field holds {bad} (the API refuses them too)")
    for name in ("created_at", "updated_at", "occurred_at", "valid_from", "valid_to"):
        when = getattr(cube, name)
        if when is not None and when.utcoffset() is None:  # compared with aware ones
            raise InvalidInputError(f"{name} has no time zone (write it in UTC, with +00:00)")
    if cube.valid_to is not None and cube.valid_to < (cube.valid_from or cube.created_at):
        raise InvalidInputError("valid_to is earlier than valid_from")
    latest = utcnow() + _CLOCK_SKEW
    for name in ("created_at", "updated_at"):
        if getattr(cube, name) > latest:
            raise InvalidInputError(f"{name} {getattr(cube, name).isoformat()} is in the future")
    if cube.updated_at < cube.created_at:
        raise InvalidInputError("updated_at is earlier than created_at")


def _check_references(cube: MemCube) -> None:
    """The memory ids a version names besides its own, in the one form the vault stores
    (it refuses any other spelling, too late to say which line held it): ``superseded_by``,
    ``provenance.derived_from``, and the forget flag ``metadata["source_forgotten"]``, which
    the forget cascade extends (:mod:`memos_core.ops.forget`): anything but a list of ids
    there would make every forget of one of the summary's sources fail."""
    if cube.superseded_by is not None:
        _check_reference(cube.superseded_by, "superseded_by")
    for source in cube.provenance.derived_from:
        _check_reference(source, "provenance.derived_from")
    if FLAG_KEY in cube.metadata:
        flag = cube.metadata[FLAG_KEY]
        if not isinstance(flag, list):
            raise InvalidInputError(
                f"metadata[{FLAG_KEY!r}] (the ids of a summary's forgotten sources) must be a "
                f"list of memory ids, got {type(flag).__name__} {shown(flag)}")
        for source in flag:
            _check_reference(source, f"metadata[{FLAG_KEY!r}]")


def _check_reference(value: object, field: str) -> None:
    """Raise :class:`InvalidInputError` unless ``value`` is a memory id in canonical form."""
    if not is_canonical_id(value):
        raise InvalidInputError(f"{field} holds {shown(value)}, which is not a memory id in "
                                "canonical form (lower-case UUID with hyphens)")


def _scrubbed(cube: MemCube) -> MemCube:
    """A version of a forgotten memory from a bundle, with no content left, whatever its
    ``scrubbed`` flag says (a bundle from an older store may carry the text's digest)."""
    return scrub(cube.model_copy(update={"scrubbed": False}))


def import_bundle(store: MemoryStore, path: Path, user_id: str) -> dict[str, int]:
    """Validate the whole bundle, then write it in one transaction; see the module docstring."""
    manifest, files = _read_manifest(path)
    try:
        rows = _jsonl("memories.jsonl", files.pop("memories.jsonl"))
        edge_rows = _jsonl("edges.jsonl", files.pop("edges.jsonl"))
    except UnicodeDecodeError:
        raise BundleError("A bundle file is not valid UTF-8.") from None
    histories = [_parse_history(row, n, user_id) for n, row in enumerate(rows, start=1)]
    keyed = _parse_keys(rows, histories, user_id)
    store.ready_embedder()
    ids = [h[0].id for h in histories]
    if len(set(ids)) != len(ids):
        raise BundleError("memories.jsonl lists the same memory id twice.")
    def attempt() -> tuple[int, int, int]:
        existing = store.vault.get_many(ids)
        new = [h for h in histories if h[0].id not in existing]
        edges = _check_edges(edge_rows, ids, new, existing, user_id)
        # the importer's memories once this import is done: a successor must be one of them
        mine = {h[0].id for h in new} | {mid for mid, c in existing.items() if c.user_id == user_id}
        new = [_within(h, mine) for h in new]
        keys = [(keyed[h[0].id], h[0].id) for h in new if h[0].id in keyed]
        bound = 0

        def commit() -> list[MemCube]:
            nonlocal bound
            # a name that is not UTF-8 is kept escaped: the audit log stores only valid text
            reason = f"import {shown_path(path.name)}"
            bound = store.vault.import_histories(new, edges, Actor(user_id, reason=reason),
                                                 keys)
            return [h[-1] for h in new]

        store.write(commit, edges=edges, progress_desc="import")
        return len(new), len(edges), bound

    with store.write_lock:  # the ids' owners are read and written under one lock
        # (another process may store one of them meanwhile: the vault refuses, and we look again)
        imported, linked, bound = retrying(attempt, on=ConflictError)
    return {"imported": imported, "skipped": len(histories) - imported,
            "edges": linked, "keys": bound, "declared": int(manifest.get("memories", len(ids)))}


def _parse_keys(rows: list[dict[str, Any]], histories: list[list[MemCube]],
                user_id: str) -> dict[str, ItemKey]:
    """The bundle's item keys, by memory id; a key named twice is refused."""
    keyed: dict[str, ItemKey] = {}
    seen: set[ItemKey] = set()
    for n, (row, history) in enumerate(zip(rows, histories, strict=True), start=1):
        item = _parse_key(row, n, user_id, history)
        if item is None:
            continue
        if item in seen:
            raise BundleError(f"memories.jsonl line {n}: key {item.key!r} in "
                              f"{list(item.namespace)!r} names another memory of the bundle "
                              "too; a key names one memory.")
        seen.add(item)
        keyed[history[0].id] = item
    return keyed


def _within(history: list[MemCube], mine: set[str]) -> list[MemCube]:
    """``history`` with each ``superseded_by`` that is not one of ``mine`` dropped (the
    version keeps its ``valid_to``): a successor the importer does not own would let them
    learn whether it was forgotten (:func:`memos_core.ops.writes.check_supersedable`)."""
    return [c if c.superseded_by is None or c.superseded_by in mine
            else c.model_copy(update={"superseded_by": None}) for c in history]


def _check_edges(edge_rows: list[dict[str, Any]], ids: list[str], new: list[list[MemCube]],
                 existing: dict[str, MemCube], user_id: str) -> list[Edge]:
    """The bundle's relations, after checking that each joins two live memories that
    ``user_id`` owns once the import is done: memories this import writes, or memories
    already in the store that are theirs. An id the bundle lists but the store already holds
    for another user is skipped as a memory and must not be reachable through a relation
    (a forget of the importer's memory would otherwise flag or forget it)."""
    owned = {h[-1].id for h in new if h[-1].state is not State.DELETED}
    owned |= {mid for mid, c in existing.items()
              if c.user_id == user_id and c.state is not State.DELETED}
    edges = []
    listed = set(ids)
    for n, e in enumerate(edge_rows, start=1):
        if not all(isinstance(e.get(k), str) for k in ("src", "dst", "kind")) or \
                e["kind"] not in ("supersedes", "derived_from"):
            raise BundleError(f"edges.jsonl line {n}: needs src, dst and a known kind.")
        for end in (e["src"], e["dst"]):
            if end not in listed:
                raise BundleError(f"edges.jsonl line {n}: refers to a memory not in the bundle.")
            if end not in owned:
                raise BundleError(
                    f"edges.jsonl line {n}: memory {end} is not one of {user_id!r}'s live "
                    "memories after this import (it belongs to another user or was forgotten); "
                    "a bundle's relations may only join the importer's own memories."
                )
        edges.append(Edge(e["src"], e["dst"], e["kind"]))
    return edges
