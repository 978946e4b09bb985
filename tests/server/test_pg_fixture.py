"""The PostgreSQL fixture itself: a real server with pgvector, one database per test."""

from __future__ import annotations

import psycopg


def test_each_test_gets_a_database_with_pgvector(pg_url):
    with psycopg.connect(pg_url) as conn:
        (name,) = conn.execute("SELECT current_database()").fetchone()
        assert name.startswith("t_test_each_test_gets")
        (distance,) = conn.execute("SELECT '[1,0]'::vector <=> '[0,1]'::vector").fetchone()
        assert distance == 1.0


def test_the_local_server_restarts_with_its_data(pg_server, pg_url):
    _, server = pg_server
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (x int)")
        conn.execute("INSERT INTO kept VALUES (7)")
    if server is None:  # an external server (MEMOS_TEST_PG_URL) is not ours to restart
        return
    server.restart()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT x FROM kept").fetchone() == (7,)
