"""MemOS memory for LlamaIndex."""
