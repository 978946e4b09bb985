"""What the streamable-HTTP server checks before the SDK reads a request, in one place.

The SDK's transport reads a POST body with ``json.loads`` and catches only
``JSONDecodeError``; it takes a request with a bad id for a notification, and keeps one
stream per request id. So, before this layer:

* a byte that is not UTF-8 in the body, JSON nested too deep for the parser (a
  ``RecursionError``) or an integer of 5,000 digits got HTTP 500 (-32603, the id lost) and
  a 40-line traceback in the log;
* a request whose id is ``null``, ``1.5`` or ``true`` got 202 Accepted and was never run
  nor answered (the client waited forever), and the SDK logged a warning quoting its
  arguments -- memory text in the log, where no ``forget`` reaches;
* a second request with the id of one still in flight on the same session replaced the
  first one's stream: both waited forever.

:class:`RequestChecks`, a middleware in front of the SDK's endpoint (after the bearer token
is checked: a request without a valid one still gets 401 from the SDK), reads each POST body
as the stdio transport reads a line (:func:`memos_core.mcp_server.stdio.parse_line`):

* bytes that are not UTF-8 are kept as lone surrogates (``surrogateescape``) and handed on
  as ``\\udcXX`` escapes, so a string holding one gets the tool's own error ("text contains
  unpaired surrogates ..."), as over stdio;
* a body that is not JSON (nested too deep, a number too long, not JSON at all) gets a
  JSON-RPC parse error (-32700, id null) with HTTP 400;
* a request whose id is neither a string nor an integer gets -32600 (id null) with HTTP
  400, and nothing of it is logged;
* a request whose id is in flight on the same session (the SDK keys requests by the id's
  text, so ``5`` and ``"5"`` are one) gets -32600 under that id with HTTP 400; the first
  goes on.

Everything else passes unchanged, to the SDK's own checks. :class:`TokensUnreachable` and
:func:`auth_error` answer a token lookup that could not reach the vault (server mode) with
503 and ``Retry-After`` instead of 401. :func:`install` puts both in an SDK app.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.types import INVALID_REQUEST, PARSE_ERROR
from starlette.applications import Starlette
from starlette.authentication import AuthenticationError
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from memos_core.errors import MemOSError
from memos_core.mcp_server.stdio import BOM, bad_id_answer, error_response

__all__ = ["RETRY_AFTER", "RequestChecks", "TokensUnreachable", "auth_error", "check_body",
           "install"]

RETRY_AFTER = 5
"""Seconds a client is told to wait (``Retry-After``) when tokens cannot be checked."""

SESSION_HEADER = "mcp-session-id"
JSON = "application/json"


class TokensUnreachable(AuthenticationError):
    """Raised by the token verifier when the store of tokens (the vault, in server mode)
    cannot be reached: whether the token is valid is unknown, so the answer is 503, not
    401 (which tells a client its token is bad)."""


def auth_error(conn: HTTPConnection, exc: AuthenticationError) -> Response:
    """The answer to a failed token check: 503 with ``Retry-After`` for
    :class:`TokensUnreachable`, else Starlette's default (400 with the message)."""
    if isinstance(exc, TokensUnreachable):
        return JSONResponse(
            {"error": "temporarily_unavailable",
             "error_description": "The server cannot check tokens now (its database cannot be "
                                  f"reached); retry in {RETRY_AFTER} seconds."},
            status_code=503, headers={"Retry-After": str(RETRY_AFTER)})
    return PlainTextResponse(str(exc), status_code=400)


