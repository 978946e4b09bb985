"""The stdio transport of ``memos mcp``: one JSON-RPC message a line on stdin and on stdout.

The SDK's own stdio transport parses each line with pydantic's JSON parser, which refuses a
lone surrogate escape (``"\\ud800"``, which a JavaScript client's ``JSON.stringify`` writes
for a broken string); for a line it cannot read it only sends a log notification ("Internal
Server Error") and never answers the request, so the client waits forever. Here each line is
read as the streamable-HTTP transport reads a request body:

* ``json.loads``, then ``JSONRPCMessage.model_validate``: a lone surrogate reaches the tools,
  which refuse it with their clear error ("text contains unpaired surrogates ..."), as over
  HTTP.
* A line that is not JSON is answered with a JSON-RPC parse error (-32700, id null); JSON
  that is not a JSON-RPC message with an invalid-request error (-32600), under the message's
  id where it has a usable one. The server goes on with the next line.
* Bytes that are not UTF-8 are kept as lone surrogates (``surrogateescape``), so a string
  holding one gets the same tool error, instead of being replaced by U+FFFD unseen.

stdin is read in a daemon thread, so that stopping the server (the end of the event loop, a
SIGTERM) never waits for a line that may never come.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any, BinaryIO

import anyio
from anyio.from_thread import BlockingPortal
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.shared.message import SessionMessage
from mcp.types import INVALID_REQUEST, PARSE_ERROR, JSONRPCMessage
from pydantic import ValidationError

Incoming = MemoryObjectReceiveStream[SessionMessage | Exception]
Outgoing = MemoryObjectSendStream[SessionMessage]

# What ends the reader thread once the server no longer takes lines: the portal stopped
# (RuntimeError) or cancelled the call, the server closed its end, stdin or stdout closed.
_STOPPED = (RuntimeError, concurrent.futures.CancelledError, anyio.BrokenResourceError,
            anyio.ClosedResourceError, OSError, ValueError)


def parse_line(line: bytes) -> SessionMessage | dict[str, Any] | None:
    """The message on one line of stdin; or, for a line that holds none, the JSON-RPC error
    to answer it with; None for a blank line."""
    text = line.decode("utf-8", "surrogateescape")
    if not text.strip():
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, an int of 5,000 digits
        return error_response(None, PARSE_ERROR, f"Parse error: the line is not JSON ({exc}).")
    try:
        return SessionMessage(JSONRPCMessage.model_validate(data))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        return error_response(_request_id(data), INVALID_REQUEST,
                              "Invalid request: not a JSON-RPC 2.0 request, notification or "
                              f"response ({where}: {first['msg']}).")


def error_response(request_id: str | int | None, code: int, message: str) -> dict[str, Any]:
    """A JSON-RPC error response; id null where the request's id is unknown (JSON-RPC 2.0)."""
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def _request_id(data: Any) -> str | int | None:
    """The id of a message the server could not read, if it has one a client can match."""
    found = data.get("id") if isinstance(data, dict) else None
    return found if isinstance(found, (str, int)) and not isinstance(found, bool) else None


class LineWriter:
    """stdout as the transport writes it: one JSON message a line, each written and flushed
    whole under a lock (the reader thread answers the lines it cannot read, the event loop
    everything else). UTF-8; a message holding a lone surrogate (an id echoed back) is
    written with ``\\u`` escapes, still valid JSON."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def write(self, message: dict[str, Any]) -> None:
        text = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            data = json.dumps(message, separators=(",", ":")).encode("ascii")
        with self._lock:
            self._stream.write(data + b"\n")
            self._stream.flush()


def _lines(stdin: BinaryIO) -> Iterator[bytes]:
    """The lines of ``stdin``, each with its newline (the last one may have none). Read from
    its file descriptor where it has one, unbuffered: a daemon thread blocked in a buffered
    read holds the buffer's lock, and Python's shutdown, which takes that lock, would abort
    the process ("could not acquire lock ... at interpreter shutdown")."""
    try:
        fd = stdin.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (io.BytesIO)
        yield from iter(stdin.readline, b"")
        return
    line = bytearray()
    while chunk := os.read(fd, 1 << 16):
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            line += chunk[start:end + 1]
            yield bytes(line)
            line.clear()
            start = end + 1
        line += chunk[start:]
    if line:
        yield bytes(line)


def _read_lines(stdin: BinaryIO, portal: BlockingPortal, incoming: MemoryObjectSendStream[
        SessionMessage | Exception], out: LineWriter) -> None:
    """The reader thread: each line's message to the server, each unreadable line's error
    straight to stdout; at the end of stdin, the server's stream is closed (it then stops)."""
    try:
        for line in _lines(stdin):
            parsed = parse_line(line)
            if isinstance(parsed, SessionMessage):
                portal.call(incoming.send, parsed)
            elif parsed is not None:
                out.write(parsed)
        portal.call(incoming.aclose)
    except _STOPPED:
        return  # the server stopped: nobody is left to read for


async def _write_messages(outgoing: MemoryObjectReceiveStream[SessionMessage],
                          out: LineWriter) -> None:
    async with outgoing:
        async for message in outgoing:
            data = message.message.model_dump(by_alias=True, mode="json", exclude_none=True)
            await anyio.to_thread.run_sync(out.write, data)


@asynccontextmanager
async def stdio_transport(stdin: BinaryIO | None = None, stdout: BinaryIO | None = None
                          ) -> AsyncIterator[tuple[Incoming, Outgoing]]:
    """The streams an MCP ``Server.run`` takes, over ``stdin`` and ``stdout`` (binary;
    default the process's). The incoming stream ends with stdin."""
    out = LineWriter(stdout if stdout is not None else sys.stdout.buffer)
    incoming_writer, incoming = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    outgoing, outgoing_reader = anyio.create_memory_object_stream[SessionMessage](0)
    async with BlockingPortal() as portal, anyio.create_task_group() as tasks:
        tasks.start_soon(_write_messages, outgoing_reader, out)
        threading.Thread(target=_read_lines, name="memos-mcp-stdin", daemon=True,
                         args=(stdin if stdin is not None else sys.stdin.buffer, portal,
                               incoming_writer, out)).start()
        try:
            yield incoming, outgoing
        finally:
            tasks.cancel_scope.cancel()
            await portal.stop(cancel_remaining=True)  # a line the server no longer takes
