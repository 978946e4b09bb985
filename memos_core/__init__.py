"""memos-core: a memory operating system for LLM agents."""
