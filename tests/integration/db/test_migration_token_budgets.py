"""0009_token_budgets: up, down, up again."""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest

from alembic import command
from app.db.migrations import alembic_config, upgrade_to_head
from tests.support.services import PostgresForTests, libpq

pytestmark = [pytest.mark.integration, pytest.mark.pgvector]

BEFORE = "0008_document_source_url"


@pytest.fixture
def empty_database(postgres_server: PostgresForTests, worker_name: str) -> str:
    return postgres_server.create_database(
        f"ragchat_token_budgets_{worker_name}_{os.getpid()}", migrate=False
    )


def tables(url: str) -> set[str]:
    with psycopg.connect(libpq(url)) as conn:
        rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        return {name for (name,) in rows.fetchall()}


def test_token_budget_tables_come_and_go_with_the_migration(empty_database: str) -> None:
    upgrade_to_head(empty_database)
    assert {"token_budgets", "token_usage"} <= tables(empty_database)
    tenant = uuid.uuid4()
    with psycopg.connect(libpq(empty_database)) as conn:
        conn.execute("INSERT INTO tenants (id, slug, name) VALUES (%s, 'acme', 'Acme')", (tenant,))
        conn.execute(
            "INSERT INTO token_usage (tenant_id, principal_id, provider, model, day, tokens) "
            "VALUES (%s, 'key:1', 'openai', 'gpt', current_date, 42)",
            (tenant,),
        )
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO token_budgets (tenant_id, period, tokens) VALUES (%s, 'day', 0)", (tenant,)
            )

    command.downgrade(alembic_config(empty_database), BEFORE)
    assert not {"token_budgets", "token_usage"} & tables(empty_database)

    upgrade_to_head(empty_database)
    assert {"token_budgets", "token_usage"} <= tables(empty_database)


def columns(url: str, table: str) -> set[str]:
    with psycopg.connect(libpq(url)) as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,)
        )
        return {name for (name,) in rows.fetchall()}


def test_budget_units_let_a_token_and_a_money_budget_share_a_period_and_go_back_down(
    empty_database: str,
) -> None:
    upgrade_to_head(empty_database)
    tenant = uuid.uuid4()
    with psycopg.connect(libpq(empty_database), autocommit=True) as conn:
        conn.execute("INSERT INTO tenants (id, slug, name) VALUES (%s, 'acme', 'Acme')", (tenant,))
        conn.execute(
            "INSERT INTO token_budgets (tenant_id, period, tokens) VALUES (%s, 'day', 500)", (tenant,)
        )
        conn.execute(
            "INSERT INTO token_budgets (tenant_id, period, unit, tokens) VALUES (%s, 'day', 'usd', 5000000)",
            (tenant,),
        )
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "INSERT INTO token_budgets (tenant_id, period, unit, tokens) VALUES (%s, 'day', 'usd', 1)",
                (tenant,),
            )
    with (
        psycopg.connect(libpq(empty_database), autocommit=True) as conn,
        pytest.raises(psycopg.errors.CheckViolation),
    ):
        conn.execute(
            "INSERT INTO token_budgets (tenant_id, period, unit, tokens) VALUES (%s, 'month', 'eur', 1)",
            (tenant,),
        )

    command.downgrade(alembic_config(empty_database), "0009_token_budgets")
    assert "unit" not in columns(empty_database, "token_budgets")
    with psycopg.connect(libpq(empty_database), autocommit=True) as conn:
        rows = conn.execute("SELECT period, tokens FROM token_budgets").fetchall()
    assert rows == [("day", 500)]  # the money budget is gone, the token budget stays

    upgrade_to_head(empty_database)
    assert "unit" in columns(empty_database, "token_budgets")
