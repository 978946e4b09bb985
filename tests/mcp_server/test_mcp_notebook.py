"""notebooks/07_mcp.ipynb runs top to bottom: an agent stores, recalls and forgets a memory
over MCP (HTTP server in the notebook's kernel, a scripted stand-in model)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "07_mcp.ipynb"


def test_mcp_notebook_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # the python3 kernel spec runs "python": make it this interpreter (the project's venv)
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    NotebookClient(nb, kernel_name="python3", timeout=300,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(out.get("text", "") for cell in nb.cells
                      for out in cell.get("outputs", []) if out.get("name") == "stdout")
    assert "tools: store, search, get, update, forget, compress, history, share, revoke" in printed
    assert "owner: alice" in printed
    assert "Alice is allergic to peanuts.\n        why: dense #1" in printed
    assert "bob's search found: []" in printed
    assert "search after forget: []" in printed and "server stopped" in printed
