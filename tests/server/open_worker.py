"""A process of tests/server/test_server_concurrent_open.py (run as a script).

    python open_worker.py DIR URL [URL ...]

Imports memos-core, writes ``DIR/ready-<pid>``, then for each ``URL`` in turn waits for the
test's ``DIR/go-<n>`` file (n counts the URLs from 0) and opens ``MemOS(URL)`` -- at the
same moment as the other workers, on a database none of them opened before -- adds one
memory and closes. It appends one line per URL to ``DIR/out-<pid>``: ``ok``, or ``FAILED``
with the exception's type and first line.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(folder: Path, urls: list[str]) -> None:
    from memos_core import MemOS, MemOSConfig

    out = folder / f"out-{os.getpid()}"
    (folder / f"ready-{os.getpid()}").touch()
    for n, url in enumerate(urls):
        deadline = time.time() + 300
        while not (folder / f"go-{n}").exists():
            if time.time() > deadline:
                raise TimeoutError(f"the test did not write go-{n} in time")
            time.sleep(0.002)
        try:
            with MemOS(url, config=MemOSConfig(show_progress=False, listen=False)) as mos:
                mos.add(f"note from {os.getpid()}", user_id="alice")
            line = "ok"
        except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
            first = (str(exc).splitlines() or [""])[0]
            line = f"FAILED {type(exc).__module__}.{type(exc).__name__}: {first}"
        with open(out, "a", encoding="utf-8") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
