"""notebooks/06_governance.ipynb runs top to bottom in a fresh kernel (its cells assert what
they show): sharing, namespace grants, sensitivity, TTL, the audit trail and a forget receipt.
The kernel is this interpreter (its bin directory goes first on PATH, as in
tests/test_notebooks.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "06_governance.ipynb"


def test_governance_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
        "commit the notebook without outputs")
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # one short text per embedding
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    for shown in ("denied:", "[redacted: pii]", "expire 1", "audit chain intact",
                  "files holding the forgotten text: []"):
        assert shown in printed
