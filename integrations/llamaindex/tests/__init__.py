"""Tests of llama-index-memory-memos (a package, so its conftest does not shadow the
other test directories' top-level ``conftest`` module)."""
