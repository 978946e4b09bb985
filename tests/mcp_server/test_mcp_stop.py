"""Stopping ``memos mcp`` with SIGTERM (how systemd, ``docker stop``, ``timeout`` and MCP
clients stop a server) closes the store, over both transports, and exits with 143.

Before, uvicorn caught SIGTERM, shut down and raised it again with Python's default handler
in place, and the stdio server had no handler at all: the process died (-15) inside ``with
MemOS(...)``, leaving the vault's write-ahead log, an index not marked clean and, in server
mode, its temporary cache directory. Also: the stdio server answers every line it reads,
one it cannot parse or a lone surrogate included, as the HTTP server does; it answers the
requests still running when stdin ends before it stops, stops when its client closes stdout,
and stops on SIGTERM while an answer is blocked on a client that does not read.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mcp_helpers import http_session, payload, server_env

from memos_core import MemOS, MemOSConfig, MemOSError
from memos_core.mcp_server import TokenStore
from memos_core.mcp_server.server import build_stdio_server, serve_stdio

#: the ``assert_closed_cleanly`` fixture (tests/conftest.py)
Checker = Callable[[Path], None]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and select")
CLI = [sys.executable, "-m", "memos_core.cli", "mcp"]
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


def _stop(proc: subprocess.Popen[Any]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
        raise AssertionError("memos mcp was still running 60 s after SIGTERM") from None


def _serve_http(data: Path) -> tuple[subprocess.Popen[str], str]:
    """``memos mcp --http`` on a free loopback port, and the URL it serves."""
    proc = subprocess.Popen([*CLI, "--http", "127.0.0.1:0", "--data-dir", str(data)],
                            env=server_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    line = proc.stderr.readline()  # type: ignore[union-attr]
    found = re.search(r"serving (http://\S+/mcp)", line)
    if not found:
        proc.kill()
        raise AssertionError(line + proc.stderr.read())  # type: ignore[union-attr]
    return proc, found.group(1)


async def test_sigterm_stops_the_http_server_and_closes_the_store(
        tmp_path: Path, assert_closed_cleanly: Checker) -> None:
    data = tmp_path / "data"
    token, _ = TokenStore.for_data_dir(data).add("alice")
    proc, url = _serve_http(data)
    try:
        async with http_session(url, token) as session:
            stored = payload(await session.call_tool("store", {"text": "Alice plays the oboe."}))
    finally:
        code = _stop(proc)
    assert code == 143, proc.stderr.read()  # type: ignore[union-attr]
    assert_closed_cleanly(data)
    with MemOS(data, config=MemOSConfig(show_progress=False)) as mos:
        assert mos.get(stored["stored"]["id"], user_id="alice").text == "Alice plays the oboe."


async def test_ctrl_c_twice_stops_the_http_server_without_a_traceback(
        tmp_path: Path, assert_closed_cleanly: Checker) -> None:
    """A second Ctrl-C right after the first (uvicorn then stops waiting for connections):
    uvicorn raised both again inside its event loop, where asyncio's handler turned the
    second into a KeyboardInterrupt in the middle of the loop's shutdown, and skipped the
    app's shutdown, whose cancelled task it logged with a traceback. Now the process ends
    with 130, no traceback, the store closed."""
    data = tmp_path / "data"
    token, _ = TokenStore.for_data_dir(data).add("alice")
    proc, url = _serve_http(data)
    try:
        async with http_session(url, token) as session:
            for n in range(5):
                payload(await session.call_tool("store", {"text": f"Alice's note {n}."}))
    finally:
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)  # two signals sent at once may arrive as one
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
            raise AssertionError("memos mcp was still running 60 s after Ctrl-C") from None
    err = proc.stderr.read()  # type: ignore[union-attr]
    assert code == 130 and "Traceback" not in err and "ERROR" not in err, err
    assert_closed_cleanly(data)


class RawStdio:
    """``memos mcp`` over stdio as a client that writes JSON-RPC lines itself (bytes as
    given: lone surrogate escapes, lines that are not JSON, bytes that are not UTF-8)."""

    def __init__(self, data: Path) -> None:
        self.proc = subprocess.Popen([*CLI, "--data-dir", str(data), "--user", "alice"],
                                     env=server_env(), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.ask(json.dumps(INITIALIZE).encode())["id"] == 1
        self.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')

    def send(self, line: bytes) -> None:
        self.proc.stdin.write(line + b"\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]

    def ask(self, line: bytes, timeout: float = 120) -> dict[str, Any]:
        """Send ``line``; the next message the server writes (a client would wait forever
        for an answer that never comes: here the test fails after ``timeout`` s)."""
        self.send(line)
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, f"no answer within {timeout} s to {line[:200]!r}"
        answer: dict[str, Any] = json.loads(self.proc.stdout.readline())  # type: ignore[union-attr]
        return answer

    def call(self, request_id: int, tool: str, arguments: str | bytes) -> dict[str, Any]:
        args = arguments.encode() if isinstance(arguments, str) else arguments
        answer = self.ask(b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"%s",'
                          b'"arguments":%s}}' % (request_id, tool.encode(), args))
        assert answer["id"] == request_id, answer
        return answer


def test_sigterm_stops_the_stdio_server_and_closes_the_store(
        tmp_path: Path, assert_closed_cleanly: Checker) -> None:
    """Stdin stays open (the client has not hung up): the server must not wait for it."""
    data = tmp_path / "data"
    client = RawStdio(data)
    try:
        stored = client.call(2, "store", '{"text":"Alice plays the oboe."}')["result"]
        assert not stored["isError"], stored
    finally:
        code = _stop(client.proc)
    assert code == 143, client.proc.stderr.read()  # type: ignore[union-attr]
    assert_closed_cleanly(data)


BAD_STRINGS = [  # (arguments of a store call, words of the tool's error)
    ('{"text":"bad \\ud800 text"}', "text contains unpaired surrogates"),
    ('{"text":"ok","tags":["a\\udfff"]}', "tags holds an unpaired surrogate"),
    (b'{"text":"bad \xff byte"}', "text contains unpaired surrogates"),  # not UTF-8
]


def test_the_stdio_server_answers_every_line(tmp_path: Path) -> None:
    """Over stdio a lone surrogate used to be refused by the SDK's JSON parser before any
    tool ran, and the request got no answer (only an "Internal Server Error" log message);
    now each gets the tool's own error under its id, as over HTTP. A line that is not JSON
    gets a parse error, one that is no JSON-RPC message an invalid-request error, and the
    server goes on."""
    client = RawStdio(tmp_path / "data")
    try:
        for n, (arguments, words) in enumerate(BAD_STRINGS, start=10):
            result = client.call(n, "store", arguments)["result"]
            assert result["isError"] and words in result["content"][0]["text"], result
        junk = client.ask(b"{this is not json")
        assert junk["id"] is None and junk["error"]["code"] == -32700, junk
        invalid = client.ask(b'{"jsonrpc":"2.0","id":7,"method":5}')
        assert invalid["id"] == 7 and invalid["error"]["code"] == -32600, invalid
        stored = client.call(20, "store", '{"text":"Alice likes caf\\u00e9 au lait."}')["result"]
        assert not stored["isError"], stored
        hits = json.loads(client.call(21, "search", '{"query":"coffee"}')["result"]["content"][0]["text"])
        assert [h["text"] for h in hits["hits"]] == ["Alice likes café au lait."]
    finally:
        client.proc.stdin.close()  # type: ignore[union-attr]
        code = client.proc.wait(timeout=60)
    assert code == 0, client.proc.stderr.read()  # type: ignore[union-attr]


# -- stopping when the client goes away, or does not read ------------------------------------

MISSING = "00000000-0000-4000-8000-000000000000"  # a well-formed memory id no store holds


def _get_missing(request_id: int) -> dict[str, Any]:
    """A request the server answers with a tool error, without loading the embedding model,
    after a hop to a worker thread (MemOS.aget): in flight for a moment."""
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
            "params": {"name": "get", "arguments": {"memory_id": MISSING}}}


def _lines(*messages: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(m).encode() + b"\n" for m in messages)


def test_the_stdio_server_stops_when_the_client_leaves_after_an_unreadable_line(
        tmp_path: Path, assert_closed_cleanly: Checker) -> None:
    """The client closes its end of stdout, then sends a line that is not JSON and closes
    stdin. The reply to that line cannot be written (EPIPE): the reader thread used to die
    on it without ending the server's input, and the server ran on, holding the data
    directory, until killed."""
    data = tmp_path / "data"
    client = RawStdio(data)
    client.proc.stdout.close()  # type: ignore[union-attr]
    client.send(b"{this is not json")
    client.proc.stdin.close()  # type: ignore[union-attr]
    try:
        code = client.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        client.proc.kill()
        client.proc.wait(timeout=30)
        raise AssertionError("memos mcp ran on 60 s after its client left") from None
    assert code == 0, client.proc.stderr.read()  # type: ignore[union-attr]
    assert_closed_cleanly(data)


def test_sigterm_stops_the_stdio_server_whose_client_does_not_read(
        tmp_path: Path, assert_closed_cleanly: Checker) -> None:
    """The client sends requests and reads nothing: the answers fill the stdout pipe and a
    write blocks. A SIGTERM must still end the process once the store is closed; the write
    used to block in a thread of anyio's pool, which the interpreter waited for at exit."""
    data = tmp_path / "data"
    client = RawStdio(data)
    client.send(_lines(*({"jsonrpc": "2.0", "id": n, "method": "tools/list"}
                         for n in range(2, 80))).rstrip(b"\n"))
    # (the answers, about 10 kB each, fill the pipe's 64 kB; wait until the server is blocked:
    # it then reads no more requests, and stdin fills too, or the server has read them all)
    deadline = 50
    while deadline and _stdout_pending(client.proc) < 60_000:
        select.select([], [], [], 0.1)
        deadline -= 1
    code = _stop(client.proc)
    assert code == 143, client.proc.stderr.read()  # type: ignore[union-attr]
    assert_closed_cleanly(data)


