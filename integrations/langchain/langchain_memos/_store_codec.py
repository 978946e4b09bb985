"""Pure mapping between LangGraph store items and MemOS memories (no I/O).

One item ``(namespace, key, value)`` is one memory of the user its namespace names (see
``MemOSStore(user_label=...)``):

* ``text``: what hybrid search sees -- the item's index fields joined by newlines, or the
  whole value as JSON (sorted keys) when no fields are configured or none are present;
* ``metadata``: ``lg_ns`` (the namespace as a JSON string), ``lg_key``, ``lg_value`` (the
  value itself, so it round-trips exactly), ``lg_index`` (the ``index`` argument of the put);
* ``tags``: one ``lg.ns:<json>`` tag per namespace prefix, so a search under a prefix is a
  single tag filter.

The LangGraph-side semantics that the facade has no notion of (value filters with ``$eq``,
``$gt``...; namespace match conditions with ``*``) are evaluated here, on decoded values.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from langgraph.store.base import InvalidNamespaceError, MatchCondition
from langgraph.store.base.embed import get_text_at_path, tokenize_path
from memos_core import InvalidInputError
from memos_core.integration import REDACTED_KEY, redacted_text

NS_TAG_PREFIX = "lg.ns:"
META_NS = "lg_ns"
META_KEY = "lg_key"
META_VALUE = "lg_value"
META_INDEX = "lg_index"
FILTER_OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")


def check_namespace(namespace: object, *, what: str = "namespace", allow_empty: bool = False) -> tuple[str, ...]:
    """A namespace tuple as LangGraph requires it (which label is the user, the store says).

    Raises ``InvalidNamespaceError`` (a ``ValueError``) saying what is wrong.
    """
    if not isinstance(namespace, tuple):
        raise InvalidNamespaceError(
            f"{what} must be a tuple of str such as ('alice', 'memories'), got "
            f"{type(namespace).__name__} {namespace!r}."
        )
    if not namespace and not allow_empty:
        raise InvalidNamespaceError(
            f"{what} is empty. MemOSStore keeps items per user: the namespace must name the "
            "user, e.g. ('alice', 'memories') with user_label=0."
        )
    for label in namespace:
        if not isinstance(label, str) or not label:
            raise InvalidNamespaceError(
                f"{what} {namespace!r} has label {label!r}; labels must be non-empty str."
            )
        if "." in label or "\x00" in label:
            raise InvalidNamespaceError(
                f"{what} {namespace!r} has label {label!r}; labels cannot contain '.' or NUL."
            )
    return namespace


def ns_json(namespace: Sequence[str]) -> str:
    """A namespace as a compact JSON array (injective, so it can be compared as a string)."""
    return json.dumps(list(namespace), ensure_ascii=False, separators=(",", ":"))


def prefix_tag(prefix: Sequence[str]) -> str:
    """The tag every item whose namespace starts with ``prefix`` carries."""
    return NS_TAG_PREFIX + ns_json(prefix)


def namespace_tags(namespace: Sequence[str]) -> list[str]:
    """Tags of an item: one per non-empty prefix of its namespace."""
    return [prefix_tag(namespace[:n]) for n in range(1, len(namespace) + 1)]


def check_value(value: object, key: str) -> dict[str, Any]:
    """A value that survives JSON unchanged: str keys, no tuples, no NaN, no objects.

    MemOS keeps values in JSON; anything that would come back different is refused up front
    rather than silently altered.
    """
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            f"The value for key {key!r} must be a dict, got {type(value).__name__}."
        )
    try:
        decoded = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"The value for key {key!r} is not JSON-serialisable ({exc}); store only dicts, "
            "lists, str, int, float, bool and None (convert dates to ISO strings)."
        ) from None
    if not _same_json(value, decoded):
        raise InvalidInputError(
            f"The value for key {key!r} would not round-trip through JSON (tuples become "
            "lists, non-str dict keys become str); use lists and str keys."
        )
    return decoded


def _same_json(original: Any, decoded: Any) -> bool:
    if isinstance(original, Mapping):
        return (
            isinstance(decoded, dict)
            and all(isinstance(k, str) for k in original)
            and original.keys() == decoded.keys()
            and all(_same_json(original[k], decoded[k]) for k in original)
        )
    if isinstance(original, list):
        return isinstance(decoded, list) and len(original) == len(decoded) and all(
            _same_json(a, b) for a, b in zip(original, decoded)
        )
    return type(original) is type(decoded) and original == decoded


def check_index(index: object, key: str) -> list[str] | Literal[False] | None:
    """The ``index`` argument of a put: None, False, or a list of field paths."""
    if index is None or index is False:
        return index
    if isinstance(index, (list, tuple)) and all(isinstance(p, str) and p for p in index):
        return list(index)
    raise InvalidInputError(
        f"index for key {key!r} must be None, False or a list of field paths such as "
        f"['text', 'tags[*]'], got {index!r}."
    )


def render_text(value: Mapping[str, Any], fields: Sequence[str] | None) -> tuple[str, bool]:
    """(memory text, whether the fields gave text) for a value and its index fields.

    ``fields`` None or ``["$"]`` means the whole value. When the fields find nothing, the
    text is the whole value as JSON and the flag is False (the item is then treated as not
    indexed, as LangGraph's reference store does).
    """
    whole = json.dumps(value, sort_keys=True, ensure_ascii=False)
    if not fields:
        return whole, True
    texts: list[str] = []
    for path in fields:
        texts.extend(get_text_at_path(value, path if path == "$" else tokenize_path(path)))
    text = "\n".join(t for t in texts if t.strip())
    return (text, True) if text else (whole, False)


def check_filter(flt: object) -> dict[str, Any] | None:
    """A search filter: a dict of value field -> literal or ``{"$op": operand}``."""
    if flt is None:
        return None
    if not isinstance(flt, Mapping):
        raise InvalidInputError(f"filter must be a dict, got {type(flt).__name__}.")
    _check_condition(flt, "filter")
    return dict(flt)


def _check_condition(cond: Mapping[str, Any], where: str) -> None:
    for name, sub in cond.items():
        if not isinstance(name, str):
            raise InvalidInputError(f"{where} key {name!r} must be a str.")
        if isinstance(sub, Mapping):
            ops = [k for k in sub if isinstance(k, str) and k.startswith("$")]
            unknown = [k for k in ops if k not in FILTER_OPERATORS]
            if unknown or (ops and len(ops) != len(sub)):
                raise InvalidInputError(
                    f"{where}[{name!r}] uses {sorted(map(str, sub))}; operators must be "
                    f"{', '.join(FILTER_OPERATORS)} and cannot be mixed with field names."
                )
            if not ops:
                _check_condition(sub, f"{where}[{name!r}]")


def matches_filter(value: Mapping[str, Any], flt: Mapping[str, Any] | None) -> bool:
    """LangGraph's filter semantics: every key must match (nested dicts and lists compare
    element-wise; ``$gt`` etc. compare as numbers and never match non-numbers)."""
    return not flt or all(_match(value.get(name), cond) for name, cond in flt.items())


def _match(actual: Any, cond: Any) -> bool:
    if isinstance(cond, Mapping):
        if any(isinstance(k, str) and k.startswith("$") for k in cond):
            return all(_apply(actual, op, operand) for op, operand in cond.items())
        return isinstance(actual, Mapping) and all(_match(actual.get(k), v) for k, v in cond.items())
    if isinstance(cond, (list, tuple)):
        return (
            isinstance(actual, (list, tuple))
            and len(actual) == len(cond)
            and all(_match(a, c) for a, c in zip(actual, cond))
        )
    return bool(actual == cond)


def _apply(actual: Any, op: str, operand: Any) -> bool:
    if op == "$eq":
        return bool(actual == operand)
    if op == "$ne":
        return bool(actual != operand)
    a, b = _number(actual), _number(operand)
    if a is None or b is None:
        return False
    return {"$gt": a > b, "$gte": a >= b, "$lt": a < b, "$lte": a <= b}[op]


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def namespace_matches(namespace: Sequence[str], conditions: Sequence[MatchCondition]) -> bool:
    """LangGraph's list_namespaces match: every prefix/suffix condition, ``*`` any label."""
    for cond in conditions:
        path = tuple(cond.path)
        if len(namespace) < len(path):
            return False
        if cond.match_type == "prefix":
            part = tuple(namespace[: len(path)])
        elif cond.match_type == "suffix":
            part = tuple(namespace[len(namespace) - len(path):]) if path else ()
        else:
            raise InvalidInputError(
                f"match_type must be 'prefix' or 'suffix', got {cond.match_type!r}."
            )
        if any(p != "*" and p != n for p, n in zip(path, part)):
            return False
    return True


def concrete_prefix(conditions: Sequence[MatchCondition]) -> tuple[str, ...]:
    """The longest wildcard-free leading part of the prefix conditions (may be empty)."""
    best: tuple[str, ...] = ()
    for cond in conditions:
        if cond.match_type != "prefix":
            continue
        lead: list[str] = []
        for label in cond.path:
            if label == "*":
                break
            lead.append(label)
        if len(lead) > len(best):
            best = tuple(lead)
    return best


def redacted_value(tags: Sequence[str]) -> dict[str, Any]:
    """The value a search shows for an item whose memory the core redacts for ``tags``: the
    core's placeholder text and the tags, as in a redacted memory
    (``{"text": "[redacted: pii]", "redacted_sensitivity": ["pii"]}``)."""
    return {"text": redacted_text(tags), REDACTED_KEY: list(tags)}
