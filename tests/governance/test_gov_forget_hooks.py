"""Forget hooks (``MemOS.on_forget``): stores outside the core take part in ``forget``.

A hook sees the memory before the tombstone (text intact), its forms go into the receipt,
and a hook that raises aborts the forget with the memory untouched -- for ``forget`` and for
every memory of ``forget_many``. File redactors (entry points, here faked) run for the files
that exist and that no live hook covers, are loaded only then, and fail the same way.
:class:`MessageRedactor`, the pure rule of what in a stored message carries a forgotten
memory, is checked on a case table. The adapters' own logs (live and through their files) are
tested end to end in integrations/*/tests.
"""

from __future__ import annotations

import gc
import json
import os
import re
import sqlite3
import unicodedata
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memos_core import InvalidInputError, MemCube, MemOS, State
from memos_core.errors import CorruptDataError, MemOSError
from memos_core.governance import forget_hooks, redaction
from memos_core.governance.redaction import FORGOTTEN, MessageRedactor
from memos_core.integration import ConversationLog
from memos_core.results import DerivedForm


class Log:
    """A stand-in conversation log: remembers which memories it was asked to redact."""

    def __init__(self, fail: bool = False) -> None:
        self.seen: list[MemCube] = []
        self.fail = fail

    def hook(self, memory: MemCube) -> list[DerivedForm]:
        self.seen.append(memory)
        if self.fail:
            raise RuntimeError("log is unavailable")
        return [DerivedForm(kind="conversation_log", id=f"log:{memory.id}", action="redacted")]


def test_hook_sees_the_text_and_its_forms_are_in_the_receipt(mos: MemOS) -> None:
    cube = mos.add("Dana's PIN is 4921", user_id="dana")
    log = Log()
    mos.on_forget(log.hook)
    receipt = mos.forget(cube.id, user_id="dana")
    assert [m.text for m in log.seen] == ["Dana's PIN is 4921"]
    assert receipt.derived == (DerivedForm(kind="conversation_log", id=f"log:{cube.id}",
                                           action="redacted"),)
    assert "conversation_log" in receipt.removed_from
    assert mos.forget(cube.id, user_id="dana").derived == ()  # a tombstone: no hook again
    assert len(log.seen) == 1


def test_a_hook_that_touched_nothing_adds_nothing(mos: MemOS) -> None:
    cube = mos.add("nothing logged", user_id="dana")
    mos.on_forget(lambda memory: [])
    receipt = mos.forget(cube.id, user_id="dana")
    assert receipt.derived == () and "conversation_log" not in receipt.removed_from


def test_a_failing_hook_aborts_the_forget_with_nothing_changed(mos: MemOS) -> None:
    cube = mos.add("Dana's PIN is 4921", user_id="dana")
    log = Log(fail=True)  # held by the test: a bound method is held weakly
    remove = mos.on_forget(log.hook)
    with pytest.raises(RuntimeError, match="log is unavailable"):
        mos.forget(cube.id, user_id="dana")
    kept = mos.get(cube.id, user_id="dana")
    assert kept.text == "Dana's PIN is 4921" and kept.state is not State.DELETED
    assert mos.search("PIN", user_id="dana")[0].id == cube.id
    assert not mos.audit_log(user_id="dana", memory_id=cube.id, action="forget")
    remove()
    remove()  # idempotent
    assert mos.forget(cube.id, user_id="dana").version == kept.version + 1


def test_forget_many_runs_every_hook_before_the_first_tombstone(mos: MemOS) -> None:
    first = mos.add("first secret", user_id="dana")
    second = mos.add("second secret", user_id="dana")

    def fail_on_second(memory: MemCube) -> list[DerivedForm]:
        if memory.id == second.id:
            raise RuntimeError("log is unavailable")
        return []

    mos.on_forget(fail_on_second)
    with pytest.raises(RuntimeError):
        mos.forget_many([first.id, second.id], user_id="dana")
    assert [mos.get(c.id, user_id="dana").text for c in (first, second)] == [
        "first secret", "second secret"]


def test_forget_many_lists_each_memorys_log_forms(mos: MemOS) -> None:
    cubes = [mos.add(t, user_id="dana") for t in ("one", "two")]
    log = Log()
    mos.on_forget(log.hook)
    receipts = mos.forget_many([cubes[0].id, cubes[1].id, cubes[0].id], user_id="dana")
    assert [r.derived[0].id for r in receipts[:2]] == [f"log:{c.id}" for c in cubes]
    assert receipts[2].derived == () and len(log.seen) == 2


