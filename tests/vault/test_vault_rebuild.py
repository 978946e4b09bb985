"""A forget's checkpoint leaves no stale copy of a scrubbed row in the SQLite vault file.

``PRAGMA secure_delete`` zeroes the space a deleted or shrunk row frees, but when SQLite
rebalances a table's pages it moves live rows to a neighbouring page and rebuilds the page
without zeroing the space they left: a row that moved once and is scrubbed later keeps an old
copy there, in the file, for good (a crash-consistency probe found a forgotten memory's tag
that way, rarely). ``SQLiteVault.checkpoint`` (run after every forget)
rebuilds the file, which leaves no such copy. Shown on a table of the vault's own file whose
rows change size, where SQLite 3.40.1 leaves such copies (seeds 1 to 3 each leave some).
"""

from __future__ import annotations

import random
from pathlib import Path

from memos_core.vault.sqlite import SQLiteVault

ROWS = 200
SEED = 1  # SQLite 3.40.1 leaves 3 stale copies with it (seeds 2 and 3: two each)


def marker(i: int) -> bytes:
    return f"SECRET{i:04d}Z".encode()


def left_in(path: Path, scrubbed: list[int]) -> list[int]:
    data = path.read_bytes()
    return [i for i in scrubbed if marker(i) in data]


def test_a_checkpoint_leaves_no_stale_copy_of_a_scrubbed_row(tmp_path: Path) -> None:
    path = tmp_path / "vault.sqlite3"
    vault = SQLiteVault(path)
    db = vault._db  # the vault's own connection and file
    db.execute("CREATE TABLE scratch (id TEXT PRIMARY KEY, doc TEXT NOT NULL)")
    rng = random.Random(SEED)
    for i in range(ROWS):
        db.execute("INSERT INTO scratch VALUES (?, ?)",
                   (f"id{i:04d}", f"{marker(i).decode()} " + "x" * rng.randint(200, 1200)))
    for _ in range(3 * ROWS):  # rows grow and shrink: pages overflow and are rebalanced
        i = rng.randrange(ROWS)
        db.execute("UPDATE scratch SET doc = ? WHERE id = ?",
                   (f"{marker(i).decode()} " + "y" * rng.randint(100, 1500), f"id{i:04d}"))
    scrubbed = rng.sample(range(ROWS), ROWS // 2)
    for i in scrubbed:  # as a forget scrubs a version: the text emptied in place
        db.execute("UPDATE scratch SET doc = '' WHERE id = ?", (f"id{i:04d}",))
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # what the checkpoint did before
    stale = left_in(path, scrubbed)
    assert stale, "SQLite left no stale copy: the test shows nothing on this version"

    vault.checkpoint()

    assert left_in(path, scrubbed) == []
    assert db.execute("SELECT count(*) FROM scratch WHERE doc != ''").fetchone()[0] == ROWS // 2
    vault.close()
    assert left_in(path, scrubbed) == []
