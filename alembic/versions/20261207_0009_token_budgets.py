"""token_budgets (admins' per-tenant and per-key overrides) and token_usage (settled spend per
tenant, key, provider, model and day)

Revision ID: 0009_token_budgets
Revises: 0008_document_source_url
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0009_token_budgets"
down_revision: str | None = "0008_document_source_url"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "token_budgets",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("tenant_id", sa.Uuid(), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("principal_id", sa.String(length=200), nullable=False, server_default=""),
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.UniqueConstraint("tenant_id", "principal_id", "period"),
        sa.CheckConstraint("period IN ('day', 'month')", name="period"),
        sa.CheckConstraint("tokens > 0", name="tokens_positive"),
    )
    op.create_table(
        "token_usage",
        sa.Column("tenant_id", sa.Uuid(), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("principal_id", sa.String(length=200), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("tokens", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("cost_micro_usd", sa.BigInteger(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("tenant_id", "principal_id", "provider", "model", "day"),
    )


def downgrade() -> None:
    op.drop_table("token_usage")
    op.drop_table("token_budgets")
