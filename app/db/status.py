"""`make db-status`: what is in the database, for an operator at a terminal."""

from __future__ import annotations

import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table


def print_db_status(conninfo: str) -> None:
    console = Console()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        vector = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        has_alembic = conn.execute("SELECT to_regclass('alembic_version')").fetchone()
        revision = (
            conn.execute("SELECT version_num FROM alembic_version").fetchone()
            if has_alembic and has_alembic[0] is not None
            else None
        )
        console.print(f"PostgreSQL {version[0] if version else '?'}")
        console.print(f"pgvector {vector[0] if vector else 'not installed'}")
        console.print(f"migration {revision[0] if revision else 'none applied'}")

        tables = Table(title="tables")
        tables.add_column("table")
        tables.add_column("rows", justify="right")
        names = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        ).fetchall()
        for (name,) in names:
            count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))).fetchone()
            tables.add_row(name, str(count[0] if count else 0))
        console.print(tables)

        indexes = Table(title="indexes")
        indexes.add_column("table")
        indexes.add_column("index")
        indexes.add_column("definition")
        for table, index, definition in conn.execute(
            "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
            " ORDER BY tablename, indexname"
        ).fetchall():
            indexes.add_row(table, index, definition)
        console.print(indexes)
