"""answer_feedback: principals' scores for the answers they received

One row per (tenant_id, principal_id, trace_id): rating an answer again replaces the score. The
row keeps what was rated (question, answer, sources, provider, model, when it was answered), so
the feedback export can become golden-set questions after the Redis record of the answer expired.

Downgrade drops the table and the feedback in it.

Revision ID: 0005_answer_feedback
Revises: 0004_conversation_client_id
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0005_answer_feedback"
down_revision: str | None = "0004_conversation_client_id"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "answer_feedback",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("principal_id", sa.String(length=200), nullable=False),
        sa.Column("trace_id", sa.String(length=64), nullable=False),
        sa.Column("score", sa.SmallInteger(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column(
            "sources",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("score IN (-1, 1, 2, 3, 4, 5)", name=op.f("ck_answer_feedback_score")),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_answer_feedback_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_answer_feedback")),
        sa.UniqueConstraint(
            "tenant_id",
            "principal_id",
            "trace_id",
            name=op.f("uq_answer_feedback_tenant_id_principal_id_trace_id"),
        ),
    )
    op.create_index(
        "ix_answer_feedback_tenant_id_updated_at_id",
        "answer_feedback",
        ["tenant_id", "updated_at", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_answer_feedback_tenant_id_updated_at_id", table_name="answer_feedback")
    op.drop_table("answer_feedback")
