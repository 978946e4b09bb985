"""The PostgreSQL vault's schema and its versioned migrations.

``meta['schema_version']`` records the newest migration applied. Opening a vault applies the
missing ones in order, each in its own transaction, under a session advisory lock so that
processes opening the same database at once migrate it exactly once. A database whose schema
is newer than this code is refused (upgrade memos-core); nothing is ever downgraded.

Migrations:

1. the core tables: ``meta``, ``memories`` (current versions with the filter columns),
   ``versions``, ``usage``, ``edges``, ``audit`` (hash-chained, gapless ``seq``) and
   ``grants``; the audit head record starts at the genesis hash.
2. the change feed: ``changes`` (a gapless, monotonic sequence of every mutation, written in
   the mutation's transaction) with its index by memory.
3. the integration storage: ``item_keys`` (keyed items), ``conversation_log`` and the thread
   checkpoints ``cp_checkpoints`` / ``cp_blobs`` / ``cp_writes``
   (:mod:`memos_core.vault.pg_integrations`).
4. a GIN index on ``memories.entities``: entity degrees for the per-user graph views
   (:mod:`memos_core.vault.pg_graph`).
5. that index dropped again.
6. no digest of a forgotten text.
7. audit records commit to their reason (``reason_salt``, ``reason_commit``, ``legacy_hash``;
   an index on ``details->>'by'``): the records written before are converted and the reasons
   of forgotten memories removed (:func:`memos_core.vault.audit_chain.upgrade_chain`).
8. an index on ``audit(user_id, action, seq)``: a user's records of one action, newest
   first, without reading all of that user's records (or every record).
9. ``memory_readers(reader, seq, id)``: one row per reader a memory is shared with, keyed
   ``(reader, seq, id)``, kept in step with ``memories`` by triggers and filled from it: a
   page of a reader's list walks the memories shared with them in insertion order and stops
   after the page (:func:`memos_core.vault.pg_sql.list_page`) instead of sorting all of them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from memos_core.errors import MemOSError
from memos_core.vault.audit_chain import AUDIT_HEAD, GENESIS_HASH, REASON_COLUMNS, upgrade_chain

logger = logging.getLogger("memos_core")

#: advisory lock keys (two int4 halves: 'memo', purpose)
LOCK_CLASS = 0x6D656D6F
WRITE_LOCK = 1  # transaction lock around every mutation: total order of audit + changes
MIGRATE_LOCK = 2  # session lock around migrations
OPEN_LOCK = 3  # session lock a MemOS holds while it opens (derived-state setup)

#: the NOTIFY channel the change feed wakes listeners on (payload: the new head seq)
CHANNEL = "memos_changes"

_V1 = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS memories (
        id TEXT PRIMARY KEY,
        seq BIGINT NOT NULL UNIQUE,
        user_id TEXT NOT NULL,
        agent_id TEXT,
        session_id TEXT,
        version INTEGER NOT NULL,
        state TEXT NOT NULL,
        type TEXT NOT NULL,
        tags JSONB NOT NULL,
        readers JSONB NOT NULL,
        occurred_at DOUBLE PRECISION,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        superseded BOOLEAN NOT NULL,
        entities JSONB NOT NULL,
        doc JSONB NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS memories_user ON memories(user_id, seq)",
    "CREATE INDEX IF NOT EXISTS memories_session ON memories(user_id, session_id, seq)",
    "CREATE INDEX IF NOT EXISTS memories_readers ON memories USING GIN (readers)",
    """CREATE TABLE IF NOT EXISTS versions (
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        recorded_at DOUBLE PRECISION NOT NULL,
        doc JSONB NOT NULL,
        PRIMARY KEY (id, version)
    )""",
    """CREATE TABLE IF NOT EXISTS usage (
        id TEXT PRIMARY KEY,
        access_count BIGINT NOT NULL,
        last_access DOUBLE PRECISION,
        heat DOUBLE PRECISION NOT NULL,
        tier TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS edges (
        src TEXT NOT NULL, dst TEXT NOT NULL, kind TEXT NOT NULL, PRIMARY KEY (src, dst, kind)
    )""",
    "CREATE INDEX IF NOT EXISTS edges_dst ON edges(dst)",
    """CREATE TABLE IF NOT EXISTS audit (
        seq BIGINT PRIMARY KEY,
        at DOUBLE PRECISION NOT NULL,
        user_id TEXT NOT NULL,
        agent_id TEXT,
        action TEXT NOT NULL,
        memory_id TEXT,
        version INTEGER,
        reason TEXT,
        details TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS audit_memory ON audit(memory_id)",
    "CREATE INDEX IF NOT EXISTS audit_user ON audit(user_id, seq)",
    """CREATE TABLE IF NOT EXISTS grants (
        owner TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        grantee TEXT NOT NULL,
        scope TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (owner, agent_id, session_id, grantee)
    )""",
    ("INSERT INTO meta(key, value) VALUES ('" + AUDIT_HEAD + "', '"
     + json.dumps({"count": 0, "seq": 0, "hash": GENESIS_HASH}) + "') ON CONFLICT DO NOTHING"),
]

_V2 = [
    """CREATE TABLE IF NOT EXISTS changes (
        seq BIGINT PRIMARY KEY,
        at DOUBLE PRECISION NOT NULL,
        memory_id TEXT,
        kind TEXT NOT NULL,
        detail JSONB NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS changes_memory ON changes(memory_id)",
]

_V3 = [
    """CREATE TABLE IF NOT EXISTS item_keys (
        seq BIGSERIAL PRIMARY KEY,
        user_id TEXT NOT NULL,
        ns_path TEXT NOT NULL,
        key TEXT NOT NULL,
        memory_id TEXT NOT NULL UNIQUE
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS item_keys_key ON item_keys(user_id, ns_path, key)",
    """CREATE TABLE IF NOT EXISTS conversation_log (
        seq BIGSERIAL PRIMARY KEY,
        user_id TEXT NOT NULL,
        log_id TEXT NOT NULL,
        message_id TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('active', 'archived')),
        message TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS conversation_log_queue "
    "ON conversation_log (user_id, log_id, status, seq)",
    """CREATE TABLE IF NOT EXISTS cp_checkpoints (
        thread_id TEXT NOT NULL,
        checkpoint_ns TEXT NOT NULL,
        checkpoint_id TEXT NOT NULL,
        parent_checkpoint_id TEXT,
        run_id TEXT,
        type TEXT NOT NULL,
        checkpoint BYTEA,
        metadata_type TEXT NOT NULL,
        metadata BYTEA,
        PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
    )""",
    "CREATE INDEX IF NOT EXISTS cp_checkpoints_run ON cp_checkpoints (run_id)",
    """CREATE TABLE IF NOT EXISTS cp_blobs (
        thread_id TEXT NOT NULL,
        checkpoint_ns TEXT NOT NULL,
        channel TEXT NOT NULL,
        version TEXT NOT NULL,
        type TEXT NOT NULL,
        value BYTEA,
        PRIMARY KEY (thread_id, checkpoint_ns, channel, version)
    )""",
    """CREATE TABLE IF NOT EXISTS cp_writes (
        thread_id TEXT NOT NULL,
        checkpoint_ns TEXT NOT NULL,
        checkpoint_id TEXT NOT NULL,
        task_id TEXT NOT NULL,
        idx INTEGER NOT NULL,
        channel TEXT NOT NULL,
        type TEXT NOT NULL,
        value BYTEA,
        task_path TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
    )""",
]

_V4 = [
    "CREATE INDEX IF NOT EXISTS memories_entities ON memories USING GIN (entities jsonb_path_ops)",
]

#: entity degrees are counted in the graph views (memos_core.graph.views): nothing reads the
#: index _V4 made for the vault's store-wide count, and every write kept it up
_V5 = [
    "DROP INDEX IF EXISTS memories_entities",
]

#: a forgotten memory keeps nothing derived from its text: schemas before 6 kept
#: ``sha256:<hex of the text>`` in its versions, from which a short secret can be recovered
#: by hashing guesses (the old row images go at the next VACUUM; docs/scale_out.md)
_V6 = [
    f"""UPDATE {table} SET doc = jsonb_set(doc, '{{text}}', '""')
        WHERE doc->>'scrubbed' = 'true' AND doc->>'text' <> ''"""
    for table in ("versions", "memories")
]


def _commit_reasons(conn: Any) -> None:
    """Migration 7's conversion of the audit records written before it."""

    def query(sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(conn.execute(sql.replace("?", "%s"), params).fetchall())

    def execute(sql: str, params: Sequence[Any]) -> None:
        conn.execute(sql.replace("?", "%s"), params)

    _, problem = upgrade_chain(query, execute)
    if problem is not None:
        logger.warning("The audit log does not verify (%s): its records were left as they are, "
                       "and forget cannot remove the reasons of those written before schema 7.",
                       problem)


#: an audit record commits to its reason instead of hashing it, so that forget can remove it
_V7: list[str | Callable[[Any], None]] = [
    # first, under the write lock: processes of an older memos-core may still be writing
    # records (taken after the table's lock, it could deadlock with one of them)
    f"SELECT pg_advisory_xact_lock({LOCK_CLASS}, {WRITE_LOCK})",
    *(f"ALTER TABLE audit ADD COLUMN IF NOT EXISTS {column} TEXT"
      for column in REASON_COLUMNS),
    # details->>'by', NULL for details that are not JSON (a damaged record must not stop
    # the migration: upgrade_chain leaves a chain that does not verify as it is)
    """CREATE OR REPLACE FUNCTION memos_audit_by(details text) RETURNS text
       LANGUAGE plpgsql IMMUTABLE AS $$
       BEGIN RETURN (details::jsonb)->>'by'; EXCEPTION WHEN others THEN RETURN NULL; END $$""",
    "CREATE INDEX IF NOT EXISTS audit_by ON audit (memos_audit_by(details))",
    _commit_reasons,
]

#: ``audit_log(user_id=, action=)`` (``audit_user`` serves a user's records of every action)
_V8 = [
    "CREATE INDEX IF NOT EXISTS audit_user_action ON audit(user_id, action, seq)",
]

#: the trigger function that keeps ``memory_readers`` in step with ``memories``: a memory's
#: rows go when it goes or its readers (or ``seq``, ``id``) change, and are made again from
#: ``NEW.readers`` (a JSON array of user ids; a reader named twice is one row)
READERS_FUNCTION = """CREATE OR REPLACE FUNCTION memos_memory_readers() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'TRUNCATE' THEN DELETE FROM memory_readers; RETURN NULL; END IF;
        IF TG_OP <> 'INSERT' THEN DELETE FROM memory_readers WHERE id = OLD.id; END IF;
        IF TG_OP <> 'DELETE' THEN
            INSERT INTO memory_readers(reader, seq, id)
                SELECT DISTINCT r, NEW.seq, NEW.id FROM jsonb_array_elements_text(NEW.readers) r;
        END IF;
        RETURN NULL;
    END $$"""

#: trigger name -> its event (an update fires only when the readers, ``seq`` or ``id`` of
#: the row changed: a new version that keeps its readers leaves the table alone)
READERS_TRIGGERS = {
    "memories_readers_insert": "AFTER INSERT ON memories FOR EACH ROW",
    "memories_readers_update": "AFTER UPDATE OF id, seq, readers ON memories FOR EACH ROW WHEN "
                               "(OLD.readers IS DISTINCT FROM NEW.readers OR OLD.seq <> NEW.seq "
                               "OR OLD.id <> NEW.id)",
    "memories_readers_delete": "AFTER DELETE ON memories FOR EACH ROW",
    "memories_readers_truncate": "AFTER TRUNCATE ON memories FOR EACH STATEMENT",
}

#: "the memories shared with this reader, in insertion order": a side table, because no index
#: of ``memories`` can give that order (the GIN index on ``readers`` finds a reader's memories
#: but in no order, so a page sorted every one of them; a btree cannot index array elements).
#: It holds user ids, ``seq`` numbers and memory ids, no text. Every statement is idempotent
#: (the table's rows are made again from ``memories``).
_V9: list[str | Callable[[Any], None]] = [
    # first, under the write lock: processes of an older memos-core may still be writing
    # memories, which the fill below must see or the triggers catch
    f"SELECT pg_advisory_xact_lock({LOCK_CLASS}, {WRITE_LOCK})",
    """CREATE TABLE IF NOT EXISTS memory_readers (
        reader TEXT NOT NULL,
        seq BIGINT NOT NULL,
        id TEXT NOT NULL,
        PRIMARY KEY (reader, seq, id)
    )""",
    "CREATE INDEX IF NOT EXISTS memory_readers_id ON memory_readers(id)",
    READERS_FUNCTION,
    *(f"DROP TRIGGER IF EXISTS {name} ON memories" for name in READERS_TRIGGERS),
    *(f"CREATE TRIGGER {name} {event} EXECUTE FUNCTION memos_memory_readers()"
      for name, event in READERS_TRIGGERS.items()),
    "DELETE FROM memory_readers",
    """INSERT INTO memory_readers(reader, seq, id)
        SELECT DISTINCT r, m.seq, m.id FROM memories m, jsonb_array_elements_text(m.readers) r""",
]

#: migration number -> statements, or functions of the connection (applied in one transaction)
MIGRATIONS: dict[int, Sequence[str | Callable[[Any], None]]] = {
    1: _V1, 2: _V2, 3: _V3, 4: _V4, 5: _V5, 6: _V6, 7: _V7, 8: _V8, 9: _V9}
SCHEMA_VERSION = max(MIGRATIONS)


def current_version(conn: Any) -> int:
    """The schema version recorded in ``conn``'s database (0 for an empty database)."""
    exists = conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()[0]
    if not exists:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: Any, target: int = SCHEMA_VERSION, *, where: str = "the database") -> int:
    """Bring the schema of ``conn``'s database (an autocommit connection) up to ``target``;
    returns the version found before. Serialised across processes by an advisory lock.

    Raises:
        MemOSError: the database's schema is newer than this memos-core understands.
    """
    conn.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_CLASS, MIGRATE_LOCK))
    try:
        found = current_version(conn)
        if found > SCHEMA_VERSION:
            raise MemOSError(
                f"The vault in {where} has schema {found}, newer than this memos-core "
                f"understands ({SCHEMA_VERSION}). Upgrade memos-core on every host that uses it."
            )
        for number in range(found + 1, target + 1):
            with conn.transaction():
                for statement in MIGRATIONS[number]:
                    if callable(statement):
                        statement(conn)
                    else:
                        conn.execute(statement)
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema_version', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", (str(number),))
        return found
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_CLASS, MIGRATE_LOCK))
