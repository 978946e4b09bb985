"""Composing memories into one prefix block: the system message whose KV cache is kept.

Pure functions, no model: the same composition serves the KV path (the message's cache is
precomputed) and the plaintext path (the message is sent as prompt text), so the two give
the same prompt token for token. The text is composed raw: the tokenizer's control-token
strings in a memory are broken where every prompt is rendered
(:meth:`memos_core.runtime.LocalModel.render`), for the block and its cached prefix alike.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from memos_core.errors import InvalidInputError

#: Instructions opening every memory block unless the caller gives others.
DEFAULT_INSTRUCTIONS = (
    "You are a helpful assistant. The following are facts you remember about the user and "
    "past conversations. Use them when they are relevant to the question."
)


class MemoryRef(BaseModel):
    """One memory as the KV tier sees it: id, version and the text of that version."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1, description="Memory id.")
    version: int = Field(ge=1, description="Memory version the text belongs to.")
    text: str = Field(min_length=1, description="The memory's text at that version.")

    @property
    def key(self) -> tuple[str, int]:
        """``(id, version)``: what a cached block records and checks."""
        return (self.id, self.version)


def as_refs(memories: Iterable[Any]) -> tuple[MemoryRef, ...]:
    """Normalise memories given as :class:`MemoryRef`, ``(id, version, text)`` tuples, or any
    object with ``id``, ``version`` and ``text`` attributes (e.g. a ``MemCube``).

    Raises:
        InvalidInputError: an item has none of those shapes, or an id appears twice.
    """
    refs: list[MemoryRef] = []
    for item in memories:
        if isinstance(item, MemoryRef):
            refs.append(item)
            continue
        if isinstance(item, tuple) and len(item) == 3:
            fields = dict(zip(("id", "version", "text"), item))
        elif all(hasattr(item, name) for name in ("id", "version", "text")):
            fields = {"id": item.id, "version": item.version, "text": item.text}
        else:
            raise InvalidInputError(
                f"cannot use {type(item).__name__} as a memory: give (id, version, text) tuples, "
                "MemoryRef or MemCube objects"
            )
        try:
            refs.append(MemoryRef(**fields))
        except ValidationError as exc:
            raise InvalidInputError(f"bad memory {fields.get('id')!r}: {exc}") from exc
    seen: set[str] = set()
    for ref in refs:
        if ref.id in seen:
            raise InvalidInputError(f"memory {ref.id} appears twice in one block")
        seen.add(ref.id)
    return tuple(refs)


def bullet(text: str) -> str:
    """One memory's line in a block; continuation lines are indented so bullets stay clear."""
    return "- " + text.strip().replace("\n", "\n  ")


def block_text(memories: Iterable[MemoryRef], instructions: str = DEFAULT_INSTRUCTIONS) -> str:
    """The system message content: the instructions, then one bullet per memory, in order."""
    lines = [instructions.strip(), "", "Memories:"]
    lines.extend(bullet(ref.text) for ref in memories)
    return "\n".join(lines)


def block_messages(
    memories: Iterable[MemoryRef], instructions: str = DEFAULT_INSTRUCTIONS
) -> list[dict[str, str]]:
    """The prefix block as chat messages: one system message (see :func:`block_text`)."""
    return [{"role": "system", "content": block_text(memories, instructions)}]


def block_id(
    memories: Iterable[MemoryRef],
    *,
    fingerprint_digest: str,
    instructions: str = DEFAULT_INSTRUCTIONS,
) -> str:
    """Content address of a block: hex SHA-256 over the model fingerprint, the instructions and
    each memory's id, version and text hash, in order. Equal ids mean interchangeable caches.
    """
    payload = {
        "fingerprint": fingerprint_digest,
        "instructions": instructions,
        "memories": [
            [ref.id, ref.version, hashlib.sha256(ref.text.encode("utf-8")).hexdigest()]
            for ref in memories
        ],
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
