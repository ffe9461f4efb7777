"""`python -m app …`: the operator's entry point.

One module per command group (``server``, ``database``, ``shell``, ``keys``, ``documents``), all
set up by ``bootstrap``. Startup failures (port taken, unwritable DATA_DIR, database unreachable,
pgvector missing) are reported as one sentence on stderr with a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from app.cli import budgets, database, documents, keys, server, shell
from app.embedded.errors import StartupError

EXIT_STARTUP_FAILED = 2

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app", description="RAG chat API service")
    commands = parser.add_subparsers(dest="command", required=True)
    server.add_serve_command(commands)
    database.add_migrate_command(commands)
    database.add_db_shell_command(commands)
    shell.add_shell_command(commands)
    database.add_db_status_command(commands)
    keys.add_keys_command(commands)
    budgets.add_budgets_command(commands)
    documents.add_document_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STARTUP_FAILED
    except KeyboardInterrupt:
        return 130
