"""Checking and normalising what goes into an index, shared by every backend.

Everything here is I/O-free: the backends call these functions before they touch their
engine, so bad input is rejected with the same message everywhere and never half-written.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from memos_core.index.base import PAYLOAD_KEYS, IndexPoint, SparseVec

#: Defaults filled in on upsert, so every stored point carries every filter field.
PAYLOAD_DEFAULTS: dict[str, Any] = {
    "agent_id": None,
    "session_id": None,
    "type": None,
    "tags": [],
    "state": None,
    "occurred_at": None,
    "superseded": False,
    "readers": [],
}
REQUIRED_KEYS = ("user_id", "version")
_OPTIONAL_STR = ("agent_id", "session_id", "type", "state")
_STR_LISTS = ("tags", "readers")
_MAX_SPARSE_INDEX = 2**32 - 1  # Qdrant sparse indices are u32


def canonical_id(point_id: object) -> str:
    """The canonical UUID string of a memory id (what searches return).

    Raises ``ValueError`` for anything that is not a UUID: Qdrant point ids are UUIDs or
    integers, and memory ids are UUID strings (``memos_core.cube.new_id``).
    """
    if isinstance(point_id, uuid.UUID):
        return str(point_id)
    if not isinstance(point_id, str):
        kind = type(point_id).__name__
        raise ValueError(f"index ids must be UUID strings, got {kind} {point_id!r}")
    try:
        return str(uuid.UUID(point_id))
    except ValueError:
        raise ValueError(
            f"index ids must be UUID strings (memos_core.cube.new_id), got {point_id!r}"
        ) from None


def dense_list(vector: Sequence[float], dim: int) -> list[float]:
    """The vector as a list of floats, after checking its length and values.

    Raises ``ValueError`` if it does not have ``dim`` entries, holds NaN/inf, or is all
    zeros (cosine similarity is undefined for a zero vector).
    """
    return [float(x) for x in dense_array(vector, dim).tolist()]


def dense_array(vector: Sequence[float], dim: int) -> np.ndarray:
    """:func:`dense_list`'s checks, the vector as a float64 array (no list of floats built)."""
    arr = np.asarray(vector, dtype=np.float64)
    if arr.ndim != 1 or arr.shape[0] != dim:
        raise ValueError(
            f"dense vector has shape {arr.shape}, the index expects ({dim},): "
            "embed with the model the index was created for, or rebuild the index"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError("dense vector holds NaN or infinite values; check the embedder output")
    if not np.any(arr):
        raise ValueError("dense vector is all zeros; cosine similarity needs a non-zero vector")
    return arr


def check_sparse(vector: SparseVec) -> SparseVec:
    """Return ``vector`` after checking it is a valid sparse vector.

    Raises ``ValueError`` for mismatched lengths, duplicate or out-of-range (not u32)
    indices, or non-finite values. An empty vector is valid (text of only stopwords).
    """
    if not isinstance(vector, SparseVec):
        raise ValueError(f"sparse vector must be a SparseVec, got {type(vector).__name__}")
    if len(vector.indices) != len(vector.values):
        raise ValueError(
            f"sparse vector has {len(vector.indices)} indices but {len(vector.values)} values"
        )
    if len(set(vector.indices)) != len(vector.indices):
        raise ValueError("sparse vector has duplicate indices; merge their values first")
    for index in vector.indices:
        is_int = isinstance(index, int) and not isinstance(index, bool)
        if not is_int or not 0 <= index <= _MAX_SPARSE_INDEX:
            raise ValueError(f"sparse index {index!r} is not an integer in [0, 2**32)")
    if not all(math.isfinite(v) for v in vector.values):
        raise ValueError("sparse vector holds NaN or infinite values")
    return vector


def _check_value(key: str, value: Any) -> Any:
    """One payload value checked against its key's type; returns the stored form."""
    if key == "user_id":
        if not isinstance(value, str) or not value:
            raise ValueError(f"payload 'user_id' must be a non-empty string, got {value!r}")
        return value
    if key == "version":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"payload 'version' must be a non-negative int, got {value!r}")
        return value
    if key in _OPTIONAL_STR:
        if value is not None and not isinstance(value, str):
            raise ValueError(f"payload {key!r} must be a string or None, got {value!r}")
        return value
    if key in _STR_LISTS:
        if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
            raise ValueError(f"payload {key!r} must be a list of strings, got {value!r}")
        if not all(isinstance(item, str) for item in value):
            raise ValueError(f"payload {key!r} must hold only strings, got {value!r}")
        return list(dict.fromkeys(value))  # deduplicated, order kept
    if key == "occurred_at":
        if value is None:
            return None
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not is_number or not math.isfinite(value):
            raise ValueError(
                f"payload 'occurred_at' must be finite epoch seconds or None, got {value!r}"
            )
        return float(value)
    if key == "superseded":
        if not isinstance(value, bool):
            raise ValueError(f"payload 'superseded' must be a bool, got {value!r}")
        return value
    raise AssertionError(f"unhandled payload key {key!r}")  # PAYLOAD_KEYS and this disagree


