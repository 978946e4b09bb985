"""Files other users of the machine must not read: the data directory memos-core creates, and
bundles, are private to their owner; an export writes nothing through a planted link."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from memos_core import MemOS, MemOSConfig
from memos_core.errors import InvalidInputError, MemOSError
from memos_core.ops import bundle

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def mos(tmp_path: Path) -> Iterator[MemOS]:
    store = MemOS(tmp_path / "parent" / "data", config=MemOSConfig(show_progress=False))
    yield store
    store.close()


def test_a_new_data_directory_is_private(mos: MemOS, tmp_path: Path) -> None:
    assert _mode(tmp_path / "parent" / "data") == 0o700


def test_an_open_existing_data_directory_is_kept_and_warned_about(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "shared"
    data.mkdir()
    data.chmod(0o755)
    with caplog.at_level(logging.WARNING, logger="memos_core"):
        MemOS(data, config=MemOSConfig(show_progress=False)).close()
    assert _mode(data) == 0o755  # the caller's choice
    assert "can be read by other users" in caplog.text and "chmod 700" in caplog.text


def test_a_data_directory_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInputError, match="not a directory"):
        MemOS(tmp_path / "file", config=MemOSConfig(show_progress=False))


def test_a_bundle_is_private_and_replaces_an_empty_directory(mos: MemOS, tmp_path: Path) -> None:
    mos.add("Ana's PIN is 4921.", user_id="ana", tags=["pii"])
    target = tmp_path / "out"
    target.mkdir()
    target.chmod(0o777)
    path = mos.export(target, user_id="ana", include_sensitive=True)
    assert _mode(path) == 0o700
    assert sorted(p.name for p in path.iterdir()) == ["edges.jsonl", "manifest.json", "memories.jsonl"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no work dir left


def test_an_export_writes_nothing_through_a_link_planted_meanwhile(
        mos: MemOS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race a helper won: the victim exports into an empty directory another user can
    write, who plants manifest.json as a link to the victim's file while the export runs."""
    mos.add("Ana's note.", user_id="ana")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "drop"
    target.mkdir()
    write = bundle._write_bundle

    def planting(*args: object) -> tuple[int, int]:
        (target / "manifest.json").symlink_to(victim)
        return write(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(bundle, "_write_bundle", planting)
    with pytest.raises(MemOSError, match="Could not create the bundle") as caught:
        mos.export(target, user_id="ana")
    assert not isinstance(caught.value, InvalidInputError)  # an environment problem: CLI exit 1
    assert victim.read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("bad", ["", "  ", "a\x00b", 5, b"data"])
def test_a_bad_data_directory_argument_is_named(bad: object) -> None:
    with pytest.raises(InvalidInputError, match="data_dir"):
        MemOS(bad)  # type: ignore[arg-type]


def test_an_empty_memos_data_dir_is_not_the_working_directory(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEMOS_DATA_DIR", "")
    with pytest.raises(InvalidInputError, match="MEMOS_DATA_DIR is set but empty"):
        MemOS()
    assert list(tmp_path.iterdir()) == []


def test_a_lock_file_that_cannot_be_opened_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "d" / "LOCK").mkdir(parents=True)
    with pytest.raises(MemOSError, match="Cannot open the lock file"):
        MemOS(tmp_path / "d", config=MemOSConfig(show_progress=False))


def test_an_export_under_a_file_is_a_clear_error(mos: MemOS, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(MemOSError, match="Cannot create the bundle") as caught:
        mos.export(tmp_path / "afile" / "bundle", user_id="ana")
    assert not isinstance(caught.value, InvalidInputError)
