"""EdgeIndex.optimize must not leave the segments it replaced behind: qdrant-edge keeps them
on disk (and memory-mapped) until a flush, so every bulk load used to add a full copy."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from memos_core.index import Bm25Encoder, EdgeIndex, IndexPoint

DIM = 384  # the pile-up shows where HNSW is built (not at toy dimensions)
ENC = Bm25Encoder()
PAYLOAD = {"user_id": "u", "type": "fact", "state": "activated", "superseded": False,
           "readers": [], "version": 1, "tags": []}


def points(start: int, n: int) -> list[IndexPoint]:
    vectors = np.random.default_rng(start).normal(size=(n, DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [IndexPoint(str(uuid.UUID(int=start + i + 1)), vectors[i].tolist(),
                       ENC.encode_document(f"note {start + i}"), PAYLOAD) for i in range(n)]


def segment_dirs(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_dir() and p.parent.name == "segments"]


def test_repeated_optimize_does_not_pile_up_segments(tmp_path: Path) -> None:
    index = EdgeIndex(tmp_path / "edge", DIM)
    try:
        counts = []
        for round_ in range(3):
            index.upsert(points(round_ * 20_000, 20_000))  # above the indexing threshold
            index.optimize()
            counts.append(len(segment_dirs(tmp_path / "edge")))
        assert index.count() == 60_000
        assert counts[-1] <= counts[0], counts  # without the flush: 3, 7, 11
    finally:
        index.close()


def test_an_older_numpy_is_refused_at_import() -> None:
    """Before numpy 2.3 ``numpy.bool_`` is an int to qdrant-edge, and the superseded filter
    matched nothing: superseded memories came back in every default search."""
    from memos_core.index.edge import check_numpy

    with pytest.raises(ImportError, match=r"numpy >= 2.3 .*found 1.26.4"):
        check_numpy("1.26.4")
    check_numpy("2.3.0")
    check_numpy("2.4.6")
