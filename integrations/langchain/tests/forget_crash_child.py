"""A process killed (SIGKILL) inside a forget, right after the chat history's forget hook
committed the redacted new version of a history message that quoted the forgotten memory.

``python forget_crash_child.py TARGET OUT``: TARGET is a data directory or a
``postgresql://`` URL; the ids of the memory and of the message go to OUT (JSON) before
the forget. The kill lands after the vault commit of the message's new version, where the
old hook had its second commit (the in-place redaction of the earlier versions) still to
make; it exits -9 (a forget that is not killed exits 3).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from memos_core import MemOS, MemOSConfig

from langchain_memos import MemOSChatMessageHistory

SECRET = "ZZPIN4711"


def main(target: str, out: str) -> None:
    mos = MemOS(target, config=MemOSConfig.preset("test"))
    pin = mos.add(f"Alice's door code is {SECRET} at the back gate", user_id="alice")
    history = MemOSChatMessageHistory(mos, user_id="alice", session_id="chat-1")
    history.add_messages([HumanMessage(f"Remember: Alice's door code is {SECRET} at the back gate"),
                          AIMessage("ok, noted")])
    [said] = [c for c in mos.list(user_id="alice", limit=100)
              if c.id != pin.id and SECRET in c.text]
    with open(out, "w") as f:
        json.dump({"pin": pin.id, "message": said.id}, f)

    vault_class = type(mos.vault)
    put_version = vault_class.put_version

    def killed_after_commit(self: Any, cube: Any, *args: Any, **kwargs: Any) -> None:
        put_version(self, cube, *args, **kwargs)
        if cube.id == said.id:  # the hook's write of the redacted message: committed
            os.kill(os.getpid(), signal.SIGKILL)

    vault_class.put_version = killed_after_commit  # type: ignore[method-assign]
    mos.forget(pin.id, user_id="alice")
    sys.exit(3)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
