"""documents.source_url (+ ETag and Last-Modified): documents added from a URL, refreshed from it

An ingestion job of a URL document fetches the content before it has a version, so
ingestion_jobs.version_id may be NULL until then.

Revision ID: 0008_document_source_url
Revises: 0007_ocr_pages
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0008_document_source_url"
down_revision: str | None = "0007_ocr_pages"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("documents", sa.Column("source_url", sa.String(length=2048), nullable=True))
    op.add_column("documents", sa.Column("source_etag", sa.String(length=500), nullable=True))
    op.add_column("documents", sa.Column("source_last_modified", sa.String(length=100), nullable=True))
    op.alter_column("ingestion_jobs", "version_id", existing_type=sa.Uuid(), nullable=True)


def downgrade() -> None:
    # Jobs that never got a version (a fetch that failed or found nothing new) have nothing to
    # point at in the older schema.
    op.execute("DELETE FROM ingestion_jobs WHERE version_id IS NULL")
    op.alter_column("ingestion_jobs", "version_id", existing_type=sa.Uuid(), nullable=False)
    op.drop_column("documents", "source_last_modified")
    op.drop_column("documents", "source_etag")
    op.drop_column("documents", "source_url")
