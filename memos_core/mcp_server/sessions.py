"""How many streamable-HTTP sessions one token may hold open, and how long an idle one lives.

The SDK's session manager caps sessions for the whole server (``max_sessions``, 10,000) and
closes one after ``session_idle_timeout`` seconds with no request in flight (30 minutes by
default). Its cap is global: one token that opens sessions and never closes them (a leaky
agent, a script that never sends DELETE) filled all 10,000 in about 80 s, and every other
user got 503 until those sessions expired. :class:`TokenCappedSessionManager` adds a cap per
token, checked where the SDK admits a session (under its lock, so concurrent opens cannot
overshoot it) and released wherever the SDK discards one (DELETE, idle expiry, a crash).

It extends two hooks of the SDK's manager (``_admit_session``, ``_discard_session``), present
since mcp 1.30 (the floor in pyproject.toml); :func:`install` refuses an SDK without them
rather than serve without the cap.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

from mcp.server.auth.middleware.bearer_auth import AuthorizationContext
from mcp.server.lowlevel.server import Server as MCPServer
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.types import INVALID_REQUEST, ErrorData, JSONRPCError
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from memos_core.errors import MemOSError

if TYPE_CHECKING:
    from mcp.server.fastmcp import FastMCP
    from mcp.server.streamable_http import StreamableHTTPServerTransport

__all__ = ["TokenCappedSessionManager", "install"]

logger = logging.getLogger(__name__)
_Owner = tuple[str, str | None, str | None]  # an AuthorizationContext as a dict key


class _SessionCapReached(Exception):
    """Raised inside the SDK's admission (nothing sent yet) when a token is at its cap;
    :meth:`TokenCappedSessionManager.handle_request` answers it with 429."""

    def __init__(self, owner: AuthorizationContext, open_now: int) -> None:
        super().__init__(owner["client_id"])
        self.owner, self.open_now = owner, open_now


def _key(owner: AuthorizationContext) -> _Owner:
    return owner["client_id"], owner["issuer"], owner["subject"]


class TokenCappedSessionManager(StreamableHTTPSessionManager):
    """The SDK's stateful session manager with at most ``max_sessions_per_token`` open
    sessions per token (the credential the SDK binds a session to).

    A request that would open one more gets HTTP 429 with a JSON-RPC error that names the
    limit; the token's open sessions, and every other token's, are untouched. A session
    counts from its admission until the SDK discards it (DELETE, idle timeout, crash, or an
    opening request that failed). Requests without a token (no auth configured) are not
    counted; the SDK's server-wide ``max_sessions`` still applies to all.
    """

    def __init__(self, app: MCPServer[Any, Any], *, max_sessions_per_token: int,
                 **options: Any) -> None:
        super().__init__(app, **options)
        self.max_sessions_per_token = max_sessions_per_token
        self._open_per_token: Counter[_Owner] = Counter()

    def open_sessions(self, owner: AuthorizationContext) -> int:
        """How many sessions the token behind ``owner`` holds open now."""
        return self._open_per_token[_key(owner)]

    async def handle_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().handle_request(scope, receive, send)
        except _SessionCapReached as refusal:
            owner = refusal.owner
            logger.warning("Refusing a new MCP session for token %s (user %s): it has %d open, "
                           "the limit per token", owner["client_id"], owner["subject"],
                           refusal.open_now)
            await self._refusal(refusal.open_now)(scope, receive, send)

    def _refusal(self, open_now: int) -> Response:
        expiry = ("" if self.session_idle_timeout is None else
                  f", or wait until idle ones expire ({self.session_idle_timeout:g} s "
                  "without a request)")
        message = (f"Too many open sessions for this token: {open_now} are open and the limit "
                   f"is {self.max_sessions_per_token} per token. Close the sessions you no "
                   "longer use (an HTTP DELETE with their Mcp-Session-Id header; MCP clients "
                   f"send it when they close){expiry}.")
        body = JSONRPCError(jsonrpc="2.0", id="server-error",
                            error=ErrorData(code=INVALID_REQUEST, message=message))
        return Response(body.model_dump_json(by_alias=True, exclude_none=True), status_code=429,
                        media_type="application/json")

    def _admit_session(self, requestor: AuthorizationContext | None
                       ) -> StreamableHTTPServerTransport | None:
        # Called by the SDK under its session-creation lock, with nothing sent yet.
        if requestor is not None:
            open_now = self._open_per_token[_key(requestor)]
            if open_now >= self.max_sessions_per_token:
                raise _SessionCapReached(requestor, open_now)
        transport = super()._admit_session(requestor)
        if transport is not None and requestor is not None:
            self._open_per_token[_key(requestor)] += 1
        return transport

    async def _discard_session(self, session_id: str,
                               transport: StreamableHTTPServerTransport) -> None:
        # The SDK may discard a session more than once (DELETE, then its task ending); only
        # the first, while it is still registered, releases the count. Nothing awaits
        # between this check and the SDK forgetting the session.
        owner = (self._session_owners.get(session_id)
                 if self._server_instances.get(session_id) is transport else None)
        if owner is not None:
            key = _key(owner)
            self._open_per_token[key] -= 1
            if self._open_per_token[key] <= 0:
                del self._open_per_token[key]
        await super()._discard_session(session_id, transport)


def install(mcp: FastMCP, max_sessions_per_token: int) -> TokenCappedSessionManager:
    """Give ``mcp`` a :class:`TokenCappedSessionManager` built from its settings, so that
    ``mcp.streamable_http_app()`` (which builds the SDK's own manager only when it has none)
    serves with the per-token cap.

    Raises:
        MemOSError: the installed ``mcp`` SDK lacks the hooks the cap needs (before 1.30).
    """
    if not all(hasattr(StreamableHTTPSessionManager, hook)
               for hook in ("_admit_session", "_discard_session")) \
            or not hasattr(mcp, "_session_manager"):
        raise MemOSError("memos mcp --http needs mcp>=1.30 (its per-token session limit "
                         "extends the SDK's session manager); upgrade it with "
                         "pip install -U 'memos-core[mcp]'.")
    settings = mcp.settings
    manager = TokenCappedSessionManager(
        mcp._mcp_server, event_store=mcp._event_store, retry_interval=mcp._retry_interval,
        json_response=settings.json_response,
        stateless=settings.stateless_http, security_settings=settings.transport_security,
        max_request_body_size=settings.max_request_body_size,
        session_idle_timeout=settings.session_idle_timeout, max_sessions=settings.max_sessions,
        max_sessions_per_token=max_sessions_per_token)
    mcp._session_manager = manager
    return manager
