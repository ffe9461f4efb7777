"""0008_document_source_url: up, down (jobs that never got a version go), up again."""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest

from alembic import command
from app.db.migrations import alembic_config, upgrade_to_head
from tests.support.services import PostgresForTests, libpq

pytestmark = [pytest.mark.integration, pytest.mark.pgvector]

BEFORE = "0007_ocr_pages"


@pytest.fixture
def empty_database(postgres_server: PostgresForTests, worker_name: str) -> str:
    return postgres_server.create_database(f"ragchat_source_url_{worker_name}_{os.getpid()}", migrate=False)


def columns(url: str, table: str) -> dict[str, str]:
    with psycopg.connect(libpq(url)) as conn:
        rows = conn.execute(
            "SELECT column_name, is_nullable FROM information_schema.columns WHERE table_name = %s", (table,)
        ).fetchall()
    return {name: nullable for name, nullable in rows}


def test_source_url_columns_come_and_go_with_the_migration(empty_database: str) -> None:
    upgrade_to_head(empty_database)
    assert {"source_url", "source_etag", "source_last_modified"} <= set(columns(empty_database, "documents"))
    assert columns(empty_database, "ingestion_jobs")["version_id"] == "YES"
    tenant, document = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(libpq(empty_database)) as conn:
        conn.execute("INSERT INTO tenants (id, slug, name) VALUES (%s, 'acme', 'Acme')", (tenant,))
        conn.execute(
            "INSERT INTO documents (id, tenant_id, title, source_url) VALUES (%s, %s, 'Guide', 'https://example.org/')",
            (document, tenant),
        )
        conn.execute(
            "INSERT INTO ingestion_jobs (id, tenant_id, document_id, version_id, status, progress, attempts) "
            "VALUES (%s, %s, %s, NULL, 'failed', 0, 1)",
            (uuid.uuid4(), tenant, document),
        )

    command.downgrade(alembic_config(empty_database), BEFORE)
    assert "source_url" not in columns(empty_database, "documents")
    assert columns(empty_database, "ingestion_jobs")["version_id"] == "NO"
    with psycopg.connect(libpq(empty_database)) as conn:
        assert conn.execute("SELECT count(*) FROM ingestion_jobs").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM documents").fetchone() == (1,)

    upgrade_to_head(empty_database)
    assert "source_url" in columns(empty_database, "documents")
