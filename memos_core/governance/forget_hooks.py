"""Forget hooks: how stores outside the core (the framework integrations' conversation logs)
take part in ``MemOS.forget``.

A conversation log keeps the messages a conversation had, as the framework saw them; a
memory made from one of those messages is a copy of it. So when the memory is forgotten,
the log must lose that text too. The core cannot read a framework's log (it imports no
framework), so each log registers a hook with :meth:`MemOS.on_forget
<memos_core.memos.MemOS.on_forget>`; ``forget`` calls it, under the write lock and *before*
the vault's tombstone, with the memory as it was (text intact). The hook redacts the
messages that carry the memory and returns the :class:`~memos_core.results.DerivedForm` it
touched, which the receipt lists.

Logs whose adapter is not open (closed, or not constructed since a restart) are reached by
**file redactors**: each integration package declares one per file in the entry-point group
:data:`FILE_REDACTORS` (``memos_core.forget_hooks``), named by the file, relative to the data
directory, and resolving to ``redact(data_dir, memory) -> derived forms`` (a
:data:`FileRedactor`), which opens the file itself, redacts it with the same code as the live
hook and closes it. After the live hooks, :meth:`ForgetHooks.run` calls the redactor of
every such file that exists and that no live hook registered with ``path=`` covers: an
open adapter redacts through its own connection (and its own ``serde``), so a file is never
redacted twice nor written through two connections at once. An entry point is loaded only
when its file exists, so a forget imports no framework that never wrote to this directory.
Declaring one, in the integration's ``pyproject.toml``::

    [project.entry-points."memos_core.forget_hooks"]
    "checkpoints.sqlite3" = "langchain_memos.checkpoint:redact_files"

Order and failure: hooks and file redactors run before the tombstone, so one that raises
aborts the forget with the memory unchanged in the vault, index and graph (the error reaches
the caller, who may retry: redaction is idempotent); a file whose redactor cannot be loaded
(its package is broken or was removed) aborts it too, with a ``MemOSError`` that says so;
so does SQLite's error on a file a redactor reads (:func:`side_file_error`): a damaged or
foreign file is a ``CorruptDataError`` naming it (move it away), a locked one a
``MemOSError`` to retry. That is done here rather than in each redactor, so that every
redactor (a third party's too) follows the same rule without error handling of its own.
Logs redacted by earlier hooks stay redacted -- that removes only forgotten text.

What counts as carrying the memory, and how it is replaced, is the rule of
:mod:`memos_core.governance.redaction` (:class:`~memos_core.governance.redaction.MessageRedactor`).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import cast

from memos_core.cube import MemCube
from memos_core.errors import CorruptDataError, InvalidInputError, MemOSError, first_line
from memos_core.results import DerivedForm
from memos_core.vault.base import Vault
from memos_core.vault.sqlite_text import undecodable

logger = logging.getLogger("memos_core.governance")

#: Entry-point group of the file redactors: name = a file in the data directory, object =
#: a :data:`FileRedactor`.
FILE_REDACTORS = "memos_core.forget_hooks"

#: Entry-point group of the vault redactors: name = a kind of integration storage in the
#: vault (``"checkpoints"``: :class:`~memos_core.vault.base.ThreadCheckpoints`), object =
#: a :data:`VaultRedactor`.
VAULT_REDACTORS = "memos_core.vault_redactors"

#: ``hook(memory) -> derived forms touched``; ``memory`` is the cube before the tombstone.
ForgetHook = Callable[[MemCube], Sequence[DerivedForm]]
#: ``redact(data_dir, memory) -> derived forms touched``: redacts the memory in its file under
#: ``data_dir`` (nothing if the file is missing), opening and closing the file itself.
FileRedactor = Callable[[Path, MemCube], Sequence[DerivedForm]]
#: ``redact(vault, memory) -> derived forms touched``: redacts the memory in the integration
#: storage of the vault it is named for (its values are opaque to the core).
VaultRedactor = Callable[[Vault, MemCube], Sequence[DerivedForm]]

#: Whether the vault holds anything of a kind of storage (a redactor is loaded only then):
#: any row, not only a checkpoint (a thread whose checkpoints were deleted may keep blobs).
_VAULT_KINDS: dict[str, Callable[[Vault], bool]] = {
    "checkpoints": lambda vault: vault.cp_any(),
}


class ForgetHooks:
    """The hooks of one ``MemOS``, in registration order, and the file redactors. Thread-safe.

    A bound method is held weakly (the hook goes away with its object, so a log that was
    dropped without being closed does not keep running); any other callable strongly.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hooks: list[tuple[int, Callable[[], ForgetHook | None], Path | str | None]] = []
        self._next = 0

    def add(self, hook: ForgetHook, path: Path | None = None, *,
            covers: str | None = None) -> Callable[[], None]:
        """Register ``hook``; returns a function that removes it (idempotent). ``path``: the
        file the hook redacts, whose file redactor then does not run while the hook lives;
        ``covers``: likewise, the name of the vault redactor it stands in for."""
        if not callable(hook):
            raise InvalidInputError(
                f"A forget hook must be callable as hook(memory) -> derived forms, got "
                f"{type(hook).__name__}."
            )
        ref: Callable[[], ForgetHook | None]
        if hasattr(hook, "__self__") and hasattr(hook, "__func__"):
            ref = weakref.WeakMethod(hook)
        else:
            ref = lambda: hook  # a strong reference with the weakref's interface
        target: Path | str | None = Path(path).resolve() if path is not None else covers
        with self._lock:
            key = self._next
            self._next += 1
            # a hook's owner collected without removing it (a checkpointer never closed)
            self._hooks = [h for h in self._hooks if h[1]() is not None]
            self._hooks.append((key, ref, target))

        def remove() -> None:
            with self._lock:
                self._hooks = [h for h in self._hooks if h[0] != key]

        return remove

    def __len__(self) -> int:
        with self._lock:
            return sum(1 for _, ref, _ in self._hooks if ref() is not None)

    def paths(self) -> set[Path]:
        """The files (resolved) that live hooks registered."""
        with self._lock:
            return {path for _, ref, path in self._hooks
                    if isinstance(path, Path) and ref() is not None}

    def covered_kinds(self) -> set[str]:
        """The vault redactor names that live hooks stand in for."""
        with self._lock:
            return {name for _, ref, name in self._hooks
                    if isinstance(name, str) and ref() is not None}

    def run(self, memory: MemCube, data_dir: Path | None = None,
            vault: Vault | None = None) -> list[DerivedForm]:
        """Call every live hook with ``memory``, then (with ``data_dir``) the file redactor of
        every file no live hook covers, then (with ``vault``) the vault redactor of every
        kind of integration storage the vault holds and no live hook covers; the forms they
        touched, in that order.

        An exception from a hook or redactor propagates (the caller aborts the forget),
        except SQLite's error on a file redactor's file, which :func:`side_file_error`
        turns into a ``MemOSError`` naming the file (``CorruptDataError`` when it is damaged
        or foreign). One that returns something other than a sequence of ``DerivedForm``
        raises ``MemOSError``.
        """
        with self._lock:
            refs = [ref for _, ref, _ in self._hooks]
        forms: list[DerivedForm] = []
        for ref in refs:
            hook = ref()
            if hook is not None:
                forms.extend(_checked(hook, hook(memory)))
        if data_dir is not None:
            # the covered files are read after the hooks ran: a log closed meanwhile (its hook
            # found it closed and did nothing) is redacted from its file here
            covered = self.paths()
            for path, entry in file_redactors(data_dir):
                if path.resolve() not in covered:
                    redact = _load(entry, path)
                    try:
                        touched = redact(Path(data_dir), memory)
                    except sqlite3.Error as exc:  # the file, not the redactor: say which
                        raise side_file_error(
                            path, exc, "the memory could not be redacted in it and was not "
                            "forgotten", "forget again (forgetting again is safe)",
                        ) from (None if undecodable(exc) else exc)
                    forms.extend(_checked(redact, touched))
        if vault is not None:
            covered_kinds = self.covered_kinds()
            for entry in sorted(_declared(VAULT_REDACTORS), key=lambda e: e.name):
                holds = _VAULT_KINDS.get(entry.name)
                if entry.name in covered_kinds or holds is None or not holds(vault):
                    continue
                vault_redact = cast(VaultRedactor, _load(entry, Path(f"<vault {entry.name}>")))
                forms.extend(_checked(vault_redact, vault_redact(vault, memory)))
        return forms


