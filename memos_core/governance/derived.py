"""Rules for the forms derived from a forgotten memory (pure): how summaries made from it
are treated. The cascade itself is :mod:`memos_core.ops.forget`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from memos_core.errors import InvalidInputError

__all__ = ["FLAG_KEY", "DerivedMode", "check_mode", "unflagged", "with_flag_of"]

#: Metadata key of a summary whose sources were forgotten: the forgotten ids.
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


def unflagged(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """``metadata`` without the flag: what a re-derived summary's new version carries."""
    return {k: v for k, v in metadata.items() if k != FLAG_KEY}


def with_flag_of(current: Mapping[str, Any], metadata: Mapping[str, Any]) -> dict[str, Any]:
    """``metadata`` (a new version's) with the flag exactly as ``current`` (the version it
    follows) has it, present or absent, whatever ``metadata`` says of it.

    The flag is the forget cascade's to set and a re-derivation's to clear: it is what makes
    the next new text scrub every earlier version, which may repeat the forgotten memory.
    Any other write (a rollback to a version from before the flag, an update of the
    metadata) that dropped it would leave those versions unscrubbed for good."""
    kept = unflagged(metadata)
    if FLAG_KEY in current:
        kept[FLAG_KEY] = current[FLAG_KEY]
    return kept
