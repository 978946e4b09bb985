"""MemOS memory for LangChain and LangGraph.

Give an existing ``create_agent`` agent MemOS memory by changing its constructor only::

    from memos_core import MemOS
    from langchain_memos import MemOSCheckpointer, MemOSMiddleware, MemOSStore

    mos = MemOS("./memdata")
    agent = create_agent(
        model, tools,
        checkpointer=MemOSCheckpointer(mos),                      # thread state
        store=MemOSStore(mos, user_label=0),                                     # LangGraph long-term store
        middleware=[MemOSMiddleware(mos, memory_tools=True)],      # recall, record, tools
    )
    agent.invoke({"messages": [...]}, {"configurable": {"thread_id": "t1", "user_id": "alice"}})

For existing chains: :class:`MemOSRetriever` and :class:`MemOSChatMessageHistory`.
:class:`ChatMemOS` is a chat model over MemOS's local model and its KV and LoRA tiers.
Every component calls only the ``memos_core.MemOS`` facade.
"""

from langchain_memos._shared import MissingUserError
from langchain_memos.chat_history import MemOSChatMessageHistory
from langchain_memos.chat_model import ChatMemOS
from langchain_memos.checkpoint import MemOSCheckpointer
from langchain_memos.middleware import MemOSMiddleware, format_memories
from langchain_memos.retrievers import MemOSRetriever
from langchain_memos.store import MemOSStore
from langchain_memos.tools import TOOL_NAMES, create_memory_tools

__all__ = [
    "ChatMemOS",
    "MemOSChatMessageHistory",
    "MemOSCheckpointer",
    "MemOSMiddleware",
    "MemOSRetriever",
    "MemOSStore",
    "MissingUserError",
    "TOOL_NAMES",
    "create_memory_tools",
    "format_memories",
]
