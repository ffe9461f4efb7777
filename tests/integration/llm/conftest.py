"""Router fixtures: the fake provider server with the SDKs warmed up, router settings with small
budgets (tests/support/llm.py), an app whose chain talks to the fake through the real SDKs, and
a second process on the same Redis."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

import pytest

from app.llm.chain import ProviderChain
from app.settings import Settings
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.llm import (
    PeerProcess,
    RouterApp,
    StartRouterApp,
    router_app,
    router_overrides,
    warm_up_sdks,
)
from tests.support.services import PostgresForTests, RedisForTests


@pytest.fixture(scope="session")
def database_url(postgres_server: PostgresForTests, worker_name: str) -> str:
    """A database of this process's own: concurrent pytest sessions on one machine share the
    embedded server, and one session's TRUNCATE must not delete another's API keys mid-test."""
    return postgres_server.create_database(f"ragchat_test_llm_{worker_name}_{os.getpid()}")


@pytest.fixture(scope="session")
def fake_llm_server(fake_llm_server: FakeLLMServer) -> FakeLLMServer:
    asyncio.run(warm_up_sdks(fake_llm_server))
    fake_llm_server.reset()
    return fake_llm_server


@pytest.fixture
def router_settings(settings: Settings, fake: FakeLLMServer) -> Settings:
    return settings.model_copy(update=router_overrides(fake))


@pytest.fixture
def start_router_app(router_settings: Settings) -> StartRouterApp:
    """``async with start_router_app(**settings_overrides) as router:`` for per-test settings."""
    return lambda **overrides: router_app(router_settings, **overrides)


@pytest.fixture
async def router(start_router_app: StartRouterApp) -> AsyncIterator[RouterApp]:
    async with start_router_app() as running:
        yield running


@pytest.fixture
def chain(router: RouterApp) -> ProviderChain:
    return router.chain


@pytest.fixture(scope="session")
def peer(redis_server: RedisForTests) -> Iterator[PeerProcess]:
    process = PeerProcess.start(redis_server.url)
    yield process
    process.stop()
