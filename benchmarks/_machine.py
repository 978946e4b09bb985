"""Machine and library versions, printed with every benchmark table."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
import platform
from importlib import metadata
from typing import Any

PACKAGES = ("memos-core", "qdrant-edge-py", "qdrant-client", "sentence-transformers", "torch",
            "transformers", "peft", "networkx")


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem_gb,
            "platform": platform.platform(), "python": platform.python_version(), "versions": versions}


def markdown_machine(info: dict[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    return (f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_gb']} GiB, "
            f"{info['platform']}, Python {info['python']}\nversions: {versions}")


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