def test_a_bound_method_is_held_weakly(mos: MemOS) -> None:
    log = Log()
    mos.on_forget(log.hook)
    assert len(mos.store.forget_hooks) == 1
    del log
    gc.collect()
    assert len(mos.store.forget_hooks) == 0
    cube = mos.add("x marks the spot", user_id="dana")
    assert mos.forget(cube.id, user_id="dana").derived == ()


def test_bad_hooks_are_refused(mos: MemOS) -> None:
    with pytest.raises(InvalidInputError, match="callable"):
        mos.on_forget("not a function")  # type: ignore[arg-type]
    cube = mos.add("some text", user_id="dana")
    mos.on_forget(lambda memory: ["not a form"])  # type: ignore[list-item]
    with pytest.raises(MemOSError, match="DerivedForm"):
        mos.forget(cube.id, user_id="dana")
    assert mos.get(cube.id, user_id="dana").text == "some text"


# -- file redactors: entry points for logs whose adapter is not open -------------------------


class Entry:
    """A stand-in entry point of the ``memos_core.forget_hooks`` group."""

    def __init__(self, name: str, target: Callable[[], Any]) -> None:
        self.name, self.value, self._target = name, f"fake:{name}", target
        self.loads = 0

    def load(self) -> Any:
        self.loads += 1
        return self._target()


def _file_redactor(calls: list[tuple[Path, str]]) -> Callable[[Path, MemCube], list[DerivedForm]]:
    def redact(data_dir: Path, memory: MemCube) -> list[DerivedForm]:
        calls.append((data_dir, memory.text))
        return [DerivedForm(kind="conversation_log", id=f"log.sqlite3:{memory.id}",
                            action="redacted")]
    return redact


def _never() -> Any:
    raise AssertionError("loaded an entry point whose file does not exist")


def test_file_redactors_run_for_present_files_no_live_hook_covers(
        mos: MemOS, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Path, str]] = []
    log = Entry("log.sqlite3", lambda: _file_redactor(calls))
    entries = [log, Entry("absent.sqlite3", _never), Entry("../outside", _never)]
    monkeypatch.setattr(forget_hooks, "entry_points", lambda group: entries)
    first, second, third = (mos.add(t, user_id="dana") for t in ("one", "two", "three"))

    assert mos.forget(first.id, user_id="dana").derived == ()  # no file yet: nothing loaded
    assert log.loads == 0
    (mos.data_dir / "log.sqlite3").write_bytes(b"a log")
    receipt = mos.forget(second.id, user_id="dana")
    assert calls == [(mos.data_dir, "two")]  # text intact, before the tombstone
    assert [d.id for d in receipt.derived] == [f"log.sqlite3:{second.id}"]
    assert "conversation_log" in receipt.removed_from

    live = Log()  # an open adapter of this MemOS has the file: its hook does the work
    remove = mos.on_forget(live.hook, path=mos.data_dir / "log.sqlite3")
    assert [d.id for d in mos.forget(third.id, user_id="dana").derived] == [f"log:{third.id}"]
    assert len(calls) == 1 and [m.text for m in live.seen] == ["three"]
    remove()
    fourth = mos.add("four", user_id="dana")
    mos.forget(fourth.id, user_id="dana")
    assert calls[-1] == (mos.data_dir, "four")  # closed again: the file redactor is back


def _raise_import() -> Any:
    raise ImportError("No module named 'gone'")


def _failing_redactor() -> Any:
    def redact(data_dir: Path, memory: MemCube) -> list[DerivedForm]:
        raise RuntimeError("log is unavailable")
    return redact


@pytest.mark.parametrize("target, error, match", [
    (_raise_import, MemOSError, "does not load .*Reinstall the package"),
    (_failing_redactor, RuntimeError, "log is unavailable"),
    (lambda: "not callable", MemOSError, "not callable"),
    (lambda: lambda data_dir, memory: ["not a form"], MemOSError, "DerivedForm"),
])
def test_a_failing_file_redactor_aborts_the_forget(
        mos: MemOS, monkeypatch: pytest.MonkeyPatch, target: Callable[[], Any],
        error: type[Exception], match: str) -> None:
    monkeypatch.setattr(forget_hooks, "entry_points", lambda group: [Entry("log.sqlite3", target)])
    (mos.data_dir / "log.sqlite3").write_bytes(b"a log")
    cube = mos.add("Dana's PIN is 4921", user_id="dana")
    with pytest.raises(error, match=match):
        mos.forget(cube.id, user_id="dana")
    with pytest.raises(error, match=match):
        mos.forget_many([cube.id], user_id="dana")
    assert mos.get(cube.id, user_id="dana").text == "Dana's PIN is 4921"
    assert not mos.audit_log(user_id="dana", memory_id=cube.id, action="forget")


