"""OCR: chunks.ocr marks passages whose page text was recognised (a scan, an image), not
extracted; ingestion_jobs.stage_page / stage_pages report page n of N in the `ocr` stage

Existing chunks were all extracted from text layers: they get ocr = false.

Revision ID: 0007_ocr_pages
Revises: 0006_chunk_context
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0007_ocr_pages"
down_revision: str | None = "0006_chunk_context"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("chunks", sa.Column("ocr", sa.Boolean(), server_default=sa.text("false"), nullable=False))
    op.add_column("ingestion_jobs", sa.Column("stage_page", sa.Integer(), nullable=True))
    op.add_column("ingestion_jobs", sa.Column("stage_pages", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("ingestion_jobs", "stage_pages")
    op.drop_column("ingestion_jobs", "stage_page")
    op.drop_column("chunks", "ocr")
