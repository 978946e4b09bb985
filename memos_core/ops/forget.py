"""Forgetting everywhere: ``MemOS.forget`` carried out across every derived form, over the
kernel (:class:`~memos_core.store.MemoryStore`); the facade has checked access.

One forget, under the store's write lock:

0. **Conversation logs**: first, with the memory's text still intact, the vault's own
   conversation logs (:class:`~memos_core.vault.base.ConversationLogs`, e.g. the LlamaIndex
   chat stores) of the owner and of no user are redacted by the core; then the forget
   hooks (:mod:`memos_core.governance.forget_hooks`) run: the LangGraph checkpointer's
   values in the vault (:class:`~memos_core.vault.base.ThreadCheckpoints`) are redacted by
   its open adapter's hook or, when none is open, by the vault redactor its package
   declares; legacy side files (``checkpoints.sqlite3``, ``chat_history.sqlite3``, before
   they were migrated into the vault) by their file redactors. The messages holding it
   read ``[forgotten]``. A hook or redactor that raises aborts the forget before anything
   below changed.
1. **Vault**: the tombstone transaction scrubs the text of every version (keeping no
   digest of it: the receipt hands its SHA-256 to the caller), deletes usage counters and
   relations, audits. ``secure_delete`` zeroes
   the freed space; the facade then truncates the WAL (``vault.checkpoint()``), which
   otherwise keeps page images with the old text until they are overwritten.
2. **Index**: the point (dense vector, BM25 vector, filter payload -- never text) is deleted.
3. **Graph**: the node, its mentions and relations are removed; listeners (the KV engine)
   hear of the tombstone.
4. **Summaries** made from it (``compress``: ``derived_from`` relations) are *flagged*: a new
   version whose ``metadata["source_forgotten"]`` lists the forgotten sources -- their text
   is the summariser's and may or may not repeat the forgotten fact -- or, with
   ``derived="forget"``, forgotten as well (recursively). Re-derive a flagged one with
   ``mos.update(summary_id, new_text)``.
5. **KV caches**: every file under ``<data_dir>/kv`` whose header lists the memory is
   deleted, whether or not a KV engine is running (the engine drops its in-memory copy
   through the change listener).
6. **Adapters**: every LoRA adapter trained on it is retired (deactivated, weights deleted,
   a retrain without it queued); see :mod:`memos_core.tiers.parametric`.

Steps 5 and 6 are the store's derived-form purgers (:data:`memos_core.store.DerivedPurger`),
which the facade registers from the model tiers: this module never imports a tier.

The receipt lists the stores it was removed from and every derived form touched. A log file
whose package is not installed (so that no redactor is declared for it) is not reached.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Collection
from datetime import timedelta
from functools import partial
from pathlib import Path

from memos_core.cube import MemCube, State, utcnow
from memos_core.errors import (
    AccessDeniedError,
    ConflictError,
    CorruptDataError,
    PurgePendingError,
    first_line,
)
from memos_core.governance import access
from memos_core.governance.derived import FLAG_KEY, DerivedMode, check_mode
from memos_core.governance.redaction import MessageRedactor, earlier_texts, redact_log_message
from memos_core.lifecycle import INDEXED_STATES
from memos_core.ops.share import retrying
from memos_core.ops.writes import write_version
from memos_core.results import DerivedForm, ForgetReceipt
from memos_core.store import MemoryStore
from memos_core.vault import Actor, Vault

__all__ = ["FLAG_KEY", "LOG_FORM", "DerivedMode", "check_mode", "finish_unfinished", "forget_one",
           "redact_conversation_logs", "redact_logs"]

#: A receipt's id of a redacted conversation log: ``"conversation_log:<user>/<log id>"``.
LOG_FORM = "conversation_log"

logger = logging.getLogger("memos_core.governance")

#: receipt's ``removed_from`` entry of each derived-form kind a purger reports
_STORE_OF_KIND = {"kv_block": "kv", "adapter": "adapters"}


def redact_logs(store: MemoryStore, cube: MemCube) -> list[DerivedForm]:
    """Redact ``cube`` in the vault's conversation logs of its owner and of no user
    (:meth:`~memos_core.vault.base.ConversationLogs.log_redact`), then run the forget hooks,
    the file redactors of the data directory's legacy log files and the vault redactors
    (nothing for a tombstone); the forms they touched. Each of them also redacts what the
    memory said in its earlier versions (:func:`~memos_core.governance.redaction.earlier_texts`):
    a conversation may still quote it as it was before an update.

    All of it is one pass of ``store.forget_passes``: an adapter's write racing it redacts
    again after its commit (:class:`~memos_core.governance.forget_hooks.ForgetPasses`)."""
    if cube.state is State.DELETED:
        return []
    try:
        earlier = [v.text for v in store.vault.history(cube.id)[:-1] if v.text != cube.text]
    except CorruptDataError as exc:  # the tombstone scrubs the damaged versions all the same
        logger.warning("the earlier versions of memory %s cannot be read (%s): conversation "
                       "logs are searched for its current text only", cube.id, first_line(exc))
        earlier = []
    with earlier_texts(cube.id, list(dict.fromkeys(earlier))), store.forget_passes.running():
        forms = redact_conversation_logs(store.vault, MessageRedactor(cube))
        return forms + store.forget_hooks.run(cube, Path(store.data_dir), store.vault)


def redact_conversation_logs(vault: Vault, redactor: MessageRedactor,
                             only: Collection[str] | None = None) -> list[DerivedForm]:
    """Redact the memory of ``redactor`` in the vault's conversation logs of its owner and of
    no user (``only``: in the messages with these ids only); one form per log changed."""

    def redact(mid: str, message: str) -> str | None:
        if only is not None and mid not in only:
            return None
        return redact_log_message(message, redactor, redactor.is_source(mid))

    changed = vault.log_redact([redactor.user_id, ""], [p.decode() for p in redactor.patterns()],
                               sorted(redactor.source_ids), redact)
    return [DerivedForm(kind="conversation_log", id=f"{LOG_FORM}:{user}/{log}",
                        action="redacted") for user, log in changed]


def forget_one(store: MemoryStore, cube: MemCube, actor: Actor, derived: DerivedMode,
               logs: list[DerivedForm] | None = None, *,
               damaged: str | None = None) -> ForgetReceipt:
    """Forget ``cube`` (already access-checked) everywhere; see the module docstring.

    ``damaged``: ``cube`` is the stand-in of a memory whose stored record is damaged
    (:meth:`~memos_core.vault.base.Vault.damaged_stand_in`), and this says what became of
    its text; it is logged and noted in the receipt, which gives no text digest.

    ``logs``: what :func:`redact_logs` already did for it (``forget_many`` runs every hook
    before the first tombstone); None runs the hooks here. Idempotent: forgetting a
    tombstone again changes nothing and touches no derived form -- unless its forget stopped
    before the cascade (the summaries are dealt with now) or the purge of its derived files
    failed (this raised :class:`PurgePendingError` saying so): then that is retried.
    The caller holds
    ``store.write_lock`` and checkpoints the vault afterwards (also when this raises).
    """
    if cube.state is State.DELETED:
        # Already forgotten: nothing is removed again, unless the tombstone still held
        # content (one imported from a bundle made elsewhere): then it is scrubbed now; the
        # forget stopped before its cascade (the process died): the cascade runs now; or
        # the derived files' purge failed last time: then it runs again.
        if derived == "forget":
            check_cascade(store, cube, actor.user_id)
        repaired = store.vault.scrub_tombstone(cube.id)
        left = store.vault.derived_from(cube.id)
        cascaded = _cascade(store, cube.id, left, actor, derived) if left else []
        again = (_purge(store, cube.id, [p(cube.id) for p in store.purgers])
                 if cube.id in store.purge_pending else [])
        return ForgetReceipt(memory_id=cube.id, version=cube.version, text_sha256=None,
                             removed_from=(("vault",) if repaired else ()) + _stores_of(again),
                             at=cube.updated_at, derived=tuple(cascaded + again))
    if derived == "forget":
        check_cascade(store, cube, actor.user_id)
    notes: tuple[str, ...] = ()
    if damaged is not None:
        notes = (f"Memory {cube.id}: {damaged}.",)
        logger.warning("forgetting memory %s: %s", cube.id, damaged)
    forms = redact_logs(store, cube) if logs is None else list(logs)
    # the receipt's; never stored (none of a stand-in's text: it may not be the memory's)
    digest = None if damaged is not None else hashlib.sha256(cube.text.encode()).hexdigest()
    finishers: list[Callable[[], list[DerivedForm]]] = [p(cube.id) for p in store.purgers]
    # the KV engine, if any, drops its blocks when it hears of the tombstone; its audit
    # record names the mode, in which a forget stopped before its cascade resumes
    (tomb,) = store.write(lambda: [store.vault.tombstone(cube.id, actor, {"derived": derived})])
    store.forget_passes.forgotten(cube.id)  # the adapters keep the forget now
    # read once the tombstone is committed (it keeps these relations for the cascade): a
    # summary another process made of it just before is among them, and none can come after
    summaries = store.vault.derived_from(cube.id)
    # an index delete that failed is retried on the next call: not claimed done here; a
    # memory out of the indexed states (expired) left the index with the write that put it
    # there, so this call removed nothing from it
    held = cube.state.value in INDEXED_STATES
    indexed = ("index",) if held and cube.id not in store.deferred else ()
    logged = bool(forms)
    try:
        forms += _cascade(store, cube.id, summaries, actor, derived)
    finally:  # this memory's own files are purged whatever became of its summaries
        purged = _purge(store, cube.id, finishers)
    forms += purged
    return ForgetReceipt(
        memory_id=cube.id, version=tomb.version, text_sha256=digest,
        removed_from=("vault", *indexed, "graph") + _stores_of(purged)
        + (("conversation_log",) if logged else ()),
        at=tomb.updated_at, derived=tuple(forms), notes=notes,
    )


def _stores_of(purged: list[DerivedForm]) -> tuple[str, ...]:
    kinds = {form.kind for form in purged}
    return tuple(name for kind, name in _STORE_OF_KIND.items() if kind in kinds)


def _purge(store: MemoryStore, memory_id: str,
           finishers: list[Callable[[], list[DerivedForm]]]) -> list[DerivedForm]:
    """Run every purger's second half (the KV files, the adapters); each runs whatever
    another raised. If one failed, the memory is recorded as pending
    (:meth:`MemoryStore.set_purge_pending`), so that forgetting it again retries the purge,
    and :class:`PurgePendingError` says so; else the forms they touched."""
    forms: list[DerivedForm] = []
    failures: list[Exception] = []
    for finish in finishers:
        try:
            forms += finish()
        except Exception as exc:  # noqa: BLE001 - reported below, after the other purgers
            failures.append(exc)
    if failures:
        store.set_purge_pending(memory_id, True)
        raise PurgePendingError(
            f"Memory {memory_id} is forgotten in the vault, the index and the graph, but "
            f"removing it from a derived file failed ({type(failures[0]).__name__}: "
            f"{first_line(failures[0])}). Fix the cause "
            "and forget it again: that retries the purge.") from failures[0]
    store.set_purge_pending(memory_id, False)
    return forms


def check_cascade(store: MemoryStore, cube: MemCube, user_id: str) -> None:
    """Raise :class:`AccessDeniedError` before anything changes if forgetting ``cube`` with
    ``derived="forget"`` would forget a summary (at any depth) that ``user_id`` does not own."""
    seen = {cube.id}
    todo = [cube.id]
    while todo:
        for sid in store.vault.derived_from(todo.pop()):
            if sid in seen:
                continue
            seen.add(sid)
            summary = store.vault.get(sid)
            if summary is None or summary.state is State.DELETED:
                continue
            if not access.permits(summary, user_id, access.Operation.OWN):
                raise AccessDeniedError(
                    f"Forgetting {cube.id} with derived='forget' would forget summary {sid}, "
                    f"which belongs to {summary.user_id!r} (rule: forget is owner-only, for "
                    "each memory a cascade touches). Use derived='flag', or ask its owner."
                )
            todo.append(sid)


def _cascade(store: MemoryStore, source_id: str, summary_ids: list[str], actor: Actor,
             derived: DerivedMode) -> list[DerivedForm]:
    """Flag or forget the live summaries made from ``source_id``: with ``"flag"`` every one
    at any depth (a summary of a summary may repeat the forgotten text too), each flagged
    with ``source_id``; with ``"forget"`` the direct ones, each forget cascading on.

    Each summary is checked against the principal's rights, like a direct call: forgetting
    needs ``own`` (checked up front by :func:`check_cascade`), flagging needs ``write``; a
    summary the principal may not change is left as it is and reported ``"not_permitted"``
    (the summaries made from it are still flagged where the principal may).
    """
    forms: list[DerivedForm] = []
    pending: list[PurgePendingError] = []
    cascade_actor = Actor(actor.user_id, actor.agent_id, f"source {source_id} forgotten")
    if derived == "flag":
        summary_ids = _made_from(store, source_id, summary_ids)
    for sid in summary_ids:
        try:
            summary = store.vault.get(sid)
        except CorruptDataError as exc:  # it cannot be flagged, nor skipped silently
            raise CorruptDataError(
                f"Memory {source_id} is forgotten, but its summary {sid} cannot be flagged: "
                f"{exc} Once it is forgotten (by its owner), forget {source_id} again to "
                "finish.", memory_id=sid) from None
        if summary is None or summary.state is State.DELETED:
            continue
        needed = access.Operation.OWN if derived == "forget" else access.Operation.WRITE
        if not access.permits(summary, actor.user_id, needed):
            forms.append(DerivedForm(kind="summary", id=sid, action="not_permitted"))
            continue
        if derived == "forget":
            try:
                nested = forget_one(store, summary, cascade_actor, derived)
            except PurgePendingError as exc:  # tombstoned; the others must still go (the
                pending.append(exc)             # relations that find them are gone now)
                forms.append(DerivedForm(kind="summary", id=sid, action="forgotten"))
                continue
            forms.append(DerivedForm(kind="summary", id=sid, action="forgotten"))
            forms.extend(nested.derived)
            continue
        if retrying(partial(_flag, store, sid, source_id, cascade_actor), on=ConflictError):
            forms.append(DerivedForm(kind="summary", id=sid, action="flagged"))
    store.vault.drop_relations(source_id)  # every summary was dealt with
    if pending:
        raise pending[0]
    return forms


def _made_from(store: MemoryStore, source_id: str, summary_ids: list[str]) -> list[str]:
    """``summary_ids`` (the summaries made from ``source_id``) and every summary made from
    one of them, at any depth, each once, nearest first (a cycle of relations ends)."""
    found = list(dict.fromkeys(summary_ids))
    seen = {source_id, *found}
    for sid in found:  # grows while it is walked: breadth first
        for deeper in store.vault.derived_from(sid):
            if deeper not in seen:
                seen.add(deeper)
                found.append(deeper)
    return found


def _flag(store: MemoryStore, summary_id: str, source_id: str, actor: Actor) -> bool:
    """Flag the summary (read now: another process may be finishing the same forget) as
    made from the forgotten ``source_id``; False if it is gone meanwhile."""
    summary = store.vault.get(summary_id)
    if summary is None or summary.state is State.DELETED:
        return False
    stored = summary.metadata.get(FLAG_KEY, [])
    # a malformed flag (one an older import let in) must not stop every forget of a source:
    # what is not a list of ids is dropped, and this write leaves a well-formed one
    sources = [s for s in stored if isinstance(s, str)] if isinstance(stored, list) else []
    if source_id not in sources:
        metadata = {**summary.metadata, FLAG_KEY: [*sources, source_id]}
        write_version(store, summary, {"metadata": metadata}, actor, "flag:source_forgotten",
                      {"source": source_id}, keep_flag=False)  # the one write that sets it
    return True


def finish_unfinished(store: MemoryStore, min_age_s: float = 0.0) -> int:
    """Run the cascade of every forget that stopped between its tombstone and its cascade
    (the process died; :meth:`~memos_core.vault.base.Vault.unfinished_forgets`), in the mode
    its tombstone's audit record names (``flag`` if none, or if ``forget`` would now reach a
    summary of another user). ``min_age_s``: leave tombstones younger than that (server
    mode: another process may be running that cascade right now). A failure is logged and
    the others still run. Returns how many forgets were finished."""
    done = 0
    cutoff = utcnow() - timedelta(seconds=min_age_s)
    for memory_id in store.vault.unfinished_forgets():
        tomb = store.vault.get(memory_id)
        if tomb is None or tomb.state is not State.DELETED or tomb.updated_at > cutoff:
            continue
        actor = Actor(tomb.user_id, None, "an interrupted forget finished")
        records = store.vault.audit_log(memory_id=memory_id, action="forget", limit=1)
        asked = records[-1].details.get("derived") if records else None
        mode: DerivedMode = "forget" if asked == "forget" else "flag"
        try:
            try:
                forget_one(store, tomb, actor, mode)
            except AccessDeniedError:  # a summary another user owns: flag them all instead
                forget_one(store, tomb, actor, "flag")
        except Exception:  # noqa: BLE001 - logged; the next open or forget of it retries
            logger.warning("finishing the interrupted forget of %s failed", memory_id,
                           exc_info=True)
            continue
        done += 1
    return done