def _not_a_database(path: Path) -> None:
    path.write_bytes(b"this is not sqlite" * 100)


def _foreign_table(path: Path) -> None:  # another program's file with the same name
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE chat_messages (x TEXT)")
        db.execute("INSERT INTO chat_messages VALUES ('hello')")
        db.commit()


def _text_not_utf8(path: Path) -> None:  # a damaged byte inside a stored message
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE chat_messages (seq INTEGER, message TEXT)")
        db.execute("INSERT INTO chat_messages VALUES (1, CAST(? AS TEXT))",
                   (b"PIN 4921 \xff MARMOT9920",))
        db.commit()


def _reading_redactor(data_dir: Path, memory: MemCube) -> list[DerivedForm]:
    """A file redactor as the adapters write theirs: the old chat store's query, nothing
    caught."""
    db = forget_hooks.open_log(data_dir / "log.sqlite3")
    try:
        db.execute("SELECT seq, message FROM chat_messages").fetchall()
        return []
    finally:
        db.close()


@pytest.mark.parametrize("damage, reason", [
    (_not_a_database, "file is not a database"),
    (_foreign_table, "no such column: seq"),
    (_text_not_utf8, "column 'message'.* not valid UTF-8"),
])
def test_a_damaged_or_foreign_side_file_is_a_corrupt_data_error_naming_it(
        mos: MemOS, monkeypatch: pytest.MonkeyPatch, damage: Callable[[Path], None],
        reason: str) -> None:
    """Not SQLite's raw error: the file, what is wrong, and what to do; the forget aborts
    with the memory kept, and goes through once the file is moved away."""
    monkeypatch.setattr(forget_hooks, "entry_points",
                        lambda group: [Entry("log.sqlite3", lambda: _reading_redactor)])
    path = mos.data_dir / "log.sqlite3"
    damage(path)
    cube = mos.add("Dana's PIN is 4921", user_id="dana")
    for forget in (mos.forget, lambda mid, user_id: mos.forget_many([mid], user_id=user_id)):
        with pytest.raises(CorruptDataError, match=reason) as caught:
            forget(cube.id, user_id="dana")
        message = str(caught.value)
        assert str(path) in message and "MARMOT9920" not in message  # never the damaged text
        assert "Move it out of the data directory" in message and "forget again" in message
        assert mos.get(cube.id, user_id="dana").text == "Dana's PIN is 4921"
    path.rename(mos.data_dir.parent / "moved-away.sqlite3")
    assert mos.forget(cube.id, user_id="dana").memory_id == cube.id


