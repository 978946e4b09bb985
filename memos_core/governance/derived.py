"""Rules for the forms derived from a forgotten memory (pure): how summaries made from it
are treated. The cascade itself is :mod:`memos_core.ops.forget`."""

from __future__ import annotations

from typing import Literal

from memos_core.errors import InvalidInputError

__all__ = ["FLAG_KEY", "DerivedMode", "check_mode"]

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
