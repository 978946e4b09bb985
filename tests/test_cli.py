"""The `memos` command line, run in-process through its entry point (and once as a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from memos_core.cli import main


@pytest.fixture
def memos(tmp_path, capsys):
    def run(*args: str) -> tuple[int, str, str]:
        code = main([args[0], "--data-dir", str(tmp_path / "d"), "--user", "alice", *args[1:]])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_add_search_get_history_forget(memos):
    code, out, _ = memos("add", "Alice keeps bees in her garden.", "--json", "--tag", "hobby")
    cube = json.loads(out)
    assert code == 0 and cube["version"] == 1 and cube["tags"] == ["hobby"]
    code, out, _ = memos("search", "bees", "--json")
    assert code == 0 and json.loads(out)[0]["id"] == cube["id"]
    code, out, _ = memos("search", "bees")
    assert "why: dense #1" in out
    assert json.loads(memos("get", cube["id"], "--json")[1])["text"] == "Alice keeps bees in her garden."
    assert len(json.loads(memos("history", cube["id"], "--json")[1])) == 1
    code, out, _ = memos("forget", cube["id"], "--json", "--reason", "test")
    assert code == 0 and json.loads(out)["memory_id"] == cube["id"]
    assert json.loads(memos("search", "bees", "--json")[1]) == []


def test_bulk_file_export_import_reindex_stats_audit(memos, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"text": f"fact number {i}", "session_id": "s"}) for i in range(5)))
    code, out, _ = memos("add", "--file", str(src), "--json")
    assert code == 0 and json.loads(out)["added"] == 5
    assert memos("export", str(tmp_path / "b"))[0] == 0
    code, out, _ = memos("import", str(tmp_path / "b"), "--json")
    assert json.loads(out) == {"imported": 0, "skipped": 5, "edges": 0, "declared": 5}
    assert json.loads(memos("reindex", "--json")[1]) == {"indexed": 5}
    stats = json.loads(memos("stats", "--json")[1])
    assert stats["vault"]["memories"] == 5 and stats["index"]["points"] == 5
    named = json.loads(memos("stats", "--json", "--embedder-backend", "onnx")[1])
    assert named["embedder_backend"] == "onnx"
    code, out, _ = memos("audit", "verify", "--json")
    assert code == 0 and json.loads(out)["ok"] is True
    records = json.loads(memos("audit", "--json")[1])
    assert [r["action"] for r in records].count("add") == 5


@pytest.mark.parametrize(
    "args, code, message",
    [
        (("add",), 2, "needs a TEXT"),
        (("add", ""), 2, "empty"),
        (("get", "nope"), 2, "No memory"),
        (("forget", "00000000-0000-4000-8000-000000000000"), 2, "No memory"),
        (("search", "x", "-k", "0"), 2, "k must"),
        (("import", "/nonexistent/bundle"), 1, "not a bundle directory"),
        (("add", "x", "--occurred-at", "soon"), 2, "ISO"),
    ],
)
def test_errors_exit_non_zero_with_a_message(memos, args, code, message):
    got, _, err = memos(*args)
    assert got == code and message in err


def test_bad_jsonl_file_adds_nothing(memos, tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"text": "ok"}\n{"txt": "typo"}\n')
    code, _, err = memos("add", "--file", str(src))
    assert code == 2 and "line 2" in err
    assert json.loads(memos("stats", "--json")[1])["vault"]["memories"] == 0


def test_denied_exit_code(memos, tmp_path, capsys):
    cube = json.loads(memos("add", "private", "--json")[1])
    code = main(["get", cube["id"], "--data-dir", str(tmp_path / "d"), "--user", "mallory"])
    assert code == 3 and "denied" in capsys.readouterr().err


def test_console_script_runs(tmp_path):
    exe = sys.executable.replace("python", "memos")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert "demo" in out and "search" in out