def test_a_locked_side_file_is_retryable_not_corrupt(
        mos: MemOS, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file another connection holds is fine: retry, do not move it away."""
    def impatient(data_dir: Path, memory: MemCube) -> list[DerivedForm]:
        with closing(sqlite3.connect(data_dir / "log.sqlite3", timeout=0)) as db:
            db.execute("SELECT * FROM chat_messages").fetchall()
        return []

    monkeypatch.setattr(forget_hooks, "entry_points",
                        lambda group: [Entry("log.sqlite3", lambda: impatient)])
    path = mos.data_dir / "log.sqlite3"
    _foreign_table(path)
    cube = mos.add("Dana's PIN is 4921", user_id="dana")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(MemOSError, match="in use by another connection") as caught:
            mos.forget(cube.id, user_id="dana")
        assert not isinstance(caught.value, CorruptDataError)
        assert str(path) in str(caught.value) and "forget again" in str(caught.value)
        assert mos.get(cube.id, user_id="dana").text == "Dana's PIN is 4921"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert mos.forget(cube.id, user_id="dana").memory_id == cube.id


# -- MessageRedactor: what in a stored message carries the memory --------------------------

FROM_MESSAGE = MemCube.model_validate({
    "namespace": {"user_id": "dana"}, "text": "user: my locker code is MARMOT9920",
    "metadata": {"role": "user"}, "provenance": {"source_message_ids": ["m1"]},
})
SHORT = MemCube.model_validate({"namespace": {"user_id": "dana"}, "text": "user: ok",
                                "metadata": {"role": "user"}})
NOTE = MemCube.model_validate({"namespace": {"user_id": "dana"}, "text": "Dana likes teal"})
PARAGRAPHS = MemCube.model_validate({
    "namespace": {"user_id": "dana"}, "metadata": {"role": "user"},
    "text": "user: Hi!\nMy passport number is X1234567.\nThanks a lot for that!",
})
PIN = MemCube.model_validate({"id": "0b6f7c1e-2a4d-4e1b-9a51-3c2d8e7f6a10",
                              "namespace": {"user_id": "dana"}, "text": "PIN is 4821"})


@pytest.mark.parametrize("memory, text, expected", [
    (FROM_MESSAGE, "my locker code is MARMOT9920", FORGOTTEN),              # the message itself
    (FROM_MESSAGE, "  my locker code is MARMOT9920\n", FORGOTTEN),
    (FROM_MESSAGE, "so: my locker code is MARMOT9920!", f"so: {FORGOTTEN}!"),  # quoted
    (FROM_MESSAGE, "log: user: my locker code is MARMOT9920", f"log: {FORGOTTEN}"),
    (FROM_MESSAGE, "my locker code is different", "my locker code is different"),
    (SHORT, "ok", FORGOTTEN),                                                # whole text only
    (SHORT, "okay, thanks", "okay, thanks"),
    (NOTE, "I heard Dana likes teal.", f"I heard {FORGOTTEN}."),
    # the lines of a multi-line memory are not needles of their own: a common one
    # ("Thanks a lot for that!") would blank other conversations
    (PARAGRAPHS, "Thanks a lot for that! Now, what's 2+2?", "Thanks a lot for that! Now, what's 2+2?"),
    (PARAGRAPHS, "Hi!\nMy passport number is X1234567.\nThanks a lot for that!", FORGOTTEN),
    # a memory tool's search result names the hit by id, whatever the text's length
    (PIN, f"[{PIN.id}] PIN is 4821\n[other] Dana likes chess",
     f"[{PIN.id}] {FORGOTTEN}\n[other] Dana likes chess"),
    (PIN, f"Found:\n  1. [{PIN.id}] (fact, 2026-12-05) PIN is 4821",
     f"Found:\n  1. [{PIN.id}] {FORGOTTEN}"),
    (PIN, f"Forgot memory {PIN.id}.", f"Forgot memory {PIN.id}."),  # the id alone stays
    (PIN, f"Saved as [{PIN.id}]; your dentist is on Tuesday.",  # only a line it starts
     f"Saved as [{PIN.id}]; your dentist is on Tuesday."),
])
def test_redactor_text(memory: MemCube, text: str, expected: str) -> None:
    assert MessageRedactor(memory).text(text) == expected


def test_redactor_values_keep_unchanged_objects() -> None:
    redactor = MessageRedactor(NOTE)
    untouched: dict[str, Any] = {"a": ["x", ("y", 1)], "b": None}
    assert redactor.value(untouched) is untouched
    nested = {"args": {"text": "Dana likes teal"}, "n": [1, "Dana likes teal"]}
    assert redactor.value(nested) == {"args": {"text": FORGOTTEN}, "n": [1, FORGOTTEN]}
    marker = object()
    assert redactor.value([marker], other=lambda v: "swapped") == ["swapped"]


def test_redactor_source_ids_and_patterns() -> None:
    redactor = MessageRedactor(FROM_MESSAGE)
    assert redactor.is_source("m1") and not redactor.is_source("m2")
    assert not redactor.is_source(None)
    patterns = redactor.patterns()
    assert b"m1" in patterns and b"my locker code is MARMOT9920" in patterns
    quoted = MessageRedactor(MemCube.model_validate(
        {"namespace": {"user_id": "d"}, "text": 'say "hi"\nthere'}))
    assert b'say \\"hi\\"\\nthere' in quoted.patterns()  # as a JSON row stores it
    assert f"[{PIN.id}]".encode() in MessageRedactor(PIN).patterns()


def test_every_version_of_the_memory_is_redacted(mos: MemOS) -> None:
    """A conversation may hold what the memory said before an update (the agent's
    store_memory call): the hooks run once, and their redactors know every earlier text."""
    redacted: list[str] = []

    def hook(memory: MemCube) -> list[DerivedForm]:
        redactor = MessageRedactor(memory)
        redacted.extend(redactor.text(t) for t in (
            "Saved: Alice's home address is 12 Elm Street, Springfield.",
            "Saved: Alice's home address is 14 Oak Road, Springfield.",
            "Bob's home address is 3 Birch Lane."))
        return []

    mos.on_forget(hook)
    cube = mos.add("Alice's home address is 12 Elm Street, Springfield.", user_id="alice")
    mos.update(cube.id, "Alice's home address is 14 Oak Road, Springfield.", user_id="alice")
    mos.share(cube.id, with_user_id="bob", user_id="alice")  # a new version, the same text
    mos.forget(cube.id, user_id="alice")
    assert redacted == [f"Saved: {FORGOTTEN}", f"Saved: {FORGOTTEN}",
                        "Bob's home address is 3 Birch Lane."]
    now = cube.model_copy(update={"text": "Alice's home address is 14 Oak Road, Springfield."})
    old = "Alice's home address is 12 Elm Street, Springfield."
    assert MessageRedactor(now).text(old) == old  # earlier texts: only while the forget runs


QUOTED = MemCube.model_validate({"namespace": {"user_id": "dana"},
                                 "text": 'Zoë said "zebracorn" is the gate code'})


@pytest.mark.parametrize("ensure_ascii", [True, False])
def test_redactor_finds_the_text_inside_a_json_string(ensure_ascii: bool) -> None:
    """A tool call's raw arguments (OpenAI-style messages keep them as a JSON string) escape
    a quote or an accent of the memory's text: the document is read and written again."""
    import json

    redactor = MessageRedactor(QUOTED)
    raw = json.dumps({"text": QUOTED.text, "who": "Zoë"}, ensure_ascii=ensure_ascii)
    assert json.loads(redactor.text(raw)) == {"text": FORGOTTEN, "who": "Zoë"}
    assert redactor.text(raw).isascii() == ensure_ascii  # written again as it was
    untouched = json.dumps({"text": "Zoë likes chess"}, ensure_ascii=ensure_ascii)
    assert redactor.text(untouched) == untouched
    # JSON inside other text, or several documents: the escaped text where it stands
    for mixed in ("calling store_memory with " + raw, raw + " (retry 2)", raw + "\n" + raw,
                  "{not json " + raw):
        assert "zebracorn" not in redactor.text(mixed), mixed
    # a conversation-log row escapes the arguments once more: the cheap filter finds it,
    # and the row is redacted
    message = {"role": "assistant", "content": "Saving.", "additional_kwargs": {"tool_calls": [
        {"id": "c1", "function": {"name": "store_memory", "arguments": raw}}]}}
    row = json.dumps(message, ensure_ascii=False)
    assert any(p in row.encode() for p in redactor.patterns() if b"zebracorn" in p)
    redacted = redaction.redact_log_message(row, redactor, source=False)
    assert redacted is not None and "zebracorn" not in redacted
    arguments = json.loads(redacted)["additional_kwargs"]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(arguments) == {"text": FORGOTTEN, "who": "Zoë"}


ENCODED = MemCube.model_validate({"namespace": {"user_id": "dana"},
                                  "text": "Renée's PIN is 4821 at Banque Crédit & co/fr"})


def _hex_upper(text: str) -> str:
    import re

    return re.sub(r"\\u([0-9a-f]{4})", lambda m: "\\u" + m.group(1).upper(), text)


#: how encoders other than Python's json write the same arguments (all valid JSON)
ENCODERS: dict[str, Callable[[str], str]] = {
    "upper-case hex (.NET)": _hex_upper,
    ".NET default (also ' and &)": lambda raw: _hex_upper(raw).replace(
        "'", "\\u0027").replace("&", "\\u0026"),
    "Go (& as \\u0026)": lambda raw: raw.replace("&", "\\u0026"),
    "PHP (/ as \\/)": lambda raw: raw.replace("/", "\\/"),
}


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("where", ["whole", "in prose", "escaped twice"])
def test_redactor_reads_json_however_its_encoder_escaped_it(encoder: str, where: str) -> None:
    """Python's json writes lower-case hex and escapes no "&" or "/"; a provider's SDK in
    another language may (valid JSON all the same). A tool call's raw arguments so encoded
    kept the forgotten text: neither the redaction nor the log's cheap filter knew those
    forms (found for .NET's upper-case hex; Go's and PHP's escapes missed plain ASCII text)."""
    import json

    raw = ENCODERS[encoder](json.dumps({"text": ENCODED.text, "who": "Zoë"}))
    assert raw != json.dumps({"text": ENCODED.text, "who": "Zoë"})
    stored = {"whole": raw, "in prose": f"calling store_memory with {raw} now",
              "escaped twice": json.dumps({"arguments": raw})}[where]
    redactor = MessageRedactor(ENCODED)
    redacted = redactor.text(stored)
    assert "4821" not in redacted and "Banque" not in redacted, redacted
    if where == "whole":
        assert json.loads(redacted) == {"text": FORGOTTEN, "who": "Zoë"}
    # the row the log keeps (escaped once more) passes the cheap filter and is redacted
    message = {"role": "assistant", "content": "Saving.", "additional_kwargs": {"tool_calls": [
        {"id": "c1", "function": {"name": "store_memory", "arguments": stored}}]}}
    row = json.dumps(message, ensure_ascii=False)
    assert any(p in row.encode() for p in redactor.patterns())
    row = redaction.redact_log_message(row, redactor, source=False)
    assert row is not None and "4821" not in row and "Banque" not in row
    untouched = ENCODERS[encoder](json.dumps({"text": "Renée likes chess / go & more"}))
    assert redactor.text(untouched) == untouched


def test_hooks_of_collected_owners_do_not_pile_up() -> None:
    """A bound-method hook goes with its object; its entry used to stay in the list for the
    life of the store (one per checkpointer dropped without close)."""
    class Log:
        def hook(self, memory: object) -> list[object]:
            return []

    hooks = forget_hooks.ForgetHooks()
    kept = Log()
    hooks.add(kept.hook)
    for _ in range(50):
        hooks.add(Log().hook)  # the Log dies at once (reference counting: no cycle)
    assert len(hooks) == 1 and len(hooks._hooks) <= 2  # the live one, and the newest dead one


def test_a_log_file_opened_for_redaction_folds_a_wal_left_by_a_killed_writer(
        tmp_path: Path) -> None:
    """A file redactor killed between its redaction and its WAL truncation left the old
    pages in the WAL; the next redactor to open the file truncates it, whatever it finds."""
    import subprocess
    import sys

    path = tmp_path / "chat_history.sqlite3"
    code = ("import os, sqlite3, sys\n"
            "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "db.execute('PRAGMA journal_mode=WAL')\n"
            "db.execute('CREATE TABLE chat_messages (message TEXT)')\n"
            "db.execute(\"INSERT INTO chat_messages VALUES ('my locker code is MARMOT9920')\")\n"
            "os._exit(0)  # no close: the pages stay in the WAL\n")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=60)
    wal = Path(f"{path}-wal")
    assert wal.stat().st_size > 0 and b"MARMOT9920" in wal.read_bytes()
    db = forget_hooks.open_log(path)
    try:
        assert wal.stat().st_size == 0
        assert db.execute("SELECT message FROM chat_messages").fetchall() == [
            ("my locker code is MARMOT9920",)]  # folded into the file, nothing lost
    finally:
        db.close()


