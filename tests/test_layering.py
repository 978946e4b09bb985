"""The layering of memos_core, enforced (docs/architecture.md, "Layers"; DESIGN.md "Next shape").

Read with :mod:`ast` by ``scripts/import_cycles.py`` (nothing is imported): every import
counts, at module level, in a function or under ``TYPE_CHECKING``.

* memos_core has no import cycle.
* Every module belongs to one layer and imports only its own layer or lower ones::

      facade (4)   memos_core, memos.py, aio, cli, demo, mcp
      models (3)   engine, chat, runtime, tiers, scheduler executor/background
      ops    (2)   ops/* (forget, share/revoke, bundle, compress, search) over the store
      kernel (1)   store/* (MemoryStore: vault + index + graph + embedder + locks + hooks)
      base   (0)   rules (cube, lifecycle, governance rules, scheduler policy, validation,
                   errors, results, config) and backends (vault, index, graph, embedding,
                   extraction, retrieval, KV/adapter file formats)

* The integrations (LangChain, LlamaIndex) import only ``memos_core`` (the public API) and
  ``memos_core.integration`` (the adapters' surface), and never reach into the core
  through ``sys.modules`` strings.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import import_cycles  # noqa: E402

FACADE, MODELS, OPS, KERNEL, BASE = 4, 3, 2, 1, 0

#: module-name prefix -> layer; the longest matching prefix wins.
LAYERS: dict[str, int] = {
    "memos_core": FACADE,  # the package __init__: the public API
    "memos_core.memos": FACADE,
    "memos_core.aio": FACADE,
    "memos_core.calls": FACADE,  # the calls running on a MemOS, which close() waits for
    "memos_core.cli": FACADE,
    "memos_core.cli_log": FACADE,  # what the command line prints of the library's log
    "memos_core.signals": FACADE,  # how the CLIs stop on SIGTERM (closing their store)
    "memos_core.demo": FACADE,
    "memos_core.mcp": FACADE,
    "memos_core.mcp_server": FACADE,
    "memos_core.integration": FACADE,  # the adapters' surface, over the facade
    "memos_core.engine": MODELS,
    "memos_core.chat": MODELS,
    "memos_core.chat_prompt": MODELS,  # the prompt's text and the rule that reads a chat
    "memos_core.chat_window": MODELS,  # fitting chat's prompt into the context window
    "memos_core.runtime": MODELS,
    "memos_core.tiers": MODELS,
    "memos_core.tiers.tempfiles": BASE,  # temporary paths and their leftovers (os only)
    "memos_core.scheduler": MODELS,  # the package exports the executor; policy is base
    "memos_core.ops": OPS,
    "memos_core.store": KERNEL,
    # base: rules and backends
    "memos_core.cube": BASE,
    "memos_core.lifecycle": BASE,
    "memos_core.errors": BASE,
    "memos_core.config": BASE,
    "memos_core.results": BASE,
    "memos_core.validation": BASE,
    "memos_core.messages": BASE,
    "memos_core.progress": BASE,
    "memos_core.lock": BASE,
    "memos_core.server_mode": BASE,  # opens the server-mode vault and cache dir
    "memos_core.governance": BASE,
    "memos_core.vault": BASE,
    "memos_core.index": BASE,
    "memos_core.graph": BASE,
    "memos_core.embedding": BASE,
    "memos_core.extraction": BASE,
    "memos_core.retrieval": BASE,
    "memos_core.runtime.errors": BASE,  # error types (the embedder's ONNX export raises them)
    "memos_core.runtime.loader": BASE,  # model files and their cache directory, no torch
    "memos_core.scheduler.policy": BASE,
    "memos_core.scheduler.consolidation": BASE,
    "memos_core.scheduler.report": BASE,
    "memos_core.testing": BASE,  # test servers (embedded PostgreSQL); imports nothing of the core
}

#: Known violations (none left since issue 13); an entry here must shrink, never grow.
KNOWN_UPWARD: set[tuple[str, str]] = set()
KNOWN_CYCLES: list[list[str]] = []

#: What the integrations may import: the public API and the documented helper surfaces.
PUBLIC_SURFACES = {
    "memos_core",  # the public API
    "memos_core.integration",  # the adapters' surface: keys, logs, checkpoints, tool specs, rules
}
KNOWN_PRIVATE_IMPORTS: set[tuple[str, str]] = set()


def layer_of(module: str) -> int:
    if module == "memos_core":
        return LAYERS[module]
    parts = module.split(".")
    for end in range(len(parts), 1, -1):  # "memos_core" alone is the package, not a prefix
        prefix = ".".join(parts[:end])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS in tests/test_layering.py")


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_cycles.import_graph()


def test_the_cycle_finder_finds_a_cycle() -> None:
    demo = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles.cycles(demo) == [["a", "b", "c"]]
    assert import_cycles.cycles({"a": {"b"}, "b": set()}) == []


def test_memos_core_has_no_import_cycle(graph: dict[str, set[str]]) -> None:
    found = import_cycles.cycles(graph)
    assert found == KNOWN_CYCLES, f"import cycles: {found}"


def test_every_module_has_a_layer_and_imports_only_its_own_or_lower(
    graph: dict[str, set[str]],
) -> None:
    upward = {(src, dst) for src, targets in graph.items() for dst in targets
              if layer_of(dst) > layer_of(src)}
    new = sorted(upward - KNOWN_UPWARD)
    assert not new, "a lower layer imports a higher one:\n" + "\n".join(f"{a} -> {b}" for a, b in new)
    gone = sorted(KNOWN_UPWARD - upward)
    assert not gone, f"fixed, remove from KNOWN_UPWARD: {gone}"


def test_no_lower_layer_imports_the_facade(graph: dict[str, set[str]]) -> None:
    facade = {m for m in graph if layer_of(m) == FACADE}
    bad = sorted((src, dst) for src, targets in graph.items() if layer_of(src) < FACADE
                 for dst in targets & facade)
    assert not [b for b in bad if b not in KNOWN_UPWARD], bad


def _core_imports(source: str) -> set[str]:
    """The memos_core modules a source imports -- and every ``"memos_core.x"`` string, the
    ``sys.modules`` back door."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value] if node.value.startswith("memos_core.") \
                and " " not in node.value else []
        found.update(n for n in names if n == "memos_core" or n.startswith("memos_core."))
    return found


def _integration_imports() -> set[tuple[str, str]]:
    """(file, memos_core module) for every core import in the integration packages' sources."""
    found: set[tuple[str, str]] = set()
    for path in sorted((ROOT / "integrations").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if "/tests/" in rel:
            continue
        found.update((rel, m) for m in _core_imports(path.read_text(encoding="utf-8")))
    return found


@pytest.mark.parametrize(("source", "allowed"), [
    ("from memos_core import MemOS", True),
    ("from memos_core.integration import put_by_key", True),
    ("import memos_core.integration", True),
    ("from memos_core.validation import check_name", False),
    ("from memos_core.governance.sensitivity import for_prompt", False),
    ("import memos_core.vault.sqlite", False),
    ("def f():\n    from memos_core.engine import engine_for", False),
    ("import sys\nsys.modules['memos_core.engine']", False),
])
def test_the_integration_rule_allows_only_the_two_surfaces(source: str, allowed: bool) -> None:
    assert (_core_imports(source) <= PUBLIC_SURFACES) is allowed


def test_integrations_import_only_public_surfaces() -> None:
    private = {(f, m) for f, m in _integration_imports() if m not in PUBLIC_SURFACES}
    new = sorted(private - KNOWN_PRIVATE_IMPORTS)
    assert not new, "integrations reach into memos_core internals:\n" + "\n".join(
        f"{f}: {m}" for f, m in new)
