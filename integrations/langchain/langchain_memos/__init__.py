"""MemOS memory for LangChain and LangGraph."""
