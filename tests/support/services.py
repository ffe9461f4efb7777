"""Real PostgreSQL and Redis for the test session: embedded by default, or the servers named by
TEST_DATABASE_URL / TEST_REDIS_URL. Each xdist worker gets its own database; Redis state is
separated by a key prefix per test (never FLUSHALL on a shared server)."""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg
import redis as sync_redis
from psycopg import sql
from sqlalchemy.engine import make_url

from app.db import models  # noqa: F401  (registers the tables on Base.metadata)
from app.db.base import Base
from app.db.migrations import upgrade_to_head
from app.embedded.postgres import EmbeddedPostgres
from app.embedded.redis import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[2]
TEST_DATA_DIR = ROOT / ".data" / "test"

# Every table the migrations create, but Alembic's own: the models' tables and the job queue's
# (procrastinate's, from the vendored schema scripts: no job may leak into the next test's worker).
# Derived, so a new table is emptied between tests without anyone remembering to list it here.
JOB_QUEUE_SCRIPTS = ROOT / "alembic" / "sql"


def _job_queue_tables() -> tuple[str, ...]:
    created = re.compile(r"^CREATE TABLE (?:IF NOT EXISTS )?(\w+)", re.MULTILINE | re.IGNORECASE)
    names = {
        name for script in JOB_QUEUE_SCRIPTS.glob("*.sql") for name in created.findall(script.read_text())
    }
    return tuple(sorted(names))


APP_TABLES = tuple(Base.metadata.tables) + _job_queue_tables()


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def sqlalchemy_url(url: str) -> str:
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url[len("postgres://") :]
    return url


def truncate_app_tables(database_url: str) -> None:
    """Every table of the service empty, whatever a test (or a server it ran) committed."""
    with psycopg.connect(libpq(database_url), autocommit=True) as conn:
        conn.execute("TRUNCATE " + ", ".join(APP_TABLES) + " RESTART IDENTITY CASCADE")


@dataclass
class PostgresForTests:
    base_url: str
    embedded: EmbeddedPostgres | None = None
    created: list[str] = field(default_factory=list)

    def database_url(self, name: str) -> str:
        return make_url(self.base_url).set(database=name).render_as_string(hide_password=False)

    def create_database(self, name: str, *, migrate: bool = True) -> str:
        with psycopg.connect(libpq(self.base_url), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.created.append(name)
        url = self.database_url(name)
        if migrate:
            upgrade_to_head(url)
        return url

    def drop_abandoned_databases(self) -> None:
        """Drop test databases of pytest runs that died without cleaning up (their pid is gone)."""
        with psycopg.connect(libpq(self.base_url), autocommit=True) as conn:
            names = [
                row[0]
                for row in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'ragchat\\_%'")
            ]
            for name in names:
                suffix = name.rsplit("_", 1)[-1]
                if suffix.isdigit() and not psutil.pid_exists(int(suffix)):
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                    )

    def drop_databases(self) -> None:
        with psycopg.connect(libpq(self.base_url), autocommit=True) as conn:
            for name in self.created:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        self.created.clear()

    def stop(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()


def start_postgres() -> PostgresForTests:
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        return PostgresForTests(base_url=sqlalchemy_url(external))
    TEST_DATA_DIR.mkdir(parents=True, exist_ok=True)
    embedded = EmbeddedPostgres(TEST_DATA_DIR, database="postgres")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        url = embedded.start()
    return PostgresForTests(base_url=url, embedded=embedded)


@dataclass
class RedisForTests:
    url: str
    embedded: EmbeddedRedis | None = None

    def stop(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()

    def delete_prefixed(self, prefix: str) -> None:
        """Every key under ``prefix``: how tests isolate Redis state (never FLUSHALL)."""
        client = sync_redis.Redis.from_url(self.url)
        try:
            keys = list(client.scan_iter(match=prefix + "*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


def start_redis(worker_dir: Path) -> RedisForTests:
    external = os.environ.get("TEST_REDIS_URL")
    if external:
        return RedisForTests(url=external)
    embedded = EmbeddedRedis(worker_dir, "redis")
    return RedisForTests(url=embedded.start(), embedded=embedded)
