"""job queue: procrastinate 3.10.0 schema (tables, types, functions, triggers)

The schema is a static copy of procrastinate's ``schema.sql`` for the pinned version, kept in
``alembic/sql/`` so this revision never changes under an upgrade. A later procrastinate upgrade
adds a new revision applying the library's own migration files from that version on.

Revision ID: 0002_job_queue
Revises: 0001
Create Date: 2026-11-22 09:00:00
"""

from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0002_job_queue"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "sql" / "procrastinate-3.10.0-schema.sql"


def _execute_script(sql: str) -> None:
    # The driver connection runs the multi-statement script as is (no bind-parameter parsing).
    driver = op.get_bind().connection.dbapi_connection
    assert driver is not None
    with driver.cursor() as cursor:
        cursor.execute(sql)


def upgrade() -> None:
    _execute_script(SCHEMA_FILE.read_text(encoding="utf-8"))


def downgrade() -> None:
    _execute_script(
        """
        DROP TABLE IF EXISTS procrastinate_events, procrastinate_periodic_defers,
            procrastinate_jobs, procrastinate_workers CASCADE;
        DO $$
        DECLARE fn record;
        BEGIN
            FOR fn IN SELECT p.oid::regprocedure AS signature FROM pg_proc p
                JOIN pg_namespace n ON n.oid = p.pronamespace
                WHERE n.nspname = current_schema() AND p.proname LIKE 'procrastinate\\_%'
            LOOP
                EXECUTE 'DROP FUNCTION IF EXISTS ' || fn.signature || ' CASCADE';
            END LOOP;
        END $$;
        DROP TYPE IF EXISTS procrastinate_job_to_defer_v1, procrastinate_job_event_type,
            procrastinate_job_status CASCADE;
        """
    )
