"""docs/mcp.md: every snippet a user pastes is checked.

JSON blocks are parsed and their ``memos`` command lines parsed by the CLI's own parser;
``memos ...`` lines of bash blocks too; Python blocks are compiled, and the ones that define
``memory_tools()`` are run against a live server (its URL in place of the example's).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from mcp_helpers import HttpFixture

from memos_core.cli import _parser

DOC = Path(__file__).resolve().parents[2] / "docs" / "mcp.md"
TOOLS = {"store", "search", "get", "update", "forget", "compress", "history", "share", "revoke"}
EXAMPLE_URL = "http://127.0.0.1:8765/mcp"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_doc_has_each_kind_of_snippet() -> None:
    assert len(blocks("json")) == 2 and len(blocks("python")) == 3 and len(blocks("bash")) == 2


@pytest.mark.parametrize("snippet", blocks("json"), ids=["stdio", "http"])
def test_json_client_configs(snippet: str) -> None:
    server = json.loads(snippet)["mcpServers"]["memos"]
    if "command" in server:
        assert server["command"] == "memos"
        args = _parser().parse_args(server["args"])
        assert args.command == "mcp" and args.user == "alice" and args.http is None
    else:
        assert server["url"] == EXAMPLE_URL
        assert server["headers"]["Authorization"].startswith("Bearer memos_")


def test_bash_command_lines_parse() -> None:
    lines = [line for block in blocks("bash") for line in block.splitlines()
             if line.startswith("memos ")]
    assert len(lines) == 4
    for line in lines:
        args = _parser().parse_args(shlex.split(line)[1:])
        assert args.command == "mcp"


@pytest.mark.parametrize("snippet", blocks("python"), ids=["langchain", "llamaindex", "embed"])
def test_python_snippets_compile(snippet: str) -> None:
    compile(snippet, str(DOC), "exec")


@pytest.mark.parametrize("index", [0, 1], ids=["langchain", "llamaindex"])
async def test_python_snippets_load_the_tools(index: int, http_server: HttpFixture,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    snippet = blocks("python")[index]
    assert EXAMPLE_URL in snippet
    monkeypatch.setenv("MEMOS_MCP_TOKEN", http_server.token["alice"])
    namespace: dict[str, Any] = {}
    exec(compile(snippet.replace(EXAMPLE_URL, http_server.url), str(DOC), "exec"), namespace)
    tools = await namespace["memory_tools"]()
    names = {getattr(t, "name", None) or t.metadata.name for t in tools}
    assert names == TOOLS


def test_embed_snippet_serves(tmp_path: Path) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(blocks("python")[2], str(DOC), "exec"), namespace)
    mos, thread = namespace["serve"](tmp_path / "data")
    try:
        assert thread.url.startswith("http://127.0.0.1:") and thread.port > 0
    finally:
        thread.stop()
        mos.close()
