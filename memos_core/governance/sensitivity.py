"""Sensitivity tags: what leaves the store by default, as pure functions.

A memory whose ``governance.sensitivity`` holds tags (``"pii"``, ``"secret"``, any str) is
*sensitive*. Access control decides who may read it at all; sensitivity decides whether
text that a principal may read is copied out of the store by default:

* **Prompts.** ``MemOS.search`` -- which the chat, the LangChain middleware / retriever /
  tools and the LlamaIndex memory block / retriever / tools all inject into prompts --
  returns a sensitive memory *redacted* (:func:`redact`: its text becomes
  ``"[redacted: pii]"``, its entities, tags, metadata and spans are dropped, and so are the
  hit's graph reasons, which name entities; the hit stays in the ranking so the model knows
  something is there) unless the call's allowance covers every
  tag of it. The allowance is ``search(allow_sensitive=...)``, defaulting to
  ``MemOSConfig.allow_sensitive`` (empty). ``"*"`` allows every tag.
* **Exports.** ``MemOS.export`` leaves out every memory that any of its versions marks
  sensitive (its whole history, and relations touching it) unless ``include_sensitive=True``;
  the manifest counts what was withheld. Leaving out, not redacting: a bundle holds only
  real memories, so importing it never creates memories whose text is a placeholder.
* **Records.** ``get``, ``history`` and ``list`` return the text to whoever may read it:
  they are record access, not prompt injection.
* **KV caches.** A hot block holds only memories whose text search would return
  unredacted under ``MemOSConfig.allow_sensitive`` (the scheduler's ``prompt_safe``), and
  never those tagged with ``SchedulerConfig.never_activate_sensitivity`` (default
  ``("secret",)``) even when allowed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from memos_core.cube import MemCube
from memos_core.errors import InvalidInputError

#: The allowance that permits every sensitivity tag.
ALL = "*"
#: Sensitivity tags never trained into an adapter's weights, even when allowed (the default
#: of ``ConsolidationConfig.never_sensitivity``; weights cannot be redacted).
NEVER_IN_WEIGHTS = ("secret",)
#: Metadata key a redacted memory carries: the tags that caused the redaction.
REDACTED_KEY = "redacted_sensitivity"


def allowance(allow: Iterable[str] | str | None) -> frozenset[str]:
    """Normalise an allowance: ``None`` or ``()`` allows nothing, ``"*"`` everything, else a
    set of tags. Raises :class:`InvalidInputError` for anything but strs."""
    if allow is None:
        return frozenset()
    if isinstance(allow, str):
        allow = (allow,)
    if isinstance(allow, Mapping) or not isinstance(allow, Iterable):
        raise InvalidInputError(f"allow_sensitive must be a list of sensitivity tags (or '*'), "
                                f"got {type(allow).__name__}.")
    tags = tuple(allow)
    if not all(isinstance(t, str) and t for t in tags):
        raise InvalidInputError(
            f"allow_sensitive must be a list of non-empty sensitivity tags (or '*'), got {tags!r}."
        )
    return frozenset(tags)


def withheld(sensitivity: Iterable[str], allowed: frozenset[str]) -> tuple[str, ...]:
    """The tags of ``sensitivity`` that ``allowed`` does not cover, sorted ('' if none)."""
    if ALL in allowed:
        return ()
    return tuple(sorted(set(sensitivity) - allowed))


def redacted_text(tags: Iterable[str]) -> str:
    """The placeholder that replaces a redacted memory's text, e.g. ``[redacted: pii]``."""
    return f"[redacted: {', '.join(sorted(tags))}]"


def redact(cube: MemCube, tags: tuple[str, ...]) -> MemCube:
    """A copy of ``cube`` safe to put in a prompt: text -> :func:`redacted_text`; entities,
    tags, spans and metadata dropped (they are derived from or describe the text); and
    ``metadata[REDACTED_KEY]`` listing ``tags``. ``tags=()`` returns ``cube`` unchanged.
    (``MemOS.search`` also drops a redacted hit's graph reasons, which name entities.)"""
    if not tags:
        return cube
    return cube.model_copy(update={
        "text": redacted_text(tags),
        "entities": (),
        "tags": (),
        "metadata": {REDACTED_KEY: list(tags)},
        "provenance": cube.provenance.model_copy(update={"spans": ()}),
    })


def for_prompt(cube: MemCube, allowed: frozenset[str]) -> tuple[MemCube, tuple[str, ...]]:
    """``(cube as it may enter a prompt, the tags that were redacted)``."""
    tags = withheld(cube.governance.sensitivity, allowed)
    return redact(cube, tags), tags


def history_sensitivity(versions: Iterable[MemCube]) -> tuple[str, ...]:
    """Every sensitivity tag any version carries, sorted: a memory marked sensitive once
    keeps its earlier versions out of exports too."""
    return tuple(sorted({t for v in versions for t in v.governance.sensitivity}))
