"""A check of the embedded index's id trackers between a clean close and the next open.

qdrant-edge keeps, per segment, a ``mutable_id_tracker.mappings`` file (point ids to internal
offsets). A garbled one is not an error the engine reports: loading the shard reads a length
from it and tries to allocate that much (tens of GB), and the process aborts. Nothing in the
process can catch an abort, so the store checks the files before the engine reads them: the
digest of every such file is recorded in the vault when the store closes cleanly (after the
index is closed, so it is what the next open will read), and compared when it opens. A
difference means the files changed outside the store: the index is rebuilt from the vault.
Each open clears the record, so after an unclean close there is none to compare (the open
reconciles the index with the vault anyway), and damage done then is not caught; nor is an
index that a kill late in close left intact taken for a changed one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["TRACKERS_META", "tracker_digest"]

#: vault meta key: the digest of the index's id trackers at the last clean close
TRACKERS_META = "index_trackers"
_TRACKER = "mutable_id_tracker.mappings"


def tracker_digest(index_dir: Path) -> str:
    """One SHA-256 over the relative path and the bytes of every id tracker under
    ``index_dir`` (files of a few bytes per point)."""
    digest = hashlib.sha256()
    for path in sorted(index_dir.rglob(_TRACKER)):
        digest.update(str(path.relative_to(index_dir)).encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()