def _encode_like(style: str, value: object) -> str:
    """``value`` as JSON the way another language's encoder writes it."""
    import json
    import re

    upper = lambda raw: re.sub(r"\\u([0-9a-f]{4})", lambda m: "\\u" + m.group(1).upper(), raw)  # noqa: E731
    escape = lambda raw, chars: "".join(f"\\u{ord(c):04x}" if c in chars else c for c in raw)  # noqa: E731
    ascii_raw, utf8_raw = json.dumps(value), json.dumps(value, ensure_ascii=False)
    return {"python": ascii_raw, "python utf-8": utf8_raw,
            ".NET": upper(escape(ascii_raw, "<>&'+`")),
            "Go": escape(utf8_raw, "<>&"), "PHP": ascii_raw.replace("/", "\\/"),
            "Gson": escape(utf8_raw, "<>&='"),
            # some letters outside ASCII escaped, others not: .NET's relaxed encoder escapes
            # only what is outside the BMP (as surrogate pairs), one limited to Basic Latin
            # and Cyrillic escapes the rest
            ".NET relaxed": upper(re.sub("[\U00010000-\U0010ffff]", lambda m: json.dumps(
                m.group(0))[1:-1], utf8_raw)),
            ".NET Cyrillic": upper("".join(c if ord(c) < 0x80 or 0x400 <= ord(c) < 0x500
                                           else json.dumps(c)[1:-1] for c in utf8_raw)),
            }[style]


