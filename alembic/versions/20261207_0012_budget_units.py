"""token_budgets.unit: an override is in tokens or in US dollars (kept in micro-USD), one of each
per tenant or key and period

Revision ID: 0012_budget_units
Revises: 0011_chunk_spans
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0012_budget_units"
down_revision: str | None = "0011_chunk_spans"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW_UNIQUE = "uq_token_budgets_tenant_id_principal_id_period_unit"
OLD_UNIQUE = "uq_token_budgets_tenant_id_principal_id_period"


def _unique_constraints() -> list[str]:
    rows = op.get_bind().execute(
        sa.text(
            "SELECT conname FROM pg_constraint "
            "WHERE conrelid = 'token_budgets'::regclass AND contype = 'u'"
        )
    )
    return [name for (name,) in rows]


def upgrade() -> None:
    op.add_column(
        "token_budgets", sa.Column("unit", sa.String(length=8), nullable=False, server_default="tokens")
    )
    op.create_check_constraint(op.f("ck_token_budgets_unit"), "token_budgets", "unit IN ('tokens', 'usd')")
    for name in _unique_constraints():  # named by the naming convention, or by PostgreSQL
        op.drop_constraint(op.f(name), "token_budgets", type_="unique")
    op.create_unique_constraint(op.f(NEW_UNIQUE), "token_budgets", ["tenant_id", "principal_id", "period", "unit"])


def downgrade() -> None:
    op.execute("DELETE FROM token_budgets WHERE unit <> 'tokens'")
    op.drop_constraint(op.f(NEW_UNIQUE), "token_budgets", type_="unique")
    op.create_unique_constraint(op.f(OLD_UNIQUE), "token_budgets", ["tenant_id", "principal_id", "period"])
    op.drop_constraint(op.f("ck_token_budgets_unit"), "token_budgets", type_="check")
    op.drop_column("token_budgets", "unit")