def check_body(body: bytes) -> tuple[bytes, Any, dict[str, Any] | None]:
    """``(body to hand on, the request's id or None, None)`` for a body the SDK may read;
    ``(body, None, answer)`` for one it must not, ``answer`` the JSON-RPC error to send
    back. The body handed on is ``body`` unless it held bytes that are not UTF-8: then the
    same JSON with them as ``\\udcXX`` escapes."""
    try:
        text, escaped = body.removeprefix(BOM).decode("utf-8"), False
    except UnicodeDecodeError:  # kept as lone surrogates, as the stdio transport keeps them
        text, escaped = body.removeprefix(BOM).decode("utf-8", "surrogateescape"), True
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, an int of 5,000 digits
        return body, None, error_response(None, PARSE_ERROR,
                                          f"Parse error: the body is not JSON ({exc}).")
    bad_id = bad_id_answer(data)
    if bad_id is not None:
        return body, None, bad_id
    if escaped:
        body = json.dumps(data).encode("ascii")  # each lone surrogate as a \udcXX escape
    is_request = isinstance(data, dict) and "method" in data and "id" in data
    return body, data["id"] if is_request else None, None


class RequestChecks:
    """The ASGI middleware in front of the SDK's MCP endpoint (``path``): see the module.

    Only JSON POSTs to ``path`` that carry a valid token are read (others pass untouched,
    for the SDK's own answers: 401, 415); a body over ``max_body_size`` bytes is handed on
    as it came, for the SDK to refuse (413).
    """

    def __init__(self, app: ASGIApp, *, path: str, max_body_size: int) -> None:
        self.app, self.path, self.max_body_size = app, path, max_body_size
        self._in_flight: set[tuple[str, str]] = set()  # (session id, request id as text)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope) if scope["type"] == "http" else Headers()
        if (scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path
                or not isinstance(scope.get("user"), AuthenticatedUser)
                or not headers.get("content-type", "").lower().startswith(JSON)):
            await self.app(scope, receive, send)
            return
        body, rest = await self._read(headers, receive)
        if body is None:  # too large, or the client went away: the SDK answers as it does
            await self.app(scope, rest, send)
            return
        body, request_id, answer = check_body(body)
        session = headers.get(SESSION_HEADER)
        key = (session, str(request_id)) if session is not None and request_id is not None \
            else None
        if answer is None and key is not None and key in self._in_flight:
            answer = error_response(request_id, INVALID_REQUEST, (
                f"Invalid request: a request with id {json.dumps(request_id)} is still in "
                "flight on this session; give each request its own id."))
        if answer is not None:
            await JSONResponse(answer, status_code=400)(scope, rest, send)
            return
        if key is not None:
            self._in_flight.add(key)
        try:
            await self.app(scope, _replay(body, rest), send)
        finally:
            if key is not None:
                self._in_flight.discard(key)

    async def _read(self, headers: Headers, receive: Receive
                    ) -> tuple[bytes | None, Callable[[], Awaitable[Message]]]:
        """The whole body, and what receives the messages after it; or ``(None, a receive
        that replays what was read)`` when the body is over the limit or did not come
        whole (the SDK then reads and refuses it itself)."""
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_size:
            return None, receive
        body, read = bytearray(), []
        while True:
            message = await receive()
            read.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if len(body) > self.max_body_size:
                break
            if not message.get("more_body", False):
                return bytes(body), receive
        pending = list(read)

        async def replay() -> Message:
            return pending.pop(0) if pending else await receive()

        return None, replay


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives ``body`` as the request's one message, then ``receive``'s."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


def install(app: Starlette, *, path: str, max_body_size: int) -> Starlette:
    """Put :class:`RequestChecks` in front of ``app``'s MCP endpoint (after the token check:
    innermost of its middleware), and :func:`auth_error` as its token check's error
    answer; returns ``app``. Call before ``app`` serves its first request (Starlette builds
    its middleware then).

    Raises:
        MemOSError: ``app`` has no bearer-token middleware (an SDK that builds it otherwise).
    """
    wanted: Any = AuthenticationMiddleware  # Middleware.cls is typed as a factory
    auth = [m for m in app.user_middleware if m.cls is wanted]
    if not auth:
        raise MemOSError("memos mcp --http cannot find the mcp SDK's bearer-token middleware "
                         "(a changed SDK?); install the mcp version pyproject.toml names.")
    auth[0].kwargs["on_error"] = auth_error
    app.user_middleware.append(Middleware(RequestChecks, path=path, max_body_size=max_body_size))
    return app
