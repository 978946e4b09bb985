"""Progress bars for bulk work (tqdm on stderr; silent when disabled or not a terminal)."""

from __future__ import annotations

import sys
from typing import Any


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress(total: int, desc: str, enabled: bool = True) -> Any:
    """A tqdm bar for ``total`` items, or a no-op object with the same two methods.

    Bars show for bulk work (over 100 items) on an interactive stderr, or always with
    ``MEMOS_PROGRESS=1``; ``MemOSConfig(show_progress=False)`` turns them off.
    """
    import os

    forced = os.environ.get("MEMOS_PROGRESS") == "1"
    if not enabled or (not forced and (total < 100 or not sys.stderr.isatty())):
        return _Silent()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="mem", file=sys.stderr)
