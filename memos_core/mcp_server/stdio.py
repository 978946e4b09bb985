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
  id where it has a usable one. A message with a method and an ``id`` that is neither a
  string nor an integer (``null``, ``1.5``, ``true``) gets -32600 too (id null), rather than
  being taken for a notification and left unanswered: JSON-RPC 2.0 keeps a null id for
  responses. The server goes on with the next line.
* A response with a null id (what JSON-RPC 2.0 has a client send for a server message it
  could not parse: ``{"jsonrpc": "2.0", "id": null, "error": {...}}``) is logged at debug
  level and dropped: no response is ever answered.
* A UTF-8 byte order mark at the start of stdin (a ``requests.jsonl`` saved by Notepad) is
  skipped.
* Bytes that are not UTF-8 are kept as lone surrogates (``surrogateescape``), so a string
  holding one gets the same tool error, instead of being replaced by U+FFFD unseen.

Stopping never waits on the client:

* stdin is read in a daemon thread, so that stopping the server (the end of the event loop,
  a SIGTERM) never waits for a line that may never come.
* stdout is written by a daemon thread too, one message at a time from a queue (the server's
  next message waits until the last one is written, so a client that does not read holds
  the server back rather than filling memory). A write blocked on a client that does not
  read stdout never keeps the process alive once the store is closed, as a thread of
  anyio's pool would (the interpreter waits for those at exit).
* A write that fails with a broken pipe or a reset connection (the client closed its end
  of stdout) means the client is gone: the server's input ends, and with it the server.
* Any other failure to write stdout or read stdin (a full disk, an I/O error, a
  non-blocking descriptor) ends the server the same way, and is reported: to the
  ``on_failure`` callback of :func:`stdio_transport` (``memos mcp`` then exits with an
  error), else in the log. The server never runs on without a way to answer, and never
  stops unseen after work it could not answer.
* At the end of stdin the server's input ends only once every request read has been
  answered on stdout, and every unreadable line (so a failed write of that error is
  reported before the server stops) (at most :data:`ANSWER_WAIT` seconds; a SIGTERM or a failed write ends
  the wait): the SDK's server cancels the requests still running when its input ends, and
  a client that writes its requests and closes stdin (``memos mcp < requests.jsonl``) would
  get no answer for work that was done.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import queue
import sys
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, BinaryIO

import anyio
from anyio.from_thread import BlockingPortal
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.shared.message import SessionMessage
from mcp.types import (INVALID_REQUEST, PARSE_ERROR, JSONRPCError, JSONRPCMessage, JSONRPCRequest,
                       JSONRPCResponse)
from pydantic import ValidationError

from memos_core.errors import MemOSError

Incoming = MemoryObjectReceiveStream[SessionMessage | Exception]
IncomingWriter = MemoryObjectSendStream[SessionMessage | Exception]
Outgoing = MemoryObjectSendStream[SessionMessage]
RequestId = str | int

ANSWER_WAIT = 30.0
"""Seconds the end of stdin waits for the answers of the requests still running."""

BOM = b"\xef\xbb\xbf"
"""The UTF-8 byte order mark that Windows editors put at the start of a text file."""

logger = logging.getLogger(__name__)

# What ends a transport thread once the server no longer takes lines: the portal stopped
# (RuntimeError) or cancelled the call, the server closed its end.
_STOPPED = (RuntimeError, concurrent.futures.CancelledError, anyio.BrokenResourceError,
            anyio.ClosedResourceError)
