"""Docs that run: every code block in README.md and docs/*.md, as written.

* Every fenced block names its language. ``python`` blocks are executed; ``python slow``
  blocks too, marked slow (they load SmolLM2-135M); other languages (``bash``, ``text``,
  ``toml``...) are shown, not run.
* A Python block runs on its own: a fresh namespace, a fresh temporary working directory
  (so ``MemOS("./memdata")`` is its own store), no top-level ``await``. It must import what it
  uses and build what it needs (a scripted fake where an LLM is needed).
* docs/*.md is found by glob, so a new page is covered as soon as it exists.

The table of ``docs/api.md`` is compared with the facade's real signatures in
``test_api_table_matches_the_code``.
"""

from __future__ import annotations

import ast
import gc
import inspect
import os
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# llama-index's FunctionAgent (docs/llamaindex.md) inspects its members, touching pydantic's
# deprecated attributes; the warnings are theirs, not the docs'.
pytestmark = [pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20"),
              pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211")]

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})(?P<info>[^\n]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$",
                   re.MULTILINE | re.DOTALL)
SHOWN_ONLY = {"bash", "sh", "shell", "zsh", "console", "powershell", "text", "toml", "json",
              "jsonl", "yaml", "ini", "env", "dockerfile", "mermaid", "diff", "sql", "http",
              "html", "xml", "csv", "javascript", "js", "typescript", "ts", "pycon"}


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    language: str
    flags: tuple[str, ...]
    code: str

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        info = match.group("info").split()
        line = text.count("\n", 0, match.start()) + 1
        language = info[0].lower() if info else ""
        found.append(Block(page, line, "python" if language == "py" else language,
                           tuple(info[1:]), match.group("body")))
    return found


ALL = [b for page in PAGES for b in blocks(page)]
PYTHON = [b for b in ALL if b.language == "python"]


def test_every_block_names_its_language() -> None:
    unnamed = [b.name for b in ALL if not b.language]
    assert not unnamed, f"label these code blocks (```python, ```bash, ```text ...): {unnamed}"
    unknown = [f"{b.name} ({b.language})" for b in ALL
               if b.language != "python" and b.language not in SHOWN_ONLY]
    assert not unknown, f"unknown block languages (add them to SHOWN_ONLY if not Python): {unknown}"
    bad_flags = [b.name for b in PYTHON if set(b.flags) - {"slow"}]
    assert not bad_flags, f"python blocks take only the flag 'slow': {bad_flags}"
    assert len(PYTHON) >= 15  # the pages this test was written against have at least this many


