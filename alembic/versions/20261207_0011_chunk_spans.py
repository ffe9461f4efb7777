"""chunks.start_offset / end_offset: each passage's character span in its page's text

A client highlights a source's passage in the page with them. Chunks ingested before this
revision get NULL (the API leaves the span out); re-ingesting a document gives its chunks spans.

Revision ID: 0011_chunk_spans
Revises: 0010_document_access
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0011_chunk_spans"
down_revision: str | None = "0010_document_access"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("chunks", sa.Column("start_offset", sa.Integer(), nullable=True))
    op.add_column("chunks", sa.Column("end_offset", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("chunks", "end_offset")
    op.drop_column("chunks", "start_offset")