@given(text=st.text(alphabet=st.sampled_from(list("abcXYZ019 .:,-'\"&/<>=+`\\")
                                              + list("éüßЖжΩλ北京密码😀")),
                    min_size=redaction.MIN_NEEDLE, max_size=40)
       .filter(lambda t: len(t.strip()) >= redaction.MIN_NEEDLE),
       style=st.sampled_from(["python", "python utf-8", ".NET", "Go", "PHP", "Gson",
                              ".NET relaxed", ".NET Cyrillic"]),
       twice=st.booleans())
@settings(max_examples=300, deadline=None, derandomize=True, database=None)
def test_a_row_the_redactor_changes_is_one_the_cheap_filter_selects(text, style, twice):
    """patterns() narrows the rows a forget decodes (SQLite instr, PostgreSQL strpos): every
    row holding the memory's text, however the tool-call JSON in it was encoded, must be
    selected (.NET's upper-case hex with "'" or "&" escaped left rows with Cyrillic, CJK or
    accented text unselected, so they kept the text), and then redacted."""
    import json

    memory = MemCube.model_validate({"namespace": {"user_id": "dana"}, "text": text})
    redactor = MessageRedactor(memory)
    arguments = _encode_like(style, {"text": text})
    stored = json.dumps({"arguments": arguments}) if twice else arguments
    row = json.dumps({"role": "tool", "content": stored}, ensure_ascii=False).encode()
    assert any(pattern in row for pattern in redactor.patterns())
    redacted = redactor.text(stored)
    if twice:
        redacted = json.loads(redacted)["arguments"]
    value = json.loads(redacted)["text"]
    assert FORGOTTEN in value and text.strip() not in value


