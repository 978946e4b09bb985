"""Access control and audit through the ``memos`` command line (in-process ``main([...])``):
the same rules as the API, with exit status 3 for a denial, and ``memos audit verify``
exiting 1 on a tampered log."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Callable

import pytest

from memos_core.cli import main

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def memos(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Run:
    def run(user: str, *args: str) -> tuple[int, str, str]:
        code = main([args[0], "--data-dir", str(tmp_path / "d"), "--user", user, "--json", *args[1:]])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def _ids(out: str) -> set[str]:
    data: Any = json.loads(out)
    return {h["id"] for h in data} if isinstance(data, list) else set()


# (who, command, expected exit status, check of stdout/stderr); "{id}" is A's memory id.
STEPS: list[tuple[str, tuple[str, ...], int, Callable[[str, str, str], bool]]] = [
    ("bob", ("get", "{id}"), 3, lambda out, err, mid: "denied" in err and "rule:" in err),
    ("bob", ("history", "{id}"), 3,
     lambda out, err, mid: "belongs to another user" in err and "alice" not in err),
    ("bob", ("search", "heron lake"), 0, lambda out, err, mid: mid not in _ids(out)),
    ("bob", ("update", "{id}", "mine now"), 3, lambda out, err, mid: "may not change" in err),
    ("bob", ("forget", "{id}"), 3, lambda out, err, mid: "denied" in err),
    ("bob", ("share", "{id}", "--with", "mallory"), 3, lambda out, err, mid: "denied" in err),
    ("bob", ("audit", "--memory", "{id}"), 3, lambda out, err, mid: "denied" in err),
    ("alice", ("share", "{id}", "--with", "bob"), 0, lambda out, err, mid: "bob" in out),
    ("bob", ("get", "{id}"), 0, lambda out, err, mid: json.loads(out)["id"] == mid),
    ("bob", ("search", "heron lake"), 0, lambda out, err, mid: mid in _ids(out)),
    ("bob", ("update", "{id}", "mine now"), 3, lambda out, err, mid: "rule: owner or writers" in err),
    ("alice", ("share", "{id}", "--with", "bob", "--scope", "write"), 0, lambda out, err, mid: True),
    ("bob", ("update", "{id}", "Alice saw a heron at the lake (edited by Bob)."), 0,
     lambda out, err, mid: json.loads(out)["version"] == 4),
    ("bob", ("forget", "{id}"), 3, lambda out, err, mid: "forget is owner-only" in err),
    ("alice", ("revoke", "{id}", "--with", "bob"), 0, lambda out, err, mid: True),
    ("bob", ("get", "{id}"), 3, lambda out, err, mid: "denied" in err),
    ("bob", ("search", "heron lake"), 0, lambda out, err, mid: mid not in _ids(out)),
    ("alice", ("share", "--with", "bob", "--session", "walks"), 0,
     lambda out, err, mid: json.loads(out)["memories"] == 1),
    ("bob", ("search", "heron lake"), 0, lambda out, err, mid: mid in _ids(out)),
    ("alice", ("revoke", "--with", "bob", "--session", "walks"), 0,
     lambda out, err, mid: json.loads(out)["scope"] == "none"),
    ("bob", ("search", "heron lake"), 0, lambda out, err, mid: mid not in _ids(out)),
    ("alice", ("share", "{id}", "--with", "bob", "--session", "walks"), 2,
     lambda out, err, mid: "not both" in err),
    ("alice", ("audit", "verify"), 0, lambda out, err, mid: json.loads(out)["ok"] is True),
    ("alice", ("audit", "--action", "revoke_namespace"), 0,
     lambda out, err, mid: [r["action"] for r in json.loads(out)] == ["revoke_namespace"]),
    ("alice", ("audit", "--memory", "{id}", "--action", "share:write"), 0,
     lambda out, err, mid: [r["version"] for r in json.loads(out)] == [3]),
    ("alice", ("audit", "--limit", "0"), 2, lambda out, err, mid: "limit must be" in err),
]


def test_cli_enforces_the_same_rules_as_the_api(memos: Run, tmp_path: Path) -> None:
    code, out, _ = memos("alice", "add", "Alice saw a heron at the lake.", "--session", "walks")
    mid = json.loads(out)["id"]
    failures = []
    for n, (user, args, want, check) in enumerate(STEPS):
        code, out, err = memos(user, *(a.replace("{id}", mid) for a in args))
        if code != want or not check(out, err, mid):
            failures.append((n, user, args, code, err.strip()[:120]))
    assert not failures, failures
    code, out, _ = memos("bob", "export", str(tmp_path / "bob-bundle"))
    assert code == 0 and mid not in (tmp_path / "bob-bundle" / "memories.jsonl").read_text()


def test_cli_sensitivity_flags(memos: Run, tmp_path: Path) -> None:
    code, out, _ = memos("alice", "add", "Alice's tax id is 123-45.", "--sensitivity", "pii")
    assert code == 0 and json.loads(out)["governance"]["sensitivity"] == ["pii"]
    hit = json.loads(memos("alice", "search", "tax id")[1])[0]
    assert (hit["text"], hit["redacted"]) == ("[redacted: pii]", ["pii"])
    hit = json.loads(memos("alice", "search", "tax id", "--allow-sensitive", "pii")[1])[0]
    assert hit["text"] == "Alice's tax id is 123-45."
    memos("alice", "export", str(tmp_path / "b1"))
    memos("alice", "export", str(tmp_path / "b2"), "--include-sensitive")
    assert "123-45" not in (tmp_path / "b1" / "memories.jsonl").read_text()
    assert "123-45" in (tmp_path / "b2" / "memories.jsonl").read_text()


@pytest.mark.parametrize(
    "tamper, message",
    [
        ("UPDATE audit SET reason='nothing to see' WHERE seq=1", "altered"),
        ("DELETE FROM audit WHERE seq=1", "altered or its predecessor removed"),
        ("DELETE FROM audit WHERE seq=(SELECT MAX(seq) FROM audit)", "records at the end"),
    ],
)
def test_audit_verify_exits_1_on_a_tampered_log(memos: Run, tmp_path: Path, tamper: str,
                                                message: str) -> None:
    mid = json.loads(memos("alice", "add", "first")[1])["id"]
    memos("alice", "update", mid, "second")
    assert memos("alice", "audit", "verify")[0] == 0
    with sqlite3.connect(tmp_path / "d" / "vault.sqlite3") as db:
        db.execute(tamper)
    db.close()
    code, out, _ = memos("alice", "audit", "verify")
    assert code == 1 and json.loads(out)["ok"] is False and message in json.loads(out)["message"]
