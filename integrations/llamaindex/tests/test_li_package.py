"""The package's shape: namespace import, a sorted public ``__all__``, no hidden side effects."""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

import llama_index.memory.memos as package

PACKAGE_DIR = Path(package.__file__).parent
README = Path(__file__).resolve().parents[1] / "README.md"
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def test_all_is_sorted_and_complete() -> None:
    assert package.__all__ == sorted(package.__all__)
    public = {n for n in vars(package) if not n.startswith("_")} - {
        "chat_store", "llm", "memory", "memory_block", "retriever", "tools"}
    assert public == set(package.__all__)
    assert "MemOSLLM" in package.__all__


def test_distribution_metadata() -> None:
    dist = importlib.metadata.distribution("llama-index-memory-memos")
    requires = " ".join(dist.requires or [])
    assert "memos-core" in requires and "llama-index-core" in requires
    assert importlib.import_module("llama_index.memory.memos") is package


def test_import_is_light_and_has_no_side_effects(tmp_path: Path) -> None:
    code = (
        "import sys, llama_index.memory.memos\n"
        "heavy = ('torch', 'transformers', 'sentence_transformers')\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_modules_stay_small() -> None:
    for path in PACKAGE_DIR.glob("*.py"):
        assert len(path.read_text().splitlines()) < 600, path.name


def test_readme_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The package README's example (the repository's docs test covers only README.md and
    docs/ at the top): run in a fresh directory, it recalls the fact in the next session."""
    [code] = PYTHON_BLOCK.findall(README.read_text(encoding="utf-8"))
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(README), "exec"), {"__name__": "readme_example"})  # noqa: S102
    assert "genmaicha" in capsys.readouterr().out
