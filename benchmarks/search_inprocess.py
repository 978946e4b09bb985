"""The in-process part of a MemOS search, this checkout against a reference commit, side by side.

Both versions of ``memos_core`` are loaded into one process (the reference from ``git
archive REF memos_core`` into a temporary folder; ``sys.modules`` is switched to a version's
modules before each of its calls), each ingests the LoCoMo dev conversations into its own
embedded store (SQLite + qdrant-edge) with the same ONNX MiniLM vectors (one memo of text -> vector,
query vectors computed beforehand: the model is not compared), and every question
is searched on both, in an order that alternates per question, so that load from other jobs
falls on both alike. For each version: search p50 / p95, and the mean / p95 ms of each stage
(query embedding, dense+BM25, entity hop, graph expansion, vault read, second stage, and the
rest: fusion, candidate building, sorting, the facade's work outside the stages). The
memory ids are the same in both stores (seeded), and the reference searches this checkout's
index, so both rank the same dense and BM25 hits: every search's hits (ids and exact scores)
must be the same on both versions (the script fails if not; ``--expect-differences`` for a
ranking change: it counts them), and it prints recall@5/10/20 and MRR of both.

    python benchmarks/search_inprocess.py --ref acb5635 --out search_inprocess.json

With ``--server``, both versions run in server mode instead: each opens ``MemOS(url)`` on its
own database of one PostgreSQL (``LocalPostgres``, started by the script), so each searches
its own pgvector index (the same vectors, so the same dense and BM25 scores) and reads its own
vault: what is compared is then the whole server-side search path as well.

    python benchmarks/search_inprocess.py --server --ref 267a52a

With ``--embed-queries``, each search embeds its query with the model (each version's own
query cache; the vectors are the same on both, the model being deterministic for one text),
so that a change in what overlaps the query embedding is measured too.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import StageTimer as _StageTimer  # noqa: E402
from _machine import machine_info, markdown_machine, markdown_server, server_versions  # noqa: E402
from locomo_retrieval import CATEGORIES, KS, normalise_evidence, score, turns_of  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: (stage, part of the MemOS, attribute); see _machine.StageTimer for nested stages
STAGES = (("query embedding", "query_vectors", "get"),
          ("dense+bm25", "index_module", "search_hybrid"),
          ("entity hop", "hybrid_module", "entity_hop"),
          ("list speaker", "retriever", "_list_speaker"),
          ("graph expansion", "retriever", "_expand"),
          # the vault read, or the cached hits that stand for it (the store's method, where
          # the checkout has one; the vault's read inside it counts for it)
          ("vault read", "store", "current_for_search"), ("vault read", "vault", "get_many"),
          # the second stage: in memos_core/ops/search.py since 2026-12-07, in the facade's
          # module before (a version has one or the other)
          ("second stage", "search_module", "rerank"), ("second stage", "memos_module", "rerank"))


def _is_ours(name: str) -> bool:
    return name == "memos_core" or name.startswith("memos_core.")


def load_version(path: Path | None) -> dict[str, Any]:
    """The modules of ``memos_core`` from ``path`` (None: this checkout), imported anew and
    taken out of ``sys.modules`` again (what was there is put back)."""
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if _is_ours(k)}
    if path is not None:
        sys.path.insert(0, str(path))
    try:
        import memos_core  # noqa: F401
        import memos_core.embedding.onnx  # noqa: F401
        import memos_core.memos  # noqa: F401
        import memos_core.retrieval.hybrid  # noqa: F401
        import memos_core.testing.postgres  # noqa: F401

        mods = {k: m for k, m in sys.modules.items() if _is_ours(k)}
    finally:
        if path is not None:
            sys.path.remove(str(path))
        for k in [k for k in sys.modules if _is_ours(k)]:
            del sys.modules[k]
        sys.modules.update(saved)
    origin = Path(mods["memos_core"].__file__).resolve().parent
    expected = (path / "memos_core") if path is not None else ROOT / "memos_core"
    if origin != expected.resolve():
        raise SystemExit(f"loaded memos_core from {origin}, expected {expected}")
    return mods


def use(mods: dict[str, Any]) -> None:
    """Make ``mods`` the ``memos_core`` modules that imports inside functions find."""
    for k in [k for k in sys.modules if _is_ours(k)]:
        del sys.modules[k]
    sys.modules.update(mods)


class StageTimer(_StageTimer):
    """The stages of one MemOS's search path, timed (``_machine.StageTimer``), with the
    modules of the version ``mods`` holds."""

    def __init__(self, mos: Any, mods: dict[str, Any]) -> None:
        super().__init__({"query_vectors": mos.retriever.query_vectors,
                          "retriever": mos.retriever, "vault": mos.vault, "store": mos.store,
                          "memos_module": mods["memos_core.memos"],
                          "search_module": mods.get("memos_core.ops.search"),
                          "hybrid_module": mods["memos_core.retrieval.hybrid"],
                          "index_module": mods["memos_core.retrieval.hybrid"]}, STAGES)


class Converting:
    """An index of one version called by the other: the filter and sparse vector arguments
    (dataclasses of the caller's ``memos_core.index.base``) become the index's own."""

    def __init__(self, inner: Any, mods: dict[str, Any]) -> None:
        self.inner = inner
        base = mods["memos_core.index.base"]
        self.kinds = {"IndexFilter": base.IndexFilter, "SparseVec": base.SparseVec}

    def _own(self, value: Any) -> Any:
        kind = self.kinds.get(type(value).__name__)
        if kind is None or isinstance(value, kind):
            return value
        return kind(**{f.name: getattr(value, f.name) for f in dataclasses.fields(value)})

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return attr(*map(self._own, args), **{k: self._own(v) for k, v in kwargs.items()})
        return call


class SameVectors:
    """The ONNX embedder behind a text -> vector memo shared by both stores: its float32
    results can differ in the last bits between calls, and the comparison needs the same
    vectors on both sides. Query vectors are computed before the timed searches (the model
    is not what is compared: the query embedding stage reads the memo on both versions)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.dim, self.name = inner.dim, inner.name
        self.memo: dict[str, Any] = {}
        #: embed with the model on every call (``--embed-queries``, while searching)
        self.live = False

    def embed(self, texts: Any) -> Any:
        import numpy as np

        if self.live:
            return self.inner.embed(texts)
        todo = [t for t in dict.fromkeys(texts) if t not in self.memo]
        if todo:
            for t, v in zip(todo, self.inner.embed(todo)):
                self.memo[t] = v
        return np.stack([self.memo[t] for t in texts]) if texts else self.inner.embed(texts)


def ms_stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"mean": round(statistics.fmean(ordered), 2),
            "p50": round(ordered[len(ordered) // 2], 2),
            "p95": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/locomo/locomo_dev.json")
    p.add_argument("--ref", default="HEAD", help="the reference commit (git archive of memos_core)")
    p.add_argument("--conversations", type=int, default=None, help="only the first N")
    p.add_argument("--seed", type=int, default=7, help="seeds the memory ids (same in both stores)")
    p.add_argument("--out", type=Path, help="write the JSON result here")
    p.add_argument("--expect-differences", action="store_true",
                   help="the two versions rank differently (a ranking change): count the "
                   "searches that differ and compare quality and speed, without failing")
    p.add_argument("--server", action="store_true",
                   help="both versions in server mode (MemOS(url), one database each)")
    p.add_argument("--embed-queries", action="store_true",
                   help="embed each query with the model while searching (each version's own "
                   "query cache), so the query embedding stage and what overlaps it are timed")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    samples = json.loads(args.data.read_text())[: args.conversations]
    with tempfile.TemporaryDirectory() as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        ref_dir = tmp / "ref"
        ref_dir.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.ref, "memos_core"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(ref_dir)], input=archive, check=True)
        ref_sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.ref],
                                 check=True, capture_output=True, text=True).stdout.strip()
        versions = {f"reference ({ref_sha})": load_version(ref_dir),
                    "this checkout": load_version(None)}
        names = list(versions)
        use(versions["this checkout"])
        embedder = SameVectors(versions["this checkout"]["memos_core.embedding.onnx"]
                               .OnnxEmbedder("minilm"))
        embedder.embed(["warm up"])
        if not args.embed_queries:
            embedder.embed([str(qa["question"]) for sample in samples for qa in sample["qa"]])
        stores: dict[str, Any] = {}
        server = None
        server_side: dict[str, str] = {}
        if args.server:
            server = stack.enter_context(
                versions["this checkout"]["memos_core.testing.postgres"].LocalPostgres())
            server_side = server_versions(server.create_database("versions"))
        for i, (name, mods) in enumerate(versions.items()):
            use(mods)
            core = mods["memos_core"]
            where = tmp / name.split()[0] if server is None else server.create_database(f"ab_{i}")
            stores[name] = core.MemOS(where, embedder=embedder,
                                      config=core.MemOSConfig(show_progress=False))
        lat: dict[str, list[float]] = {n: [] for n in names}
        stages: dict[str, list[dict[str, float]]] = {n: [] for n in names}
        rows: dict[str, list[tuple[int, dict[str, float]]]] = {n: [] for n in names}
        mismatches = 0
        asked = 0
        real_uuid4 = uuid.uuid4
        load_start = os.getloadavg()
        for sample in samples:
            user = sample["sample_id"]
            items = turns_of(sample)
            last = max((i["occurred_at"] for i in items if i["occurred_at"]), default=None)
            dia: dict[str, dict[str, str]] = {}
            embedder.live = False
            for name, mos in stores.items():
                use(versions[name])
                # the same memory ids in both stores: ties in score are ordered by id
                rng = random.Random(f"{args.seed}:{user}")
                uuid.uuid4 = lambda rng=rng: uuid.UUID(int=rng.getrandbits(128), version=4)
                try:
                    cubes = mos.add_many(items, user_id=user)
                finally:
                    uuid.uuid4 = real_uuid4
                dia[name] = {c.id: c.metadata["dia_id"] for c in cubes}
                if last is not None:  # relative query dates count back from the last day
                    mos.retriever.now = lambda last=last: last
            # the reference searches this checkout's index (the same memory ids): both rank
            # the same dense and BM25 hits (two indexes of the same vectors differ in the
            # last bits of their float32 scores, and so at times in their 50th hit)
            embedder.live = args.embed_queries
            if server is None:
                stores[names[0]].retriever.index = Converting(stores[names[1]].retriever.index,
                                                              versions[names[1]])
            for qa in sample["qa"]:
                if qa.get("category") not in CATEGORIES:
                    continue
                evidence = [e for e in normalise_evidence(qa.get("evidence", []))
                            if e in dia[names[0]].values()]
                if not evidence:
                    continue
                q = str(qa["question"])
                found: dict[str, list[tuple[str, float]]] = {}
                order = names if asked % 2 == 0 else names[::-1]
                asked += 1
                for name in order:
                    mos, mods = stores[name], versions[name]
                    use(mods)
                    timer = StageTimer(mos, mods)
                    hits, total = timer.run(mos.search, q, user_id=user, k=max(KS),
                                            record_usage=False)
                    stages[name].append(timer.spent)
                    lat[name].append(total)
                    ranked = [dia[name][h.id] for h in hits]
                    found[name] = [(d, h.score) for d, h in zip(ranked, hits)]
                    rows[name].append((qa["category"], score(ranked, evidence)))
                if found[names[0]] != found[names[1]]:
                    mismatches += 1
                    if not args.expect_differences:
                        print(f"differs: {q!r}\n  {found[names[0]]}\n  {found[names[1]]}",
                              file=sys.stderr)
                if asked % 200 == 0:
                    print(f"{asked} questions, load {os.getloadavg()[0]:.1f}", file=sys.stderr)
        load_end = os.getloadavg()
        for name, mos in stores.items():
            use(versions[name])
            mos.close()
    from locomo_retrieval import aggregate

    stage_names = list(dict.fromkeys(s for s, *_ in STAGES)) + ["rest"]
    result: dict[str, Any] = {
        "ref": ref_sha, "mode": "server" if args.server else "embedded",
        "embed_queries": args.embed_queries,
        "questions": asked, "searches_differing": mismatches,
        "load_avg_start": [round(x, 2) for x in load_start],
        "load_avg_end": [round(x, 2) for x in load_end], "machine": machine_info(),
        "server_versions": server_side,
        "versions": {n: {"search_ms": ms_stats(lat[n]),
                         "stages_ms": {s: ms_stats([d.get(s, 0.0) for d in stages[n]])
                                       for s in stage_names},
                         "quality": aggregate(rows[n])["overall"]} for n in names}}
    print(markdown_machine(result["machine"]))
    if server_side:
        print(markdown_server(server_side))
    print(f"\nLoCoMo dev, {len(samples)} conversations, {asked} questions, k=20, "
          f"{result['mode']} stores, versions alternating per question, "
          + ("queries embedded while searching" if args.embed_queries else "query vectors computed beforehand")
          + f"; load average at the start "
          f"{result['load_avg_start']}, at the end {result['load_avg_end']}; "
          + ("each version searches its own index" if args.server else "both versions search one index")
          + f"; searches whose hits (ids, scores) differ: {mismatches}\n")
    print("| version | search p50 / p95 ms | " + " | ".join(f"{s} mean / p95" for s in stage_names)
          + " | recall@5 | recall@10 | recall@20 | MRR |")
    print("|---|---|" + "---|" * len(stage_names) + "---|---|---|---|")
    for n, r in result["versions"].items():
        cells = " | ".join(f"{r['stages_ms'][s]['mean']} / {r['stages_ms'][s]['p95']}"
                           for s in stage_names)
        qual = r["quality"]
        print(f"| {n} | {r['search_ms']['p50']} / {r['search_ms']['p95']} | {cells} | "
              f"{qual['recall@5']} | {qual['recall@10']} | {qual['recall@20']} | {qual['mrr']} |")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    if mismatches and not args.expect_differences:
        raise SystemExit(f"{mismatches} searches ranked differently on the two versions")


if __name__ == "__main__":
    main()
