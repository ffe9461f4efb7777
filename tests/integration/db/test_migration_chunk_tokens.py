"""0013_chunk_tokens: up (existing chunks get NULL: counted and scanned when used), down (the
columns go, the chunks stay), up again."""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest

from alembic import command
from app.db.migrations import alembic_config, upgrade_to_head
from tests.integration.db.test_migration_chunk_spans import chunk_columns
from tests.support.services import PostgresForTests, libpq

pytestmark = [pytest.mark.integration, pytest.mark.pgvector]

BEFORE = "0012_budget_units"
COLUMNS = {"text_tokens", "injection_flags"}


@pytest.fixture
def empty_database(postgres_server: PostgresForTests, worker_name: str) -> str:
    return postgres_server.create_database(f"ragchat_chunk_tokens_{worker_name}_{os.getpid()}", migrate=False)


def test_a_chunk_stored_before_has_no_counts_and_the_columns_come_and_go(empty_database: str) -> None:
    config = alembic_config(empty_database)
    command.upgrade(config, BEFORE)
    assert not COLUMNS & chunk_columns(empty_database)
    tenant, document = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(libpq(empty_database)) as conn:
        conn.execute("INSERT INTO tenants (id, slug, name) VALUES (%s, 'acme', 'Acme')", (tenant,))
        conn.execute(
            "INSERT INTO documents (id, tenant_id, title) VALUES (%s, %s, 'Guide')", (document, tenant)
        )
        conn.execute(
            "INSERT INTO chunks (tenant_id, document_id, page, position, text, page_sha256, embedding, "
            "embedding_model, valid_from_version) VALUES (%s, %s, 1, 0, 'Old passage.', %s, %s, 'm', 1)",
            (tenant, document, "0" * 64, "[" + ",".join(["0.1"] * 384) + "]"),
        )

    upgrade_to_head(empty_database)
    assert chunk_columns(empty_database) >= COLUMNS
    with psycopg.connect(libpq(empty_database)) as conn:
        assert conn.execute("SELECT text_tokens, injection_flags FROM chunks").fetchall() == [(None, None)]
        conn.execute("UPDATE chunks SET text_tokens = 3, injection_flags = '{role_override}'")

    command.downgrade(config, BEFORE)
    assert not COLUMNS & chunk_columns(empty_database)
    with psycopg.connect(libpq(empty_database)) as conn:
        assert conn.execute("SELECT text FROM chunks").fetchall() == [("Old passage.",)]

    upgrade_to_head(empty_database)
    assert chunk_columns(empty_database) >= COLUMNS
