"""tenant corpus version, bumped by a trigger on every document change

The answer cache keys on it: any insert or update of a tenant's documents (new version ingested,
metadata edited, soft delete, restore) commits a new number in the same transaction, so no
process can serve an answer computed from the corpus as it was before.

Revision ID: 0003_corpus_version
Revises: 0002_job_queue
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0003_corpus_version"
down_revision: str | None = "0002_job_queue"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "tenants", sa.Column("corpus_version", sa.BigInteger(), server_default=sa.text("0"), nullable=False)
    )
    op.execute(
        """
        CREATE FUNCTION bump_tenant_corpus_version() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE tenants SET corpus_version = corpus_version + 1 WHERE id = NEW.tenant_id;
            RETURN NEW;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER trg_documents_bump_corpus_version
        AFTER INSERT OR UPDATE ON documents
        FOR EACH ROW EXECUTE FUNCTION bump_tenant_corpus_version()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS trg_documents_bump_corpus_version ON documents")
    op.execute("DROP FUNCTION IF EXISTS bump_tenant_corpus_version()")
    op.drop_column("tenants", "corpus_version")
