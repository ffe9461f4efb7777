"""Session-wide real services and per-test isolation (see tests/support/services.py)."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import redis as sync_redis
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.main import create_app
from app.rag.embeddings import LocalEmbedder
from app.settings import Settings
from tests.support.callers import MakeCaller, caller_factory
from tests.support.embedders import HashingEmbedder
from tests.support.services import (
    PostgresForTests,
    RedisForTests,
    libpq,
    start_postgres,
    start_redis,
)

pytest_plugins = ["tests.support.leaks"]

APP_TABLES = (
    "audit_log",
    "messages",
    "conversations",
    "ingestion_jobs",
    "chunks",
    "document_versions",
    "documents",
    "api_keys",
    "tenants",
    # the job queue's tables (procrastinate): no job may leak into the next test's worker
    "procrastinate_events",
    "procrastinate_periodic_defers",
    "procrastinate_jobs",
    "procrastinate_workers",
)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresForTests]:
    server = start_postgres()
    yield server
    server.drop_databases()
    server.stop()


@pytest.fixture(scope="session")
def worker_name(worker_id: str) -> str:
    return worker_id if worker_id != "master" else "main"


@pytest.fixture(scope="session")
def database_url(postgres_server: PostgresForTests, worker_name: str) -> str:
    """This worker's database, migrated to head with Alembic (not create_all)."""
    # The pid keeps concurrent pytest runs on one machine (and one embedded server) apart.
    postgres_server.drop_abandoned_databases()
    return postgres_server.create_database(f"ragchat_test_{worker_name}_{os.getpid()}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisForTests]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_prefix(redis_server: RedisForTests, worker_name: str) -> Iterator[str]:
    prefix = f"test:{worker_name}:{secrets.token_hex(4)}:"
    yield prefix
    client = sync_redis.Redis.from_url(redis_server.url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def clean_database(database_url: str) -> Iterator[str]:
    """Every table empty after the test, whatever it committed."""
    yield database_url
    with psycopg.connect(libpq(database_url), autocommit=True) as conn:
        conn.execute("TRUNCATE " + ", ".join(APP_TABLES) + " RESTART IDENTITY CASCADE")


@pytest.fixture
def settings(clean_database: str, redis_server: RedisForTests, redis_prefix: str, tmp_path: Path) -> Settings:
    return Settings(
        debug=True,
        database_url=clean_database,
        redis_url=redis_server.url,
        redis_key_prefix=redis_prefix,
        # Apps built per test share the session's model (the `embedder` fixture) or never embed.
        embedding_warm_up=False,
        data_dir=tmp_path / "data",
        log_json=True,
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with LifespanManager(application):
        yield application


@pytest.fixture
def make_caller(app: FastAPI) -> MakeCaller:
    """Creates real tenants and API keys in this test's database."""
    return caller_factory(app.state.resources.session_factory)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
def embedded_data_dir() -> Iterator[Path]:
    """DATA_DIR for an embedded PostgreSQL that the test starts itself.

    Not under ``tmp_path``: as root, the server runs as an unprivileged user that must traverse
    every parent directory, and each pytest session on the machine resets
    ``/tmp/pytest-of-<user>`` to mode 0700, so a concurrent test run would lock the server out
    of its own files mid-test."""
    path = Path(tempfile.mkdtemp(prefix="ragchat-embedded-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def embedder() -> LocalEmbedder:
    """The real local embedding model, loaded once per test session (per xdist worker)."""
    model = LocalEmbedder("all-MiniLM-L6-v2", 384, batch_size=32)
    model.load()
    return model


@pytest.fixture
def hashing_embedder() -> HashingEmbedder:
    """A pure, deterministic stand-in for unit tests (no model, no threads)."""
    return HashingEmbedder()
