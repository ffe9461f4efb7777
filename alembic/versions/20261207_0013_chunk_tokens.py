"""chunks.text_tokens / injection_flags: what every prompt needed of a passage, worked out once

Ingestion stores each passage's WordPiece token count (of its text as a prompt quotes it) and its
prompt-injection flags, so answering adds numbers and reads flags instead of tokenizing and
scanning every retrieved passage per request. Chunks stored before this revision get NULL and are
counted and scanned when used, as before (re-ingesting a document stores both). They are not
backfilled here: updating every current chunk rewrites its row, and with it the row's HNSW and
GIN index entries, which on a large corpus would hold up the start for minutes.

Revision ID: 0013_chunk_tokens
Revises: 0012_budget_units
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0013_chunk_tokens"
down_revision: str | None = "0012_budget_units"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("chunks", sa.Column("text_tokens", sa.Integer(), nullable=True))
    op.add_column(
        "chunks", sa.Column("injection_flags", postgresql.ARRAY(sa.String(length=64)), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("chunks", "injection_flags")
    op.drop_column("chunks", "text_tokens")
