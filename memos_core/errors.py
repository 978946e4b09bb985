"""Exceptions. Every message says what was wrong and what to do about it.

Each class also derives from the builtin a caller would expect (ValueError for bad input,
KeyError for an unknown id, PermissionError for a denied call), so generic handlers work.
"""

from __future__ import annotations


#: The message of the error every call on a closed (or closing) MemOS raises.
CLOSED = ("This MemOS is closed; open a new one on the same data directory or database URL "
          "(MemOS(...)).")


class MemOSError(Exception):
    """Base class of every memos-core error."""


class InvalidInputError(MemOSError, ValueError):
    """An argument is empty, too large, of the wrong type or otherwise unusable."""


class MemoryNotFoundError(MemOSError, KeyError):
    """No memory with this id exists (or it is not visible to the caller)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "memory not found"


class VersionNotFoundError(MemoryNotFoundError):
    """The memory exists but has no such version."""


class MemoryDeletedError(MemoryNotFoundError):
    """The memory was forgotten; only its tombstone remains."""


class AccessDeniedError(MemOSError, PermissionError):
    """The principal may not perform this operation on this memory."""


class DataDirLockedError(MemOSError, RuntimeError):
    """Another process (or another MemOS in this process) has the data directory open."""


class BundleError(MemOSError, ValueError):
    """An export bundle is malformed, truncated or hostile; nothing was imported."""


class CorruptDataError(MemOSError, RuntimeError):
    """Stored data failed an integrity check. ``memory_id`` names the memory whose current
    record is damaged when that is what failed (the rest of the store may still be read)."""

    def __init__(self, message: str, *, memory_id: str | None = None) -> None:
        super().__init__(message)
        self.memory_id = memory_id


class ServerUnavailableError(MemOSError, ConnectionError):
    """The database server (server mode) cannot be reached or dropped the connection; a
    change that raised this was not acknowledged (it may or may not have committed)."""


class ConflictError(MemOSError):
    """Stored state changed between a read and a write (another thread or process wrote a
    newer version, or bound the same key first); nothing was written. Read again and retry."""


class NamespaceChangedError(ConflictError):
    """The namespace grants new memories inherited changed before their write's transaction
    (another process shared or revoked in between); nothing was written. The operations
    that store memories retry by themselves."""


class PurgePendingError(MemOSError):
    """A forget wrote the tombstone (the memory is gone from the vault, the index and the
    graph), but a derived file (a KV block, an adapter) could not be removed. The memory is
    recorded as pending: forgetting it again retries, and so does the next open."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its class name when it has none (a
    driver's or a parser's message goes on with context a user's error need not repeat)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def pool_busy(where: str, exc: BaseException) -> ServerUnavailableError:
    """The error of a call that found every pooled connection to PostgreSQL in use: the
    server is fine, this process is not (say so, not "lost the connection")."""
    return ServerUnavailableError(
        f"No pooled connection to the PostgreSQL server at {where} came free in time "
        f"({first_line(exc)}): this process runs more calls at once than its pool holds, or "
        "some wait long (e.g. for the write lock while a large add_many commits). The call "
        "was not made: retry, make fewer calls at once, or raise MemOSConfig.pool_size.")
