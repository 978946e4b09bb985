"""The MCP server: memory tools, two resources and a prompt over one MemOS.

Built on the official SDK's ``FastMCP``. Who is calling never comes from the arguments:

* **stdio** (:func:`build_stdio_server`): one client, the user the server was started for.
* **streamable HTTP** (:func:`build_http_server`): every HTTP request must carry
  ``Authorization: Bearer <token>``; the SDK's bearer middleware checks it against the
  :class:`~memos_core.mcp_server.tokens.TokenStore` (a missing, unknown or revoked token gets
  401 before any MCP message is read) and each tool call acts as the token's user, read from
  the request that carried the call. A session opened with one token cannot be used with
  another (the SDK binds sessions to the credential). A token that cannot be checked (the
  vault unreachable, in server mode) gets 503, not 401; each POST body is checked before the
  SDK reads it (:mod:`memos_core.mcp_server.http_checks`).

The server only needs a :class:`~memos_core.MemOS`, so it runs over whatever store the
facade opens (the embedded data directory today).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO, Literal

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.fastmcp import FastMCP
from mcp.server.fastmcp.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations
from pydantic import AnyHttpUrl, Field

from memos_core.errors import (
    AccessDeniedError,
    InvalidInputError,
    MemoryNotFoundError,
    MemOSError,
    ServerUnavailableError,
)
from memos_core.mcp_server.hosts import check_host, url_host
from memos_core.mcp_server.limits import (
    DEFAULT_MAX_SESSIONS_PER_TOKEN,
    DEFAULT_SESSION_IDLE_TIMEOUT,
    check_session_limits,
)
from memos_core.mcp_server.sessions import install as install_session_cap
from memos_core.mcp_server.tokens import TokenRecord, TokenStore
from memos_core.mcp_server.tools import MemoryService
from memos_core.signals import SIGTERM_STATUS, restore_sigterm
from memos_core.validation import check_name

if TYPE_CHECKING:
    import uvicorn
    from starlette.applications import Starlette

    from memos_core.memos import MemOS

SERVER_NAME = "memos"
INSTRUCTIONS = (
    "Long-term memory for this user. Call `search` before answering questions about the user "
    "or past conversations; `store` a fact or preference worth keeping as one self-contained "
    "sentence; `update`, `forget`, `compress` by the ids that search returns. Memories marked "
    "sensitive come back as '[redacted: tag]'."
)
MemoryKind = Literal["fact", "preference", "episode", "task_prompt", "summary", "note"]
MemoryId = Annotated[str, Field(description="A memory id (a UUID) as returned by store or search.")]
_READ = ToolAnnotations(readOnlyHint=True, destructiveHint=False, openWorldHint=False)
_WRITE = ToolAnnotations(readOnlyHint=False, destructiveHint=False, openWorldHint=False)
_DESTROY = ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=True,
                           openWorldHint=False)


class TokenFileVerifier:
    """The SDK's ``TokenVerifier`` over a token store (a file, or the vault in server mode):
    an active token verifies to an ``AccessToken`` whose ``subject`` is its user and
    ``client_id`` the token's id.

    The lookup runs in a worker thread (in server mode it is a query, and a lost connection
    may wait for the pool's timeout: the event loop serves the other requests meanwhile). A
    lookup that lost its connection (:class:`ServerUnavailableError`: the database dropped
    the pool's connections, restarted or failed over) is tried once more, on a connection
    the pool makes anew; if the vault still cannot be reached the request gets 503 with
    ``Retry-After`` (:class:`~memos_core.mcp_server.http_checks.TokensUnreachable`), never
    401, which tells a client that its valid token is bad."""

    def __init__(self, tokens: TokenStore) -> None:
        self.tokens = tokens

    def _lookup(self, token: str) -> TokenRecord | None:
        try:
            return self.tokens.verify(token)
        except ServerUnavailableError:  # the pool drops the broken connections: once more
            return self.tokens.verify(token)

    async def verify_token(self, token: str) -> AccessToken | None:
        import anyio

        from memos_core.mcp_server.http_checks import TokensUnreachable

        try:
            record = await anyio.to_thread.run_sync(self._lookup, token)
        except ServerUnavailableError as exc:
            print(f"memos mcp: cannot check a token, answering 503: {exc}", file=sys.stderr)
            raise TokensUnreachable(str(exc)) from None
        except MemOSError as exc:  # an unreadable token file refuses everyone, loudly
            print(f"memos mcp: {exc}", file=sys.stderr)
            return None
        if record is None:
            return None
        return AccessToken(token=token, client_id=record.id, subject=record.user_id,
                           scopes=["memos"])


def describe(exc: MemOSError) -> str:
    """``"denied: ..."``, ``"not found: ..."``, ``"invalid input: ..."`` or ``"error: ..."``."""
    kind = ("denied" if isinstance(exc, AccessDeniedError) else
            "not found" if isinstance(exc, MemoryNotFoundError) else
            "invalid input" if isinstance(exc, InvalidInputError) else "error")
    return f"{kind}: {exc}"


class MemoryServer:
    """A FastMCP server (``.mcp``) wired to a :class:`MemoryService`.

    Exactly one of ``user_id`` (stdio: the fixed principal) and ``tokens`` (HTTP: principals
    from bearer tokens) is given.
    """

    def __init__(self, mos: MemOS, *, user_id: str | None = None,
                 tokens: TokenStore | None = None, host: str = "127.0.0.1", port: int = 8765,
                 allow_sensitive: Sequence[str] | str | None = None,
                 max_sessions_per_token: int = DEFAULT_MAX_SESSIONS_PER_TOKEN,
                 session_idle_timeout: float | None = DEFAULT_SESSION_IDLE_TIMEOUT,
                 allowed_hosts: Sequence[str] = ()) -> None:
        """``max_sessions_per_token`` and ``session_idle_timeout`` (seconds; ``None``: never)
        bound the HTTP sessions one token holds open (see :mod:`.sessions`);
        ``allowed_hosts`` (host names or IP addresses) are more ``Host`` names a loopback
        server accepts (see :meth:`guard_for_bound`): the names a proxy on this machine
        passes on. stdio ignores them."""
        if (user_id is None) == (tokens is None):
            raise InvalidInputError("give exactly one of user_id (stdio) and tokens (HTTP).")
        self.user_id = check_name(user_id, "user_id", optional=True)
        check_host(host)
        if isinstance(allowed_hosts, str):
            raise InvalidInputError("allowed_hosts must be a list of host names, not a str.")
        self.allowed_hosts = [check_host(name, "allowed host") for name in allowed_hosts]
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidInputError(f"port must be an int 0..65535, got {port!r}.")
        cap, idle = check_session_limits(max_sessions_per_token, session_idle_timeout)
        self.service = MemoryService(mos, allow_sensitive=allow_sensitive)
        _quiet_caller_errors(logging.getLogger("mcp.server.fastmcp.server"))
        self.tokens = tokens
        auth: dict[str, Any] = {}
        if tokens is not None:
            # No OAuth server: tokens come from `memos mcp token add`; issuer_url is required
            # by the SDK's settings and names this server.
            try:
                issuer = AnyHttpUrl(f"http://{url_host(host)}:{port or 1}")
            except ValueError:  # pydantic's ValidationError; check_host let few hosts through
                raise InvalidInputError(f"host {host!r} is not usable in a URL.") from None
            auth = dict(token_verifier=TokenFileVerifier(tokens), auth=AuthSettings(
                issuer_url=issuer, resource_server_url=None, required_scopes=["memos"]))
        guard = _rebinding_guard([host, *self.allowed_hosts]) if is_loopback(host) else None
        self.mcp = FastMCP(SERVER_NAME, instructions=INSTRUCTIONS, host=host, port=port,
                           log_level="WARNING", transport_security=guard,
                           session_idle_timeout=idle, **auth)
        if tokens is not None:
            install_session_cap(self.mcp, cap)
        self._register_tools()
        self._register_resources()

    def http_app(self) -> Starlette:
        """The SDK's streamable-HTTP app with this project's checks in front of it
        (:mod:`memos_core.mcp_server.http_checks`)."""
        from memos_core.mcp_server import http_checks

        settings = self.mcp.settings
        return http_checks.install(self.mcp.streamable_http_app(),
                                   path=settings.streamable_http_path,
                                   max_body_size=settings.max_request_body_size)

    def guard_for_bound(self, host: str, sockets: Sequence[socket.socket]) -> None:
        """Turn DNS-rebinding protection on or off by where the server actually listens:
        on when every socket is on a loopback address (with ``host``, the name it was bound
        by, and ``allowed_hosts`` among the allowed hosts), off otherwise. A name is not
        enough to tell: any host name may resolve to loopback only (``LOCALHOST``, an
        ``/etc/hosts`` alias)."""
        names = [host, self.mcp.settings.host, *self.allowed_hosts]
        guard = (_rebinding_guard(names) if bound_to_loopback(sockets)
                 else TransportSecuritySettings(enable_dns_rebinding_protection=False))
        self.mcp.settings.transport_security = guard
        if self.mcp._session_manager is not None:  # built already: new sessions read it there
            self.mcp._session_manager.security_settings = guard

    def principal(self) -> str:
        """The user of the call being served: the stdio user, or the user of the bearer token
        of the HTTP request that carried the call."""
        request = self.mcp.get_context().request_context.request
        if self.tokens is None:
            if request is not None:  # a stdio server never serves HTTP requests
                raise AccessDeniedError("this server serves stdio only.")
            return self.user_id  # type: ignore[return-value]
        user = getattr(request, "scope", {}).get("user") if request is not None else None
        if isinstance(user, AuthenticatedUser) and user.access_token.subject:
            return user.access_token.subject
        raise AccessDeniedError("no bearer token authenticated this call.")

    async def _call(self, op: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """``service.op(principal, ...)`` (every tool answers a dict); a memory error becomes
        a tool error."""
        try:
            result: dict[str, Any] = await getattr(self.service, op)(self.principal(), *args,
                                                                     **kwargs)
            return result
        except MemOSError as exc:
            raise ToolError(describe(exc)) from None

    async def _read(self, op: str, *args: Any) -> Any:
        """Like :meth:`_call` for resources and prompts (the SDK reports the message)."""
        try:
            return await getattr(self.service, op)(self.principal(), *args)
        except MemOSError as exc:
            raise CallerError(describe(exc)) from None

    def _register_tools(self) -> None:  # noqa: C901 - one small closure per tool
        tool = self.mcp.tool

        @tool(annotations=_WRITE)
        async def store(
            text: Annotated[str, Field(description="The memory, one self-contained sentence.")],
            type: Annotated[MemoryKind | None, Field(description="What kind of memory.")] = None,
            tags: Annotated[list[str] | None, Field(description="Short labels.")] = None,
            session_id: Annotated[str | None, Field(description="Conversation it came from.")] = None,
            occurred_at: Annotated[str | None, Field(
                description="ISO date/time of the remembered event.")] = None,
            sensitivity: Annotated[list[str] | None, Field(
                description="Sensitivity tags such as 'pii' or 'secret' (redacted in results).")] = None,
            supersedes: Annotated[MemoryId | None, Field(
                description="Id of an older memory this one replaces.")] = None,
        ) -> dict[str, Any]:
            """Store a memory for the current user; returns it with its id."""
            return await self._call("store", text, type=type, tags=tags or (),
                                    session_id=session_id, occurred_at=occurred_at,
                                    sensitivity=sensitivity or (), supersedes=supersedes)

        @tool(annotations=_READ)
        async def search(
            query: Annotated[str, Field(description="What to look for, in natural language.")],
            k: Annotated[int, Field(ge=1, le=50, strict=True, description="How many memories.")] = 5,
            session_id: Annotated[str | None, Field(description="Only this conversation.")] = None,
            types: Annotated[list[MemoryKind] | None, Field(description="Only these kinds.")] = None,
            tags: Annotated[list[str] | None, Field(description="Only memories with these tags.")] = None,
            occurred_after: Annotated[str | None, Field(
                description="ISO date/time, inclusive; a date alone is its midnight UTC.")] = None,
            occurred_before: Annotated[str | None, Field(
                description="ISO date/time, inclusive; a date alone is its midnight UTC, so "
                            "2024-06-01 takes in all of May 31.")] = None,
            include_archived: Annotated[bool, Field(strict=True,
                                                    description="Also archived memories.")] = False,
        ) -> dict[str, Any]:
            """Hybrid search of the current user's memories (and those shared with them), best
            first; each hit has its id, score and `why` (the signals that found it)."""
            return await self._call("search", query, k=k, session_id=session_id, types=types,
                                    tags=tags, occurred_after=occurred_after,
                                    occurred_before=occurred_before,
                                    include_archived=include_archived)

        @tool(annotations=_READ)
        async def get(memory_id: MemoryId, version: Annotated[int | None, Field(
                ge=1, strict=True, description="An older version; default the current one.")] = None
                ) -> dict[str, Any]:
            """Read one memory (or one of its versions)."""
            return await self._call("get", memory_id, version=version)

        @tool(annotations=_WRITE)
        async def update(
            memory_id: MemoryId,
            text: Annotated[str | None, Field(description="The new text.")] = None,
            tags: Annotated[list[str] | None, Field(description="The new tags.")] = None,
            type: Annotated[MemoryKind | None, Field(description="The new kind.")] = None,
        ) -> dict[str, Any]:
            """Write a new version of a memory; older versions stay in its history."""
            return await self._call("update", memory_id, text=text, tags=tags, type=type)

        @tool(annotations=_DESTROY)
        async def forget(memory_id: MemoryId, reason: Annotated[str | None, Field(
                description="Why (kept in the audit log).")] = None) -> dict[str, Any]:
            """Delete a memory everywhere (text, index, caches, conversation logs); returns a
            receipt. Owner only; cannot be undone."""
            return await self._call("forget", memory_id, reason=reason)

        @tool(annotations=_WRITE)
        async def compress(
            memory_ids: Annotated[list[str], Field(min_length=1, description="Memories to merge.")],
            summary: Annotated[str, Field(description="One text that replaces them.")],
        ) -> dict[str, Any]:
            """Replace several memories by one summary; the sources are archived."""
            return await self._call("compress", memory_ids, summary)

        @tool(annotations=_READ)
        async def history(memory_id: MemoryId) -> dict[str, Any]:
            """Every version of a memory, oldest first."""
            return await self._call("history", memory_id)

        @tool(annotations=_WRITE)
        async def share(
            memory_id: MemoryId,
            with_user: Annotated[str, Field(description="The user to share with.")],
            scope: Annotated[Literal["read", "write"], Field(description="What they may do.")] = "read",
        ) -> dict[str, Any]:
            """Let another user read (or also change) one of your memories."""
            return await self._call("share", memory_id, with_user, scope=scope)

        @tool(annotations=_WRITE)
        async def revoke(memory_id: MemoryId, with_user: Annotated[str, Field(
                description="The user to withdraw access from.")]) -> dict[str, Any]:
            """Withdraw what share granted another user on one of your memories."""
            return await self._call("revoke", memory_id, with_user)

    def _register_resources(self) -> None:
        @self.mcp.resource("memos://memories/recent", name="recent_memories",
                           mime_type="application/json")
        async def recent() -> dict[str, Any]:
            """The current user's 20 newest memories (their own and shared ones)."""
            result: dict[str, Any] = await self._read("recent")
            return result

        @self.mcp.resource("memos://memories/{memory_id}/audit", name="memory_audit_trail",
                           mime_type="application/json")
        async def audit(memory_id: str) -> dict[str, Any]:
            """Who did what to one memory, oldest first."""
            result: dict[str, Any] = await self._read("audit", memory_id)
            return result

        @self.mcp.prompt(name="recall", description="Recall the memories relevant to a question "
                         "and ask it with them.")
        async def recall(question: str) -> str:
            return str(await self._read("recall_prompt", question))


def is_loopback(host: str) -> bool:
    """True for ``localhost`` (in any case) and loopback addresses (127.0.0.0/8, ::1), by the
    name alone; :func:`bound_to_loopback` tells by the addresses a name was bound to."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bound_to_loopback(sockets: Sequence[socket.socket]) -> bool:
    """True when there are sockets and every one listens on a loopback address."""
    return bool(sockets) and all(is_loopback(sock.getsockname()[0]) for sock in sockets)


def _rebinding_guard(hosts: Sequence[str]) -> TransportSecuritySettings:
    """DNS-rebinding protection (Host and Origin headers checked) for a loopback server,
    allowing the usual loopback names and ``hosts`` (as given and in lower case: the SDK
    compares them exactly). The SDK turns it on only for 127.0.0.1, localhost and ::1, so a
    server on 127.0.0.2 (or any 127.x address, or a name that resolves to loopback) took
    requests naming any host -- a web page the user visits could reach it through a rebound
    name (the bearer token still applies).

    Each name is allowed with a port and without one (``Host: 127.0.0.1`` is what a client
    sends to a server on port 80, and what a proxy on the default port passes on), and so
    are its ``http://`` and ``https://`` origins: only ``NAME:*`` was, so such a server
    refused every request with 421."""
    names = ["127.0.0.1", "localhost", "[::1]"]
    for host in hosts:
        names += [url_host(host), url_host(host.lower())]
    names = list(dict.fromkeys(names))
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[form for name in names for form in (name, f"{name}:*")],
        allowed_origins=[f"{scheme}://{name}{port}" for name in names
                         for scheme in ("http", "https") for port in ("", ":*")])


def build_stdio_server(mos: MemOS, *, user_id: str, **options: Any) -> MemoryServer:
    """A server for one client over stdio, acting as ``user_id``."""
    return MemoryServer(mos, user_id=user_id, **options)


def serve_stdio(server: MemoryServer, stdin: BinaryIO | None = None,
                stdout: BinaryIO | None = None) -> None:
    """Serve ``server`` to one client over ``stdin`` and ``stdout`` (binary; default the
    process's) until stdin ends, on this project's line reader (see
    :mod:`memos_core.mcp_server.stdio`: a line it cannot read is answered, never dropped).
    A SIGTERM stops the server at a safe point of its event loop; this then raises
    ``SystemExit(143)``, so the caller's ``with`` blocks close the store. From the moment the
    server has stopped until this returns, SIGTERM is ignored (the caller's close follows).

    Raises:
        MemOSError: stdin or stdout is closed, or reading or writing them failed other than
            by the client going away (a full disk, an I/O error); the message says which.
    """
    import anyio

    from memos_core.mcp_server.stdio import standard_stream, stdio_transport

    stdin = stdin if stdin is not None else standard_stream("stdin")
    stdout = stdout if stdout is not None else standard_stream("stdout")
    stopped_by_sigterm = False
    failures: list[str] = []

    async def serve() -> None:
        nonlocal stopped_by_sigterm
        lowlevel = server.mcp._mcp_server  # what FastMCP.run("stdio") runs, on our transport
        async with anyio.create_task_group() as tasks:

            def on_sigterm() -> None:
                nonlocal stopped_by_sigterm
                stopped_by_sigterm = True
                tasks.cancel_scope.cancel()

            handled = _on_sigterm_in_loop(on_sigterm)
            try:
                async with stdio_transport(stdin, stdout, failures.append) as (incoming,
                                                                             outgoing):
                    await lowlevel.run(incoming, outgoing,
                                       lowlevel.create_initialization_options())
            finally:
                if handled:
                    _stop_handling_sigterm_in_loop()

    previous = signal.getsignal(signal.SIGTERM)
    try:
        anyio.run(serve)
    finally:
        # the SIG_IGN of the close (or asyncio's SIG_DFL) becomes exit_on_sigterm's handler again
        restore_sigterm(previous)
    if failures:
        raise MemOSError(failures[0])
    if stopped_by_sigterm:
        raise SystemExit(SIGTERM_STATUS)


def _on_sigterm_in_loop(callback: Callable[[], None]) -> bool:
    """Have the running asyncio loop call ``callback`` on SIGTERM; False where it cannot (not
    the main thread, no asyncio loop).

    A handler that raises ``SystemExit`` wherever the main thread happens to be (what
    :func:`memos_core.signals.exit_on_sigterm` does in the CLIs' synchronous code) is not
    safe inside an event loop: it fired once inside anyio's hand-off from a transport thread,
    whose ``except BaseException`` swallowed it, and the server ran on, ignoring every later
    SIGTERM. The loop's own signal handling runs the callback at a safe point instead (and
    wakes the loop whichever thread the kernel gave the signal to)."""
    import asyncio

    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, callback)
    except (RuntimeError, ValueError, NotImplementedError):
        return False
    return True


def _stop_handling_sigterm_in_loop() -> None:
    """Take the loop's SIGTERM handler away once the server has stopped, and ignore SIGTERM
    from then on: the caller puts its own handler back once the loop is gone.

    Removing the handler puts back SIGTERM's default, which ends the process at once: a
    SIGTERM in the few milliseconds before the loop was gone (an MCP client sends one 2 s
    after closing stdin) killed the process with its store open. The server has stopped, so
    what follows is the store's close, during which SIGTERM is ignored (docs/mcp.md). Right
    after the removal, still a few microseconds of the default remain: Python has no call
    that takes the loop's handler away and sets another in one step."""
    import asyncio

    asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def build_http_server(mos: MemOS, *, tokens: TokenStore, host: str = "127.0.0.1",
                      port: int = 8765, **options: Any) -> MemoryServer:
    """A streamable-HTTP server whose callers authenticate with tokens from ``tokens``."""
    return MemoryServer(mos, tokens=tokens, host=host, port=port, **options)


class CallerError(ValueError):
    """A resource read or prompt the caller got wrong (bad argument, no right, no such
    memory): the SDK answers the client with its message."""


# What the SDK raises (as ValueError) for a prompt request the caller got wrong, before any
# code of ours runs: a required argument left out, a prompt name the server does not have.
_SDK_CALLER_MISTAKES = ("Missing required arguments", "Unknown prompt: ")


def _is_callers_mistake(exc: BaseException) -> bool:
    return isinstance(exc, CallerError) or (
        type(exc) is ValueError and str(exc).startswith(_SDK_CALLER_MISTAKES))


class _CallerErrorsInOneLine(logging.Filter):
    """FastMCP logs every failed prompt with a traceback; for the caller's mistake (a
    :class:`CallerError`, or the SDK's own refusal of a missing argument or an unknown
    prompt), already answered to the client, keep one warning line without it."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        while exc is not None and not _is_callers_mistake(exc):
            exc = exc.__cause__ or exc.__context__
        if exc is not None:
            record.msg, record.args = f"{record.getMessage()}: {exc}", ()
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _quiet_caller_errors(log: logging.Logger) -> None:
    if not any(isinstance(f, _CallerErrorsInOneLine) for f in log.filters):
        log.addFilter(_CallerErrorsInOneLine())


class _ClientHangUp(logging.Filter):
    """Drops the SDK's error log (with traceback) for a client that closed its event stream
    when its session ended: a normal disconnect, not a server error."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (record.getMessage() == "Error in standalone SSE writer"
                    and type(exc).__name__ in ("ClosedResourceError", "BrokenResourceError"))


def _uvicorn(server: MemoryServer, host: str, port: int) -> uvicorn.Server:
    import uvicorn

    sdk_log = logging.getLogger("mcp.server.streamable_http")
    if not any(isinstance(f, _ClientHangUp) for f in sdk_log.filters):
        sdk_log.addFilter(_ClientHangUp())
    config = uvicorn.Config(server.http_app(), host=host, port=port,
                            log_level="warning", lifespan="on")
    return _signals_after_the_loop()(config)


@functools.cache
def _signals_after_the_loop() -> type[uvicorn.Server]:
    """uvicorn's server, which hands the signal that stopped it on (:func:`serve_http`
    raises it again) only once its event loop has ended, and only the first one.

    uvicorn raised every signal it had caught again, still inside its loop, once it had shut
    down: after a second Ctrl-C (which makes it stop waiting for open connections) asyncio's
    own SIGINT handler got the second one there and raised ``KeyboardInterrupt`` in the
    middle of the loop's shutdown, which printed a traceback of the cancelled lifespan task
    and could reach the store's close (status 130, the index not marked clean).

    After a second Ctrl-C uvicorn also skipped the app's lifespan shutdown (the SDK's
    session manager), whose task the loop's end then cancelled, logging its traceback at
    ERROR: here the app still shuts down, without waiting for open connections."""
    import uvicorn

    class Server(uvicorn.Server):
        stopped_by: list[int] = []

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            await super().shutdown(sockets)
            if self.force_exit:  # skipped by uvicorn then
                await self.lifespan.shutdown()

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                try:
                    yield
                finally:  # before uvicorn's own exit, which raises what is left here
                    self.stopped_by = self._captured_signals[:1]
                    self._captured_signals.clear()

    return Server


def bind_http(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on ``host:port``, one per address ``host`` resolves to (as asyncio's
    ``create_server``, which uvicorn uses, binds them; with ``port=0`` all on the port the
    first one got), so that a host that does not resolve or a port in use is an error here,
    before anything says "serving".

    Raises:
        MemOSError: the host does not resolve, or an address cannot be bound (in use, not
            this machine's, a privileged port); nothing is left open.
    """
    where = f"{url_host(host)}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise MemOSError(f"cannot serve on {where}: the host {host!r} does not resolve "
                         f"({exc}).") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            if port == 0 and sockets:  # every address on the same (first picked) port
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(2048)  # uvicorn's default backlog
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise MemOSError(f"cannot serve on {where}: {exc.strerror or exc}.") from None
    return sockets


def serve_http(server: MemoryServer, host: str, port: int,
               sockets: list[socket.socket] | None = None) -> None:
    """Serve ``server`` over streamable HTTP at ``http://host:port/mcp`` until interrupted,
    on ``sockets`` if given (from :func:`bind_http`), else on sockets it binds.

    Raises:
        MemOSError: the server could not start (see :func:`bind_http`; or the app's startup
            failed, which uvicorn has logged).
    """
    if sockets is None:
        sockets = bind_http(host, port)
    server.guard_for_bound(host, sockets)
    uv = _uvicorn(server, host, port)
    try:
        uv.run(sockets=sockets)
    except SystemExit as exc:  # uvicorn's "startup failed" is status 3, which `memos` uses
        if uv.started:         # for "denied": an error of its own instead
            raise
        raise MemOSError(f"the MCP HTTP server on {url_host(host)}:{port} did not start "
                         f"(uvicorn exited with status {exc.code}; see its log above).") from None
    finally:
        for sock in sockets:
            sock.close()
    # the signal that stopped it, to its handler here (outside the loop): Ctrl-C's
    # KeyboardInterrupt, exit_on_sigterm's SystemExit(143); the store's close follows
    for signum in getattr(uv, "stopped_by", ()):
        signal.raise_signal(signum)


class HttpServerThread:
    """A streamable-HTTP server in a background thread (tests, notebooks, embedding apps).

    ``port=0`` picks a free port; ``url`` is the MCP endpoint once :meth:`start` returned.
    Use as a context manager, or call :meth:`stop`.
    """

    def __init__(self, server: MemoryServer, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server, self.host = server, host
        self._uv = _uvicorn(server, host, port)
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=lambda: self._uv.run(sockets=self._sockets),
                                        name="memos-mcp-http", daemon=True)
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{url_host(self.host)}:{self.port}/mcp"

    def start(self, timeout: float = 30.0) -> "HttpServerThread":
        """Bind and start serving; returns once the server runs. Raises ``MemOSError`` if the
        address cannot be bound (see :func:`bind_http`), ``RuntimeError`` if the server has
        not started within ``timeout`` seconds."""
        self._sockets = bind_http(self.host, self.port)
        self.server.guard_for_bound(self.host, self._sockets)
        self.port = self._sockets[0].getsockname()[1]
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._uv.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the MCP HTTP server did not start on {self.host}:{self.port}.")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop serving and wait (at most ``timeout`` seconds) for the thread to end."""
        self._uv.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        for sock in self._sockets:
            sock.close()

    def __enter__(self) -> "HttpServerThread":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
