"""The ``memos`` command line: the Memory API for shells and scripts.

Every command but ``demo`` takes ``--data-dir`` (default ``$MEMOS_DATA_DIR`` or ``~/.memos``)
-- or, for the server mode, ``--db postgresql://...`` (default ``$MEMOS_DB_URL``; anything but
a ``postgresql://`` URL is refused) -- and ``--user`` (default ``$MEMOS_USER`` or your login
name; ``schedule`` with neither runs for every user), and ``--json`` for machine-readable
output; these options go before or after the command (``memos --db URL search ...`` and
``memos search ... --db URL`` are the same). Commands that read (``search``, ``get``, ``list``,
``stats``, ``export`` ...) refuse a data directory that holds no store, so a mistyped path is
not taken for an empty store; ``add``, ``import``, ``mcp`` and a namespace ``share`` or
``revoke`` create it.
Input (``add -`` from stdin, ``add --file`` JSON lines) is read as UTF-8 whatever the locale;
``--json`` writes datetimes in ISO 8601 (``Z`` for UTC) in every command.
Exit status: 0 ok, 2 bad input (a malformed bundle and bytes that are not UTF-8 included) or
unknown id, 3 denied, 1 anything else; a reader that stops early (``memos list | head -1``)
ends the command quietly with 0. Ctrl-C (130) and SIGTERM (143; how systemd, ``docker stop``
and ``timeout`` stop a process) close the store before the command exits; a SIGTERM or
Ctrl-C that comes while the store closes is ignored (:mod:`memos_core.signals`). The library's logged
warnings are printed one line each (``memos: warning: ...``, no traceback; the PostgreSQL
driver's own are hidden); ``MEMOS_DEBUG=1`` shows them whole (:mod:`memos_core.cli_log`).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from memos_core.cli_log import warnings_on_stderr
from memos_core.config import MemOSConfig, default_data_dir, path_argument
from memos_core.errors import (
    AccessDeniedError,
    BundleError,
    InvalidInputError,
    MemoryNotFoundError,
    MemOSError,
)
from memos_core.mcp_server import cli as mcp_cli  # argparse only: the MCP SDK loads when serving
from memos_core.signals import exit_on_sigterm, uninterrupted_close
from memos_core.validation import check_name, check_path, shown_path


def _default_user() -> str:
    if "MEMOS_USER" in os.environ:
        return os.environ["MEMOS_USER"]  # checked like --user: an empty one is refused
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "default"


def _principal(args: argparse.Namespace) -> str:
    """The caller: ``--user``, else ``$MEMOS_USER``, else the login name. An empty or
    blank value is refused, never replaced by another user."""
    if args.user is not None:
        return str(check_name(args.user, "--user"))
    return str(check_name(_default_user(), "$MEMOS_USER"))


# The options every command but `demo` takes, with their defaults; a command's own parser
# repeats them with argparse.SUPPRESS so that one given before the command (`memos --db URL
# search ...`) is not reset by the subcommand, and one given after it wins.
_STORE_OPTIONS = ("data_dir", "db", "cache_dir", "index", "qdrant_url", "index_url",
                  "embedder_backend")
_CALLER_OPTIONS = ("user", "agent", "json")


def _add_common(p: argparse.ArgumentParser, *, top: bool) -> None:
    none: Any = None if top else argparse.SUPPRESS
    p.add_argument("--data-dir", type=path_argument, default=none,
                   help="data directory (default $MEMOS_DATA_DIR, else ~/.memos)")
    p.add_argument("--db", default=none, metavar="URL",
                   help="server mode: postgresql://user:password@host:port/database "
                   "instead of a data directory (default $MEMOS_DB_URL)")
    p.add_argument("--cache-dir", type=path_argument, default=none,
                   help="server mode: local directory for per-process files (KV caches, "
                   "adapters); default a temporary one (refused without --db)")
    p.add_argument("--user", default=none,
                   help="principal (user id) for the call (default $MEMOS_USER, else your "
                   "login name)")
    p.add_argument("--agent", default=none, help="agent id")
    p.add_argument("--json", action="store_true", default=False if top else argparse.SUPPRESS,
                   help="print JSON")
    p.add_argument("--index", choices=["edge", "qdrant", "pgvector"], default=none,
                   help="index backend (default: edge, embedded; pgvector with --db)")
    p.add_argument("--qdrant-url", default=none, help="Qdrant server URL (with --index qdrant)")
    p.add_argument("--index-url", default=none,
                   help="PostgreSQL URL of the index (with --index pgvector; --db implies it)")
    p.add_argument("--embedder-backend", default=none,
                   choices=["auto", "onnx", "onnx+bf16", "bf16", "onnx-int8", "torch"],
                   help="how texts are embedded (default auto, or $MEMOS_EMBEDDER_BACKEND); "
                   "onnx+bf16 embeds bulk adds and imports faster on a CPU with bf16 "
                   "(same vectors up to rounding); see MemOSConfig.embedder_backend")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _add_common(common, top=False)
    p = argparse.ArgumentParser(
        prog="memos", description="A memory operating system for LLM agents.",
        epilog="The options above may also follow the command (memos search QUERY --db URL).")
    _add_common(p, top=True)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="a narrated walk through the whole system (takes only "
                       "--data-dir and --no-model)")
    d.add_argument("--data-dir", type=path_argument, default=argparse.SUPPRESS,
                   help="keep the demo's files here (default: a temporary directory, removed "
                   "at the end)")
    d.add_argument("--no-model", action="store_true", help="skip the local language model part")
    _memory_commands(sub, common)
    _governance_commands(sub, common)
    _store_commands(sub, common)
    mcp_cli.add_parser(sub, common)
    return p


def _memory_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """``add``, ``search``, ``list``, ``get`` and ``history``."""
    a = sub.add_parser("add", parents=[common], help="store a memory (text, '-' for stdin, or --file)",
                       epilog="With --file, --session, --type, --tag, --sensitivity and "
                       "--occurred-at (and --agent) are the defaults of every line: a line's own "
                       "field wins (its tags replace the option's), but a line's sensitivity adds "
                       "to --sensitivity. TEXT and --supersedes are for one memory, not --file.")
    a.add_argument("text", nargs="?", help="memory text; '-' reads stdin")
    a.add_argument("--file", type=path_argument, help="JSONL file, one {'text': ..., ...} per line (bulk)")
    a.add_argument("--session", default=None, help="the session the memory belongs to")
    a.add_argument("--type", default=None, help="fact, preference, episode, note, ...")
    a.add_argument("--tag", action="append", default=[], help="tag (repeatable)")
    a.add_argument("--occurred-at", default=None, help="ISO date/time of the remembered event")
    a.add_argument("--supersedes", default=None, help="id of the memory this one replaces")
    a.add_argument("--sensitivity", action="append", default=[],
                   help="sensitivity tag such as pii or secret (repeatable)")

    s = sub.add_parser("search", parents=[common], help="hybrid search")
    s.add_argument("query")
    s.add_argument("-k", type=int, default=5, help="how many hits at most (default 5)")
    s.add_argument("--session", default=None, help="only memories of this session")
    s.add_argument("--type", action="append", default=None, help="only this type (repeatable)")
    s.add_argument("--tag", action="append", default=None, help="only with this tag (repeatable)")
    s.add_argument("--after", default=None, help="occurred at or after (ISO)")
    s.add_argument("--before", default=None, help="occurred at or before (ISO)")
    s.add_argument("--include-archived", action="store_true", help="also archived memories")
    s.add_argument("--include-superseded", action="store_true",
                   help="also memories a newer one superseded")
    s.add_argument("--allow-sensitive", action="append", default=None, metavar="TAG",
                   help="show memories with this sensitivity tag unredacted ('*': all)")

    ls = sub.add_parser("list", parents=[common],
                        help="your memories and those shared with you, newest first")
    ls.add_argument("--session", default=None, help="only memories of this session")
    ls.add_argument("--type", action="append", default=None, help="only this type (repeatable)")
    ls.add_argument("--tag", action="append", default=None, help="only with this tag (repeatable)")
    ls.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")

    g = sub.add_parser("get", parents=[common], help="read one memory")
    g.add_argument("id")
    g.add_argument("--version", type=int, default=None, help="this version (default: the current)")
    g.add_argument("--as-of", default=None, help="the version current at this ISO time")

    h = sub.add_parser("history", parents=[common], help="every version of a memory")
    h.add_argument("id")


def _store_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """``forget``, ``export``, ``import``, ``reindex``, ``stats``, ``schedule`` and ``audit``."""
    f = sub.add_parser("forget", parents=[common], help="delete a memory everywhere")
    f.add_argument("id")
    f.add_argument("--reason", default=None,
                   help="why, for the audit record while the forget runs: like the memory's "
                   "other reasons it is then removed (a salted commitment stays so that `audit "
                   "verify` still verifies; see docs/governance.md)")

    e = sub.add_parser("export", parents=[common], help="write your memories to a bundle directory")
    e.add_argument("path", type=path_argument)
    e.add_argument("--include-sensitive", action="store_true",
                   help="also export memories with sensitivity tags (left out by default)")
    i = sub.add_parser("import", parents=[common], help="import a bundle directory")
    i.add_argument("path", type=path_argument)

    sub.add_parser("reindex", parents=[common], help="rebuild the index and graph from the vault")
    sub.add_parser("stats", parents=[common], help="counts of memories, versions, index, graph")

    sc = sub.add_parser("schedule", parents=[common],
                        help="run the scheduler once: expire, archive, promote/demote, KV blocks",
                        epilog="It runs for --user, else $MEMOS_USER; with neither, for every "
                        "user (not for your login name).")
    sc.add_argument("--preset", choices=["default", "eager", "conservative"], default="default",
                    help="scheduler settings (default: default)")

    au = sub.add_parser("audit", parents=[common],
                        help="list the audit log, 'verify' its chain, or show its 'head' (to "
                        "anchor the chain elsewhere)")
    au.add_argument("action", nargs="?", choices=["list", "verify", "head"], default="list",
                    help="list: the records (default); verify: recompute the hash chain; "
                    "head: the chain's last hash and count, to keep elsewhere")
    au.add_argument("--memory", default=None, help="only records of this memory")
    au.add_argument("--action", dest="only_action", default=None,
                    help="only this action (add, forget, share:read, ...)")
    au.add_argument("--limit", type=int, default=50,
                    help="the newest this many records, oldest first (default 50)")


def _governance_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """``update``, ``share`` and ``revoke`` (one memory, or a namespace without an id)."""
    u = sub.add_parser("update", parents=[common], help="write a new version of a memory's text")
    u.add_argument("id")
    u.add_argument("text")
    for name, what in (("share", "let another user read (or --scope write) a memory or a namespace"),
                       ("revoke", "withdraw what share granted")):
        sh = sub.add_parser(name, parents=[common], help=what)
        sh.add_argument("id", nargs="?", help="one memory; without it: your whole namespace "
                        "(narrowed by --agent / --session)")
        sh.add_argument("--with", dest="with_user", required=True, help="the other user")
        sh.add_argument("--session", default=None, help="only this session (namespace form)")
        if name == "share":
            sh.add_argument("--scope", choices=["read", "write"], default="read")


def _open(args: argparse.Namespace, user: str) -> Any:
    from memos_core.memos import MemOS

    overrides: dict[str, Any] = {}
    if args.command == "stats" or (args.command == "audit" and args.action in ("verify", "head")):
        # whoever runs the command line reads the data directory's files directly, so the
        # store-wide views are theirs (MemOSConfig.admin_users)
        overrides["admin_users"] = (user,)
    if args.index:
        overrides["index"] = args.index
    if args.qdrant_url:
        overrides["qdrant_url"] = args.qdrant_url
    if args.index_url:
        overrides["index_url"] = args.index_url
    if args.embedder_backend:
        overrides["embedder_backend"] = args.embedder_backend
    db = mcp_cli.server_url(args)
    if db is not None and args.cache_dir is not None:
        overrides["cache_dir"] = args.cache_dir
    config = _config(overrides)
    if db is not None:
        return MemOS(db, config=config)
    return MemOS(args.data_dir or default_data_dir(), config=config)


def _config(overrides: dict[str, Any]) -> MemOSConfig:
    """The store's settings from the command's options; options the settings refuse
    (``--qdrant-url ftp://x``, ``--index-url`` with ``--index edge``) are bad input, exit
    status 2, not pydantic's traceback."""
    from pydantic import ValidationError

    try:
        return MemOSConfig(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            option = "-".join(str(part) for part in error["loc"]).replace("_", "-")
            problems.append(f"--{option}: {message}" if option else message)
        raise InvalidInputError(f"invalid options: {'; '.join(problems)}") from None


def _cube_json(cube: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(cube.model_dump_json())
    return data


def _json(data: Any) -> str:
    """``data`` as indented JSON, datetimes as the cubes' own JSON writes them (ISO 8601,
    ``Z`` for UTC): one form in every command's ``--json``, whatever the value came from."""
    from pydantic_core import to_jsonable_python

    return json.dumps(to_jsonable_python(data, fallback=str), indent=2)


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    """Print ``data`` as JSON with ``--json``, else ``text``. A lone surrogate in ``text``
    (a byte that is not UTF-8 in a name or a damaged stored row) is printed as its escape,
    so a strict UTF-8 stdout does not fail after the command did its work; JSON escapes
    it itself."""
    print(_json(data) if args.json else text.encode("utf-8", "backslashreplace").decode("utf-8"))


def _cmd_add(args: argparse.Namespace, mos: Any, user: str) -> None:
    if args.file:
        _check_file_options(args)
        lines, items = _read_jsonl(args.file)
        if args.sensitivity:  # a mark the user gave the whole file is never dropped by a line
            for item in items:
                if isinstance(item.get("sensitivity"), list):
                    item["sensitivity"] = list(dict.fromkeys([*args.sensitivity,
                                                              *item["sensitivity"]]))
        try:
            # the options are the call's defaults; a line's own field wins (add_many's rule),
            # but for sensitivity, which adds to the option's tags
            cubes = mos.add_many(items, user_id=user, agent_id=args.agent,
                                 session_id=args.session, type=args.type, tags=args.tag,
                                 sensitivity=args.sensitivity, occurred_at=args.occurred_at)
        except InvalidInputError as exc:  # "item 3121: ..." -> the file's line
            index = getattr(exc, "item", None)
            if index is None or exc.__cause__ is None:
                raise
            raise InvalidInputError(
                f"{shown_path(args.file)} line {lines[index]}: {exc.__cause__}") from None
        _emit(args, {"added": len(cubes), "ids": [c.id for c in cubes]}, f"added {len(cubes)} memories")
        return
    if args.text is None:
        raise InvalidInputError("memos add needs a TEXT argument, '-' for stdin, or --file FILE.")
    # one final newline ends the input (echo's, a file's), as `$(...)` drops it: not the memory's
    text = _read_stdin().removesuffix("\n") if args.text == "-" else args.text
    cube = mos.add(text, user_id=user, agent_id=args.agent, session_id=args.session,
                   type=args.type, tags=args.tag, occurred_at=args.occurred_at,
                   supersedes=args.supersedes, sensitivity=args.sensitivity)
    _emit(args, _cube_json(cube), f"{cube.id}  v{cube.version}  {cube.text[:70]}")


def _check_file_options(args: argparse.Namespace) -> None:
    """Refuse what ``add --file`` cannot apply: a TEXT (which memory would it be?) and
    ``--supersedes`` (one memory replaces one other), rather than drop them silently."""
    given = [what for what, value in (("TEXT", args.text), ("--supersedes", args.supersedes))
             if value is not None]
    if given:
        raise InvalidInputError(
            f"memos add --file takes no {' or '.join(given)}: those are for one memory "
            "(memos add TEXT --supersedes ID); put each text in the file, one JSON line each.")


def _read_stdin() -> str:
    """Standard input as UTF-8 text whatever the locale says, newlines as a text-mode read
    gives them (``\\r\\n`` and ``\\r`` become ``\\n``)."""
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:  # replaced by a text stream (a caller of main() that redirected it)
        return sys.stdin.read()
    return _text_mode_newlines(_decode_utf8(buffer.read(), "standard input"))


def _text_mode_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _decode_utf8(data: bytes, what: str) -> str:
    """``data`` decoded as strict UTF-8; bytes that are not UTF-8 are bad input, named by
    their offset (and line, where there is more than one)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        where = f"offset {exc.start}" + (f" (line {line})" if b"\n" in data.rstrip(b"\n") else "")
        raise InvalidInputError(
            f"{what} is not UTF-8: byte 0x{data[exc.start]:02x} at {where} ({exc.reason}); "
            "convert it to UTF-8 first (iconv -f ENCODING -t UTF-8).") from None


def _read_jsonl(path: Path) -> tuple[list[int], list[dict[str, Any]]]:
    """The items of a JSON-lines file, and the line number of each: one object per line with
    ``text`` and any other key an ``add_many`` item takes
    (:data:`memos_core.ops.writes.ITEM_KEYS`). Lines end where a
    text-mode read ends them (``\\n``, ``\\r\\n``, ``\\r``), not at every separator
    ``str.splitlines`` knows: JSON strings may hold U+2028 or U+0085 unescaped."""
    from memos_core.ops.writes import check_item_keys

    path = check_path(path, "--file")
    name = shown_path(path)  # for messages
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"cannot read {name}: {exc}") from None
    items: list[dict[str, Any]] = []
    numbers: list[int] = []
    lines = _text_mode_newlines(_decode_utf8(data, name)).split("\n")
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{name} line {n} is not JSON: {exc}") from None
        except RecursionError:
            raise InvalidInputError(f"{name} line {n} is nested too deeply.") from None
        if not isinstance(item, dict) or "text" not in item:
            raise InvalidInputError(f"{name} line {n} must be an object with a 'text' field.")
        check_item_keys(item, f"{name} line {n}")
        items.append(item)
        numbers.append(n)
    return numbers, items


def _cmd_search(args: argparse.Namespace, mos: Any, user: str) -> None:
    hits = mos.search(args.query, user_id=user, k=args.k, agent_id=args.agent,
                      session_id=args.session, types=args.type, tags=args.tag,
                      occurred_after=args.after, occurred_before=args.before,
                      include_archived=args.include_archived,
                      include_superseded=args.include_superseded,
                      allow_sensitive=args.allow_sensitive)
    data = [{"id": h.id, "score": h.score, "text": h.text, "signals": h.signals,
             "redacted": list(h.redacted),
             "ranks": h.ranks, "reasons": list(h.reasons),
             "occurred_at": h.memory.occurred_at} for h in hits]
    lines = [f"{h.score:.4f}  {h.id}  {h.text[:80]}\n        why: {h.explain()}" for h in hits]
    _emit(args, data, "\n".join(lines) or "no memories found")


def _cmd_list(args: argparse.Namespace, mos: Any, user: str) -> None:
    cubes = mos.list(user_id=user, agent_id=args.agent, session_id=args.session, types=args.type,
                     tags=args.tag, limit=args.limit, newest_first=True)
    _emit(args, [_cube_json(c) for c in cubes], "\n".join(
        f"{c.id}  v{c.version}  [{c.state.value}]  {c.text[:70]}" for c in cubes)
        or "no memories found")


def _run_demo(args: argparse.Namespace) -> None:
    given = [f"--{name.replace('_', '-')}" for name in (*_STORE_OPTIONS, *_CALLER_OPTIONS)
             if name != "data_dir" and getattr(args, name, None) not in (None, False)]
    if given:
        raise InvalidInputError(f"memos demo takes only --data-dir and --no-model, not "
                                f"{', '.join(given)}: it makes its own store and users.")
    from memos_core.demo import run_demo

    run_demo(data_dir=args.data_dir, use_model=not args.no_model)


# Commands that may create the data directory (and its vault); the others only read, or
# change memories that must already exist, so a data directory without a vault is a mistyped
# --data-dir / $MEMOS_DATA_DIR, not an empty store.
_CREATING = frozenset({"add", "import", "mcp"})


def _check_store_exists(args: argparse.Namespace) -> None:
    if args.command in _CREATING or (args.command in ("share", "revoke") and args.id is None):
        return  # a namespace grant covers memories stored later
    if mcp_cli.server_url(args) is not None:
        return  # server mode: the database says what exists
    data_dir = args.data_dir or default_data_dir()
    if not (data_dir / "vault.sqlite3").is_file():
        where = "does not exist" if not data_dir.exists() else "holds no memory store"
        source = ("--data-dir" if args.data_dir is not None
                  else "$MEMOS_DATA_DIR" if "MEMOS_DATA_DIR" in os.environ else "the default")
        raise InvalidInputError(
            f"{shown_path(data_dir)} ({source}) {where}: `memos {args.command}` needs an "
            "existing store. "
            "Check the path, or store a memory first with `memos add` (which creates it).")


def _run(args: argparse.Namespace) -> None:
    if args.command == "demo":
        _run_demo(args)
        return
    user = _principal(args)
    if getattr(args, "cache_dir", None) is not None and mcp_cli.server_url(args) is None:
        raise InvalidInputError(
            "--cache-dir is for the server mode (--db or $MEMOS_DB_URL); an embedded store "
            "keeps its KV caches and adapters in its data directory (--data-dir).")
    if args.command == "mcp":
        mcp_cli.run(args, user, lambda a: _open(a, user), _emit)
        return
    _check_store_exists(args)
    # a failed first `add` or `import` must not leave a new, empty store behind, which the next
    # command would take for the user's store: a store this command made is removed again if
    # the command fails with no memory in it, and so are the parent directories it made
    data_dir = args.data_dir or default_data_dir()
    made = (args.command in ("add", "import") and mcp_cli.server_url(args) is None
            and not data_dir.exists())
    # (by their real paths: "typo/../mine/store" as written lists "typo/.." as missing while
    # "typo" is, and removing "typo/.." once "typo" exists would remove "mine")
    real = Path(os.path.realpath(data_dir))
    parents_made = [p for p in real.parents if not p.exists()] if made else []
    try:
        _run_on_store(args, user)
    except BaseException:
        if made and _remove_if_empty(data_dir):
            for parent in parents_made:  # innermost first; one that is not empty stays
                try:
                    parent.rmdir()
                except OSError:
                    break
        raise


def _remove_if_empty(data_dir: Path) -> bool:
    """Remove ``data_dir``, the store a failed command made, if no memory is in it; returns
    whether it was removed. Under the data directory's lock: a process that opened the store
    meanwhile holds it, and the store is left alone; one that opens it after finds no store
    and makes its own."""
    import shutil
    import sqlite3

    from memos_core.lock import DataDirLock

    lock = DataDirLock(data_dir)
    try:
        lock.acquire()
    except MemOSError:
        return False
    try:
        # read-only, by a URI whose path is percent-encoded (a '?' or '#' in a name)
        db = sqlite3.connect((data_dir / "vault.sqlite3").resolve().as_uri() + "?mode=ro",
                             uri=True)
        try:
            empty: bool = db.execute("SELECT COUNT(*) FROM memories").fetchone()[0] == 0
        finally:
            db.close()
        if empty:
            shutil.rmtree(data_dir)
        return empty
    except (sqlite3.Error, OSError):
        return False  # not the store this command made as it made it: left as it is
    finally:
        lock.release()


def _run_on_store(args: argparse.Namespace, user: str) -> None:
    with uninterrupted_close(_open(args, user)) as mos:  # a SIGTERM then: ignored
        if args.command == "add":
            _cmd_add(args, mos, user)
        elif args.command == "search":
            _cmd_search(args, mos, user)
        elif args.command == "list":
            _cmd_list(args, mos, user)
        elif args.command == "get":
            cube = mos.get(args.id, user_id=user, version=args.version, as_of=args.as_of)
            _emit(args, _cube_json(cube), f"{cube.id}  v{cube.version}  [{cube.state.value}]\n{cube.text}")
        elif args.command == "history":
            versions = mos.history(args.id, user_id=user)
            _emit(args, [_cube_json(c) for c in versions], "\n".join(
                f"v{c.version}  {c.updated_at:%Y-%m-%d %H:%M:%S}  [{c.state.value}]  {c.text[:70]}"
                for c in versions))
        elif args.command == "forget":
            receipt = mos.forget(args.id, user_id=user, agent_id=args.agent, reason=args.reason)
            _emit(args, json.loads(receipt.model_dump_json()),
                  f"forgot {receipt.memory_id} (tombstone v{receipt.version}); removed from "
                  + ", ".join(receipt.removed_from))
        elif args.command == "update":
            cube = mos.update(args.id, args.text, user_id=user, agent_id=args.agent)
            _emit(args, _cube_json(cube), f"{cube.id}  v{cube.version}  {cube.text[:70]}")
        elif args.command in ("share", "revoke"):
            _cmd_share(args, mos, user)
        elif args.command == "export":
            path = mos.export(args.path, user_id=user, include_sensitive=args.include_sensitive)
            damaged = json.loads((path / "manifest.json").read_text(encoding="utf-8"))["damaged"]
            _emit(args, {"path": str(path), "damaged": damaged}, f"exported to {shown_path(path)}"
                  + (f"; {len(damaged)} damaged {'memory' if len(damaged) == 1 else 'memories'} left out "
                     "(see the log: forget them or restore the vault from a backup)"
                     if damaged else ""))
        elif args.command == "import":
            result = mos.import_(args.path, user_id=user)
            _emit(args, result, ", ".join(f"{k}: {v}" for k, v in result.items()))
        elif args.command == "reindex":
            result = mos.reindex()
            _emit(args, result, f"reindexed {result['indexed']} memories")
        elif args.command == "stats":
            stats = mos.stats(user_id=user)
            _emit(args, stats, _json(stats))
        elif args.command == "audit":
            _cmd_audit(args, mos, user)
        elif args.command == "schedule":
            from memos_core.scheduler import SchedulerConfig

            config = SchedulerConfig.preset(args.preset, heat_half_life_s=mos.config.heat_half_life_s)
            # one user when named (--user, else $MEMOS_USER, as every command takes them);
            # with neither, every user: the login name is no choice of one
            named = args.user is not None or "MEMOS_USER" in os.environ
            report = mos.schedule(user_id=user if named else None, config=config)
            _emit(args, {**report.model_dump(mode="json"), "counts": report.counts()},
                  report.summary())


def _cmd_share(args: argparse.Namespace, mos: Any, user: str) -> None:
    share = args.command == "share"
    if args.id is not None:
        if args.session is not None or args.agent is not None:
            raise InvalidInputError(
                f"--session and --agent narrow the namespace form (memos {args.command} "
                "--with USER --agent A); give either a memory id or them, not both.")
        if share:
            cube = mos.share(args.id, with_user_id=args.with_user, user_id=user, scope=args.scope)
        else:
            cube = mos.revoke(args.id, with_user_id=args.with_user, user_id=user)
        _emit(args, _cube_json(cube), f"{cube.id}  v{cube.version}  readers: "
              + (", ".join(cube.governance.readers) or "-"))
        return
    where = dict(with_user_id=args.with_user, user_id=user, agent_id=args.agent,
                 session_id=args.session)
    receipt = (mos.share_namespace(**where, scope=args.scope) if share
               else mos.revoke_namespace(**where))
    _emit(args, receipt.model_dump(mode="json"),
          f"{args.command}: {receipt.grantee} -> {receipt.scope} on {receipt.memories} memories")


def _cmd_audit(args: argparse.Namespace, mos: Any, user: str) -> None:
    if args.action == "verify":
        ok, message = mos.verify_audit(user_id=user)
        _emit(args, {"ok": ok, "message": message}, message)
        if not ok:
            raise SystemExit(1)
        return
    if args.action == "head":
        head = mos.audit_head(user_id=user)
        _emit(args, head, f"{head['count']} records; newest: seq {head['seq']} {head['hash']}")
        return
    records = mos.audit_log(user_id=user, memory_id=args.memory, action=args.only_action,
                            limit=args.limit)
    _emit(args, [r.__dict__ for r in records], "\n".join(
        f"{r.seq:>6}  {r.at:%Y-%m-%d %H:%M:%S}  {r.user_id:<10} {r.action:<12} "
        f"{r.memory_id or '-'} v{r.version or '-'}  {r.reason or ''}" for r in records)
        or "no audit records")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # the library's warnings as `memos: warning:` lines; `memos mcp` serving keeps the
    # MCP SDK's log set-up
    serving = args.command == "mcp" and getattr(args, "mcp_command", None) is None
    try:
        with warnings_on_stderr(handler=not serving), exit_on_sigterm():
            _run(args)  # (SIGTERM closes the store as Ctrl-C does: exit status 143)
        _flush_stdout()
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except AccessDeniedError as exc:
        print(f"memos: denied: {exc}", file=sys.stderr)
        return 3
    except MemOSError as exc:
        print(f"memos: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, (InvalidInputError, MemoryNotFoundError, BundleError)) else 1
    except OSError as exc:  # the file system refused (a path that cannot be made, no permission)
        print(f"memos: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except SystemExit as exc:  # a command's own status (audit verify): main returns, not raises
        return exc.code if isinstance(exc.code, int) else 1
    return 0


def _flush_stdout() -> None:
    """Flush now, so that a reader that stopped early raises here, where :func:`main` ends
    quietly, not at interpreter exit. A stdout already closed is left alone: the MCP SDK's
    stdio transport closes it when ``memos mcp`` ends."""
    if sys.stdout is not None and not sys.stdout.closed:
        sys.stdout.flush()


def _silence_stdout() -> None:
    """The reader of stdout went away (``memos list | head -1``): what it wanted it read, so
    the command ends quietly with status 0, as ripgrep and fd do, rather than report an
    error. The output still buffered goes to ``/dev/null`` so that Python's flush at exit
    does not fail again (the recipe in the documentation of :mod:`signal`)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError):  # stdout is not a file descriptor (an in-process caller)
        pass


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
