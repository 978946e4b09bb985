"""Work on an owner's own memories reads only those: sharing or revoking their namespace,
exporting, scheduling, the consolidation candidates (the scheduler's, and the memories
the parametric tier trains on) and a forget hook's search
(``owned_holding``) never decode the memories others shared with them -- however many, they
are not the owner's to change, export or schedule, and reading them made each of these cost
time in proportion to everything shared with the user (a big shared namespace: seconds).

The vault is real (SQLite); the test counts the documents it decodes by wrapping its own
decoding method on the instance (a spy, not a mock: every call goes through).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from memos_core import MemCube, MemOS, MemOSConfig
from memos_core.governance.redaction import MessageRedactor
from memos_core.integration import owned_holding

ME, BIG, OTHER = "me", "big", "other"
SHARED = 200
TAG = "chat"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MemOS, list[MemCube], set[str]]]:
    """``me`` owns 3 memories; ``big`` shares its namespace of 200 with ``me``. All are facts
    with the same words and tag, so that no filter but the owner tells them apart."""
    mos = MemOS(tmp_path_factory.mktemp("owner-reads"), config=MemOSConfig(show_progress=False))
    mine = mos.add_many([f"note about the blue kayak {i}" for i in range(3)], user_id=ME,
                        tags=[TAG], type="fact")
    theirs = mos.add_many([f"note about the blue kayak {i}" for i in range(SHARED)],
                          user_id=BIG, tags=[TAG], type="fact")
    mos.share_namespace(with_user_id=ME, user_id=BIG)
    assert len(mos.list(user_id=ME, limit=1000)) == len(mine) + SHARED  # they are shared
    yield mos, mine, {c.id for c in theirs}
    mos.close()


def _decoded(mos: MemOS, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The ids of the documents the vault decodes from now on (grows as it does)."""
    seen: set[str] = set()
    vault = mos.vault
    real = vault._with_usage  # type: ignore[attr-defined]

    def counting(docs: list[tuple[str, str]], *args: Any, **kwargs: Any) -> list[MemCube]:
        seen.update(mid for mid, _ in docs)
        return real(docs, *args, **kwargs)

    monkeypatch.setattr(vault, "_with_usage", counting)
    return seen


def _share(mos: MemOS, mine: list[MemCube], tmp: Path) -> None:
    assert mos.share_namespace(with_user_id=OTHER, user_id=ME).memories == 3


def _revoke(mos: MemOS, mine: list[MemCube], tmp: Path) -> None:
    mos.revoke_namespace(with_user_id=OTHER, user_id=ME)


def _export(mos: MemOS, mine: list[MemCube], tmp: Path) -> None:
    mos.export(tmp / "bundle", user_id=ME)
    lines = (tmp / "bundle" / "memories.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3  # the user's own, none of those shared with them


def _schedule(mos: MemOS, mine: list[MemCube], tmp: Path) -> None:
    mos.schedule(user_id=ME)


def _candidates(mos: MemOS, mine: list[MemCube], tmp: Path) -> None:
    mos.engine.consolidation_candidates(ME)


def _tier_candidates(mos: MemOS, mine: list[MemCube], tmp: Path) -> None:
    found = mos.engine.parametric.candidates(ME)  # what consolidate(ME) trains on
    assert {c.id for c in found} == {c.id for c in mine}


def _forget_search(mos: MemOS, mine: list[MemCube], tmp: Path) -> None:
    found = owned_holding(mos, ME, MessageRedactor(mine[0]), tags=[TAG], states=["generated"])
    assert {c.id for c in found} == {c.id for c in mine}


OPS: dict[str, Callable[[MemOS, list[MemCube], Path], None]] = {
    "share_namespace": _share, "revoke_namespace": _revoke, "export": _export,
    "schedule": _schedule, "consolidation_candidates": _candidates,
    "parametric_candidates": _tier_candidates,
    "owned_holding": _forget_search,
}


@pytest.mark.parametrize("name", list(OPS))
def test_owner_work_does_not_read_what_is_shared_with_them(
        store: tuple[MemOS, list[MemCube], set[str]], name: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    mos, mine, shared = store
    decoded = _decoded(mos, monkeypatch)
    OPS[name](mos, mine, tmp_path)
    assert decoded, "the spy saw no read: it no longer wraps the vault's decoding"
    assert decoded & shared == set(), f"{name} decoded {len(decoded & shared)} shared memories"
