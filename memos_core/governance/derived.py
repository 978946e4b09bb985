"""Rules for the forms derived from a forgotten memory (pure): how summaries made from it
are treated. The cascade itself is :mod:`memos_core.ops.forget`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from memos_core.cube import is_canonical_id
from memos_core.errors import InvalidInputError
from memos_core.validation import reserved_key, shown

__all__ = ["FLAG_KEY", "DerivedMode", "check_mode", "check_passed_back", "flagged", "unflagged",
           "with_flag_of"]

#: Metadata key of a summary whose sources were forgotten: the forgotten ids. Reserved
#: (:data:`memos_core.validation.RESERVED_METADATA_KEYS`): no caller's metadata sets it.
FLAG_KEY = "source_forgotten"
#: ``flag``: mark summaries made from the memory; ``forget``: forget them too.
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


def flagged(metadata: Mapping[str, Any]) -> bool:
    """Whether ``metadata`` carries the flag as the cascade writes it: a non-empty list of
    memory ids in canonical form. A value of another shape under the key is not the flag:
    a caller's own, stored before the key was reserved, which must not make the next text
    update scrub the memory's history."""
    flag = metadata.get(FLAG_KEY)
    return isinstance(flag, list) and bool(flag) and all(is_canonical_id(i) for i in flag)


def check_passed_back(current: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
    """Refuse a caller's ``metadata`` for the version after one with ``current`` metadata
    if it names the flag otherwise than exactly as ``current`` has it: a read-modify-write
    passes back what ``get`` gave (and the flag stays as it is, :func:`with_flag_of`); no
    caller sets, changes or clears it (a new text re-derives a flagged summary, which
    clears it).

    Raises:
        InvalidInputError: the flag named, with another value, or on a memory without it.
    """
    if FLAG_KEY not in metadata:
        return
    if FLAG_KEY not in current:
        raise InvalidInputError(reserved_key(FLAG_KEY))
    if metadata[FLAG_KEY] != current[FLAG_KEY]:
        raise InvalidInputError(
            f"metadata[{FLAG_KEY!r}] is the forget cascade's flag (the ids of this summary's "
            f"forgotten sources), stored as {shown(current[FLAG_KEY])}: pass it back as it is "
            f"or leave it out (it stays either way), not {shown(metadata[FLAG_KEY])}. A new "
            "text re-derives the summary, which clears it.")


def unflagged(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """``metadata`` without the flag: what a re-derived summary's new version carries."""
    return {k: v for k, v in metadata.items() if k != FLAG_KEY}


def with_flag_of(current: Mapping[str, Any], metadata: Mapping[str, Any]) -> dict[str, Any]:
    """``metadata`` (a new version's) with the flag exactly as ``current`` (the version it
    follows) has it, present or absent, whatever ``metadata`` says of it.

    The flag is the forget cascade's to set and a re-derivation's to clear: it is what makes
    the next new text scrub every earlier version, which may repeat the forgotten memory.
    Any other write (a rollback to a version from before the flag, an update of the
    metadata) that dropped it would leave those versions unscrubbed for good. A value of
    another shape under the key in ``current`` (not :func:`flagged`) is not kept."""
    kept = unflagged(metadata)
    if flagged(current):
        kept[FLAG_KEY] = current[FLAG_KEY]
    return kept
