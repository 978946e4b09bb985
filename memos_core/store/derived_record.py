"""What a store's index was made with: which index it is, and which embedding model made its
vectors (records in the vault's meta table, compared when the store opens).

The index is derived from the vault, and two facts about it are not in its files:

- **the embedding model.** Vectors of two models are not comparable, even at one dimension:
  a query embedded by one model searched against vectors of another finds noise. The model's
  identity (:func:`embedder_identity`: its name or path and its dimension; not its backend,
  since torch, ONNX and bf16 give the same vectors) is recorded per index
  (:data:`MODEL_META` + :func:`index_identity`) once the index is built. An open with another
  model rebuilds an index that is this store's alone from the vault; one shared with other
  processes (server mode) is refused instead (:func:`model_changed_error`). A store from
  before the record adopts the model that opens it (such stores were made with MiniLM unless
  their user configured another).
- **which index left the clean flag.** ``index_clean`` says the index was closed in step
  with the vault; :data:`CLEAN_FOR_META` names the index that closed it. One data directory
  may be opened with the embedded engine one day and Qdrant's local mode the next (both keep
  their files in ``index/``): what one left clean says nothing of the other, which missed
  every change made meanwhile, so an open of another index reconciles in full.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from memos_core.config import MemOSConfig
from memos_core.errors import InvalidInputError

__all__ = ["CLEAN_FOR_META", "MODEL_META", "describe", "edge_dim", "embedder_identity",
           "index_identity", "model_changed_error", "read_model"]

logger = logging.getLogger("memos_core")

#: vault meta key prefix: + :func:`index_identity`, the JSON identity of the embedding model
#: that made that index's vectors (:func:`embedder_identity`)
MODEL_META = "index_model:"
#: vault meta key: the :func:`index_identity` of the index whose close set ``index_clean``
CLEAN_FOR_META = "index_clean_for"
#: the name of the bundled default model (``embedder="minilm"``); never read as a path
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"


def index_identity(config: MemOSConfig, data_dir: Path, server: bool) -> str:
    """A name for the index ``config`` opens: its kind, and its collection where it has one.
    The embedded index is ``"edge"`` (in the data directory, which may move); in server
    mode, where each process keeps its own, it is named by its directory. An index on a
    server is not named by its URL: processes spell one server differently (``postgres:5432``
    inside a compose network, ``localhost:5433`` from the host), and a name that differed
    by spelling would let one of them write another model's vectors into the index."""
    if config.index == "pgvector":
        return f"pgvector {config.qdrant_collection}"
    if config.qdrant_url is not None:
        return f"qdrant {config.qdrant_collection}"
    local = "edge" if config.index == "edge" else f"qdrant-local {config.qdrant_collection}"
    return f"{local} {(data_dir / 'index').resolve()}" if server else local


def embedder_identity(embedder: object, dim: int) -> dict[str, Any]:
    """What identifies the vectors ``embedder`` makes: its ``name`` (a model directory given
    by a relative path as its absolute path) and ``dim``. An embedder with no usable
    ``name`` is named by its class."""
    name = getattr(embedder, "name", None)
    if not isinstance(name, str) or not name.strip():
        name = f"{type(embedder).__module__}.{type(embedder).__qualname__}"
    elif name != DEFAULT_MODEL_NAME and os.path.isdir(name):
        name = os.path.abspath(name)
    return {"model": name, "dim": dim}


def describe(identity: dict[str, Any]) -> str:
    """``identity`` for a message: ``'all-MiniLM-L6-v2' (384 dimensions)``."""
    return f"{identity.get('model')!r} ({identity.get('dim')} dimensions)"


def read_model(value: str | None) -> dict[str, Any] | None:
    """The recorded identity in ``value`` (a meta value), or None where there is none; an
    unreadable one is logged and taken as none (the current model is recorded again)."""
    if value is None:
        return None
    try:
        identity = json.loads(value)
    except ValueError:
        identity = None
    if not isinstance(identity, dict) or not isinstance(identity.get("model"), str):
        logger.warning("the record of the embedding model that built the index cannot be "
                       "read (%r); recording the current one", value[:200])
        return None
    return identity


def edge_dim(index_dir: Path) -> int | None:
    """The dense dimension the embedded engine's index in ``index_dir`` was created for (from
    its ``edge_config.json``), or None where there is none to read. A store from before the
    model record whose index has another dimension than the model opening it was made with
    another model (or by a version that made every index 384 wide): it is rebuilt."""
    try:
        config = json.loads((index_dir / "edge_config.json").read_text(encoding="utf-8"))
        size = config["vectors"]["dense"]["size"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return size if isinstance(size, int) and not isinstance(size, bool) else None


def model_changed_error(recorded: dict[str, Any], current: dict[str, Any],
                        index: str) -> InvalidInputError:
    """The refusal of an open whose embedding model is not the one that built an index other
    processes share (it cannot be rebuilt under them)."""
    return InvalidInputError(
        f"The index ({index}) was built with the embedding model {describe(recorded)}, but "
        f"this store is opened with {describe(current)}. Other processes share that index, "
        "so it is not rebuilt under them, and vectors of two models cannot be compared. Open "
        f"the store with embedder={recorded.get('model')!r} (MemOSConfig.embedder, or the "
        "embedder object you pass), or move every process to the new model with an index of "
        "its own: a new qdrant_collection (the Qdrant collection, or pgvector's table "
        "prefix), which is built from the vault when the store opens.")