# How a read or write fails when the client has closed its end of the pipe (EPIPE) or socket:
# the client is gone, which is no error. Any other OSError (ENOSPC, EIO, EAGAIN) is one.
_CLIENT_GONE = (BrokenPipeError, ConnectionResetError)


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
    if _is_null_id_response(data):
        # the SDK's response models take no null id: it would be answered -32600, and a
        # response is never answered (a client could answer that answer in turn)
        logger.debug("memos mcp: dropped a response with id null: %.200s", text)
        return None
    bad_id = bad_id_answer(data)
    if bad_id is not None:
        return bad_id
    try:
        return SessionMessage(JSONRPCMessage.model_validate(data))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        return error_response(_request_id(data), INVALID_REQUEST,
                              "Invalid request: not a JSON-RPC 2.0 request, notification or "
                              f"response ({where}: {first['msg']}).")


def error_response(request_id: RequestId | None, code: int, message: str) -> dict[str, Any]:
    """A JSON-RPC error response; id null where the request's id is unknown (JSON-RPC 2.0)."""
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def bad_id_answer(data: Any) -> dict[str, Any] | None:
    """The invalid-request error (-32600, id null) for a decoded message with a method and
    an ``id`` that is neither a string nor an integer (``null``, ``1.5``, ``true``); None for
    any other. The SDK would take such a request for a notification (its models allow extra
    fields) and never answer it. Shared with the HTTP transport's checks
    (:mod:`memos_core.mcp_server.http_checks`)."""
    if isinstance(data, dict) and "method" in data and "id" in data and not _is_id(data["id"]):
        return error_response(None, INVALID_REQUEST,
                              "Invalid request: a request's id must be a string or an integer "
                              f"(null only in a response), not {_kind(data['id'])}.")
    return None


def _is_null_id_response(data: Any) -> bool:
    """A response (no method; a result or an error) whose id is null: JSON-RPC 2.0 has a
    client send one for a server message it could not parse."""
    return (isinstance(data, dict) and "method" not in data and data.get("id", 0) is None
            and ("result" in data or "error" in data))


def _is_id(value: Any) -> bool:
    return isinstance(value, (str, int)) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    """What a JSON value is, in words, for an error message."""
    if value is None:
        return "null"
    return {bool: "a boolean", float: "a number with a fraction or exponent", list: "an array",
            dict: "an object"}.get(type(value), type(value).__name__)


def _request_id(data: Any) -> RequestId | None:
    """The id of a message the server could not read, if it has one a client can match."""
    found = data.get("id") if isinstance(data, dict) else None
    return found if _is_id(found) else None


class LineWriter:
    """stdout as the transport writes it: one JSON message a line, written whole. UTF-8; a
    message holding a lone surrogate (an id echoed back) is written with ``\\u`` escapes,
    still valid JSON. Written to the stream's file descriptor where it has one, unbuffered,
    for the reason :func:`_lines` reads stdin so: a daemon thread blocked in a buffered
    write would hold the lock that Python's shutdown takes to flush stdout."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        try:
            self._fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):  # not a file (io.BytesIO)
            self._fd = None
        else:
            stream.flush()  # anything written through the stream before goes first

    def write(self, message: dict[str, Any]) -> None:
        text = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
        try:
            data = text.encode("utf-8") + b"\n"
        except UnicodeEncodeError:
            data = json.dumps(message, separators=(",", ":")).encode("ascii") + b"\n"
        if self._fd is None:
            self._stream.write(data)
            self._stream.flush()
            return
        view = memoryview(data)
        while view:  # a write to a pipe may take part of the data (a signal, a full pipe)
            view = view[os.write(self._fd, view):]


@dataclass(frozen=True)
class _LineError:
    """The key of the transport's own answer to an unreadable line (its number), awaited at
    the end of stdin like a request's: a write of it that fails must be reported before the
    server stops (it was reported after, or not at all)."""

    line: int


Awaited = RequestId | _LineError


class _Answers:
    """The answers not written yet: of the requests handed to the server (a count per id: a
    client may reuse one) and of unreadable lines, so that the end of stdin can wait for
    them."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._open: Counter[Awaited] = Counter()
        self._stopped = False

    def expect(self, request_id: Awaited) -> None:
        with self._changed:
            self._open[request_id] += 1

    def written(self, request_id: Awaited) -> None:
        with self._changed:
            if self._open[request_id] <= 1:
                del self._open[request_id]
            else:
                self._open[request_id] -= 1
            self._changed.notify_all()

    def stop(self) -> None:
        """No answer will be written any more (stdout failed, the transport stopped)."""
        with self._changed:
            self._stopped = True
            self._changed.notify_all()

    def wait(self, timeout: float) -> bool:
        """Wait until every answer expected is written or :meth:`stop`; False if ``timeout``
        seconds pass first."""
        with self._changed:
            return self._changed.wait_for(lambda: self._stopped or not self._open, timeout)