#: The actions deferred until a memory's tombstone is committed, by memory id, in the forget
#: pass running in this thread (None: none runs).
_AFTER_PASS: ContextVar[dict[str, list[Callable[[], None]]] | None] = ContextVar(
    "forget_after_pass", default=None)


def after_pass(memory_id: str, action: Callable[[], None]) -> None:
    """Run ``action`` once the forget of ``memory_id`` running in this thread has committed
    its tombstone (every hook ran without error, and no later one aborted the forget),
    before a write waiting for the pass goes on; now if no forget runs. For a hook that
    remembers the forget (an adapter's recent forgets): an aborted forget is not kept."""
    deferred = _AFTER_PASS.get()
    if deferred is None:
        action()
    else:
        deferred.setdefault(memory_id, []).append(action)


class ForgetPasses:
    """A forget's passes over stored conversations (the core's log redaction and the hooks,
    :func:`memos_core.ops.forget.redact_logs`) and the adapters' writes racing them.

    An adapter's write looks for recent forgets (its late redaction), then commits. A forget
    whose pass runs in between misses the write, and the write missed the forget: the text
    lands after the forget. A sync write that may hold this lock across its commit does
    (:meth:`excluding`); any other write reads :meth:`ended` before it looks, and after its
    commit, if :meth:`overlapped` says a pass ran meanwhile, waits for the passes
    (:meth:`wait`) and redacts again what the forgets that began since may have missed.
    Thread-safe."""

    def __init__(self) -> None:
        self._running = threading.RLock()  # held by a pass
        self._count = threading.Lock()
        self._begun = 0
        self._ended = 0

    @contextmanager
    def running(self) -> Iterator[None]:
        """A forget (or several, ``forget_many``): its passes over the stored conversations
        and its tombstones. Re-entrant: a pass inside a running one is part of it. What the
        hooks deferred with :func:`after_pass` runs when :meth:`forgotten` says the memory's
        tombstone is committed; what is left when the outermost ends is dropped (a hook or
        the tombstone failed: the memory was not forgotten)."""
        with self._running:
            with self._count:
                self._begun += 1
            outer = _AFTER_PASS.get()
            token = _AFTER_PASS.set({}) if outer is None else None
            try:
                yield
            finally:
                if token is not None:
                    _AFTER_PASS.reset(token)
                with self._count:
                    self._ended += 1

    def forgotten(self, memory_id: str) -> None:
        """The tombstone of ``memory_id`` is committed (in a running pass): run what the
        hooks deferred for it."""
        deferred = _AFTER_PASS.get()
        for action in deferred.pop(memory_id, []) if deferred is not None else []:
            action()

    @contextmanager
    def excluding(self) -> Iterator[None]:
        """No pass runs while this is held (the caller must not wait for a write lock of
        the store inside: a pass runs under it)."""
        with self._running:
            yield

    def ended(self) -> int:
        """How many passes have ended: read before a write looks for recent forgets."""
        with self._count:
            return self._ended

    def overlapped(self, ended: int) -> bool:
        """Whether a pass ran since :meth:`ended` returned ``ended`` (one that had begun
        then, or began since)."""
        with self._count:
            return self._begun != ended

    def wait(self) -> None:
        """Return once no pass runs (at once when none does)."""
        with self._running:
            pass


