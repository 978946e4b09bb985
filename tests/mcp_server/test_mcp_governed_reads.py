"""The MCP resources apply the rules search applies, over a real HTTP server and client:

* ``memos://memories/{id}/audit``: a reason is free text that may repeat the memory, so a
  memory redacted for the caller (a sensitivity tag the server does not allow) has each
  reason redacted too;
* ``memos://memories/recent``: a memory whose TTL has run out is left out, and the list is
  still filled up to its limit with live ones.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from mcp.shared.exceptions import McpError
from mcp_helpers import HttpFixture, http_session

from memos_core.mcp_server.tools import MemoryService


async def _resource(session: Any, uri: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((await session.read_resource(uri)).contents[0].text)
    return result


async def test_the_audit_trail_of_a_redacted_memory_redacts_its_reasons(
        http_server: HttpFixture) -> None:
    mos = http_server.mos
    pii = mos.add("Alice's passport number is X99413.", user_id="alice", sensitivity=["pii"],
                  reason="user said: my passport is X99413")
    mos.share(pii.id, with_user_id="bob", user_id="alice", reason="bob books a flight for X99413")
    tea = mos.add("Alice likes tea.", user_id="alice", reason="said at breakfast")
    mos.share(tea.id, with_user_id="bob", user_id="alice")
    async with http_session(http_server.url, http_server.token["bob"]) as bob:
        hits = json.loads((await bob.call_tool("search", {"query": "passport"})).content[0].text)
        assert hits["hits"][0]["text"] == "[redacted: pii]"  # what search shows him
        trail = await _resource(bob, f"memos://memories/{pii.id}/audit")
        assert "X99413" not in json.dumps(trail)
        assert trail["redacted"] == ["pii"]
        assert [(r["action"], r["reason"]) for r in trail["records"]] == [
            ("add", "[redacted: pii]"), ("share:read", "[redacted: pii]")]
        plain = await _resource(bob, f"memos://memories/{tea.id}/audit")
        assert plain["redacted"] == []
        assert [r["reason"] for r in plain["records"]] == ["said at breakfast", None]


async def test_recent_leaves_out_memories_whose_ttl_ran_out(http_server: HttpFixture) -> None:
    mos = http_server.mos
    kept = mos.add("Alice's bike is red.", user_id="alice")
    brief = mos.add("Alice's locker code is 7781.", user_id="alice", ttl_seconds=3)
    for memory in (kept, brief):
        mos.share(memory.id, with_user_id="bob", user_id="alice")
    service = MemoryService(mos)
    newest = await service.recent("bob", limit=1)
    assert [m["id"] for m in newest["memories"]] == [brief.id]  # the check below is not vacuous
    await asyncio.sleep(3.1)
    for user in ("alice", "bob"):
        async with http_session(http_server.url, http_server.token[user]) as session:
            recent = await _resource(session, "memos://memories/recent")
        assert "7781" not in json.dumps(recent)
        assert [m["id"] for m in recent["memories"]] == [kept.id]
    # the limit is filled with live memories past the elapsed one
    assert [m["id"] for m in (await service.recent("bob", limit=1))["memories"]] == [kept.id]


async def test_a_callers_bad_prompt_argument_is_one_warning_line_not_a_traceback(
        http_server: HttpFixture, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mcp.server.fastmcp.server")
    async with http_session(http_server.url, http_server.token["alice"]) as alice:
        with pytest.raises(McpError, match="query is empty"):
            await alice.get_prompt("recall", {"question": "  "})
    records = [r for r in caplog.records if r.name == "mcp.server.fastmcp.server"
               and "Error getting prompt" in r.getMessage()]
    assert [(r.levelname, r.exc_info) for r in records] == [("WARNING", None)]
    assert "query is empty" in records[0].getMessage()
    # an error of the server itself keeps its traceback
    log = logging.getLogger("mcp.server.fastmcp.server")
    try:
        raise KeyError("bug")
    except KeyError:
        log.exception("Error getting prompt recall")
    assert caplog.records[-1].levelname == "ERROR" and caplog.records[-1].exc_info


@pytest.mark.parametrize(("name", "arguments", "refusal"), [
    ("recall", {}, "Missing required arguments"), ("no_such_prompt", {}, "Unknown prompt")],
    ids=["missing-argument", "unknown-prompt"])
async def test_a_prompt_the_sdk_refuses_is_one_warning_line_not_a_traceback(
        http_server: HttpFixture, caplog: pytest.LogCaptureFixture, name: str,
        arguments: dict[str, str], refusal: str) -> None:
    """The SDK refuses these itself (a ``ValueError``, before any code of ours runs); they
    were logged as ERROR with a full traceback although the client got a clean answer."""
    caplog.set_level(logging.INFO, logger="mcp.server.fastmcp.server")
    async with http_session(http_server.url, http_server.token["alice"]) as alice:
        with pytest.raises(McpError, match=refusal):
            await alice.get_prompt(name, arguments)
    records = [r for r in caplog.records if r.name == "mcp.server.fastmcp.server"
               and "Error getting prompt" in r.getMessage()]
    assert [(r.levelname, r.exc_info) for r in records] == [("WARNING", None)]
    assert refusal in records[0].getMessage()
