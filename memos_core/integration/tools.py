"""The memory tools' shared specification: names, descriptions and argument schemas.

Both tool sets (``langchain_memos.create_memory_tools`` and
``llama_index.memory.memos.memos_tools``) build their tools from :data:`TOOL_SPECS`, so a
model sees the same tool, with the same words, whichever framework runs it. The user is
never an argument: each adapter supplies it from the caller's identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model

from memos_core.cube import State
from memos_core.errors import MemOSError
from memos_core.governance.access import shown_text
from memos_core.governance.redaction import MessageRedactor
from memos_core.results import ForgetReceipt

__all__ = ["MEMORY_KINDS", "TOOL_NAMES", "TOOL_SPECS", "ToolArg", "ToolSpec", "forget_reply",
           "redactor_before_forget", "shown_text", "tool_spec"]

#: The memory types a model may choose for ``store_memory``.
MEMORY_KINDS = ("fact", "preference", "episode", "task_prompt", "summary", "note")
MemoryKind = Literal["fact", "preference", "episode", "task_prompt", "summary", "note"]


@dataclass(frozen=True)
class ToolArg:
    """One argument of a tool: its Python type, description, default (``required`` when
    there is none) and optional bounds."""

    name: str
    type: Any
    description: str
    default: Any = None
    required: bool = False
    ge: int | None = None
    le: int | None = None
    min_length: int | None = None


@dataclass(frozen=True)
class ToolSpec:
    """A memory tool: its name, the description the model reads, and its arguments."""

    name: str
    description: str
    args: tuple[ToolArg, ...]

    def arg(self, name: str) -> ToolArg:
        """The argument called ``name`` (KeyError if there is none)."""
        for a in self.args:
            if a.name == name:
                return a
        raise KeyError(name)

    def args_model(self) -> type[BaseModel]:
        """A pydantic model of the arguments (a framework's argument schema)."""
        fields: dict[str, Any] = {}
        for a in self.args:
            default: Any = ... if a.required else a.default
            fields[a.name] = (a.type, Field(default, description=a.description, ge=a.ge,
                                            le=a.le, min_length=a.min_length))
        model: type[BaseModel] = create_model(_camel(self.name), **fields)
        return model


def _camel(name: str) -> str:
    return "".join(part.title() for part in name.split("_"))


TOOL_SPECS: tuple[ToolSpec, ...] = (
    ToolSpec(
        "store_memory",
        "Save a fact, preference or note about the user for future conversations. Store one "
        "self-contained statement per call.",
        (ToolArg("text", str, "The memory, as one self-contained sentence.", required=True),
         ToolArg("memory_type", MemoryKind, "What kind of memory this is: one of "
                 + ", ".join(MEMORY_KINDS) + ".", "fact"),
         ToolArg("tags", list[str] | None, "Optional short labels.")),
    ),
    ToolSpec(
        "search_memories",
        "Search the user's long-term memory. Returns matching memories with their ids, best "
        "first. Search before answering questions about the user's past or preferences.",
        (ToolArg("query", str, "What to look for, in natural language.", required=True),
         # no upper bound in the schema: each tool set caps k at its max_k, so a model
         # asking for 100 gets the most the application allows, not a validation error
         ToolArg("k", int | None, "How many memories to return (more than the tool's "
                 "maximum returns that maximum).", ge=1)),
    ),
    ToolSpec(
        "update_memory",
        "Correct or refine an existing memory by id (from search_memories). The previous "
        "version stays in the memory's history.",
        (ToolArg("memory_id", str, "Id of the memory to change (from search_memories).",
                 required=True),
         ToolArg("text", str, "The corrected memory text.", required=True)),
    ),
    ToolSpec(
        "forget_memory",
        "Permanently delete a memory by id (from search_memories), e.g. when the user asks "
        "you to forget something or it is wrong.",
        (ToolArg("memory_id", str, "Id of the memory to delete (from search_memories).",
                 required=True),),
    ),
    ToolSpec(
        "compress_memories",
        "Merge several related memories (ids from search_memories) into one summary you "
        "write. The originals are archived and linked to the summary.",
        (ToolArg("memory_ids", list[str], "Ids of the memories to merge.", required=True,
                 min_length=2),
         ToolArg("summary", str, "One text that keeps everything they say.", required=True)),
    ),
)

#: Every tool name, in the order the tool sets return them.
TOOL_NAMES: tuple[str, ...] = tuple(spec.name for spec in TOOL_SPECS)


def tool_spec(name: str) -> ToolSpec:
    """The spec of the tool ``name`` (KeyError naming the known tools if there is none)."""
    for spec in TOOL_SPECS:
        if spec.name == name:
            return spec
    raise KeyError(f"no memory tool {name!r}; known: {', '.join(TOOL_NAMES)}")


def forget_reply(receipt: ForgetReceipt) -> str:
    """What the ``forget_memory`` tool tells the model: the memory is forgotten, and which
    summaries made from it were only flagged (their text is the summariser's and may repeat
    the forgotten fact; the model can read them and update or forget them) or left alone
    (another user's)."""
    reply = f"Forgot memory {receipt.memory_id}."
    flagged = [f.id for f in receipt.derived if f.kind == "summary" and f.action == "flagged"]
    others = sum(f.kind == "summary" and f.action == "not_permitted" for f in receipt.derived)
    if flagged:
        reply += (" Summaries made from it keep their own text, which may repeat what was "
                  f"forgotten: {', '.join(flagged)}. Check them with search_memories and "
                  "update or forget them if they do.")
    if others:
        reply += (f" {others} summaries made from it belong to someone else and were left as "
                  "they are.")
    return reply


def redactor_before_forget(mos: Any, memory_id: str, user_id: str) -> MessageRedactor | None:
    """The redactor of a memory about to be forgotten, as ``MemOS.forget`` builds it for the
    conversation logs (its text, and what its earlier versions said, with the contents of
    those that were chat turns), or None when ``user_id`` cannot read the memory (the forget
    then raises the error the model reads) or it is forgotten already. The memory tools
    build it before the forget, to redact the copies a running agent holds."""
    try:
        versions = mos.history(memory_id, user_id=user_id)
    except MemOSError:
        return None
    current = versions[-1]
    if current.state is State.DELETED:
        return None
    earlier = [v.text for v in versions[:-1] if v.text and v.text != current.text]
    # a memory made from a chat message ("speaker: content"): the contents too
    contents = [t.split(": ", 1)[1] for t in earlier if "role" in current.metadata and ": " in t]
    return MessageRedactor(current).with_texts([*earlier, *contents])