def file_redactors(data_dir: Path) -> list[tuple[Path, EntryPoint]]:
    """(file, entry point) of every declared file redactor whose file exists in ``data_dir``,
    sorted by file; nothing is imported. An entry point whose name is not a plain file name
    is skipped with a warning (it cannot name a file of the data directory)."""
    found = []
    for entry in _declared(FILE_REDACTORS):
        name = entry.name
        if name in ("", ".", "..") or Path(name).name != name or "\\" in name:
            logger.warning("Ignoring forget redactor %s = %s: its name must be a file name in "
                           "the data directory.", name, entry.value)
            continue
        path = Path(data_dir) / name
        if path.is_file():
            found.append((path, entry))
    return sorted(found, key=lambda item: (item[0].name, item[1].value))


#: (group, lookup) -> (when read, entry points): reading the installed packages' metadata
#: takes about 5 ms, and every forget asks twice
_DECLARED: dict[tuple[str, object], tuple[float, tuple[EntryPoint, ...]]] = {}
#: how long a reading serves (a package installed into a running process is seen after it)
DECLARED_TTL_S = 60.0


def _declared(group: str) -> tuple[EntryPoint, ...]:
    """The entry points of ``group``, read at most once per :data:`DECLARED_TTL_S`."""
    key = (group, entry_points)  # a test's stand-in for entry_points is read anew
    now = time.monotonic()
    cached = _DECLARED.get(key)
    if cached is None or now - cached[0] > DECLARED_TTL_S:
        cached = _DECLARED[key] = (now, tuple(entry_points(group=group)))
    return cached[1]


def _load(entry: EntryPoint, path: Path) -> FileRedactor:
    try:
        redact = entry.load()
    except Exception as exc:  # an import error of a broken or half-removed package
        raise MemOSError(
            f"Cannot redact {path}: its forget redactor {entry.value} does not load ({exc}). "
            "Reinstall the package that declares it, or delete the file, then forget again."
        ) from exc
    if not callable(redact):
        raise MemOSError(
            f"Cannot redact {path}: the forget redactor {entry.value} is not callable as "
            "redact(data_dir, memory). Fix or reinstall the package that declares it."
        )
    return redact  # type: ignore[no-any-return]


def _checked(hook: object, touched: Sequence[DerivedForm] | None) -> list[DerivedForm]:
    forms = list(touched or ())
    if not all(isinstance(f, DerivedForm) for f in forms):
        raise MemOSError(
            f"Forget hook {hook!r} returned {forms!r:.200}; it must return a list "
            "of memos_core.results.DerivedForm."
        )
    return forms