def check_payload(payload: Mapping[str, Any], *, partial: bool) -> dict[str, Any]:
    """The payload in stored form, after checking keys and value types.

    ``partial=False`` (upsert): ``user_id`` and ``version`` are required and the other
    filter fields get their defaults. ``partial=True`` (set_payload): only the given keys.
    Unknown keys raise ``ValueError``: the index holds filter fields only, never text.
    """
    if not isinstance(payload, Mapping):
        raise ValueError(f"payload must be a dict, got {type(payload).__name__}")
    unknown = sorted(set(payload) - set(PAYLOAD_KEYS))
    if unknown:
        raise ValueError(
            f"payload keys {unknown} are not index fields; allowed: {list(PAYLOAD_KEYS)} "
            "(the index never stores memory text)"
        )
    out = {key: _check_value(key, value) for key, value in payload.items()}
    if partial:
        return out
    missing = [key for key in REQUIRED_KEYS if key not in out]
    if missing:
        raise ValueError(f"payload is missing required keys {missing}")
    return {**PAYLOAD_DEFAULTS, **out}


def check_points(
    points: Sequence[IndexPoint], dim: int
) -> list[tuple[str, list[float], SparseVec, dict[str, Any]]]:
    """Every point checked and normalised as ``(id, dense, sparse, payload)``.

    Raises ``ValueError`` naming the first bad point; nothing is returned (so nothing is
    written) if any point is bad. A repeated id keeps its last occurrence, as an upsert
    sequence would.
    """
    checked: dict[str, tuple[str, list[float], SparseVec, dict[str, Any]]] = {}
    for position, point in enumerate(points):
        if not isinstance(point, IndexPoint):
            raise ValueError(f"point {position} is a {type(point).__name__}, expected IndexPoint")
        try:
            pid = canonical_id(point.id)
            checked[pid] = (
                pid,
                dense_list(point.dense, dim),
                check_sparse(point.sparse),
                check_payload(point.payload, partial=False),
            )
        except ValueError as exc:
            raise ValueError(f"point {position} (id {point.id!r}): {exc}") from None
    return list(checked.values())


def batches_by_version(items: Sequence[tuple[int, Any]], size: int) -> list[tuple[int, list[Any]]]:
    """``(version, items)`` pairs of at most ``size`` items each, grouped by version (in
    order of first appearance): an upsert is written one version at a time, each batch
    conditional on the stored point not being at a later version."""
    groups: dict[int, list[Any]] = {}
    for version, item in items:
        groups.setdefault(version, []).append(item)
    return [(version, group[start:start + size])
            for version, group in groups.items() for start in range(0, len(group), size)]


def check_limit(limit: int) -> int:
    """``limit`` if it is a non-negative int; ``ValueError`` otherwise."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be a non-negative int, got {limit!r}")
    return limit
