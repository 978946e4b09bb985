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


def test_packages_are_typed() -> None:
    """PEP 561: both packages ship a ``py.typed`` marker, declared as package data, so a
    regular (non-editable) install is type-checked against their annotations."""
    from pathlib import Path

    import memos_core
    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    for package, pyproject in [
        (langchain_memos, Path(langchain_memos.__file__).parents[1] / "pyproject.toml"),
        (memos_core, Path(memos_core.__file__).parents[1] / "pyproject.toml"),
    ]:
        name = package.__name__
        assert (Path(package.__file__).parent / "py.typed").is_file(), name
        data = tomllib.loads(pyproject.read_text())["tool"]["setuptools"].get("package-data", {})
        assert "py.typed" in data.get(name, []), f"{pyproject}: package-data of {name}"


def test_the_package_has_a_readme() -> None:
    """The distribution's long description: ``readme`` in pyproject.toml names a README
    beside it, whose relative links resolve."""
    import re
    from pathlib import Path

    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    root = Path(langchain_memos.__file__).parents[1]
    readme = tomllib.loads((root / "pyproject.toml").read_text())["project"]["readme"]
    text = (root / readme).read_text()
    assert "pip install" in text and "docs/langchain.md" in text
    for link in re.findall(r"\]\(([^)#]+)\)", text):
        assert (root / link).exists(), link
