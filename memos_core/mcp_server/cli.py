"""``memos mcp``: serve the memory over MCP, and manage the HTTP bearer tokens.

::

    memos mcp --user alice                      # stdio (for desktop/IDE clients)
    memos mcp --http 127.0.0.1:8765             # streamable HTTP at http://127.0.0.1:8765/mcp
    memos mcp token add --user alice            # prints a new token once
    memos mcp token list | memos mcp token revoke TOKEN_ID
    memos --db postgresql://... mcp token add --user alice   # server mode: kept in the vault

This module only wires argparse; the ``mcp`` SDK is imported when a server starts, so
``memos --help`` and the token commands work without it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from memos_core.config import default_data_dir, path_argument
from memos_core.errors import InvalidInputError, MemOSError
from memos_core.mcp_server.hosts import check_host, parse_http, url_host
from memos_core.mcp_server.limits import DEFAULT_MAX_SESSIONS_PER_TOKEN, DEFAULT_SESSION_IDLE_TIMEOUT
from memos_core.signals import exit_on_sigterm, uninterrupted_close

DEFAULT_PORT = 8765


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``mcp`` (and ``mcp token add|revoke|list``) to the ``memos`` subcommands."""
    m = sub.add_parser("mcp", parents=[common], help="serve memory to MCP clients (stdio or HTTP)")
    m.add_argument("--http", metavar="HOST:PORT", default=None,
                   help=f"serve streamable HTTP (e.g. 127.0.0.1:{DEFAULT_PORT} or :{DEFAULT_PORT}; "
                   "loopback unless a host is named) instead of stdio")
    m.add_argument("--token-file", type=path_argument, default=None,
                   help="bearer tokens for --http (default: <data-dir>/mcp-tokens.json; in "
                   "server mode, --db, the vault keeps them for every host)")
    m.add_argument("--allow-sensitive", action="append", default=None, metavar="TAG",
                   help="return memories with this sensitivity tag unredacted ('*': all)")
    m.add_argument("--max-sessions-per-token", type=int, default=None, metavar="N",
                   help=f"--http: open sessions one token may hold (default "
                   f"{DEFAULT_MAX_SESSIONS_PER_TOKEN}); one more is refused with 429")
    m.add_argument("--session-idle-timeout", type=float, default=None, metavar="SECONDS",
                   help=f"--http: close a session after this long without a request (default "
                   f"{DEFAULT_SESSION_IDLE_TIMEOUT:g})")
    m.add_argument("--allowed-host", action="append", default=None, metavar="NAME",
                   help="--http on loopback: also accept requests whose Host header names NAME "
                   "(with or without a port), e.g. the name a reverse proxy on this machine "
                   "passes on; repeatable")
    tsub = m.add_subparsers(dest="mcp_command")
    t = tsub.add_parser("token", help="manage the bearer tokens of the HTTP server")
    tt = t.add_subparsers(dest="token_command", required=True)
    for name, what in (("add", "make a token for --user (printed once)"),
                       ("revoke", "revoke a token by its id"), ("list", "list tokens (no secrets)")):
        p = tt.add_parser(name, help=what)
        # The options `memos mcp` already took may be given here too; SUPPRESS keeps a value
        # given before `token` (memos mcp --user X token add) instead of resetting it.
        p.add_argument("--data-dir", type=path_argument, default=argparse.SUPPRESS, help="data directory")
        p.add_argument("--db", default=argparse.SUPPRESS, metavar="URL",
                       help="server mode: the tokens live in this database's vault")
        p.add_argument("--user", default=argparse.SUPPRESS, help="the token's principal (user id)")
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
        p.add_argument("--token-file", type=path_argument, default=argparse.SUPPRESS)
        if name == "add":
            p.add_argument("--label", default=None, help="a note, e.g. the client's name")
        if name == "revoke":
            p.add_argument("token_id")


def server_url(args: argparse.Namespace) -> str | None:
    """The server-mode URL the command names: ``--db``, else ``$MEMOS_DB_URL`` when no
    ``--data-dir`` is given (an empty ``$MEMOS_DB_URL`` counts as unset); None for the
    embedded mode. Every ``memos`` command resolves it here.

    Raises:
        InvalidInputError: both ``--db`` and ``--data-dir`` are given, or the URL is not a
            ``postgresql://`` URL (a libpq ``host=... dbname=...`` string, a typo: it would
            otherwise be taken for a data directory of that name and created), or it holds
            a byte that is not UTF-8.
    """
    data_dir = getattr(args, "data_dir", None)
    given = getattr(args, "db", None)
    source = "--db" if given is not None else "$MEMOS_DB_URL"
    url = given if given is not None else (
        (os.environ.get("MEMOS_DB_URL") or None) if data_dir is None else None)
    if url is None:
        return None
    if data_dir is not None:
        raise InvalidInputError("Give either --db (server mode) or --data-dir, not both.")
    from memos_core.validation import bad_char, shown
    from memos_core.vault.postgres import is_postgres_url

    bad = bad_char(url)
    if bad is not None:
        raise InvalidInputError(f"{source} holds {bad}; write the URL in UTF-8 "
                                "(percent-encode other bytes: %FF).")
    if not is_postgres_url(url):
        scheme = url.split("://", 1)[0] if "://" in url else None
        got = f"its scheme is {shown(scheme, 20)}" if scheme is not None else "it has no scheme"
        raise InvalidInputError(
            f"{source} needs a postgresql:// URL (postgresql://user:password@host:port/"
            f"database); {got}. A libpq 'host=... dbname=...' string is written "
            "postgresql://user@host/dbname; for a data directory use --data-dir.")
    return url


