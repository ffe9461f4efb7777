"""0010_document_access: existing documents stay tenant-wide, existing keys in no group; down, up."""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest

from alembic import command
from app.db.migrations import alembic_config, upgrade_to_head
from tests.support.services import PostgresForTests, libpq

pytestmark = [pytest.mark.integration, pytest.mark.pgvector]

BEFORE = "0009_token_budgets"


@pytest.fixture
def empty_database(postgres_server: PostgresForTests, worker_name: str) -> str:
    return postgres_server.create_database(f"ragchat_doc_access_{worker_name}_{os.getpid()}", migrate=False)


def columns(url: str, table: str) -> set[str]:
    with psycopg.connect(libpq(url)) as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,)
        )
        return {name for (name,) in rows.fetchall()}


def test_existing_rows_stay_tenant_wide_and_the_migration_goes_down_and_up(empty_database: str) -> None:
    config = alembic_config(empty_database)
    command.upgrade(config, BEFORE)
    tenant, document = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(libpq(empty_database)) as conn:
        conn.execute("INSERT INTO tenants (id, slug, name) VALUES (%s, 'acme', 'Acme')", (tenant,))
        conn.execute(
            "INSERT INTO documents (id, tenant_id, title) VALUES (%s, %s, 'Handbook')",
            (document, tenant),
        )
        conn.execute(
            "INSERT INTO api_keys (id, tenant_id, name, prefix, secret_sha256, role) "
            "VALUES (%s, %s, 'k', 'abc', 'x', 'reader')",
            (uuid.uuid4(), tenant),
        )

    upgrade_to_head(empty_database)
    with psycopg.connect(libpq(empty_database)) as conn:
        assert conn.execute("SELECT access FROM documents").fetchall() == [([],)]
        assert conn.execute("SELECT groups FROM api_keys").fetchall() == [([],)]
        indexes = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_documents_access'")
        assert "gin" in indexes.fetchone()[0].lower()

    command.downgrade(config, BEFORE)
    assert "access" not in columns(empty_database, "documents")
    assert "groups" not in columns(empty_database, "api_keys")
    upgrade_to_head(empty_database)
    assert "access" in columns(empty_database, "documents")
