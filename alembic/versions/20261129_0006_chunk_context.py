"""chunks.context: the document title and section heading a chunk is embedded and indexed with

Full-text search indexes the context line and the text together, as the embedding sees them.
Existing chunks get an empty context (their vectors were made without one); `make reembed` or a
new upload gives them one.

Revision ID: 0006_chunk_context
Revises: 0005_answer_feedback
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0006_chunk_context"
down_revision: str | None = "0005_answer_feedback"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WITH_CONTEXT = "to_tsvector('english', context || E'\\n' || text)"
_TEXT_ONLY = "to_tsvector('english', text)"


def _search_tsv(expression: str) -> None:
    op.drop_index("ix_chunks_search_tsv", table_name="chunks", postgresql_using="gin")
    op.drop_column("chunks", "search_tsv")
    op.add_column(
        "chunks",
        sa.Column("search_tsv", postgresql.TSVECTOR(), sa.Computed(expression, persisted=True), nullable=False),
    )
    op.create_index("ix_chunks_search_tsv", "chunks", ["search_tsv"], unique=False, postgresql_using="gin")


def upgrade() -> None:
    op.add_column("chunks", sa.Column("context", sa.Text(), server_default="", nullable=False))
    _search_tsv(_WITH_CONTEXT)


def downgrade() -> None:
    _search_tsv(_TEXT_ONLY)
    op.drop_column("chunks", "context")
