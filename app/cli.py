"""`python -m app …`: the operator's entry point.

Startup failures (port taken, unwritable DATA_DIR, database unreachable, pgvector missing) are
reported as one sentence on stderr with a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from types import FrameType

from pydantic import ValidationError

from app.documents.cli import add_document_commands
from app.embedded.errors import StartupError
from app.embedded.services import EmbeddedServices
from app.observability.serving import GUNICORN_CONFIG, worker_environment
from app.settings import Settings

EXIT_STARTUP_FAILED = 2


def _load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]).upper() or "settings"
        raise StartupError(f"invalid configuration: {where}: {first['msg']}") from exc


def _ensure_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {host}:{port} ({exc.strerror}); stop what uses it or pass --port"
            ) from exc


def _migrate(database_url: str) -> None:
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from app.db.migrations import upgrade_to_head

    try:
        upgrade_to_head(database_url)
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "connection failed"
        raise StartupError(f"cannot reach PostgreSQL at DATABASE_URL: {reason}") from exc
    except (ProgrammingError, Exception) as exc:
        message = str(getattr(exc, "orig", exc))
        if 'extension "vector"' in message or "vector.control" in message:
            raise StartupError(
                "the PostgreSQL server has no pgvector extension; install pgvector 0.8+ "
                "or unset DATABASE_URL to use the embedded server"
            ) from exc
        raise


def _forward_signals(child: subprocess.Popen[bytes]) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, _: FrameType | None) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    return handler


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _load_settings()
    host = args.host or settings.host
    port = args.port or settings.port
    workers = args.workers or settings.web_concurrency
    _ensure_port_free(host, port)
    with EmbeddedServices(settings) as services:
        services.export_env()
        resolved = services.settings
        assert resolved.database_url is not None
        if settings.should_auto_migrate:
            _migrate(resolved.database_url)
        if settings.uses_embedded_postgres and settings.debug:
            # Only the developer default (`make run` sets DEBUG=true): an image or any production
            # start never creates or prints an admin key; operators use `python -m app keys`.
            _bootstrap_dev_key(resolved)
        if settings.uses_embedded_postgres:
            # The embedded default runs an ingestion worker inside each server process.
            os.environ.setdefault("RUN_WORKER_IN_PROCESS", "true")
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "app.asgi:app",
            "--worker-class",
            "uvicorn_worker.UvicornWorker",
            "--workers",
            str(workers),
            "--bind",
            f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            "--graceful-timeout",
            "10",
            "--timeout",
            "120",
            "--control-socket",
            os.path.join(tempfile.gettempdir(), f"ragchat-gunicorn-{os.getpid()}.ctl"),
            "--config",
            GUNICORN_CONFIG,
        ]
        print(
            f"serving on http://{host}:{port} with {workers} worker(s)"
            + (" on embedded PostgreSQL" if services.postgres else "")
            + (" and embedded Redis" if services.redis else ""),
            file=sys.stderr,
            flush=True,
        )
        with worker_environment(settings):
            child = subprocess.Popen(command, env=os.environ.copy())
            forward = _forward_signals(child)
            signal.signal(signal.SIGTERM, forward)
            signal.signal(signal.SIGINT, forward)
            code = child.wait()
        # Ctrl-C reaches gunicorn directly; its orderly exit is not a failure.
        return 0 if code in (0, -signal.SIGINT, -signal.SIGTERM) else code


def _bootstrap_dev_key(settings: Settings) -> None:
    from app.auth.admin_cli import bootstrap_dev
    from app.auth.bootstrap import dev_key_path

    key = bootstrap_dev(settings, settings.data_dir)
    if key is not None:
        print(
            f"first start: created tenant 'dev' and its admin API key (shown once, also saved to "
            f"{dev_key_path(settings.data_dir)}):\n  {key}",
            file=sys.stderr,
            flush=True,
        )


def cmd_keys(args: argparse.Namespace) -> int:
    settings = _load_settings()
    with EmbeddedServices(settings) as services:
        assert services.settings.database_url is not None
        if settings.should_auto_migrate:
            _migrate(services.settings.database_url)
        return int(args.keys_handler(services.settings, args))


def cmd_migrate(_: argparse.Namespace) -> int:
    settings = _load_settings()
    with EmbeddedServices(settings) as services:
        assert services.settings.database_url is not None
        _migrate(services.settings.database_url)
    print("database schema is at the latest migration", file=sys.stderr)
    return 0


def _psql_binary() -> str:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return str(POSTGRES_BIN_PATH / "psql")


def _libpq_url(database_url: str) -> str:
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


def cmd_db_shell(_: argparse.Namespace) -> int:
    settings = _load_settings()
    with EmbeddedServices(settings) as services:
        assert services.settings.database_url is not None
        return subprocess.call([_psql_binary(), _libpq_url(services.settings.database_url)])


def cmd_shell(args: argparse.Namespace) -> int:
    """An interactive shell (or ``--command``) whose environment is the service's: the venv on
    PATH and DATABASE_URL / REDIS_URL / CACHE_REDIS_URL pointing at the servers in use (the
    embedded ones are started, or shared with a running ``make run``, and stopped on exit)."""
    settings = _load_settings()
    with EmbeddedServices(settings) as services:
        services.export_env()
        venv_bin = os.path.dirname(sys.executable)
        env = {
            **os.environ,
            "VIRTUAL_ENV": os.path.dirname(venv_bin),
            "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        }
        for name in ("DATABASE_URL", "REDIS_URL", "CACHE_REDIS_URL"):
            if name in env:
                print(f"{name}={env[name]}", file=sys.stderr)
        if args.command_line:
            return subprocess.call(["/bin/bash", "-c", args.command_line], env=env)
        return subprocess.call([os.environ.get("SHELL") or "/bin/bash", "-i"], env=env)


def cmd_db_status(_: argparse.Namespace) -> int:
    from app.db.status import print_db_status

    settings = _load_settings()
    with EmbeddedServices(settings) as services:
        assert services.settings.database_url is not None
        print_db_status(_libpq_url(services.settings.database_url))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app", description="RAG chat API service")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="start the HTTP server (embedded services if no URLs)")
    serve.add_argument("--host", help="bind address (default: HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: PORT or 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (default: WEB_CONCURRENCY or 1)")
    serve.set_defaults(handler=cmd_serve)

    migrate = commands.add_parser("migrate", help="upgrade the database schema to the latest revision")
    migrate.set_defaults(handler=cmd_migrate)

    shell = commands.add_parser("db-shell", help="psql connected to the database in use")
    shell.set_defaults(handler=cmd_db_shell)

    env_shell = commands.add_parser("shell", help="a shell with the venv and the service's environment")
    env_shell.add_argument("--command", "-c", dest="command_line", help="run this instead of a shell")
    env_shell.set_defaults(handler=cmd_shell)

    status = commands.add_parser("db-status", help="pgvector version, tables, row counts and indexes")
    status.set_defaults(handler=cmd_db_status)

    from app.auth.admin_cli import add_keys_parser

    add_keys_parser(commands).set_defaults(handler=cmd_keys)

    add_document_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STARTUP_FAILED
    except KeyboardInterrupt:
        return 130