@pytest.mark.parametrize("block", [
    pytest.param(b, id=b.name, marks=[pytest.mark.slow] if "slow" in b.flags else [])
    for b in PYTHON
])
def test_python_block_runs_as_written(block: Block, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    tree = ast.parse(block.code, filename=block.name)  # a syntax error names the block
    awaits = [n for n in ast.walk(tree) if isinstance(n, (ast.Await, ast.AsyncFor, ast.AsyncWith))
              and not _inside_async_def(tree, n)]
    assert not awaits, f"{block.name}: top-level await; wrap it in asyncio.run(...)"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEMOS_DATA_DIR", str(tmp_path / "default-data"))
    module = types.ModuleType("docs_block")  # a real module: dataclasses look classes up in it
    monkeypatch.setitem(sys.modules, module.__name__, module)
    try:
        exec(compile(tree, block.name, "exec"), module.__dict__)  # noqa: S102 - our own docs
    finally:
        _close_leftovers(module.__dict__)


def _inside_async_def(tree: ast.AST, node: ast.AST) -> bool:
    for func in ast.walk(tree):
        if isinstance(func, ast.AsyncFunctionDef) and any(n is node for n in ast.walk(func)):
            return True
    return False


def _close_leftovers(namespace: dict[str, Any]) -> None:
    """A block that forgot to close its MemOS must not hold the lock for the next one."""
    from memos_core import MemOS

    for value in namespace.values():
        if isinstance(value, MemOS) and not value.closed:
            value.close()
    gc.collect()


# ---------------------------------------------------------------- docs/api.md


def _api_rows() -> dict[str, str]:
    """``name -> the call as the table writes it``, for each ``name(...)`` in a row's first
    cell (a cell may list several, e.g. ``share(...)`, `revoke(...)``)."""
    rows: dict[str, str] = {}
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    table = text.split("| call | returns | notes |", 1)[1].split("\n\n", 1)[0]
    for line in table.splitlines()[2:]:
        first = line.split(" | ", 1)[0].lstrip("| ")
        for call in re.findall(r"`([A-Za-z_]\w*\((?:[^`])*\))`", first):
            rows[call.split("(", 1)[0]] = call
    return rows


def _documented_params(call: str) -> list[str]:
    inside = call[call.index("(") + 1: call.rindex(")")]
    if inside.strip() in ("", "..."):
        return []
    names = []
    for part in inside.split(","):
        part = part.strip()
        if part in ("*", "..."):
            continue
        names.append(part.split("=", 1)[0].strip().lstrip("*"))
    return names


def test_api_table_matches_the_code() -> None:
    from memos_core import MemOS

    rows = _api_rows()
    assert len(rows) >= 25, sorted(rows)
    problems = []
    for name, call in rows.items():
        target = MemOS.__init__ if name == "MemOS" else getattr(MemOS, name, None)
        if target is None:
            problems.append(f"{name}: documented, but MemOS has no such method")
            continue
        if call.endswith("(...)"):
            continue  # "same arguments as the previous call", e.g. revoke_namespace(...)
        real = [p for p in inspect.signature(target).parameters if p != "self"]
        documented = _documented_params(call)
        if name in ("add_many",):
            real = [p for p in real if p != "defaults"]
            documented = [p for p in documented if p != "defaults"]
        if documented != real:
            problems.append(f"{name}: docs say ({', '.join(documented)}), code has "
                            f"({', '.join(real)})")
        kinds = {p.name: p.kind for p in inspect.signature(target).parameters.values()}
        star = call.find("*,") if "*," in call else call.find("*)")
        keyword_only = {n for n, k in kinds.items() if k is inspect.Parameter.KEYWORD_ONLY}
        if keyword_only and star < 0:
            problems.append(f"{name}: the code's keyword-only arguments need a '*' in the docs")
    assert not problems, "docs/api.md is out of date:\n" + "\n".join(problems)


def test_every_public_method_is_in_the_api_table_with_its_async_twin() -> None:
    from memos_core import MemOS

    rows = _api_rows()
    public = {n for n, v in vars(MemOS).items() if callable(v) and not n.startswith("_")}
    for base in MemOS.__mro__[1:-1]:
        public |= {n for n, v in vars(base).items() if callable(v) and not n.startswith("_")}
    syncs = {n for n in public if not (n.startswith("a") and n[1:] in public)}
    missing = sorted(syncs - set(rows) - {"closed"})
    assert not missing, f"public MemOS methods missing from docs/api.md: {missing}"
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    twins = sorted(n for n in rows if n != "MemOS" and hasattr(MemOS, "a" + n))
    without = sorted(n for n in rows if n != "MemOS" and not hasattr(MemOS, "a" + n))
    line = re.search(r"Async twins: (.*)\.", text)
    assert line, "docs/api.md must list which methods have async twins ('Async twins: ...')"
    listed = set(re.findall(r"`a(\w+)`", line.group(1)))
    assert listed == set(twins), (
        f"async twins in the code: {twins}; listed: {sorted(listed)}; none for {without}")


def test_docs_test_runs_offline() -> None:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


# ---------------------------------------------------------------- `memos` command lines


def _memos_command_lines() -> list[tuple[str, str]]:
    """``(where, command line)`` for every ``memos ...`` in the pages' shell blocks and in
    their inline code spans that give options (a bare ``memos reindex`` names a command)."""
    found = []
    for b in ALL:
        if b.language in ("bash", "sh", "shell", "console"):
            for line in b.code.splitlines():
                for part in re.split(r"&&|\|", line.split(" #", 1)[0]):
                    if re.match(r"\s*(\S*/)?memos\s", part):
                        found.append((b.name, part.strip()))
    for page in PAGES:
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
            for span in re.findall(r"`(memos [^`]*--[^`]*)`", line):
                if " / " not in span and "COMMAND" not in span:
                    found.append((f"{page.relative_to(ROOT)}:{n}", span))
    return found


def _parses(argv: list[str]) -> bool:
    import contextlib
    import io

    from memos_core.cli import _parser

    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            _parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code == 0  # --help
    return True


@pytest.mark.parametrize("where, line", _memos_command_lines())
def test_documented_command_lines_parse(where: str, line: str) -> None:
    """Placeholders stand for values: ``<id>`` and ``...`` for an argument (or for the
    command, after the options), ``[--opt V]`` for an optional group."""
    import argparse
    import shlex

    from memos_core.cli import _parser

    words = [w.strip("[]") for w in shlex.split(line)[1:]]
    words = ["x" if w.startswith("<") else w for w in words]
    commands = next(set(a.choices) for a in _parser()._actions
                    if isinstance(a, argparse._SubParsersAction))
    variants = [[w for w in words if w != "..."], ["x" if w == "..." else w for w in words]]
    variants += [v + ["stats"] for v in variants if not commands & set(v)]
    assert any(_parses(v) for v in variants), f"{where}: `{line}` does not parse"


#: a results file named by its path, or by its dated name (``kv_ttft_2026-12-07.txt``)
RESULTS_FILE = re.compile(r"benchmarks/results/[\w.-]+\.(?:txt|json|md)\b"
                          r"|\b[\w.-]+_20\d\d-\d\d-\d\d[\w.-]*\.(?:txt|json|md)\b")
SCRIPT = re.compile(r"\bbenchmarks/\w+\.py\b")


def test_every_cited_results_file_and_benchmark_script_exists() -> None:
    """The docs quote only numbers a script printed, each with the file holding that output:
    a cited file that is not in ``benchmarks/results/`` (renamed, never committed) or a
    script that is not in ``benchmarks/`` leaves a number without its source."""
    pages = [*PAGES, *sorted((ROOT / "notebooks").glob("*.ipynb")),
             *sorted((ROOT / "integrations").glob("*/README.md"))]
    missing, seen = [], 0
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for match in RESULTS_FILE.finditer(text):
            seen += 1
            name = match.group(0).rsplit("/", 1)[-1]
            if not (ROOT / "benchmarks" / "results" / name).is_file():
                missing.append(f"{page.relative_to(ROOT)}: {match.group(0)}")
        for match in SCRIPT.finditer(text):
            seen += 1
            if not (ROOT / match.group(0)).is_file():
                missing.append(f"{page.relative_to(ROOT)}: {match.group(0)}")
    assert seen > 50, "the patterns found almost no citation: they no longer match the docs"
    assert missing == [], "cited but not in the repository:\n" + "\n".join(missing)
