"""Runs notebooks/05_llamaindex_chat.ipynb top to bottom in a fresh kernel (nbclient).

The kernel is this interpreter (jupyter_client maps the kernelspec's ``python`` to
``sys.executable``; its bin directory also goes first on PATH), so the notebook sees the
same packages as the tests. The committed notebook must carry no outputs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[3] / "notebooks" / "05_llamaindex_chat.ipynb"


def test_notebook_is_committed_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent),
                                                os.environ.get("PATH", "")]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the failing cell, on any error
    printed = "".join(
        out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
        for out in cell.outputs
    )
    assert "genmaicha" in printed and "After forgetting" in printed
    noise = [out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
             for out in cell.outputs if out.get("name") == "stderr"]
    assert not any("TqdmWarning" in t or "Loading weights" in t or "FutureWarning" in t
                   for t in noise), noise