def _stdout_pending(proc: subprocess.Popen[Any]) -> int:
    """Bytes the server has written to its stdout pipe that the test has not read."""
    import fcntl  # POSIX only, as this file is
    import termios

    buf = bytearray(4)
    fcntl.ioctl(proc.stdout.fileno(), termios.FIONREAD, buf)  # type: ignore[union-attr]
    return int.from_bytes(buf, sys.byteorder)


def test_requests_in_flight_when_stdin_ends_are_answered(tmp_path: Path) -> None:
    """``memos mcp < requests``: every request line is answered before the server stops.
    The SDK's server cancels the handlers still running once its input ends, so the requests
    in flight at the end of stdin used to be carried out (a store call stored) but never
    answered."""
    done = subprocess.run([*CLI, "--data-dir", str(tmp_path / "data"), "--user", "alice"],
                          input=_lines(INITIALIZE, {"jsonrpc": "2.0",
                                                    "method": "notifications/initialized"},
                                       *(_get_missing(n) for n in range(2, 42))),
                          env=server_env(), capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    answers = {a["id"]: a for a in map(json.loads, done.stdout.splitlines())}
    assert sorted(answers) == list(range(1, 42)), f"unanswered: {set(range(1, 42)) - set(answers)}"
    for n in range(2, 42):
        result = answers[n]["result"]
        assert result["isError"] and "not found" in result["content"][0]["text"].lower(), result


def _ping_then_end_stdin(client: RawStdio) -> None:
    """The server still answers (the next line it writes is the ping's answer), and stops
    with status 0 when stdin ends."""
    try:
        assert client.ask(b'{"jsonrpc":"2.0","id":"next","method":"ping"}') == {
            "jsonrpc": "2.0", "id": "next", "result": {}}
    finally:
        client.proc.stdin.close()  # type: ignore[union-attr]
        code = client.proc.wait(timeout=60)
    assert code == 0, client.proc.stderr.read()  # type: ignore[union-attr]


@pytest.mark.parametrize("request_id", [None, 1.5, True, [1]], ids=repr)
def test_a_request_whose_id_is_not_a_string_or_an_integer_is_answered(
        tmp_path: Path, request_id: Any) -> None:
    """JSON-RPC 2.0 keeps a null id for responses; the SDK took such a request for a
    notification (extra fields allowed) and never answered it."""
    client = RawStdio(tmp_path / "data")
    try:
        answer = client.ask(json.dumps({"jsonrpc": "2.0", "id": request_id,
                                        "method": "ping"}).encode(), timeout=20)
        assert answer["id"] is None and answer["error"]["code"] == -32600, answer
        assert "id must be a string or an integer" in answer["error"]["message"], answer
    finally:
        _ping_then_end_stdin(client)


# -- failures that are not the client going away; responses; stdin as editors write it -------

INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_failed_write_to_stdout_is_an_error(tmp_path: Path, assert_closed_cleanly: Checker) -> None:
    """``memos mcp < requests.jsonl > /dev/full``: every write fails with ENOSPC. Such a
    failure used to be taken for a client that closed stdout: the server stopped with status
    0 and said nothing, although it had carried out requests. Now: one error line, status 1,
    the store closed. (A client that closes stdout still ends the server with status 0:
    test_the_stdio_server_stops_when_the_client_leaves_after_an_unreadable_line.)"""
    data = tmp_path / "data"
    with open("/dev/full", "wb") as full:
        done = subprocess.run([*CLI, "--data-dir", str(data), "--user", "alice"],
                              input=_lines(INITIALIZE, INITIALIZED, _get_missing(2)),
                              stdout=full, stderr=subprocess.PIPE, env=server_env(),
                              timeout=120)
    stderr = done.stderr.decode()
    assert done.returncode == 1, stderr
    assert stderr.splitlines() == ["memos: error: writing to stdout failed ([Errno 28] No space "
                                   "left on device); the MCP server stopped, and requests it "
                                   "had read may have been carried out unanswered."], stderr
    assert_closed_cleanly(data)


class _SlowFullStdout(io.RawIOBase):
    """A stdout whose writes fail with ENOSPC after a short stall (a slow disk filling up)."""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        time.sleep(0.3)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_failed_write_of_an_unreadable_lines_error_is_an_error(tmp_path: Path) -> None:
    """The end of stdin waits for the error answer of an unreadable line too: the stop used
    not to, so a write of it that failed a moment later was reported after ``serve_stdio``
    had returned (status 0, nothing said) or not at all."""
    with MemOS(tmp_path / "data") as mos:
        server = build_stdio_server(mos, user_id="alice")
        with pytest.raises(MemOSError, match=r"writing to stdout failed \(\[Errno 28\]"):
            serve_stdio(server, io.BytesIO(b"not json\n"), _SlowFullStdout())


# The SIGTERM an MCP client sends 2 s after closing stdin, landing right after the server has
# stopped and taken the loop's SIGTERM handler away, before the loop is gone: in that window
# asyncio had put back SIGTERM's default, which killed the process (-15) with its store open.
_SIGTERM_AFTER_THE_LOOP_HANDLER = """
import os, signal, sys
from memos_core.cli import main
from memos_core.mcp_server import server

remove = server._stop_handling_sigterm_in_loop

def remove_then_sigterm():
    remove()
    os.kill(os.getpid(), signal.SIGTERM)

server._stop_handling_sigterm_in_loop = remove_then_sigterm
sys.exit(main(sys.argv[1:]))
"""


def test_a_sigterm_as_the_stdio_server_stops_is_ignored(
        tmp_path: Path, assert_closed_cleanly: Checker) -> None:
    """Stdin ended, so the store's close follows, during which SIGTERM is ignored
    (docs/mcp.md): the process exits as it would have, status 0, the store closed."""
    data = tmp_path / "data"
    done = subprocess.run([sys.executable, "-c", _SIGTERM_AFTER_THE_LOOP_HANDLER, "mcp",
                           "--data-dir", str(data), "--user", "alice"],
                          input=_lines(INITIALIZE, INITIALIZED, _get_missing(2)),
                          capture_output=True, env=server_env(), timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert [json.loads(line)["id"] for line in done.stdout.splitlines()] == [1, 2]
    assert_closed_cleanly(data)


@pytest.mark.parametrize("response", [
    {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}},
    {"jsonrpc": "2.0", "id": None, "result": {}},
], ids=["error", "result"])
def test_a_response_with_a_null_id_gets_no_answer(tmp_path: Path, response: Any) -> None:
    """JSON-RPC 2.0 has a client send an error with id null for a server message it could
    not parse; the SDK's models refuse a null id, and the server answered it with -32600 (a
    client may answer that in turn). Responses get no answer: the next line the server
    writes is the answer to the ping that follows."""
    client = RawStdio(tmp_path / "data")
    try:
        client.send(json.dumps(response).encode())
    finally:
        _ping_then_end_stdin(client)


def test_a_byte_order_mark_at_the_start_of_stdin_is_skipped(tmp_path: Path) -> None:
    """A requests.jsonl saved by Notepad starts with a UTF-8 BOM: the first line got a parse
    error, and without its initialize the session failed."""
    done = subprocess.run([*CLI, "--data-dir", str(tmp_path / "data"), "--user", "alice"],
                          input=b"\xef\xbb\xbf" + _lines(INITIALIZE, INITIALIZED,
                                                        {"jsonrpc": "2.0", "id": 2,
                                                         "method": "ping"}),
                          capture_output=True, env=server_env(), timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert [a["id"] for a in answers] == [1, 2] and "result" in answers[0], answers


@pytest.mark.parametrize("stream", ["stdin", "stdout"])
def test_a_closed_stdin_or_stdout_is_one_clear_error(
        tmp_path: Path, stream: str, assert_closed_cleanly: Checker) -> None:
    """``memos mcp <&-`` (or ``>&-``): Python has no ``sys.stdin`` then, and the server died
    with a traceback (AttributeError: 'NoneType' object has no attribute 'buffer')."""
    data = tmp_path / "data"
    close = "<&-" if stream == "stdin" else ">&-"
    done = subprocess.run(["sh", "-c", f'exec "$@" {close}', "sh", *CLI, "--data-dir", str(data),
                           "--user", "alice"], stdin=subprocess.DEVNULL, capture_output=True,
                          env=server_env(), timeout=120)
    stderr = done.stderr.decode()
    assert done.returncode == 1, stderr
    assert stderr.startswith(f"memos: error: {stream} is closed: ") and len(
        stderr.splitlines()) == 1, stderr
    assert_closed_cleanly(data)