@dataclass(frozen=True)
class _Outgoing:
    message: dict[str, Any]
    answers: Awaited | None = None  # what this message answers (a request's id, a line)
    done: Callable[[], None] | None = None  # called once it is written


class _StdoutThread:
    """The thread that writes stdout: a daemon, so that a write blocked on a client that does
    not read never keeps the process alive. Messages are written in the order queued. When it
    ends -- the client is gone (a broken pipe), a write failed otherwise (``on_failure``),
    or :meth:`close` -- ``on_end`` is called: it ends the server's input."""

    def __init__(self, out: LineWriter, answers: _Answers, on_end: Callable[[], None],
                 on_failure: Callable[[str], None]) -> None:
        self._out, self._answers, self._on_end = out, answers, on_end
        self._on_failure = on_failure
        self._queue: queue.SimpleQueue[_Outgoing | None] = queue.SimpleQueue()

    def start(self) -> None:
        threading.Thread(target=self._run, name="memos-mcp-stdout", daemon=True).start()

    def put(self, item: _Outgoing) -> None:
        self._queue.put(item)

    def close(self) -> None:
        """Stop once what is queued is written."""
        self._queue.put(None)

    def _run(self) -> None:
        try:
            # a failed write loses the answers of requests that may have been carried out
            with _reported("writing to stdout", self._on_failure, lost=", and requests it "
                           "had read may have been carried out unanswered"):
                while (item := self._queue.get()) is not None:
                    self._out.write(item.message)
                    if item.answers is not None:
                        self._answers.written(item.answers)
                    if item.done is not None:
                        item.done()
        finally:
            self._answers.stop()
            self._on_end()


@contextmanager
def _reported(doing: str, on_failure: Callable[[str], None], lost: str = "") -> Iterator[None]:
    """End a transport thread's work quietly when the server stopped or the client went
    away; any other failure is reported to ``on_failure`` (``"<doing> failed (...); the MCP
    server stopped<lost>."``), and one that is not an ``OSError`` logged with its traceback."""
    try:
        yield
    except (*_STOPPED, *_CLIENT_GONE):
        pass  # nobody is left to read for or to answer
    except OSError as exc:  # a full disk, an I/O error, a non-blocking descriptor
        on_failure(f"{doing} failed ({exc}); the MCP server stopped{lost}.")
    except Exception as exc:
        logger.exception("memos mcp: %s failed; the server stops.", doing)
        on_failure(f"{doing} failed ({exc!r}); the MCP server stopped.")


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


def _end_input(portal: BlockingPortal, incoming: IncomingWriter) -> None:
    """End the server's input (the server then stops), from a transport thread; nothing to do
    once the transport has stopped."""
    try:
        portal.call(incoming.aclose)
    except _STOPPED:
        pass


