"""An MCP (Model Context Protocol) server over the Memory API: ``memos mcp``.

Tools (store, search, get, update, forget, compress, history, share, revoke), resources (a
user's recent memories, a memory's audit trail) and a ``recall`` prompt, served over stdio
or streamable HTTP with bearer tokens. See docs/mcp.md.

Importing this package does not import the ``mcp`` SDK; the names below that need it
(``MemoryServer``, ``build_stdio_server``, ``build_http_server``, ``HttpServerThread``,
``serve_http``, ``serve_stdio``) load it on first use.
"""

from __future__ import annotations

from typing import Any

from memos_core.mcp_server.tokens import TokenRecord, TokenStore
from memos_core.mcp_server.tools import MemoryService

_SERVER_NAMES = ("HttpServerThread", "MemoryServer", "build_http_server", "build_stdio_server",
                 "is_loopback", "serve_http", "serve_stdio")

__all__ = sorted(["MemoryService", "TokenRecord", "TokenStore", *_SERVER_NAMES])


def __getattr__(name: str) -> Any:
    if name in _SERVER_NAMES:
        from memos_core.mcp_server import server

        return getattr(server, name)
    raise AttributeError(f"module 'memos_core.mcp_server' has no attribute {name!r}")
