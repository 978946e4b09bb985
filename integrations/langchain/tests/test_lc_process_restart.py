"""Persistence across a real process restart: a child process writes through every
component and exits; this process opens the same data directory and reads it all back."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from langchain_core.messages import AIMessage, HumanMessage
from memos_core import MemOS, MemOSConfig

from langchain_memos import MemOSChatMessageHistory, MemOSCheckpointer, MemOSStore

WRITER = textwrap.dedent(
    """
    import sys
    from langchain_core.messages import AIMessage, HumanMessage
    from langgraph.checkpoint.base import empty_checkpoint
    from memos_core import MemOS, MemOSConfig
    from langchain_memos import MemOSChatMessageHistory, MemOSCheckpointer, MemOSStore, create_memory_tools

    with MemOS(sys.argv[1], config=MemOSConfig(show_progress=False)) as mos:
        MemOSStore(mos, user_label=0).put(("alice", "prefs"), "tea", {"text": "Alice drinks oolong"})
        history = MemOSChatMessageHistory(mos, user_id="alice", session_id="s1")
        history.add_messages([HumanMessage("hello", id="h1"), AIMessage("hi Alice", id="a1")])
        tools = {t.name: t for t in create_memory_tools(mos, user_id="alice")}
        tools["store_memory"].invoke({"text": "Alice was born in Graz"})
        with MemOSCheckpointer(mos) as saver:
            checkpoint = empty_checkpoint()
            checkpoint["channel_values"] = {"messages": ["persisted"]}
            checkpoint["channel_versions"] = {"messages": 1}
            saver.put({"configurable": {"thread_id": "t1", "checkpoint_ns": ""}}, checkpoint,
                      {"source": "input", "step": 0}, {"messages": 1})
    """
)


def test_everything_survives_a_process_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one short text per call: see conftest
    done = subprocess.run([sys.executable, "-c", WRITER, str(data)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]

    with MemOS(data, config=MemOSConfig(show_progress=False)) as mos:
        assert MemOSStore(mos, user_label=0).get(("alice", "prefs"), "tea").value == {"text": "Alice drinks oolong"}
        assert MemOSChatMessageHistory(mos, user_id="alice", session_id="s1").messages == [
            HumanMessage("hello", id="h1"), AIMessage("hi Alice", id="a1"),
        ]
        assert "Alice was born in Graz" in {h.text for h in mos.search("where was she born?", user_id="alice")}
        with MemOSCheckpointer(mos) as saver:
            state = saver.get_tuple({"configurable": {"thread_id": "t1"}})
            assert state is not None and state.checkpoint["channel_values"] == {"messages": ["persisted"]}
