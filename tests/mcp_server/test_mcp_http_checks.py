"""The checks in front of the SDK on the streamable-HTTP endpoint (``http_checks``): bodies
the SDK failed on (500 and a traceback), requests it never answered (a bad id, an id
already in flight). Raw HTTP against a real server on loopback (see conftest)."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import httpx
import pytest
from mcp_helpers import HttpFixture

HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {},
    "clientInfo": {"name": "raw-test", "version": "0"}}}


def _open(client: httpx.Client, fixture: HttpFixture, user: str = "alice") -> dict[str, str]:
    """The headers of a new initialised session of ``user``."""
    headers = {**HEADERS, "Authorization": f"Bearer {fixture.token[user]}"}
    opened = client.post(fixture.url, json=INITIALIZE, headers=headers)
    assert opened.status_code == 200, opened.text
    headers["mcp-session-id"] = opened.headers["mcp-session-id"]
    done = client.post(fixture.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                       headers=headers)
    assert done.status_code == 202
    return headers


def _answer(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC message of a response (plain JSON, or the SSE event carrying it)."""
    if response.headers["content-type"].startswith("text/event-stream"):
        data = [line[len("data: "):] for line in response.text.splitlines()
                if line.startswith("data: ") and line.strip() != "data:"]
        return json.loads(data[-1])
    return response.json()


def _store(request_id: Any, text: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
            "params": {"name": "store", "arguments": {"text": text}}}


@pytest.mark.parametrize(("body", "code"), [
    (b'{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"store","arguments":'
     b'{"text":"a","tags":' + b"[" * 100_000 + b"]" * 100_000 + b"}}}", -32700),
    (b'{"jsonrpc":"2.0","id":' + b"1" * 5000 + b',"method":"ping"}', -32700),
    (b'{"jsonrpc":"2.0","id":4,"method":"ping"', -32700),
], ids=["nested-100k-deep", "int-of-5000-digits", "truncated"])
def test_a_body_that_is_not_json_gets_a_parse_error(
        http_server: HttpFixture, caplog: pytest.LogCaptureFixture, body: bytes, code: int
        ) -> None:
    """JSON nested too deep for the parser, or a number too long, got HTTP 500 (-32603, the
    id lost) and a traceback in the log: the SDK caught only JSONDecodeError. Now every
    body that is not JSON gets -32700 with id null (HTTP 400), as over stdio."""
    with httpx.Client(timeout=30) as client:
        headers = _open(client, http_server)
        with caplog.at_level(logging.WARNING):
            refused = client.post(http_server.url, content=body, headers=headers)
        still = client.post(http_server.url, json={"jsonrpc": "2.0", "id": 5, "method": "ping"},
                            headers=headers)
    assert refused.status_code == 400, refused.text
    answer = refused.json()
    assert answer["id"] is None and answer["error"]["code"] == code, answer
    assert answer["error"]["message"].startswith("Parse error: the body is not JSON")
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []
    assert still.status_code == 200 and _answer(still) == {"jsonrpc": "2.0", "id": 5, "result": {}}


def test_a_byte_that_is_not_utf8_gets_the_tools_own_error(
        http_server: HttpFixture, caplog: pytest.LogCaptureFixture) -> None:
    """A raw 0xFF byte in an argument got HTTP 500 (-32603, the id lost) and a 40-line
    traceback; docs/mcp.md promised the tool's own error, which stdio gives (the byte kept
    as a lone surrogate). Now HTTP reads it the same way; nothing is stored."""
    body = (b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"store",'
            b'"arguments":{"text":"bad \xff byte"}}}')
    with httpx.Client(timeout=30) as client:
        headers = _open(client, http_server)
        with caplog.at_level(logging.WARNING):
            response = client.post(http_server.url, content=body, headers=headers)
    assert response.status_code == 200, response.text
    answer = _answer(response)
    assert answer["id"] == 3 and answer["result"]["isError"], answer
    assert "text contains unpaired surrogates" in answer["result"]["content"][0]["text"]
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []
    assert http_server.mos.list(user_id="alice") == []


@pytest.mark.parametrize("request_id", [None, 1.5, True], ids=["null", "float", "bool"])
def test_a_request_with_a_bad_id_is_answered_and_not_logged(
        http_server: HttpFixture, caplog: pytest.LogCaptureFixture, request_id: Any) -> None:
    """A request whose id is null, 1.5 or true got 202 Accepted and was never run or
    answered (the client waited forever), and the SDK logged a warning quoting its
    arguments (the memory's text, where forget never reaches). Now it gets -32600 with id
    null, as over stdio, and nothing of it is logged or stored."""
    secret = "written under a bad id: Alice's PIN is 4711"
    with httpx.Client(timeout=30) as client:
        headers = _open(client, http_server, "bob")
        with caplog.at_level(logging.DEBUG):
            response = client.post(http_server.url, json=_store(request_id, secret),
                                   headers=headers)
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["id"] is None and answer["error"]["code"] == -32600, answer
    assert "a request's id must be a string or an integer" in answer["error"]["message"]
    assert [r.getMessage() for r in caplog.records if "4711" in r.getMessage()] == []
    assert http_server.mos.list(user_id="bob") == []


def test_a_second_request_with_an_id_in_flight_is_refused(http_server: HttpFixture) -> None:
    """Two requests in flight with one id on one session: the SDK keeps one stream per id,
    so the second replaced the first's and neither was ever answered. Now the second gets
    -32600 under that id at once and the first goes on. The store's vault lock is held
    meanwhile, so the first is still in flight when the second comes."""
    answers: dict[str, httpx.Response] = {}
    with httpx.Client(timeout=60) as client:
        headers = _open(client, http_server)

    def post(name: str, request_id: Any) -> None:
        with httpx.Client(timeout=60) as client:
            answers[name] = client.post(http_server.url, json=_store(request_id, f"{name} note"),
                                        headers=headers)

    threads = [threading.Thread(target=post, args=("first", 5)),
               threading.Thread(target=post, args=("second", "5"))]  # the SDK's key: "5"
    with http_server.mos.vault._lock:  # whichever store comes first waits here, in flight
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        while not answers and time.monotonic() < deadline:
            time.sleep(0.05)
        refused = [name for name, response in list(answers.items())
                   if response.status_code == 400]
    for thread in threads:
        thread.join(30)
    assert len(refused) == 1, {name: r.text for name, r in answers.items()}
    (kept,) = {"first", "second"} - set(refused)
    answer = answers[refused[0]].json()
    assert answer["id"] in (5, "5") and answer["error"]["code"] == -32600, answer
    assert "is still in flight on this session" in answer["error"]["message"]
    assert answers[kept].status_code == 200 and not _answer(answers[kept])["result"]["isError"]
    assert [m.text for m in http_server.mos.list(user_id="alice")] == [f"{kept} note"]
