"""A server-mode process of tests/server/test_server_dead_caches.py (run as a script).

    python cache_worker.py URL TEXT INFO KIND

Opens ``MemOS(URL)`` without ``cache_dir`` (a temporary cache directory under ``$TMPDIR``),
adds ``TEXT`` as user ``dana`` and writes a derived file holding it into its cache directory:
``KIND`` ``kv`` builds a real KV block with a tiny model, ``file`` writes the text into a
plain file (cheap). Then it writes ``{"id": ..., "cache": ...}`` to ``INFO`` (renamed into
place: complete when it exists) and waits -- for the test's SIGKILL, or for a ``stop`` file
beside ``INFO``, on which it closes and exits 0.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(url: str, text: str, info: Path, kind: str) -> None:
    from memos_core import MemOS, MemOSConfig

    mos = MemOS(url, config=MemOSConfig(show_progress=False, listen=False))
    cube = mos.add(text, user_id="dana")
    if kind == "kv":
        from memos_core.runtime import LocalModel

        mos.attach_model(LocalModel.tiny(seed=0))
        mos.engine.tier.get_or_build([cube])
    else:
        (mos.data_dir / "kv").mkdir(exist_ok=True)
        (mos.data_dir / "kv" / "derived.bin").write_text(text, encoding="utf-8")
    tmp = info.with_name(info.name + ".tmp")
    tmp.write_text(json.dumps({"id": cube.id, "cache": str(mos.data_dir)}), encoding="utf-8")
    tmp.rename(info)
    deadline = time.time() + 600
    while not info.with_name("stop").exists() and time.time() < deadline:
        time.sleep(0.1)
    mos.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4])
