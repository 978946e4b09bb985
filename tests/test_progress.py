"""Progress bars on bulk work: adding, importing and reconciling many memories show one, on
stderr (forced here with MEMOS_PROGRESS=1, as stderr is not a terminal under pytest), named
by the work; ``show_progress=False`` shows none."""

from __future__ import annotations

import pytest

N = 120  # over the 100 memories from which bars show


def _bars(err: str) -> dict[str, str]:
    """The last state of each bar on stderr, by name: ``{"import": "120/120"}``."""
    found: dict[str, str] = {}
    for chunk in err.replace("\r", "\n").splitlines():
        name, sep, rest = chunk.partition(":")
        if sep and "|" in rest:
            found[name.strip()] = rest.split("|")[2].split()[0]
    return found


def test_add_import_and_reconcile_show_their_progress(make_mos, tmp_path, capsys,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMOS_PROGRESS", "1")
    source = make_mos("source", show_progress=True)
    source.add_many([f"note number {i} about the garden" for i in range(N)], user_id="alice")
    assert _bars(capsys.readouterr().err) == {"add": f"{N}/{N}"}
    source.export(tmp_path / "bundle", user_id="alice")
    capsys.readouterr()

    target = make_mos("target", show_progress=True)
    target.import_(tmp_path / "bundle", user_id="alice")
    assert _bars(capsys.readouterr().err) == {"import": f"{N}/{N}"}

    target.store.index.clear()  # the index lost everything (as after a crash): reconcile
    assert target.reconcile()["reindexed"] == N
    assert _bars(capsys.readouterr().err) == {"reconcile": f"{N}/{N}"}
    assert len(target.search("garden note", user_id="alice", k=3)) == 3


def test_no_bar_when_turned_off(make_mos, tmp_path, capsys,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMOS_PROGRESS", "1")
    source = make_mos("source")  # show_progress=False
    source.add_many([f"note number {i} about the garden" for i in range(N)], user_id="alice")
    source.export(tmp_path / "bundle", user_id="alice")
    make_mos("target").import_(tmp_path / "bundle", user_id="alice")
    source.store.index.clear()
    source.reconcile()
    assert _bars(capsys.readouterr().err) == {}