@contextmanager
def _tokens(args: argparse.Namespace) -> Iterator[Any]:
    """The token store the token commands manage: ``--token-file``; else, in server mode,
    the vault's (every MCP server on the database shares it); else the data directory's."""
    from memos_core.mcp_server.tokens import TokenStore, VaultTokenStore

    url = server_url(args)
    if args.token_file is not None or not url:
        yield (TokenStore(args.token_file) if args.token_file is not None
               else TokenStore.for_data_dir(args.data_dir or default_data_dir()))
        return
    from memos_core.server_mode import check_url

    try:
        from memos_core.vault.postgres import PostgresVault
    except ImportError as exc:
        raise MemOSError(f"Server mode needs the PostgreSQL driver ({exc}); install it with "
                         "pip install 'memos-core[server]'.") from None
    vault = PostgresVault(check_url(url), pool_size=1)
    try:
        yield VaultTokenStore(vault)
    finally:
        vault.close()


def _token_command(args: argparse.Namespace, user: str, emit: Callable[..., None]) -> None:
    with _tokens(args) as store:
        _token_action(args, user, emit, store)


def _token_action(args: argparse.Namespace, user: str, emit: Callable[..., None],
                  store: Any) -> None:
    if args.token_command == "add":
        token, record = store.add(user, label=args.label)
        emit(args, {"id": record.id, "user_id": record.user_id, "token": token},
             f"token {record.id} for {record.user_id} (shown once; keep it secret):\n{token}")
    elif args.token_command == "revoke":
        record = store.revoke(args.token_id)
        emit(args, {"id": record.id, "revoked_at": record.revoked_at},
             f"revoked {record.id} ({record.user_id})")
    else:
        rows = store.describe()
        emit(args, rows, "\n".join(
            f"{r['id']}  {r['user_id']:<16} created {r['created_at']}  "
            + (f"REVOKED {r['revoked_at']}" if r["revoked_at"] else "active")
            + (f"  {r['label']}" if r["label"] else "") for r in rows) or "no tokens")


def run(args: argparse.Namespace, user: str, open_mos: Callable[[argparse.Namespace], Any],
        emit: Callable[..., None]) -> None:
    """Run ``memos mcp ...``; ``open_mos(args)`` opens the store as the other commands do.

    The stdio server runs until stdin ends (once the requests it read are answered, see
    :mod:`memos_core.mcp_server.stdio`) or its client closes stdout; either server until
    Ctrl-C or SIGTERM. SIGTERM closes the store too and raises ``SystemExit(143)``
    (:func:`memos_core.signals.exit_on_sigterm`); once the store has begun to close, SIGTERM
    and Ctrl-C are ignored until it is closed (:func:`memos_core.signals.uninterrupted_close`)."""
    if args.mcp_command == "token":
        _token_command(args, user, emit)
        return
    try:
        from memos_core.mcp_server import server as mcp_server
    except ImportError as exc:
        raise MemOSError(f"memos mcp needs the MCP SDK ({exc}); install it with "
                         "pip install 'memos-core[mcp]'.") from None
    options: dict[str, Any] = {"allow_sensitive": args.allow_sensitive}
    limits = {"max_sessions_per_token": args.max_sessions_per_token,
              "session_idle_timeout": args.session_idle_timeout}
    if args.http is None and any(value is not None for value in limits.values()):
        raise InvalidInputError("--max-sessions-per-token and --session-idle-timeout limit the "
                                "HTTP server's sessions; give them with --http HOST:PORT.")
    if args.http is None and args.allowed_host:
        raise InvalidInputError("--allowed-host names a Host the HTTP server accepts; give it "
                                "with --http HOST:PORT.")
    options.update({name: value for name, value in limits.items() if value is not None})
    if args.allowed_host:  # checked before the store is opened
        options["allowed_hosts"] = [check_host(name, "--allowed-host") for name in args.allowed_host]
    if args.http is None:
        with exit_on_sigterm(), uninterrupted_close(open_mos(args)) as mos:
            mcp_server.serve_stdio(mcp_server.build_stdio_server(mos, user_id=user, **options))
        return
    host, port = parse_http(args.http)
    from memos_core.mcp_server.tokens import tokens_for

    # uvicorn catches SIGTERM itself, shuts down, and raises it again to the handler it found:
    # this one, so the store is closed here too
    with exit_on_sigterm(), uninterrupted_close(open_mos(args)) as mos:
        tokens = tokens_for(mos, args.token_file)  # server mode: the vault's, shared
        if not any(r.active for r in tokens.list()):
            print(f"memos mcp: warning: {tokens.where} has no active token; every request will "
                  "be refused until `memos mcp token add --user NAME`.", file=sys.stderr)
        server = mcp_server.build_http_server(mos, tokens=tokens, host=host, port=port, **options)
        sockets = mcp_server.bind_http(host, port)  # MemOSError if it cannot: exit status 1
        bound = sockets[0].getsockname()[1]
        if not mcp_server.bound_to_loopback(sockets):
            print(f"memos mcp: warning: serving on {host}, reachable from other machines; use "
                  "TLS in front of it (tokens travel in clear over plain HTTP).", file=sys.stderr)
        print(f"memos mcp: serving http://{url_host(host)}:{bound}/mcp",
              file=sys.stderr, flush=True)
        mcp_server.serve_http(server, host, port, sockets=sockets)
