"""Forgetting everywhere: ``MemOS.forget`` carried out across every derived form.

One forget, under the store's write lock:

0. **Conversation logs**: the forget hooks (:mod:`memos_core.governance.forget_hooks`)
   run first, with the memory's text still intact: each framework log (the LangGraph
   checkpointer's ``checkpoints.sqlite3``, the LlamaIndex chat store's
   ``chat_history.sqlite3``) replaces the messages holding it by ``[forgotten]`` and
   truncates its WAL -- through its open adapter's hook, or, when no adapter has it open,
   through the file redactor its package declares (an entry point). A hook or redactor
   that raises aborts the forget before anything below changed.
1. **Vault**: the tombstone transaction scrubs the text of every version (it keeps a
   SHA-256 of it), deletes usage counters and relations, audits. ``secure_delete`` zeroes
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

The receipt lists the stores it was removed from and every derived form touched. A log file
whose package is not installed (so that no redactor is declared for it) is not reached.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from memos_core.cube import MemCube, State
from memos_core.errors import AccessDeniedError, InvalidInputError
from memos_core.governance import access
from memos_core.results import DerivedForm, ForgetReceipt
from memos_core.vault import Actor, text_digest

if TYPE_CHECKING:
    from memos_core.memos import MemOS

logger = logging.getLogger("memos_core.governance")

#: Metadata key of a summary whose sources were forgotten: the forgotten ids.
FLAG_KEY = "source_forgotten"
DerivedMode = Literal["flag", "forget"]
_MODES = ("flag", "forget")


def check_mode(derived: object) -> DerivedMode:
    """``'flag'`` or ``'forget'``; anything else raises :class:`InvalidInputError`."""
    if derived not in _MODES:
        raise InvalidInputError(
            f"derived must be 'flag' (mark summaries made from the memory) or 'forget' "
            f"(forget them too), got {derived!r}."
        )
    return derived  # type: ignore[return-value]


def kv_files_holding(kv_dir: Path, memory_ids: Iterable[str]) -> list[Path]:
    """KV cache files under ``kv_dir`` whose header lists any of ``memory_ids`` (any
    version, any model). Unreadable files are listed too: a file we cannot read might hold
    the memory, and the tier rebuilds what it needs."""
    ids = set(memory_ids)
    if not kv_dir.is_dir():
        return []
    from memos_core.tiers.activation import storage

    found = []
    for path in sorted(kv_dir.glob(f"*{storage.SUFFIX}")):
        try:
            members = storage.header_memories(storage.read_header(path))
        except (storage.KVCacheFormatError, OSError):
            found.append(path)
            continue
        if any(mid in ids for mid, _ in members):
            found.append(path)
    return found


def retire_adapters(mos: MemOS, memory_id: str) -> list[str]:
    """Versions of the LoRA adapters retired because ``memory_id`` was forgotten: each is
    deactivated, its weights deleted and a retrain without the memory queued (by the
    engine's change listener if one runs, else here). Reads only ``<data_dir>/adapters``."""
    if not (Path(mos.data_dir) / "adapters").is_dir():
        return []
    from memos_core.tiers.parametric import ParametricTier

    return ParametricTier.without_model(mos).retired_for(memory_id)


def redact_logs(mos: MemOS, cube: MemCube) -> list[DerivedForm]:
    """Run the forget hooks and the file redactors of the data directory's logs for ``cube``
    (nothing for a tombstone); the forms they touched."""
    if cube.state is State.DELETED:
        return []
    return mos._forget_hooks.run(cube, Path(mos.data_dir))


def forget_one(mos: MemOS, cube: MemCube, actor: Actor, derived: DerivedMode,
               logs: list[DerivedForm] | None = None) -> ForgetReceipt:
    """Forget ``cube`` (already access-checked) everywhere; see the module docstring.

    ``logs``: what :func:`redact_logs` already did for it (``forget_many`` runs every hook
    before the first tombstone); None runs the hooks here. Idempotent: forgetting a
    tombstone again changes nothing and touches no derived form. The caller holds
    ``mos._write_lock`` and checkpoints the vault afterwards (also when this raises).
    """
    if cube.state is State.DELETED:
        # Already forgotten: nothing is removed again, unless the tombstone still held
        # content (one imported from a bundle made elsewhere): then it is scrubbed now.
        repaired = mos.vault.scrub_tombstone(cube.id)
        return ForgetReceipt(memory_id=cube.id, version=cube.version,
                             text_sha256=cube.text.removeprefix("sha256:"),
                             removed_from=("vault",) if repaired else (), at=cube.updated_at)
    if derived == "forget":
        check_cascade(mos, cube, actor.user_id)
    forms = redact_logs(mos, cube) if logs is None else list(logs)
    digest = text_digest(cube.text)
    kv_dir = Path(mos.data_dir) / "kv"
    kv_files = kv_files_holding(kv_dir, [cube.id])
    summaries = mos.vault.derived_from(cube.id)  # before the tombstone drops the relations
    tomb = mos.vault.tombstone(cube.id, actor)
    mos.index.delete([cube.id])
    mos._graph_apply([tomb])  # the KV engine, if any, drops its blocks here
    logged = bool(forms)
    forms += _cascade(mos, cube.id, summaries, actor, derived)
    for path in kv_files:
        path.unlink(missing_ok=True)
        forms.append(DerivedForm(kind="kv_block", id=path.name, action="deleted"))
    adapters = retire_adapters(mos, cube.id)
    forms.extend(DerivedForm(kind="adapter", id=v, action="deleted") for v in adapters)
    return ForgetReceipt(
        memory_id=cube.id, version=tomb.version, text_sha256=digest.removeprefix("sha256:"),
        removed_from=("vault", "index", "graph") + (("kv",) if kv_files else ())
        + (("adapters",) if adapters else ()) + (("conversation_log",) if logged else ()),
        at=tomb.updated_at, derived=tuple(forms),
    )


def check_cascade(mos: MemOS, cube: MemCube, user_id: str) -> None:
    """Raise :class:`AccessDeniedError` before anything changes if forgetting ``cube`` with
    ``derived="forget"`` would forget a summary (at any depth) that ``user_id`` does not own."""
    seen = {cube.id}
    todo = [cube.id]
    while todo:
        for sid in mos.vault.derived_from(todo.pop()):
            if sid in seen:
                continue
            seen.add(sid)
            summary = mos.vault.get(sid)
            if summary is None or summary.state is State.DELETED:
                continue
            if not access.permits(summary, user_id, access.Operation.OWN):
                raise AccessDeniedError(
                    f"Forgetting {cube.id} with derived='forget' would forget summary {sid}, "
                    f"which belongs to {summary.user_id!r} (rule: forget is owner-only, for "
                    "each memory a cascade touches). Use derived='flag', or ask its owner."
                )
            todo.append(sid)


def _cascade(mos: MemOS, source_id: str, summary_ids: list[str], actor: Actor,
             derived: DerivedMode) -> list[DerivedForm]:
    """Flag or forget the live summaries made from ``source_id``.

    Each summary is checked against the principal's rights, like a direct call: forgetting
    needs ``own`` (checked up front by :func:`check_cascade`), flagging needs ``write``; a
    summary the principal may not change is left as it is and reported ``"not_permitted"``.
    """
    forms: list[DerivedForm] = []
    cascade_actor = Actor(actor.user_id, actor.agent_id, f"source {source_id} forgotten")
    for sid in summary_ids:
        summary = mos.vault.get(sid)
        if summary is None or summary.state is State.DELETED:
            continue
        needed = access.Operation.OWN if derived == "forget" else access.Operation.WRITE
        if not access.permits(summary, actor.user_id, needed):
            forms.append(DerivedForm(kind="summary", id=sid, action="not_permitted"))
            continue
        if derived == "forget":
            nested = forget_one(mos, summary, cascade_actor, derived)
            forms.append(DerivedForm(kind="summary", id=sid, action="forgotten"))
            forms.extend(nested.derived)
            continue
        sources = list(summary.metadata.get(FLAG_KEY, []))
        if source_id not in sources:
            metadata = {**summary.metadata, FLAG_KEY: [*sources, source_id]}
            mos._write_version(summary, {"metadata": metadata}, cascade_actor,
                               "flag:source_forgotten", {"source": source_id})
        forms.append(DerivedForm(kind="summary", id=sid, action="flagged"))
    return forms
