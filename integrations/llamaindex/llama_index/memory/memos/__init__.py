"""MemOS memory for LlamaIndex: memory, memory block, chat stores, retriever, tools and an LLM.

Start with :class:`MemOSMemory`::

    from llama_index.core.chat_engine import SimpleChatEngine
    from memos_core import MemOS
    from llama_index.memory.memos import MemOSMemory

    with MemOS("./memdata") as mos:
        memory = MemOSMemory.from_defaults(mos=mos, user_id="alice", session_id="s1")
        engine = SimpleChatEngine.from_defaults(llm=your_llm, memory=memory)
        engine.chat("My favourite tea is genmaicha.")

The package's README.md has the same example, runnable as written.
"""

from llama_index.memory.memos.chat_store import MemOSAsyncChatStore, MemOSChatStore
from llama_index.memory.memos.llm import MemOSLLM
from llama_index.memory.memos.memory import MemOSMemory
from llama_index.memory.memos.memory_block import MemOSMemoryBlock
from llama_index.memory.memos.retriever import MemOSRetriever
from llama_index.memory.memos.tools import TOOL_NAMES, memos_tools

__all__ = [
    "MemOSAsyncChatStore",
    "MemOSChatStore",
    "MemOSLLM",
    "MemOSMemory",
    "MemOSMemoryBlock",
    "MemOSRetriever",
    "TOOL_NAMES",
    "memos_tools",
]
