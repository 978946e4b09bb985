"""The package surface: a sorted ``__all__``, no heavy imports or side effects on import."""

from __future__ import annotations

import subprocess
import sys

import langchain_memos


def test_all_is_sorted_and_importable() -> None:
    assert langchain_memos.__all__ == sorted(langchain_memos.__all__)
    for name in langchain_memos.__all__:
        assert getattr(langchain_memos, name) is not None
    assert "ChatMemOS" in langchain_memos.__all__


def test_import_loads_no_model_and_writes_nothing(tmp_path) -> None:  # noqa: ANN001
    code = (
        "import sys, langchain_memos\n"
        "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []
