"""The import graph of ``memos_core`` and its cycles (strongly connected components).

Reads every module under ``memos_core/`` with :mod:`ast` (nothing is imported), takes every
``import`` / ``from ... import`` of a ``memos_core`` module -- at module level, inside
functions and under ``TYPE_CHECKING`` alike, since each of them is a dependency a reader has
to follow -- and prints the strongly connected components with more than one module.

    python scripts/import_cycles.py            # cycles, largest first; exit 1 if any
    python scripts/import_cycles.py --edges    # also every edge

``tests/test_layering.py`` imports :func:`import_graph` and :func:`cycles` from here.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "memos_core"


def module_name(path: Path, root: Path = ROOT) -> str:
    """``memos_core/vault/sqlite.py`` -> ``memos_core.vault.sqlite`` (a package's
    ``__init__.py`` is the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(tree: ast.AST, module: str, is_package: bool, modules: set[str]) -> set[str]:
    """Names of the modules ``tree`` imports (relative imports resolved).

    ``from pkg import sub`` where ``pkg.sub`` is a module imports ``pkg.sub``, not ``pkg``
    (the package's ``__init__`` runs first, as a parent of every submodule does); a name
    that is not a module makes it an import of ``pkg`` itself."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = {f"{target}.{alias.name}" for alias in node.names}
            found.update(subs & modules)
            if not subs <= modules:
                found.add(target)
    return found


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports (only ones that exist as files)."""
    files = {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets = _imported(tree, name, path.name == "__init__.py", set(files))
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def strongly_connected(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; every component, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, list[str]]] = [(start, sorted(graph.get(start, ())))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph.get(nxt, ()))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    comp.append(member)
                    if member == node:
                        break
                out.append(sorted(comp))
    return out


def cycles(graph: Mapping[str, Iterable[str]] | None = None) -> list[list[str]]:
    """The import cycles: components of more than one module, largest first."""
    comps = strongly_connected(graph if graph is not None else import_graph())
    return sorted((c for c in comps if len(c) > 1), key=lambda c: (-len(c), c))


def main(argv: list[str]) -> int:
    graph = import_graph()
    found = cycles(graph)
    print(f"{len(graph)} modules, {sum(len(v) for v in graph.values())} import edges, "
          f"{len(found)} cycle(s)")
    for comp in found:
        print(f"cycle of {len(comp)}: " + ", ".join(comp))
    if "--edges" in argv:
        for src in sorted(graph):
            for dst in sorted(graph[src]):
                print(f"{src} -> {dst}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
