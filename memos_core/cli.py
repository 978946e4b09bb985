"""The ``memos`` command line: the Memory API for shells and scripts.

Every command takes ``--data-dir`` (default ``$MEMOS_DATA_DIR`` or ``~/.memos``) -- or, for
the server mode, ``--db postgresql://...`` (default ``$MEMOS_DB_URL``) -- and ``--user``
(default ``$MEMOS_USER`` or your login name), and ``--json`` for machine-readable output.
Exit status: 0 ok, 2 bad input or unknown id, 3 denied, 1 anything else.
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

from memos_core.config import MemOSConfig, default_data_dir
from memos_core.errors import AccessDeniedError, InvalidInputError, MemoryNotFoundError, MemOSError
from memos_core.mcp_server import cli as mcp_cli  # argparse only: the MCP SDK loads when serving
from memos_core.validation import check_name, check_path


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


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, default=None, help="data directory")
    common.add_argument("--db", default=None, metavar="URL",
                        help="server mode: postgresql://user:password@host:port/database "
                        "instead of a data directory (default $MEMOS_DB_URL)")
    common.add_argument("--cache-dir", type=Path, default=None,
                        help="server mode: local directory for per-process files (KV caches, "
                        "adapters); default a temporary one")
    common.add_argument("--user", default=None, help="principal (user id) for the call")
    common.add_argument("--agent", default=None, help="agent id")
    common.add_argument("--json", action="store_true", help="print JSON")
    common.add_argument("--index", choices=["edge", "qdrant", "pgvector"], default=None,
                        help="index backend (default: edge, embedded; pgvector with --db)")
    common.add_argument("--qdrant-url", default=None, help="Qdrant server URL (with --index qdrant)")
    common.add_argument("--index-url", default=None,
                        help="PostgreSQL URL of the index (with --index pgvector; --db implies it)")
    common.add_argument("--embedder-backend", default=None,
                        choices=["auto", "onnx", "onnx+bf16", "bf16", "onnx-int8", "torch"],
                        help="how texts are embedded (default auto, or $MEMOS_EMBEDDER_BACKEND); "
                        "onnx+bf16 embeds bulk adds and imports faster on a CPU with bf16 "
                        "(same vectors up to rounding); see MemOSConfig.embedder_backend")

    p = argparse.ArgumentParser(prog="memos", description="A memory operating system for LLM agents.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", parents=[common], help="a narrated walk through the whole system")
    d.add_argument("--no-model", action="store_true", help="skip the local language model part")

    a = sub.add_parser("add", parents=[common], help="store a memory (text, '-' for stdin, or --file)")
    a.add_argument("text", nargs="?", help="memory text; '-' reads stdin")
    a.add_argument("--file", type=Path, help="JSONL file, one {'text': ..., ...} per line (bulk)")
    a.add_argument("--session", default=None)
    a.add_argument("--type", default=None, help="fact, preference, episode, note, ...")
    a.add_argument("--tag", action="append", default=[], help="tag (repeatable)")
    a.add_argument("--occurred-at", default=None, help="ISO date/time of the remembered event")
    a.add_argument("--supersedes", default=None, help="id of the memory this one replaces")
    a.add_argument("--sensitivity", action="append", default=[],
                   help="sensitivity tag such as pii or secret (repeatable)")

    s = sub.add_parser("search", parents=[common], help="hybrid search")
    s.add_argument("query")
    s.add_argument("-k", type=int, default=5)
    s.add_argument("--session", default=None)
    s.add_argument("--type", action="append", default=None)
    s.add_argument("--tag", action="append", default=None)
    s.add_argument("--after", default=None, help="occurred at or after (ISO)")
    s.add_argument("--before", default=None, help="occurred at or before (ISO)")
    s.add_argument("--include-archived", action="store_true")
    s.add_argument("--include-superseded", action="store_true")
    s.add_argument("--allow-sensitive", action="append", default=None, metavar="TAG",
                   help="show memories with this sensitivity tag unredacted ('*': all)")

    g = sub.add_parser("get", parents=[common], help="read one memory")
    g.add_argument("id")
    g.add_argument("--version", type=int, default=None)
    g.add_argument("--as-of", default=None, help="the version current at this ISO time")

    h = sub.add_parser("history", parents=[common], help="every version of a memory")
    h.add_argument("id")

    _governance_commands(sub, common)
    f = sub.add_parser("forget", parents=[common], help="delete a memory everywhere")
    f.add_argument("id")
    f.add_argument("--reason", default=None)

    e = sub.add_parser("export", parents=[common], help="write your memories to a bundle directory")
    e.add_argument("path", type=Path)
    e.add_argument("--include-sensitive", action="store_true",
                   help="also export memories with sensitivity tags (left out by default)")
    i = sub.add_parser("import", parents=[common], help="import a bundle directory")
    i.add_argument("path", type=Path)

    sub.add_parser("reindex", parents=[common], help="rebuild the index and graph from the vault")
    sub.add_parser("stats", parents=[common], help="counts of memories, versions, index, graph")

    sc = sub.add_parser("schedule", parents=[common],
                        help="run the scheduler once: expire, archive, promote/demote, KV blocks")
    sc.add_argument("--preset", choices=["default", "eager", "conservative"], default="default",
                    help="scheduler settings (default: default); without --user: every user")

    au = sub.add_parser("audit", parents=[common], help="list the audit log, or 'verify' its chain")
    au.add_argument("action", nargs="?", choices=["list", "verify"], default="list")
    au.add_argument("--memory", default=None, help="only records of this memory")
    au.add_argument("--action", dest="only_action", default=None,
                    help="only this action (add, forget, share:read, ...)")
    au.add_argument("--limit", type=int, default=50)
    mcp_cli.add_parser(sub, common)
    return p


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
    if args.command == "stats" or (args.command == "audit" and args.action == "verify"):
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
    db = args.db or (os.environ.get("MEMOS_DB_URL") if args.data_dir is None else None)
    if db:
        if args.data_dir is not None:
            raise InvalidInputError("Give either --db (server mode) or --data-dir, not both.")
        if args.cache_dir is not None:
            overrides["cache_dir"] = args.cache_dir
        return MemOS(db, config=MemOSConfig(**overrides))
    return MemOS(args.data_dir or default_data_dir(), config=MemOSConfig(**overrides))


def _cube_json(cube: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(cube.model_dump_json())
    return data


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else text)


def _cmd_add(args: argparse.Namespace, mos: Any, user: str) -> None:
    if args.file:
        items = _read_jsonl(args.file)
        cubes = mos.add_many(items, user_id=user, agent_id=args.agent)
        _emit(args, {"added": len(cubes), "ids": [c.id for c in cubes]}, f"added {len(cubes)} memories")
        return
    if args.text is None:
        raise InvalidInputError("memos add needs a TEXT argument, '-' for stdin, or --file FILE.")
    text = sys.stdin.read() if args.text == "-" else args.text
    cube = mos.add(text, user_id=user, agent_id=args.agent, session_id=args.session,
                   type=args.type, tags=args.tag, occurred_at=args.occurred_at,
                   supersedes=args.supersedes, sensitivity=args.sensitivity)
    _emit(args, _cube_json(cube), f"{cube.id}  v{cube.version}  {cube.text[:70]}")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    path = check_path(path, "--file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read {path}: {exc}") from None
    items = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{path} line {n} is not JSON: {exc}") from None
        if not isinstance(item, dict) or "text" not in item:
            raise InvalidInputError(f"{path} line {n} must be an object with a 'text' field.")
        allowed = {"text", "session_id", "agent_id", "occurred_at", "type", "tags", "metadata"}
        unknown = set(item) - allowed
        if unknown:
            raise InvalidInputError(f"{path} line {n} has unknown fields {sorted(unknown)}.")
        items.append(item)
    return items


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


def _run(args: argparse.Namespace) -> None:
    user = _principal(args)
    if args.command == "demo":
        from memos_core.demo import run_demo

        run_demo(data_dir=args.data_dir, use_model=not args.no_model)
        return
    if args.command == "mcp":
        mcp_cli.run(args, user, lambda a: _open(a, user), _emit)
        return
    with _open(args, user) as mos:
        if args.command == "add":
            _cmd_add(args, mos, user)
        elif args.command == "search":
            _cmd_search(args, mos, user)
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
            _emit(args, {"path": str(path)}, f"exported to {path}")
        elif args.command == "import":
            result = mos.import_(args.path, user_id=user)
            _emit(args, result, ", ".join(f"{k}: {v}" for k, v in result.items()))
        elif args.command == "reindex":
            result = mos.reindex()
            _emit(args, result, f"reindexed {result['indexed']} memories")
        elif args.command == "stats":
            stats = mos.stats(user_id=user)
            _emit(args, stats, json.dumps(stats, indent=2, default=str))
        elif args.command == "audit":
            _cmd_audit(args, mos, user)
        elif args.command == "schedule":
            from memos_core.scheduler import SchedulerConfig

            config = SchedulerConfig.preset(args.preset, heat_half_life_s=mos.config.heat_half_life_s)
            report = mos.schedule(user_id=args.user, config=config)
            _emit(args, {**report.model_dump(mode="json"), "counts": report.counts()},
                  report.summary())


def _cmd_share(args: argparse.Namespace, mos: Any, user: str) -> None:
    share = args.command == "share"
    if args.id is not None:
        if args.session is not None:
            raise InvalidInputError("give either a memory id or --session, not both.")
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
    records = mos.audit_log(user_id=user, memory_id=args.memory, action=args.only_action,
                            limit=args.limit)
    _emit(args, [r.__dict__ for r in records], "\n".join(
        f"{r.seq:>6}  {r.at:%Y-%m-%d %H:%M:%S}  {r.user_id:<10} {r.action:<12} "
        f"{r.memory_id or '-'} v{r.version or '-'}  {r.reason or ''}" for r in records))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _run(args)
    except AccessDeniedError as exc:
        print(f"memos: denied: {exc}", file=sys.stderr)
        return 3
    except (InvalidInputError, MemoryNotFoundError, MemOSError) as exc:
        print(f"memos: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, (InvalidInputError, MemoryNotFoundError)) else 1
    except OSError as exc:  # the file system refused (a path that cannot be made, no permission)
        print(f"memos: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except SystemExit as exc:  # a command's own status (audit verify): main returns, not raises
        return exc.code if isinstance(exc.code, int) else 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
