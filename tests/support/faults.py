"""Faults a test injects into real servers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from tests.support.services import libpq


@contextmanager
def slow_commits(database_url: str, seconds: float) -> Iterator[None]:
    """Every transaction that stores a document takes ``seconds`` longer to commit (a deferred
    constraint trigger sleeps at COMMIT), like a busy disk: a response sent before the commit
    ends is then reliably sent for something that a crash can still lose."""
    with psycopg.connect(libpq(database_url), autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION test_slow_commit() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN PERFORM pg_sleep({seconds}); RETURN NULL; END $$"
        )
        conn.execute(
            "CREATE CONSTRAINT TRIGGER test_slow_commit AFTER INSERT ON documents "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_slow_commit()"
        )
    try:
        yield
    finally:
        with psycopg.connect(libpq(database_url), autocommit=True) as conn:
            conn.execute("DROP TRIGGER IF EXISTS test_slow_commit ON documents")
            conn.execute("DROP FUNCTION IF EXISTS test_slow_commit()")
