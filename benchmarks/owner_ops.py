"""An owner's work on their own memories when another user shares a big namespace with them.

"me" owns ``--own`` memories; "big" owns ``--shared``. Each operation "me" runs on their own
memories -- sharing and revoking their namespace, ``export``, ``schedule(user_id=...)``, the
consolidation candidates, a page of ``list`` -- is timed on two such stores, one where "big"
has shared its whole namespace with "me" and one where it has not (median of ``--repeat``
calls). Work on one's own memories
should not grow with what others share: the two columns should match.

Vectors come from a seeded hash of each text (``store_ops.SeededEmbedder``, no model): these
operations read and write the vault, and a model would only add the same embedding time to
both columns.

    python benchmarks/owner_ops.py --own 50 --shared 5000 [--pg]

``--pg``: server mode, each store a database of a PostgreSQL the script starts
(``LocalPostgres``, loopback) and stops after.

To compare with an older commit, run it with that commit's ``memos_core`` first on the path
(``git worktree add /tmp/old REV; PYTHONPATH=/tmp/old python benchmarks/owner_ops.py``); the
output names the ``memos_core`` it imported.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, markdown_machine  # noqa: E402
from store_ops import SeededEmbedder, median_ms, sentence  # noqa: E402


def operations(mos: Any, tmp: Path) -> dict[str, Callable[[], Any]]:
    """The operations "me" runs on their own memories, by name."""
    bundle = tmp / "bundle"

    def export() -> None:
        shutil.rmtree(bundle, ignore_errors=True)
        mos.export(bundle, user_id="me")

    def share_and_revoke() -> None:
        mos.share_namespace(with_user_id="friend", user_id="me")
        mos.revoke_namespace(with_user_id="friend", user_id="me")

    return {
        "share + revoke namespace": share_and_revoke,
        "export": export,
        "schedule(user_id)": lambda: mos.schedule(user_id="me"),
        "consolidation candidates": lambda: mos.engine.consolidation_candidates("me"),
        "list 10": lambda: mos.list(user_id="me", limit=10),
    }


def run(own: int, shared: int, repeat: int, seed: int, share: bool,
        server: Any = None) -> dict[str, float]:
    """The operations' median ms on a new store, with or without big's namespace shared
    with "me" (a store each: sharing and revoking adds versions that export then writes);
    with a ``server`` (``LocalPostgres``), in a new database of it."""
    from memos_core import MemOS, MemOSConfig

    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="memos-owner-") as name:
        tmp = Path(name)
        config = MemOSConfig(show_progress=False)
        where = tmp / "data" if server is None else server.create_database(
            f"owner_ops_{'shared' if share else 'alone'}")
        with MemOS(where, embedder=SeededEmbedder(), config=config) as mos:
            mos.add_many([sentence(rng) for _ in range(own)], user_id="me")
            for start in range(0, shared, 500):
                mos.add_many([sentence(rng) for _ in range(min(500, shared - start))],
                             user_id="big")
            if share:
                mos.share_namespace(with_user_id="me", user_id="big")
            return {k: median_ms(call, repeat) for k, call in operations(mos, tmp).items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--own", type=int, default=50, help="memories 'me' owns")
    p.add_argument("--shared", type=int, default=5000, help="memories 'big' shares with 'me'")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", type=Path)
    p.add_argument("--pg", action="store_true",
                   help="server mode: a PostgreSQL vault (a server the script starts)")
    a = p.parse_args()
    os.environ.setdefault("MEMOS_PROGRESS", "0")
    import memos_core

    server = None
    if a.pg:
        from memos_core.testing.postgres import LocalPostgres

        server = LocalPostgres().start()
    try:
        result = {"before": run(a.own, a.shared, a.repeat, a.seed, share=False, server=server),
                  "after": run(a.own, a.shared, a.repeat, a.seed, share=True, server=server)}
    finally:
        if server is not None:
            server.close()
    mode = "server mode (PostgreSQL, loopback)" if a.pg else "embedded mode"
    print(markdown_machine(machine_info()))
    print(f"{mode}; memos_core from {Path(memos_core.__file__).parent}; load average "
          f"{os.getloadavg()[0]:.1f}; 'me' owns {a.own}, 'big' shares {a.shared}; median of "
          f"{a.repeat} calls, ms")
    print()
    print("| operation by 'me' | nothing shared with 'me' | big's namespace shared |")
    print("|---|---|---|")
    for name, ms in result["before"].items():
        print(f"| {name} | {ms} | {result['after'][name]} |")
    if a.out:
        a.out.write_text(json.dumps({"machine": machine_info(), "mode": mode, "own": a.own,
                                     "shared": a.shared, **result}, indent=2))


if __name__ == "__main__":
    main()
