"""What `memos add` reads: text from stdin and JSON lines from --file, as UTF-8 whatever the
locale says, with every field `MemOS.add_many` takes; bad input is a clean error (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from memos_core.ops.writes import ITEM_KEYS


def _memos(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """The CLI in a child process with ``stdin`` piped in. ``PYTHONIOENCODING=utf-8`` makes
    Python's stdin strict UTF-8, as a real ``en_US.UTF-8`` locale or macOS does (this
    machine's ``C.UTF-8`` locale would hide a decoding error behind surrogate escapes)."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "memos_core.cli", *args], input=stdin,
                          capture_output=True, env=env, timeout=300)


def test_stdin_is_read_as_utf8_and_bytes_that_are_not_are_refused(tmp_path: Path) -> None:
    where = ["--data-dir", str(tmp_path / "d"), "--user", "alice"]
    bad = _memos("add", "-", *where, stdin=b"caf\xe9 au lait\n")
    err = bad.stderr.decode("utf-8", "replace")
    assert bad.returncode == 2, err
    assert "Traceback" not in err
    assert "memos: error: standard input is not UTF-8: byte 0xe9 at offset 3" in err
    good = _memos("add", "-", "--json", *where, stdin="café\r\nau lait\n\n".encode())
    assert good.returncode == 0, good.stderr.decode("utf-8", "replace")
    # newlines as a text-mode read; the one that ends the input (echo's) is not the memory's
    assert json.loads(good.stdout)["text"] == "café\nau lait\n"
    listed = _memos("list", "--json", *where)
    assert [c["text"] for c in json.loads(listed.stdout)] == ["café\nau lait\n"]
    echoed = _memos("add", "-", "--json", *where, stdin=b"Tiago lives in Coimbra\n")
    assert json.loads(echoed.stdout)["text"] == "Tiago lives in Coimbra"


def test_a_jsonl_file_takes_every_field_add_many_takes(memos, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    rows = [{"text": "Alice's passport number is X123.", "sensitivity": ["pii"], "ttl_seconds": 3600,
             "priority": 2, "type": "fact", "tags": ["travel"], "role": "user", "origin": "import",
             "message_id": "m-1", "session_id": "s", "agent_id": "helper", "metadata": {"k": 1},
             "occurred_at": "2025-06-14T08:00:00Z"},
            {"text": "A plain note."}]
    assert set(rows[0]) == ITEM_KEYS  # every key an item may set, so a new one is tested here
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    code, out, err = memos("add", "--file", str(src), "--json")
    assert code == 0, err
    first = json.loads(memos("get", json.loads(out)["ids"][0], "--json")[1])
    assert first["governance"]["sensitivity"] == ["pii"] and first["governance"]["priority"] == 2
    assert first["governance"]["ttl_seconds"] == 3600 and first["metadata"] == {"k": 1, "role": "user"}
    assert first["provenance"]["source_message_ids"] == ["m-1"] and first["origin"] == "import"
    assert first["namespace"] == {"user_id": "alice", "agent_id": "helper", "session_id": "s"}


@pytest.mark.parametrize("line, message", [
    ('{"text": "x", "sensitivty": ["pii"]}', "line 2 has unknown keys ['sensitivty']"),
    ('{"text": "x", "user_id": "bob"}', "line 2 has unknown keys ['user_id']"),
    ('{"text": "x", "reason": "why"}', "line 2 has a 'reason'"),
    ('{"text": "x", "priority": "high"}', "priority"),
    ("[" * 100_000 + "]" * 100_000, "line 2 is nested too deeply"),
])
def test_bad_jsonl_fields_name_the_line_and_add_nothing(memos, tmp_path: Path, line, message) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text('{"text": "fine"}\n' + line + "\n", encoding="utf-8")
    code, _, err = memos("add", "--file", str(src))
    assert code == 2 and message in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "d").exists()  # nothing stored, and no store left behind


def test_a_jsonl_file_that_is_not_utf8_names_the_byte_and_line(memos, tmp_path: Path) -> None:
    src = tmp_path / "latin1.jsonl"
    src.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    code, _, err = memos("add", "--file", str(src))
    assert code == 2 and f"{src} is not UTF-8: byte 0xe9 at offset 28 (line 2)" in err, err


def test_jsonl_lines_end_only_at_newlines(memos, tmp_path: Path) -> None:
    """JSON may hold U+2028 or U+0085 unescaped in a string; str.splitlines would cut the
    line there."""
    src = tmp_path / "in.jsonl"
    texts = ["one\u2028two", "three\x85four", "five"]
    src.write_text("\r\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in texts),
                   encoding="utf-8")
    code, out, err = memos("add", "--file", str(src), "--json")
    assert code == 0 and json.loads(out)["added"] == 3, err
    assert sorted(c["text"] for c in json.loads(memos("list", "--json")[1])) == sorted(texts)


def test_a_bad_value_in_a_jsonl_file_names_its_line(memos, tmp_path: Path) -> None:
    """add_many names the item whose value it refuses; the CLI names the file's line (blank
    lines counted), not the item's index, and stores nothing."""
    src = tmp_path / "items.jsonl"
    src.write_text('{"text": "fine"}\n\n{"text": "also fine"}\n{"text": "x", "ttl_seconds": -1}\n')
    code, _, err = memos("add", "--file", str(src))
    assert code == 2 and f"{src} line 4: ttl_seconds must be" in err, err
    assert not (tmp_path / "d").exists()  # nothing stored: the store it made is removed


def test_a_path_that_is_not_utf8_is_printed_escaped_and_its_bundle_imports(tmp_path: Path) -> None:
    """A name holding a byte that is not UTF-8 (Python holds it as a lone surrogate): `export`
    wrote the bundle, then failed printing its path on a strict UTF-8 stdout (exit 1, a
    traceback); `import` refused it, naming a "reason" the user never gave (the audit reason
    was built from the name)."""
    bundle = tmp_path / "bundle\udcff"  # b"bundle\xff" on disk
    src = ["--data-dir", str(tmp_path / "src"), "--user", "alice"]
    assert _memos("add", "hello there", *src).returncode == 0
    out = _memos("export", str(bundle), *src)
    assert (out.returncode, out.stderr) == (0, b""), out.stderr
    assert out.stdout == f"exported to {tmp_path}/bundle\\xff\n".encode()
    assert os.fsencode(bundle) in [os.fsencode(p) for p in tmp_path.iterdir()]
    dst = ["--data-dir", str(tmp_path / "dst"), "--user", "alice"]
    got = _memos("import", str(bundle), "--json", *dst)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["imported"] == 1
    records = json.loads(_memos("audit", "--json", "--action", "import", *dst).stdout)
    assert [r["reason"] for r in records] == ["import bundle\\xff"]


def test_a_db_url_that_is_not_utf8_is_bad_input(tmp_path: Path) -> None:
    """psycopg could not encode it: a UnicodeEncodeError traceback, exit 1."""
    got = _memos("--db", "postgresql://u@127.0.0.1:1/db\udcff", "--user", "alice", "list")
    err = got.stderr.decode("utf-8", "replace")
    assert got.returncode == 2 and "Traceback" not in err, err
    assert err == ("memos: error: --db holds an unpaired surrogate (text that is not valid "
                   "UTF-8); write the URL in UTF-8 (percent-encode other bytes: %FF).\n")
    from memos_core.errors import InvalidInputError
    from memos_core.server_mode import check_url

    with pytest.raises(InvalidInputError, match="holds an unpaired surrogate"):  # MemOS(url)
        check_url("postgresql://u@127.0.0.1:1/db\udcff")
