"""Bearer tokens for the MCP server's HTTP transport, hashed at rest.

A token file maps tokens to principals (user ids). It never holds a token itself: each entry
keeps the SHA-256 of a 256-bit random token (``memos_`` + 43 url-safe characters), which is
enough for a secret of that entropy (no salt or slow hash is needed: a guess is as hard as the
token). The token is shown once, by :meth:`TokenStore.add`.

The file is JSON, written atomically (a temporary file, then ``os.replace``) with mode 0600;
a file that others may read or write is refused. Each add and revoke reads, changes and
writes the file under an exclusive lock on a file beside it (``.<name>.lock``, see
:func:`memos_core.lock.waiting_lock`), so ``token add`` and ``token revoke`` run at once in
several processes lose none of each other's changes. Each check re-reads the file when it changed
on disk, so ``memos mcp token revoke`` takes effect on a running server at its next request.
Every entry's fields are checked as it is read; a damaged file (hand-edited, a field of the
wrong type) is refused as a whole with a :class:`CorruptDataError` saying what is wrong, so
the server refuses every token (401) rather than fail on it.

In server mode (``MemOS("postgresql://...")``) every MCP server process on the database must
know the same tokens, and each process has only a local cache directory: there the tokens
live in the vault (:class:`VaultTokenStore`, one ``meta`` row per token keyed by its SHA-256,
hashed exactly as in the file). :func:`tokens_for` picks the store of a ``MemOS``.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import MISSING, asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memos_core.errors import CorruptDataError, InvalidInputError, MemoryNotFoundError
from memos_core.lock import make_private_dir, waiting_lock
from memos_core.validation import bad_char, check_name
from memos_core.vault.base import Actor

if TYPE_CHECKING:
    from memos_core.memos import MemOS

TOKEN_PREFIX = "memos_"
FILE_NAME = "mcp-tokens.json"
_FORMAT = 1


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _new_token(user_id: str, label: str | None) -> tuple[str, TokenRecord]:
    """A fresh token for ``user_id`` and its record (only the token's hash is kept)."""
    user_id = check_name(user_id, "user_id")
    if label is not None and (not isinstance(label, str) or len(label) > 200):
        raise InvalidInputError("label must be a string of at most 200 characters.")
    bad = bad_char(label) if label is not None else None
    if bad is not None:  # a byte that is not UTF-8 in the argument: no output could print it
        raise InvalidInputError(f"label holds {bad}; write it in UTF-8.")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, TokenRecord(id="tok_" + secrets.token_hex(6), user_id=user_id,
                              sha256=_hash(token), created_at=_now(), label=label)


def _now() -> str:
    """The time now in UTC as ``2025-06-14T08:00:00Z``: the form of every datetime the
    ``memos`` command line writes with ``--json``."""
    return _utc_z(datetime.now(timezone.utc))


def _utc_z(when: datetime) -> str:
    """``when`` (aware) in UTC to the second, ``Z`` for UTC."""
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _stored_time(value: str) -> str:
    """A stored ``created_at`` / ``revoked_at`` in the form :func:`_now` writes: records
    written before it (``+00:00``) read as ``Z``; one without a time zone is left as it is.
    Raises ``ValueError`` for a value that is not ISO 8601."""
    when = datetime.fromisoformat(value)
    return value if when.tzinfo is None else _utc_z(when)


@dataclass(frozen=True)
class TokenRecord:
    """One token's entry: ``id`` names it (for ``revoke`` and logs), ``user_id`` is the
    principal it acts as; ``revoked_at`` is set once revoked (the entry stays, for the
    record). The token itself is not here: only ``sha256``."""

    id: str
    user_id: str
    sha256: str
    created_at: str
    label: str | None = None
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


_SHA256 = re.compile(r"[0-9a-f]{64}")
_TOKEN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # tok_ + 12 hex digits, as _new_token makes them


#: a record's fields: name -> required (those of :class:`TokenRecord` without a default)
_FIELDS = {f.name: f.default is MISSING for f in fields(TokenRecord)}


def _json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for messages (never the value itself)."""
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "array",
             dict: "object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _check_entry(entry: object) -> TokenRecord:
    """A stored entry (a decoded JSON object) as a record, each field checked, so that a file
    edited by hand or damaged cannot make a check fail with a ``TypeError``. Raises
    ``ValueError`` saying which field is wrong."""
    if not isinstance(entry, dict):
        raise ValueError(f"a JSON {_json_type(entry)}, not an object")
    unknown = sorted(str(key)[:40] for key in entry if key not in _FIELDS)
    missing = [key for key, required in _FIELDS.items() if required and key not in entry]
    if unknown or missing:
        raise ValueError("; ".join([f"unknown fields {unknown}"] * bool(unknown)
                                   + [f"missing fields {missing}"] * bool(missing)))
    for key, value in entry.items():
        if value is None and not _FIELDS[key]:
            continue  # label, revoked_at: null when absent
        if not isinstance(value, str):
            raise ValueError(f"{key} is a JSON {_json_type(value)}, not a string")
    if not _TOKEN_ID.fullmatch(entry["id"]):
        raise ValueError("id is not 1 to 64 letters, digits, '_' or '-'")
    try:
        check_name(entry["user_id"], "user_id", optional=True)
    except InvalidInputError as exc:
        raise ValueError(str(exc)) from None
    if not _SHA256.fullmatch(entry["sha256"]):
        raise ValueError("sha256 is not 64 lowercase hexadecimal digits")
    times: dict[str, str] = {}
    for key in ("created_at", "revoked_at"):
        if entry.get(key) is not None:
            try:
                times[key] = _stored_time(entry[key])
            except ValueError:
                raise ValueError(f"{key} is not an ISO 8601 date/time") from None
    label = entry.get("label")
    if label is not None and len(label) > 200:
        raise ValueError("label is longer than 200 characters")
    return TokenRecord(**{**entry, **times})


def _check_file(data: object) -> list[TokenRecord]:
    """The records of a decoded token file. Raises ``ValueError`` naming the entry (by
    position, and id when it has a usable one) and what is wrong with it."""
    if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
        raise ValueError('not a JSON object with a "tokens" array')
    if data.get("format", _FORMAT) != _FORMAT:
        raise ValueError(f"format is not {_FORMAT}")
    records: list[TokenRecord] = []
    for n, entry in enumerate(data["tokens"], 1):
        token_id = entry.get("id") if isinstance(entry, dict) else None
        where = (f"token {n} ({token_id})" if isinstance(token_id, str)
                 and _TOKEN_ID.fullmatch(token_id) else f"token {n}")
        try:
            record = _check_entry(entry)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if any(r.id == record.id for r in records):
            raise ValueError(f"{where}: another token has the same id")
        records.append(record)
    return records


class TokenStore:
    """The token file of one server. Thread-safe; many processes may read it, and many may
    add and revoke tokens at once: each change is made under the file's lock (see
    :meth:`_changing`), so none is lost."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._records: list[TokenRecord] = []
        self._stamp: tuple[int, int] | None = None

    @property
    def where(self) -> str:
        """Where the tokens are kept, for messages."""
        return str(self.path)

    @classmethod
    def for_data_dir(cls, data_dir: str | os.PathLike[str]) -> "TokenStore":
        """The default token file of a data directory (``<data_dir>/mcp-tokens.json``)."""
        return cls(Path(data_dir) / FILE_NAME)

    # -- reading ----------------------------------------------------------------------------

    def _load(self) -> list[TokenRecord]:
        """The records, re-read if the file changed since the last read (caller holds the lock)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._records, self._stamp = [], None
            return self._records
        except OSError as exc:
            raise CorruptDataError(f"token file {self.path} is unreadable ({exc}).") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise InvalidInputError(
                f"token file {self.path} is readable or writable by others "
                f"(mode {stat.S_IMODE(st.st_mode):o}); run `chmod 600 {self.path}`.")
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            try:
                records = _check_file(json.loads(self.path.read_text(encoding="utf-8")))
            except (OSError, ValueError, RecursionError) as exc:
                raise CorruptDataError(
                    f"token file {self.path} is unreadable ({exc}); fix it or move it away and "
                    "add the tokens again.") from None
            self._records, self._stamp = records, stamp
        return self._records

    def list(self) -> list[TokenRecord]:
        """Every record, oldest first (revoked ones included)."""
        with self._lock:
            return list(self._load())

    def verify(self, token: object) -> TokenRecord | None:
        """The active record of ``token``, or None (unknown, revoked, or not a string).
        Compares hashes in constant time against every active entry."""
        if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        digest = _hash(token)
        found = None
        with self._lock:
            for record in self._load():
                if hmac.compare_digest(record.sha256, digest) and record.active:
                    found = record
        return found

    # -- writing ----------------------------------------------------------------------------

    def _write(self, records: builtins.list[TokenRecord]) -> None:
        """Replace the file by ``records`` (the caller is in :meth:`_changing`)."""
        payload = json.dumps({"format": _FORMAT, "tokens": [asdict(r) for r in records]}, indent=2)
        fd, tmp = tempfile.mkstemp(prefix=".mcp-tokens-", dir=self.path.parent)  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._stamp = None  # re-read (and re-check the mode) next time

    @property
    def lock_path(self) -> Path:
        """The lock file held around each change of the token file (``.<name>.lock`` beside
        it; never removed)."""
        return self.path.with_name(f".{self.path.name}.lock")

    @contextlib.contextmanager
    def _changing(self) -> Iterator[builtins.list[TokenRecord]]:
        """The records as the file holds them now, to change and :meth:`_write` in the block,
        under the lock of :attr:`lock_path`. Read-change-write under a thread lock alone let
        two processes (``token revoke`` beside ``token add``) each write back what it read:
        a revoke reported done was undone, an added token never stored. The file is re-read
        inside the lock whatever its stamp says (two writes within one mtime tick may leave
        the same size and time). Where the lock file cannot be made or the file system
        refuses locks, :func:`waiting_lock` goes on without it (logged)."""
        make_private_dir(self.path.parent)  # a new data directory is 0700, as MemOS makes it
        with waiting_lock(self.lock_path, f"waiting for another change of the token file "
                          f"{self.path}", mode=0o600), self._lock:
            self._stamp = None
            yield list(self._load())

    def add(self, user_id: str, *, label: str | None = None) -> tuple[str, TokenRecord]:
        """Make a new token for ``user_id``; returns ``(token, record)``. The token is not
        stored anywhere: show it to the user now."""
        token, record = _new_token(user_id, label)
        with self._changing() as records:
            self._write([*records, record])
        return token, record

    def revoke(self, token_id: str) -> TokenRecord:
        """Revoke the token with this id (idempotent); returns its record.

        Raises:
            MemoryNotFoundError: no token has this id.
        """
        with self._changing() as records:
            for i, record in enumerate(records):
                if record.id == token_id:
                    if record.active:
                        records[i] = TokenRecord(**{**asdict(record), "revoked_at": _now()})
                        self._write(records)
                    return records[i]
        raise MemoryNotFoundError(
            f"No token with id {token_id!r} in {self.where}; `memos mcp token list` shows them.")

    def describe(self) -> builtins.list[dict[str, Any]]:
        """The records as dicts without their hashes (what ``token list`` prints)."""
        return [{k: v for k, v in asdict(r).items() if k != "sha256"} for r in self.list()]


#: the ``meta`` key prefix of a token row in a server-mode vault (the rest: the SHA-256)
META_PREFIX = "mcp_token:"
#: the agent id of the audit records of token changes
AUDIT_AGENT = "mcp-tokens"


class VaultTokenStore(TokenStore):
    """The tokens of a server-mode vault (:class:`~memos_core.vault.postgres.PostgresVault`):
    every MCP server process on the database sees the same ones, and a token added or revoked
    on one host is known to the others at their next request (each check is one primary-key
    lookup; nothing is cached).

    Each token is one row of the vault's ``meta`` table, keyed ``mcp_token:<sha256>``, its
    value the record as JSON (hash, user, id, dates; never the token). Adding is one insert
    and revoking one update of that row, so hosts adding tokens at once lose none. Each add
    and revoke is also an audit record (``mcp_token:add`` / ``mcp_token:revoke``, with the
    token's id and label). The vault stays the caller's to close.
    """

    def __init__(self, vault: Any) -> None:
        if not hasattr(vault, "change_head"):  # the PostgreSQL vault (it has a change feed)
            raise InvalidInputError(
                "VaultTokenStore keeps tokens in a server-mode (PostgreSQL) vault; an embedded "
                "data directory keeps them in a file: TokenStore.for_data_dir(data_dir).")
        self.vault = vault  # no file (no ``path``): see :attr:`where`

    @property
    def where(self) -> str:
        return f"the vault at {self.vault.where}"

    def _audit(self, record: TokenRecord, action: str) -> None:
        """One record in the vault's audit chain: which token (its id, never the token or its
        hash) for which principal; the token's user is the actor (the CLI has no other)."""
        self.vault.audit(Actor(record.user_id, AUDIT_AGENT, action.split(":")[1]), action,
                         details={"token_id": record.id, "label": record.label})

    @staticmethod
    def _parse(value: str, key: str) -> TokenRecord:
        try:
            return _check_entry(json.loads(value))
        except (ValueError, TypeError, RecursionError) as exc:
            raise CorruptDataError(
                f"the MCP token row {key!r} in the vault's meta table is unreadable ({exc}); "
                "delete the row and add the token again.") from None

    def list(self) -> builtins.list[TokenRecord]:
        """Every record, oldest first (by creation second, then id; revoked ones included)."""
        records = [self._parse(value, key) for key, value in self.vault.meta_items(META_PREFIX)]
        return sorted(records, key=lambda r: (r.created_at, r.id))

    def verify(self, token: object) -> TokenRecord | None:
        """The active record of ``token``, or None (unknown, revoked, or not a string)."""
        if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        digest = _hash(token)
        key = META_PREFIX + digest
        value = self.vault.get_meta(key)
        if value is None:
            return None
        record = self._parse(value, key)
        if not hmac.compare_digest(record.sha256, digest) or not record.active:
            return None
        return record

    def add(self, user_id: str, *, label: str | None = None) -> tuple[str, TokenRecord]:
        """Make a new token for ``user_id``; returns ``(token, record)``. The token is not
        stored anywhere: show it to the user now."""
        token, record = _new_token(user_id, label)
        self.vault.set_meta_default(META_PREFIX + record.sha256, json.dumps(asdict(record)))
        self._audit(record, "mcp_token:add")
        return token, record

    def revoke(self, token_id: str) -> TokenRecord:
        """Revoke the token with this id (idempotent); returns its record.

        Raises:
            MemoryNotFoundError: no token has this id.
        """
        for record in self.list():
            if record.id == token_id:
                if not record.active:
                    return record
                revoked = TokenRecord(**{**asdict(record), "revoked_at": _now()})
                self.vault.set_meta(META_PREFIX + record.sha256, json.dumps(asdict(revoked)))
                self._audit(revoked, "mcp_token:revoke")
                return revoked
        raise MemoryNotFoundError(
            f"No token with id {token_id!r} in {self.where}; `memos mcp token list` shows them.")


def tokens_for(mos: MemOS, token_file: str | os.PathLike[str] | None = None) -> TokenStore:
    """The token store an MCP server over ``mos`` checks: ``token_file`` if given; else, in
    server mode, the vault's (:class:`VaultTokenStore`, shared by every process on the
    database); else the data directory's file (``<data_dir>/mcp-tokens.json``)."""
    if token_file is not None:
        return TokenStore(token_file)
    if mos.database is not None:
        return VaultTokenStore(mos.vault)
    return TokenStore.for_data_dir(mos.data_dir)
