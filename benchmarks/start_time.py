"""Cold start: ``import memos_core`` and the first ``add`` of a new process, per source tree.

Each measurement is a fresh interpreter (nothing cached in the process), repeated ``--runs``
times; the table shows the median and the range. Columns:

* ``import``: wall time of ``import memos_core``;
* ``qdrant_client``: whether that import pulled in qdrant_client (it costs seconds and the
  default embedded index never needs it);
* ``open``: ``MemOS(tmp, config=MemOSConfig(show_progress=False))``;
* ``first add``: the first ``mos.add`` (loads the embedder: sentence-transformers, torch);
* ``first add_many``: then the first ``mos.add_many`` of ``--add-many`` memories (default 8;
  where the default embedder is onnx+bf16, one large enough loads its bf16 side: torch and
  the model's weights);
* ``peak RSS``: the process's peak resident memory at the end (MiB);
* ``stderr lines``: what the process printed on stderr with ``show_progress=False`` (progress
  bars, warnings); 0 is quiet.

Compare two checkouts, e.g. before and after a change::

    git -C . archive <rev> | tar -x -C /tmp/before
    python benchmarks/start_time.py --src before=/tmp/before --src after=.

Each ``--src`` is put first on ``PYTHONPATH`` for the child processes, so the same installed
dependencies run both trees.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, markdown_machine  # noqa: E402

CHILD = r"""
import json, resource, sys, tempfile, time
N = int(sys.argv[1])
t0 = time.perf_counter()
import memos_core
t1 = time.perf_counter()
qdrant = "qdrant_client" in sys.modules
from memos_core import MemOS, MemOSConfig
t2 = time.perf_counter()
mos = MemOS(tempfile.mkdtemp(), config=MemOSConfig(show_progress=False))
t3 = time.perf_counter()
mos.add("Alice's bike is a green Brompton.", user_id="alice")
t4 = time.perf_counter()
mos.add_many([f"Note {i}: Alice rode her bike to the market with {i % 7} friends."
              for i in range(N)], user_id="alice")
t5 = time.perf_counter()
mos.close()
print(json.dumps({"import_ms": 1000 * (t1 - t0), "qdrant_client": qdrant,
                  "open_ms": 1000 * (t3 - t2), "first_add_ms": 1000 * (t4 - t3),
                  "first_add_many_ms": 1000 * (t5 - t4),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(src: Path, runs: int, add_many: int = 8) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("MEMOS_PROGRESS", None)
    rows = []
    stderr_lines = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", CHILD, str(add_many)], capture_output=True,
                              text=True, env=env, cwd=src, timeout=600, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        stderr_lines.append(len([line for line in done.stderr.replace("\r", "\n").splitlines()
                                 if line.strip()]))
    out: dict[str, object] = {"qdrant_client": rows[0]["qdrant_client"],
                              "stderr_lines": max(stderr_lines)}
    for key in ("import_ms", "open_ms", "first_add_ms", "first_add_many_ms", "peak_rss_mib"):
        values = [float(r[key]) for r in rows]
        out[key] = (statistics.median(values), min(values), max(values))
    return out


def _cell(stat: tuple[float, float, float]) -> str:
    median, low, high = stat
    return f"{median:.0f} ({low:.0f}-{high:.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", action="append", default=[],
                        help="LABEL=PATH of a source tree (repeatable; default: this checkout)")
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per tree")
    parser.add_argument("--add-many", type=int, default=8,
                        help="memories in the add_many after the first add")
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    trees = [s.split("=", 1) if "=" in s else [s, s] for s in args.src] or [
        ["this checkout", str(Path(__file__).resolve().parents[1])]]
    results = {label: measure(Path(path).resolve(), args.runs, args.add_many)
               for label, path in trees}
    print(markdown_machine(machine_info()))
    print()
    print(f"{args.runs} fresh processes per tree; median (min-max), milliseconds unless named")
    print()
    print("| tree | import memos_core | imports qdrant_client | MemOS open | first add | "
          f"first add_many ({args.add_many}) | peak RSS MiB | stderr lines |")
    print("|---|---|---|---|---|---|---|---|")
    for label, r in results.items():
        print(f"| {label} | {_cell(r['import_ms'])} | {'yes' if r['qdrant_client'] else 'no'} | "
              f"{_cell(r['open_ms'])} | {_cell(r['first_add_ms'])} | "
              f"{_cell(r['first_add_many_ms'])} | {_cell(r['peak_rss_mib'])} | "
              f"{r['stderr_lines']} |")
    if args.out:
        args.out.write_text(json.dumps({"machine": machine_info(), "runs": args.runs,
                                        "add_many": args.add_many,
                                        "results": results}, indent=2))


if __name__ == "__main__":
    main()
