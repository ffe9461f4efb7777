"""per-document access inside a tenant: api_keys.groups and documents.access (GIN-indexed)

Both default to the empty array: existing keys belong to no group and existing documents stay
visible to the whole tenant. The column is added with a constant default, so PostgreSQL does
not rewrite either table.

Revision ID: 0010_document_access
Revises: 0009_token_budgets
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0010_document_access"
down_revision: str | None = "0009_token_budgets"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "api_keys",
        sa.Column(
            "groups",
            postgresql.ARRAY(sa.String(length=64)),
            server_default=sa.text("'{}'::varchar[]"),
            nullable=False,
        ),
    )
    op.add_column(
        "documents",
        sa.Column(
            "access",
            postgresql.ARRAY(sa.String(length=200)),
            server_default=sa.text("'{}'::varchar[]"),
            nullable=False,
        ),
    )
    op.create_index("ix_documents_access", "documents", ["access"], postgresql_using="gin")


def downgrade() -> None:
    op.drop_index("ix_documents_access", table_name="documents")
    op.drop_column("documents", "access")
    op.drop_column("api_keys", "groups")
