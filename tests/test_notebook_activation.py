"""notebooks/02_activation_memory.ipynb runs top to bottom (its cells assert what they show)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "02_activation_memory.ipynb"


@pytest.mark.slow
def test_activation_notebook_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), (
        "commit the notebook without outputs"
    )
    # The python3 kernel spec runs "python": make it this interpreter (the project's venv).
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    client = NotebookClient(nb, kernel_name="python3", timeout=300,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()

    outputs = [out for cell in nb.cells for out in cell.get("outputs", [])]
    printed = "".join(out.get("text", "") for out in outputs if out.get("name") == "stdout")
    assert "Pastel" in printed and "KV prefix" in printed
    assert any("image/png" in out.get("data", {}) for out in outputs), "the TTFT plot is missing"
