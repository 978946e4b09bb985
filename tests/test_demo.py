"""The README's first command runs `memos demo`: every step of it (without the local model,
which the slow CLI tests load) runs and says what it did, the server-mode step included."""

from __future__ import annotations

import pytest

from memos_core.demo import run_demo


def test_the_demo_runs_every_step(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    run_demo(tmp_path / "demo", use_model=False)
    out = capsys.readouterr().out
    for step in range(1, 10):
        assert f"== {step}. " in out, f"step {step} missing"
    assert "audit chain intact" in out
    # server mode: a second process (the CLI) sees this process's memory, then not after forget
    assert "another process, `memos --db URL search`: 'The kayak is in the boathouse by the lake.'" in out
    assert "the other process now finds: nothing" in out