def test_a_short_memory_blanks_no_value_inside_json() -> None:
    """A text shorter than MIN_NEEDLE matches a whole message only: a forgotten "Paris" left
    a weather result alone unless the result held some escape, and then blanked its city."""
    import json

    redactor = MessageRedactor(MemCube.model_validate(
        {"namespace": {"user_id": "dana"}, "text": "Paris"}))
    for result in ({"city": "Paris", "temp_c": 21}, {"city": "Paris", "sky": "ensoleillé"}):
        for stored in (json.dumps(result), f"weather tool returned {json.dumps(result)} ok"):
            assert redactor.text(stored) == stored
    assert redactor.text("Paris") == FORGOTTEN


def test_json_nested_deeper_than_python_recurses_does_not_stop_a_forget() -> None:
    """A message that is JSON nested a thousand levels deep with an escape in it made the
    redactor raise RecursionError, and with it every forget whose filter chose that row."""
    deep = "[" * 2000 + '"caf\\u00e9"' + "]" * 2000
    redactor = MessageRedactor(QUOTED)
    assert redactor.text(deep) == deep
    quoting = deep.replace('"caf\\u00e9"', '"Zo\\u00eb said \\"zebracorn\\" is the gate code"')
    assert "zebracorn" not in redactor.text(quoting)


def test_json_cut_short_in_a_megabyte_message_is_scanned_in_linear_time() -> None:
    """A tool result whose escaped JSON the framework cut short: every inner \\" began a
    scan to the end of the line (quadratic: 130 s for 210 KB, about an hour for 1 MB under
    the store's write lock). Not a timing assertion: a quadratic scan would not finish."""
    import json

    redactor = MessageRedactor(QUOTED)
    inner = json.dumps({"items": [{"name": f"item {i}", "note": "café"} for i in range(20_000)]})
    stored = 'result: "' + json.dumps(inner)[1:-1] + ' Zoë said \\"zebracorn\\" is the gate code'
    assert len(stored) > 1_000_000
    redacted = redactor.text(stored)
    assert redacted.startswith('result: "') and len(redacted) > 1_000_000


# -- a copy that reads the same: another Unicode form, other line ends ----------------------

def _nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def _crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


ACCENTED = "Zoë's café PIN is 4417 at Müller Straße"  # composed (NFC), as typed on Windows
LINES = "Locker 12 at Gare du Nord.\nIts code is 8850, ask Zoë."


