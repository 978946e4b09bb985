"""``memos mcp`` over stdio, driven by the SDK's own ``ClientSession`` (a real subprocess).

Recall across sessions (each session is a new server process), isolation between the users
servers are started for, the tool surface (schemas, ids, scores, why), redaction, resources,
the prompt, tool errors that lose nothing, and forget leaving no byte of the memory on disk.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp import ClientSession
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import McpError
from mcp_helpers import error_text, payload, stdio_params

from memos_core import MemOS, MemOSConfig

TOOLS = {"store", "search", "get", "update", "forget", "compress", "history", "share", "revoke"}


async def _session_one(session: ClientSession) -> dict[str, str]:
    listed = {t.name: t for t in (await session.list_tools()).tools}
    assert set(listed) == TOOLS
    for tool in listed.values():  # a JSON schema and a description for every tool
        assert tool.description and tool.inputSchema["type"] == "object"
        assert "user_id" not in tool.inputSchema["properties"]
    assert listed["store"].inputSchema["required"] == ["text"]
    assert listed["forget"].annotations.destructiveHint is True

    # a user_id argument is no way to act as someone else: it is ignored
    veg = payload(await session.call_tool("store", {"text": "Alice is vegetarian.",
                                                     "type": "preference", "user_id": "bob"}))
    assert veg["stored"]["owner"] == "alice" and veg["stored"]["type"] == "preference"
    card = payload(await session.call_tool("store", {"text": "Alice's card number is 4111.",
                                                      "sensitivity": ["pii"]}))
    hits = payload(await session.call_tool("search", {"query": "what does alice eat", "k": 5}))
    top = hits["hits"][0]
    assert top["id"] == veg["stored"]["id"] and top["text"] == "Alice is vegetarian."
    assert top["score"] > 0 and "dense #" in top["why"] and top["signals"]
    secret = payload(await session.call_tool("search", {"query": "card number"}))["hits"]
    shown = next(h for h in secret if h["id"] == card["stored"]["id"])
    assert shown["text"] == "[redacted: pii]" and shown["redacted"] == ["pii"]
    got = payload(await session.call_tool("get", {"memory_id": card["stored"]["id"]}))
    assert "4111" not in json.dumps(got)  # get and history redact as search does
    history = payload(await session.call_tool("history", {"memory_id": card["stored"]["id"]}))
    assert "4111" not in json.dumps(history)

    updated = payload(await session.call_tool("update", {"memory_id": veg["stored"]["id"],
                                                          "text": "Alice is vegan."}))
    assert updated["updated"]["version"] == 2
    versions = payload(await session.call_tool("history", {"memory_id": veg["stored"]["id"]}))
    assert [v["text"] for v in versions["versions"]] == ["Alice is vegetarian.", "Alice is vegan."]
    return {"veg": veg["stored"]["id"], "card": card["stored"]["id"]}


async def _bad_arguments(session: ClientSession, ids: dict[str, str]) -> None:
    """Each bad call is a tool error naming the problem; nothing stored changes."""
    cases = [
        ("search", {"query": ""}, "query is empty"),
        ("search", {"query": "x", "k": "many"}, "valid integer"),
        ("search", {"query": "x", "k": 500}, "less than or equal to 50"),
        ("store", {}, "text"),
        ("store", {"text": "x", "type": "gossip"}, "type"),
        ("get", {"memory_id": "not-a-uuid"}, "not found"),
        ("get", {"memory_id": "00000000-0000-0000-0000-000000000000"}, "not found"),
        ("update", {"memory_id": ids["veg"]}, "needs at least one of"),
        ("forget", {"memory_id": "00000000-0000-0000-0000-000000000000"}, "not found"),
        ("compress", {"memory_ids": [], "summary": "s"}, "memory_ids"),
        ("share", {"memory_id": ids["veg"], "with_user": ""}, "with_user_id"),
        ("no_such_tool", {}, "Unknown tool"),
    ]
    for name, arguments, expected in cases:
        message = error_text(await session.call_tool(name, arguments))
        assert expected in message, (name, arguments, message)
    current = payload(await session.call_tool("get", {"memory_id": ids["veg"]}))["memory"]
    assert current["text"] == "Alice is vegan." and current["version"] == 2


async def _resources_and_prompt(session: ClientSession, ids: dict[str, str]) -> None:
    recent = json.loads((await session.read_resource("memos://memories/recent")).contents[0].text)
    assert recent["user"] == "alice"
    assert {m["id"] for m in recent["memories"]} == set(ids.values())
    assert "4111" not in json.dumps(recent)
    trail = json.loads((await session.read_resource(
        f"memos://memories/{ids['veg']}/audit")).contents[0].text)
    assert [r["action"] for r in trail["records"]][:2] == ["add", "update"]
    assert {r["user_id"] for r in trail["records"]} == {"alice"}
    prompt = await session.get_prompt("recall", {"question": "What should I cook for Alice?"})
    text = prompt.messages[0].content.text
    assert "Alice is vegan." in text and ids["veg"] in text and "What should I cook" in text


async def test_stdio_sessions(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with stdio_client(stdio_params(data, "alice")) as (r, w), ClientSession(r, w) as s:
        await s.initialize()
        ids = await _session_one(s)
        await _bad_arguments(s, ids)
        await _resources_and_prompt(s, ids)

    # a new session (a new server process) recalls what the first one stored
    async with stdio_client(stdio_params(data, "alice")) as (r, w), ClientSession(r, w) as s:
        await s.initialize()
        hits = payload(await s.call_tool("search", {"query": "diet of alice"}))["hits"]
        assert hits[0]["id"] == ids["veg"] and hits[0]["text"] == "Alice is vegan."

    # a server started for bob sees none of it, and cannot change or forget it
    async with stdio_client(stdio_params(data, "bob")) as (r, w), ClientSession(r, w) as s:
        await s.initialize()
        assert payload(await s.call_tool("search", {"query": "diet of alice"}))["hits"] == []
        for name, args in (("get", {}), ("forget", {}), ("update", {"text": "Alice eats meat."}),
                           ("share", {"with_user": "bob"})):
            message = error_text(await s.call_tool(name, {"memory_id": ids["veg"], **args}))
            assert "denied" in message or "not found" in message, message
        with pytest.raises(McpError, match="denied: User 'bob' may not read"):
            await s.read_resource(f"memos://memories/{ids['veg']}/audit")

    with MemOS(data, config=MemOSConfig(show_progress=False)) as mos:
        assert mos.get(ids["veg"], user_id="alice").text == "Alice is vegan."


def _files_holding(root: Path, needles: list[bytes]) -> list[tuple[str, str]]:
    """``(file, needle)`` for every needle found in any file under ``root``."""
    found = []
    for path in (p for p in root.rglob("*") if p.is_file()):
        blob = path.read_bytes()
        found += [(str(path.relative_to(root)), n.decode("latin-1")) for n in needles if n in blob]
    return found


async def _store_and_forget(data: Path, text: str, tag: str) -> None:
    async with stdio_client(stdio_params(data, "alice")) as (r, w), ClientSession(r, w) as s:
        await s.initialize()
        kept = payload(await s.call_tool("store", {"text": "Alice likes tea."}))["stored"]["id"]
        stored = payload(await s.call_tool("store", {"text": text, "tags": [tag]}))["stored"]
        found = payload(await s.call_tool("search", {"query": "code word surprise party"}))
        assert found["hits"][0]["id"] == stored["id"]
        payload(await s.call_tool("update", {"memory_id": stored["id"], "text": text + " v2"}))
        receipt = payload(await s.call_tool("forget", {"memory_id": stored["id"],
                                                        "reason": "user asked"}))["forgotten"]
        assert receipt["memory_id"] == stored["id"] and "vault" in receipt["removed_from"]
        # one form of time in every tool result, as the command line writes it
        assert stored["created_at"].endswith("Z") and receipt["at"].endswith("Z")
        assert "not found" in error_text(await s.call_tool("get", {"memory_id": stored["id"]}))
        assert payload(await s.call_tool("search", {"query": "code word surprise party"}))[
            "hits"][0]["id"] == kept
        forgotten = payload(await s.call_tool("forget", {"memory_id": kept}))
        assert forgotten["note"] == f"Forgot memory {kept}."


TEXT = "Zanzibar-quokka-7731 is the code word for the surprise party."


async def test_forget_through_the_tool_leaves_no_bytes_of_the_text(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await _store_and_forget(data, TEXT, "tag-ocelot-5519")
    assert any(p.is_file() for p in data.rglob("*"))
    needles = [TEXT.encode(), b"Zanzibar-quokka-7731", "Zanzibar-quokka-7731".encode("utf-16-le")]
    assert _files_holding(data, needles) == []


async def test_forget_through_the_tool_leaves_no_bytes_of_the_tags(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await _store_and_forget(data, TEXT, "tag-ocelot-5519")
    assert _files_holding(data, [b"tag-ocelot-5519"]) == []