def _read_lines(stdin: BinaryIO, portal: BlockingPortal, incoming: IncomingWriter,
                stdout: _StdoutThread, answers: _Answers,
                on_failure: Callable[[str], None]) -> None:
    """The reader thread: each line's message to the server, each unreadable line's error to
    stdout. At the end of stdin (or on any error: one other than the client going away is
    passed to ``on_failure``) the server's input ends, at stdin's end only once the requests
    read are answered (:data:`ANSWER_WAIT`)."""
    try:
        with _reported("reading stdin", on_failure):
            for number, line in enumerate(_lines(stdin)):
                parsed = parse_line(line.removeprefix(BOM) if number == 0 else line)
                if isinstance(parsed, SessionMessage):
                    if isinstance(parsed.message.root, JSONRPCRequest):
                        answers.expect(parsed.message.root.id)
                    portal.call(incoming.send, parsed)
                elif parsed is not None:
                    unreadable = _LineError(number)
                    answers.expect(unreadable)
                    stdout.put(_Outgoing(parsed, answers=unreadable))
            answers.wait(ANSWER_WAIT)
    finally:
        _end_input(portal, incoming)


async def _write_messages(outgoing: MemoryObjectReceiveStream[SessionMessage],
                          stdout: _StdoutThread, portal: BlockingPortal) -> None:
    """The server's messages to the stdout thread, each once the one before is written."""
    async with outgoing:
        async for message in outgoing:
            root = message.message.root
            written = anyio.Event()
            stdout.put(_Outgoing(
                root.model_dump(by_alias=True, mode="json", exclude_none=True),
                answers=root.id if isinstance(root, (JSONRPCResponse, JSONRPCError)) else None,
                done=partial(_set_from_thread, portal, written)))
            await written.wait()


def _set_from_thread(portal: BlockingPortal, event: anyio.Event) -> None:
    try:
        portal.call(event.set)
    except _STOPPED:
        pass  # the transport stopped: nobody waits


def standard_stream(name: str) -> BinaryIO:
    """The process's ``"stdin"`` or ``"stdout"``, binary.

    Raises:
        MemOSError: it is closed (``memos mcp <&-``: Python then has no ``sys.stdin``).
    """
    stream = getattr(sys, name)
    if stream is None or getattr(stream, "buffer", None) is None:
        raise MemOSError(f"{name} is closed: the stdio MCP server reads its client's requests "
                         "from stdin and answers on stdout. Start it from an MCP client, or "
                         "as `memos mcp < requests.jsonl > answers.jsonl`.")
    buffer: BinaryIO = stream.buffer
    return buffer


@asynccontextmanager
async def stdio_transport(stdin: BinaryIO | None = None, stdout: BinaryIO | None = None,
                          on_failure: Callable[[str], None] | None = None
                          ) -> AsyncIterator[tuple[Incoming, Outgoing]]:
    """The streams an MCP ``Server.run`` takes, over ``stdin`` and ``stdout`` (binary;
    default the process's, see :func:`standard_stream`). The incoming stream ends with
    stdin, once the requests read are answered, when the client closes stdout, or when
    reading or writing fails otherwise: then ``on_failure`` is called (from a transport
    thread) with a message that says what failed; without it the message is logged."""
    stdin = stdin if stdin is not None else standard_stream("stdin")
    stdout = stdout if stdout is not None else standard_stream("stdout")
    report = on_failure if on_failure is not None else partial(logger.error, "memos mcp: %s")
    answers = _Answers()
    incoming_writer, incoming = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    outgoing, outgoing_reader = anyio.create_memory_object_stream[SessionMessage](0)
    async with BlockingPortal() as portal, anyio.create_task_group() as tasks:
        writer = _StdoutThread(LineWriter(stdout), answers,
                               lambda: _end_input(portal, incoming_writer), report)
        writer.start()
        tasks.start_soon(_write_messages, outgoing_reader, writer, portal)
        threading.Thread(target=_read_lines, name="memos-mcp-stdin", daemon=True,
                         args=(stdin, portal, incoming_writer, writer, answers, report)).start()
        try:
            yield incoming, outgoing
        finally:
            answers.stop()  # a reader waiting for answers at the end of stdin waits no more
            writer.close()
            tasks.cancel_scope.cancel()
            await portal.stop(cancel_remaining=True)  # a line the server no longer takes