def _files_holding(root: Path, needles: set[bytes]) -> list[str]:
    """Files under ``root`` whose raw bytes hold one of ``needles``."""
    return sorted(str((Path(d) / n).relative_to(root)) for d, _, names in os.walk(root)
                  for n in names if any(x in (Path(d) / n).read_bytes() for x in needles))


@pytest.mark.parametrize("memory, message, expected, marker", [
    (ACCENTED, _nfd(ACCENTED), FORGOTTEN, "Müller Straße"),
    (ACCENTED, f"user said: {_nfd(ACCENTED)} -- ok", f"user said: {FORGOTTEN} -- ok",
     "Müller Straße"),
    (LINES, _crlf(LINES), FORGOTTEN, "ask Zoë"),
    (LINES, f"note:\r\n{_crlf(_nfd(LINES))}\r\nend", f"note:\r\n{FORGOTTEN}\r\nend",
     "ask Zoë"),
    (_nfd(ACCENTED), ACCENTED, FORGOTTEN, "Müller Straße"),  # stored decomposed (macOS)
    # shorter than MIN_NEEDLE: a whole message only, which the cheap filter must select
    ("Zoë: 4417", _nfd("Zoë: 4417"), FORGOTTEN, "Zoë: 4417"),
], ids=["NFD whole", "NFD inside", "CRLF", "CRLF NFD inside", "NFC of NFD", "short NFD"])
def test_a_copy_in_another_unicode_form_or_line_end_is_redacted(
        make_mos: Callable[..., MemOS], memory: str, message: str, expected: str,
        marker: str) -> None:
    """A log's copy of the memory that reads the same but is another Unicode form (NFD: an
    accent typed on macOS is a letter and a combining mark) or has CRLF line ends was
    compared byte for byte and kept: the text stayed in vault.sqlite3 (and a short text's
    copy was not even selected by the cheap filter)."""
    mos = make_mos()
    log = ConversationLog(mos)
    log.append("dana", "chat", [
        ("m1", json.dumps({"role": "user", "content": message}, ensure_ascii=False)),
        ("m2", json.dumps({"role": "user", "content": message})),  # ASCII-escaped
        ("m3", json.dumps({"role": "assistant", "content": "Noted, Zoë."}, ensure_ascii=False)),
    ], "active")
    # the marker in both forms, and the code (which the ASCII-escaped copy holds; with the
    # words before it: four digits alone turn up in the audit chain's hex digests)
    code = re.findall(r"[A-Za-z]*: [0-9]{4}|[A-Za-z]+ is [0-9]{4}", memory)
    forms = {f.encode() for f in (unicodedata.normalize("NFC", marker), _nfd(marker), *code)}
    assert len(forms) == 3 and _files_holding(mos.data_dir, forms)
    fact = mos.add(memory, user_id="dana")

    receipt = mos.forget(fact.id, user_id="dana")

    assert receipt.derived == (DerivedForm(kind="conversation_log",
                                           id="conversation_log:dana/chat", action="redacted"),)
    assert [json.loads(m)["content"] for _, m in log.read("dana", "chat", None)] == [
        expected, expected, "Noted, Zoë."]
    assert _files_holding(mos.data_dir, forms) == []
    mos.close()
    assert _files_holding(mos.data_dir, forms) == []


def test_text_variants() -> None:
    text_variants = redaction.text_variants
    assert text_variants("Dana likes teal") == ("Dana likes teal",)
    assert set(text_variants("café")) == {"café", _nfd("café")}
    assert text_variants(_nfd("café")) == text_variants("café")
    assert set(text_variants("a\r\nb")) == {"a\nb", "a\r\nb", "a\rb"}
    assert len(text_variants("é\nè")) == 6  # each form with each line end
    # other spellings are other text (the docs' limits): case, invisible characters
    assert not {"CAFÉ", "caf\u200bé", "caf\u00a0é"} & set(text_variants("café"))


def test_a_short_text_in_another_form_is_still_short() -> None:
    """Whether a text is a needle does not depend on its form: 10 characters composed, 12
    decomposed ("Zoë" and "café" in NFD) -- neither is redacted inside other words."""
    memory = MemCube.model_validate({"namespace": {"user_id": "dana"}, "text": "Zoë's café"})
    redactor = MessageRedactor(memory)
    assert redactor.text(_nfd("Zoë's café")) == FORGOTTEN
    for text in ("Zoë's café", _nfd("Zoë's café")):
        assert redactor.text(f"at {text} today") == f"at {text} today"
