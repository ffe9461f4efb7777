"""Session-wide real services and per-test isolation (see tests/support/services.py); the test's app
and its client (tests/support/apps.py); the wire-level fake LLM provider."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.auth.principal import Role
from app.embedded.redis import EmbeddedRedis
from app.rag.embeddings import Embedder, LocalEmbedder, OnnxEmbedder
from app.resources import Resources
from app.settings import Settings
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.apps import RunningApp, running_app
from tests.support.callers import Caller, MakeCaller
from tests.support.embedders import HashingEmbedder
from tests.support.library import Library
from tests.support.services import (
    PostgresForTests,
    RedisForTests,
    start_postgres,
    start_redis,
    truncate_app_tables,
)
from tests.support.tiny_models import TinyModels, build_tiny_models

pytest_plugins = ["tests.support.leaks"]


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
    redis_server.delete_prefixed(prefix)


@pytest.fixture
def clean_database(database_url: str) -> Iterator[str]:
    """Every table empty after the test, whatever it committed."""
    yield database_url
    truncate_app_tables(database_url)


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
def app_embedder() -> Embedder | None:
    """The embedder the ``app`` fixture shares; None: the app builds the one its settings name.
    Folders whose tests embed override it with the session's model."""
    return None


@pytest.fixture
async def running(settings: Settings, app_embedder: Embedder | None) -> AsyncIterator[RunningApp]:
    """The test's app (tests/support/apps.py), with the ``settings`` of its folder or module."""
    async with running_app(settings, embedder=app_embedder) as running:
        yield running


@pytest.fixture
def app(running: RunningApp) -> FastAPI:
    return running.app


@pytest.fixture
def client(running: RunningApp) -> httpx.AsyncClient:
    """The HTTP client of the test's app."""
    return running.client


@pytest.fixture
def make_caller(running: RunningApp) -> MakeCaller:
    """Creates real tenants and API keys in this test's database."""
    return running.make_caller


@pytest.fixture
def resources(running: RunningApp) -> Resources:
    return running.resources


@pytest.fixture
async def editor(make_caller: MakeCaller) -> Caller:
    return await make_caller(tenant="acme", role=Role.editor)


@pytest.fixture
def library(client: httpx.AsyncClient, resources: Resources, editor: Caller) -> Library:
    """The editor's documents, uploaded over HTTP and ingested before ``add`` returns."""
    return Library(client, resources, editor)


@pytest.fixture(scope="session")
def fake_llm_server() -> Iterator[FakeLLMServer]:
    """The wire-level fake of OpenAI, Groq and Gemini, one per test process."""
    server = FakeLLMServer().start()
    yield server
    server.stop()


@pytest.fixture
def fake(fake_llm_server: FakeLLMServer) -> Iterator[FakeLLMServer]:
    """The fake, every provider back to answering normally before and after the test."""
    fake_llm_server.reset()
    yield fake_llm_server
    fake_llm_server.reset()


@pytest.fixture
def stoppable_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of the test's own, to stop and start again mid-test."""
    server = EmbeddedRedis(tmp_path, "stoppable")
    server.start()
    yield server
    server.stop()


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
    """The real local embedding model on the default (ONNX) backend, loaded once per test session
    (per xdist worker)."""
    model = OnnxEmbedder("all-MiniLM-L6-v2", 384, batch_size=32)
    model.load()
    return model


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> TinyModels:
    """Small random-weight embedding and cross-encoder models written at test time
    (tests/support/tiny_models.py), built once per test run: the xdist workers share one build."""
    base = tmp_path_factory.getbasetemp()
    return build_tiny_models((base.parent if worker_id != "master" else base) / "tiny-models")


@pytest.fixture
def hashing_embedder() -> HashingEmbedder:
    """A pure, deterministic stand-in for unit tests (no model, no threads)."""
    return HashingEmbedder()
