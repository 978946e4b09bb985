"""A forget killed (SIGKILL) inside the chat history's forget hook leaves no forgotten text
behind once retried.

The hook redacts a history message that quotes the forgotten memory: a new version of the
message and the in-place redaction of its earlier versions, in ONE vault transaction
(``memos_core.integration.update_redacting``). They used to be two commits: a kill between
them left the text in the message's first version for good, since a retried forget selects
messages by their current version, already redacted. Here the child process is killed right
after the message's commit (``forget_crash_child.py``); then the earlier version holds no
text, and after the retried forget no file of the data directory does. The server-mode
variant is ``tests/server/test_server_adapters.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from memos_core import MemOS, MemOSConfig

from langchain_memos import MemOSChatMessageHistory

CHILD = Path(__file__).with_name("forget_crash_child.py")
SECRET = "ZZPIN4711"


def files_holding(root: Path, needle: str) -> list[str]:
    return sorted(str((Path(d) / n).relative_to(root)) for d, _, names in os.walk(root)
                  for n in names if needle.encode() in (Path(d) / n).read_bytes())


def killed_in_the_hook(target: str, ids: Path) -> dict[str, str]:
    """Run the child on ``target``; returns the ids it wrote (the memory, the message)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one short text per call: see conftest
    done = subprocess.run([sys.executable, str(CHILD), target, str(ids)], capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.returncode == -9, done.stderr[-3000:]
    return json.loads(ids.read_text())


def test_a_kill_after_the_hooks_commit_leaves_no_earlier_version_holding_the_text(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    ids = killed_in_the_hook(str(data), tmp_path / "ids.json")
    with MemOS(data, config=MemOSConfig.preset("test")) as mos:
        history = mos.history(ids["message"], user_id="alice")
        assert len(history) == 2  # the hook's new version committed, the forget's tombstone not
        assert [SECRET in v.text for v in history] == [False, False]
        assert mos.get(ids["pin"], user_id="alice").text.endswith("back gate")  # not forgotten
        # the retry the docs ask for, from a process with a history built on its MemOS
        MemOSChatMessageHistory(mos, user_id="alice", session_id="other")
        mos.forget(ids["pin"], user_id="alice")
        assert [m.content for m in MemOSChatMessageHistory(
            mos, user_id="alice", session_id="chat-1").messages] == [
            "Remember: [forgotten]", "ok, noted"]
        assert all(SECRET not in v.text for v in mos.history(ids["message"], user_id="alice"))
        assert mos.vault.verify_audit() == (True, "audit chain intact")
    assert files_holding(data, SECRET) == []