#: SQLite's result codes (``sqlite_errorname``, extended codes by prefix) for a file another
#: connection holds: nothing is wrong with it, retry
_BUSY = ("SQLITE_BUSY", "SQLITE_LOCKED")
#: ... for a file that is not the database its adapter wrote: damaged (CORRUPT, NOTADB,
#: FORMAT) or foreign (ERROR: a table or column the adapter reads is not there; MISMATCH,
#: CONSTRAINT: its column types or triggers are not the adapter's)
_DAMAGED = ("SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_FORMAT", "SQLITE_ERROR",
            "SQLITE_MISMATCH", "SQLITE_CONSTRAINT")


def side_file_error(path: Path, exc: sqlite3.Error, failed: str, retry: str) -> MemOSError:
    """What SQLite's error on an adapter's side file (``chat_history.sqlite3``,
    ``checkpoints.sqlite3``) means for the user, naming the file: ``failed`` says what did
    not happen, ``retry`` what to do once the cause is gone.

    - damaged or foreign (not a database, a malformed page, text that is not UTF-8, tables
      without the adapter's columns): :class:`CorruptDataError`, move the file away. It is
      never read again once moved, so nothing in the store depends on it.
    - held by another connection (locked, busy): a :class:`MemOSError` to retry; the file
      is fine, so it is not called damaged.
    - anything else (a full disk, an I/O error, no permission): a :class:`MemOSError` to
      check the disk and retry.

    The driver's message is quoted except for undecodable text, where it holds the text.
    """
    code = getattr(exc, "sqlite_errorname", None) or ""
    column = undecodable(exc)
    if code.startswith(_BUSY):
        return MemOSError(
            f"{path} is in use by another connection ({first_line(exc)}), so {failed}. "
            f"Finish or close what holds it, then {retry}.")
    if column is not None or code.startswith(_DAMAGED) or type(exc) is sqlite3.DatabaseError:
        return damaged_side_file(path, first_line(exc) if column is None else
                                 f"a stored text (column {column!r}) is not valid UTF-8",
                                 failed, retry)
    return MemOSError(
        f"{path} could not be read or written ({first_line(exc)}), so {failed}. Check the "
        f"disk and the file's permissions, then {retry}.")


def damaged_side_file(path: Path, reason: str, failed: str, retry: str) -> CorruptDataError:
    """The error for an adapter's side file that is damaged or foreign (``reason``: how it
    showed): move it away (see :func:`side_file_error`)."""
    return CorruptDataError(
        f"{path} is damaged or is not the file memos-core expects there ({reason}), so "
        f"{failed}. Move it out of the data directory (it is an old adapter file nothing "
        "else reads; it may still hold conversation text, so delete it once you no longer "
        f"need it), then {retry}.")


def truncate_wal(db: sqlite3.Connection, path: Path) -> None:
    """Rebuild the file of ``db`` (``VACUUM``), copy its WAL into it and truncate the WAL to
    zero bytes, so no page image or stale row copy written before a redaction stays on
    disk. The connection should have ``PRAGMA secure_delete=ON`` (freed space zeroed) and
    no open transaction. ``secure_delete`` alone leaves the copies SQLite's rebalancing
    makes of rows that moved (see :meth:`memos_core.vault.sqlite.SQLiteVault.checkpoint`).

    Raises:
        MemOSError: another connection is reading the file, so the WAL could not be
            truncated, or the file could not be rebuilt; retry the forget when it is idle.
    """
    try:
        db.execute("VACUUM")
    except sqlite3.OperationalError as exc:  # busy, or no room for the copy a rebuild makes
        raise MemOSError(
            f"Could not rebuild {path} after a redaction ({exc}): stale copies of redacted "
            "rows may stay in the file until it is rebuilt. Free disk space or finish the "
            "other writer, and forget again (forgetting again is safe).") from exc
    busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if busy:
        raise MemOSError(
            f"Could not truncate the WAL of {path}: another connection is reading it. Finish "
            "or close that reader and forget again (forgetting again is safe)."
        )


def open_log(path: Path) -> sqlite3.Connection:
    """A connection to the existing SQLite file ``path``, for a file redactor: it never creates
    the file, runs in autocommit mode (transactions are explicit), has ``secure_delete`` on
    (freed space zeroed) and waits up to 5 s for another writer. The caller closes it."""
    db = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=rw", uri=True,
                         isolation_level=None, timeout=5.0, check_same_thread=False)
    db.execute("PRAGMA secure_delete=ON")
    wal = Path(f"{path}-wal")
    if wal.is_file() and wal.stat().st_size > 0:
        # a redactor killed before its truncation left the old pages there
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return db
