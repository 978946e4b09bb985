"""The benchmarks time a search's stages by wrapping functions by name (``STAGES`` tables of
``benchmarks/search_inprocess.py``, ``server_mode.py`` and ``locomo_retrieval.py``). A
function that moves leaves its stage silently at 0 ms (its time lands in "rest") or, with
``time_calls``, stops the benchmark: every stage must name at least one function the code
has (the search pipeline's move to ``memos_core/ops/search.py`` did both)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest

import memos_core.memos
import memos_core.ops.search
import memos_core.retrieval.hybrid
from memos_core.embedding import QueryCache
from memos_core.index.base import VectorIndex
from memos_core.index.pgvector import PgVectorIndex
from memos_core.retrieval.hybrid import HybridRetriever
from memos_core.store import MemoryStore
from memos_core.store.feed import ChangeFollower
from memos_core.vault import SQLiteVault

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

#: what each part name of the STAGES tables stands for (a class: its instances' methods; the
#: index: any index, server mode's with its one-call hybrid search)
PARTS: dict[str, tuple[Any, ...]] = {
    "query_vectors": (QueryCache,), "retriever": (HybridRetriever,), "store": (MemoryStore,),
    "vault": (SQLiteVault,), "index": (VectorIndex, PgVectorIndex),
    "follower": (ChangeFollower,), "memos_module": (memos_core.memos,),
    "memos": (memos_core.memos,), "search_module": (memos_core.ops.search,),
    "search": (memos_core.ops.search,), "hybrid_module": (memos_core.retrieval.hybrid,),
    "index_module": (memos_core.retrieval.hybrid,),
}


def _stages(script: str) -> list[tuple[str, str, str]]:
    """The script's STAGES as (stage, part, attribute)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        table = importlib.import_module(script).STAGES
    finally:
        sys.path.remove(str(BENCHMARKS))
    if script == "locomo_retrieval":  # (part, attribute, label)
        return [(label, part, attr) for part, attr, label in table]
    return list(table)


@pytest.mark.parametrize("script", ["search_inprocess", "server_mode", "locomo_retrieval"])
def test_every_timed_stage_names_a_function_the_code_has(script: str) -> None:
    stages = _stages(script)
    found: dict[str, bool] = {}
    for stage, part, attr in stages:
        assert part in PARTS, f"{script}: stage {stage!r} names an unknown part {part!r}"
        found[stage] = found.get(stage, False) or any(hasattr(o, attr) for o in PARTS[part])
    assert [stage for stage, ok in found.items() if not ok] == [], script
