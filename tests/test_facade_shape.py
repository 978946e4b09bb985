"""The facade's shape: every public method has a typed async twin, no mixins, and the model
engine belongs to the instance (no module-global registry)."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import memos_core.engine as engine_module
from memos_core import MemOS
from memos_core.aio import twin

#: public names that are not operations (attributes, properties, context-manager protocol)
NOT_OPERATIONS = {"closed", "vault", "index", "graph", "embedder", "extractor", "retriever",
                  "engine", "store", "config", "data_dir", "loaded_model"}
#: registration methods take a callable and return at once: no I/O to move off the loop
SYNC_ONLY = {"on_change", "on_close", "on_forget"}


def public_methods() -> list[str]:
    return sorted(name for name, value in vars(MemOS).items()
                  if not name.startswith("_") and callable(value) and not isinstance(value, twin)
                  and not inspect.iscoroutinefunction(value)
                  and name not in NOT_OPERATIONS | SYNC_ONLY)


def test_every_public_method_has_an_async_twin_with_its_signature() -> None:
    methods = public_methods()
    assert {"add", "search", "forget", "chat", "stats", "verify_audit", "share_namespace"} <= set(methods)
    missing = [m for m in methods if not hasattr(MemOS, f"a{m}")]
    assert not missing, f"no async twin: {missing}"
    for name in methods:
        twin_attr = vars(MemOS)[f"a{name}"]
        if isinstance(twin_attr, twin):
            assert twin_attr.method is vars(MemOS)[name], name
        else:  # hand-written (achat wraps a stream): same parameters
            sync = inspect.signature(vars(MemOS)[name])
            assert inspect.signature(twin_attr).parameters.keys() == sync.parameters.keys(), name


def test_a_twin_is_a_coroutine_function_with_the_sync_signature(mos: MemOS) -> None:
    assert inspect.iscoroutinefunction(mos.asearch)
    assert inspect.signature(mos.asearch) == inspect.signature(mos.search)
    assert "Async twin of :meth:`search`" in (mos.asearch.__doc__ or "")

    async def scenario() -> tuple[int, list[str]]:
        cube = await mos.aadd("Twins share one signature.", user_id="u", tags=["t"])
        await mos.aupdate(cube.id, "Twins share one typed signature.", user_id="u")
        listed = await mos.alist(user_id="u", tags=["t"])
        stats = await mos.astats(user_id="u")
        return stats["vault"]["memories"], [c.text for c in listed]

    count, texts = asyncio.run(scenario())
    assert count == 1 and texts == ["Twins share one typed signature."]


def test_the_facade_has_no_mixins() -> None:
    assert MemOS.__mro__ == (MemOS, object)


def test_the_engine_is_owned_by_the_instance(mos: MemOS) -> None:
    assert not hasattr(engine_module, "_registry")
    assert mos._engine is None and mos.loaded_model() is None  # opening makes no engine
    engine = mos.engine
    assert engine is mos.engine and engine_module.engine_for(mos) is engine
    assert engine.store is mos.store and not engine.model_loaded
    assert mos.loaded_model() is None  # asking never loads a model


def test_every_error_the_api_reference_lists_is_importable_from_the_package() -> None:
    """docs/api.md's table of errors names classes users catch: each is a top-level name."""
    import re
    from pathlib import Path

    import memos_core
    from memos_core import errors

    listed = set(re.findall(r"^\| `(\w+Error)` \|",
                            (Path(__file__).parents[1] / "docs" / "api.md").read_text(), re.M))
    defined = {n for n, v in vars(errors).items()
               if isinstance(v, type) and issubclass(v, errors.MemOSError)}
    assert "ConflictError" in listed and listed <= defined
    assert all(getattr(memos_core, n) is getattr(errors, n) for n in defined)
    assert defined <= set(memos_core.__all__)


def test_a_twin_given_arguments_its_method_does_not_take_raises_the_methods_error(
        mos: MemOS) -> None:
    """``aget``/``alist``/``ahistory`` go through native helpers (server mode): a missing
    argument or a typo raised a TypeError naming ``native_get()`` or ``_list_query()``."""
    calls = [("get", (), {"user_id": "alice"}),
             ("get", ("00000000-0000-4000-8000-000000000001",), {"user_id": "a", "versoin": 2}),
             ("history", (), {"user_id": "alice"}),
             ("list", ("alice",), {}),
             ("list", (), {"user_id": "alice", "limt": 5})]

    def error(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        try:
            result = method(*args, **kwargs)
            if inspect.iscoroutine(result):
                asyncio.run(result)
        except TypeError as exc:
            return str(exc)
        raise AssertionError("no TypeError")

    for name, args, kwargs in calls:
        sync = error(getattr(mos, name), args, kwargs)
        twin_error = error(getattr(mos, f"a{name}"), args, kwargs)
        assert twin_error == sync and f"{name}()" in sync, (name, sync, twin_error)
