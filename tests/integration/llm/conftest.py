"""Router fixtures: the fake provider server, router settings with small budgets, an app
whose chain talks to the fake through the real SDKs, and a second process on the same Redis."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from pydantic import SecretStr

from app.auth.principal import Role
from app.llm.chain import ProviderChain
from app.llm.gemini import GeminiProvider
from app.llm.groq_provider import GroqProvider
from app.llm.openai_provider import OpenAIProvider
from app.llm.types import ChatRequest, Message
from app.main import create_app
from app.settings import Settings
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.callers import caller_factory
from tests.support.server import ROOT
from tests.support.services import PostgresForTests, RedisForTests

SDK_PROVIDERS = ("gemini", "groq", "openai")

# Small budgets so every fault resolves in about a second; tests assert against these numbers.
TOTAL_S = 1.5
FIRST_TOKEN_S = 0.5
IDLE_S = 0.5
# Long: no test waits a cooldown out; they jump the cooldown store's clock (SteppedClock), so a
# slow, loaded machine can never end one mid-assertion.
COOLDOWN_S = 60.0


def router_overrides(fake: FakeLLMServer) -> dict[str, Any]:
    values: dict[str, Any] = {
        "llm_providers": list(SDK_PROVIDERS),
        "router_cooldown_s": COOLDOWN_S,
        "router_max_retries": 2,
        "router_backoff_base_s": 0.05,
        "router_backoff_max_s": 0.2,
        "router_stream_idle_timeout_s": IDLE_S,
        "gemini_base_url": fake.gemini_base_url,
        "groq_base_url": fake.groq_base_url,
        "openai_base_url": fake.openai_base_url,
    }
    for name in SDK_PROVIDERS:
        values[f"{name}_api_key"] = SecretStr(f"test-key-{name}")
        values[f"{name}_timeout_s"] = TOTAL_S
        values[f"{name}_first_token_timeout_s"] = FIRST_TOKEN_S
        values[f"{name}_connect_timeout_s"] = 0.5
    return values


@pytest.fixture(scope="session")
def database_url(postgres_server: PostgresForTests, worker_name: str) -> str:
    """A database of this process's own: concurrent pytest sessions on one machine share the
    embedded server, and one session's TRUNCATE must not delete another's API keys mid-test."""
    return postgres_server.create_database(f"ragchat_test_llm_{worker_name}_{os.getpid()}")


async def _warm_up_sdks(fake: FakeLLMServer) -> None:
    """One JSON and one streamed answer per SDK, so the first test of a process does not pay for
    the SDKs' lazy set-up inside its half-second first-token budget."""
    request = ChatRequest(messages=(Message("user", "warm up"),))
    adapters: dict[str, type[GeminiProvider | GroqProvider | OpenAIProvider]] = {
        "gemini": GeminiProvider,
        "groq": GroqProvider,
        "openai": OpenAIProvider,
    }
    for name in SDK_PROVIDERS:
        provider = adapters[name](
            api_key="warm-up",
            model="warm-up",
            base_url=getattr(fake, f"{name}_base_url"),
            connect_timeout_s=5.0,
            total_timeout_s=30.0,
        )
        try:
            await provider.complete(request, "warm-up")
            _ = [chunk async for chunk in provider.stream(request, "warm-up")]
        finally:
            await provider.aclose()


@pytest.fixture(scope="session")
def fake_llm_server() -> Iterator[FakeLLMServer]:
    server = FakeLLMServer().start()
    asyncio.run(_warm_up_sdks(server))
    server.reset()
    yield server
    server.stop()


@pytest.fixture
def fake(fake_llm_server: FakeLLMServer) -> Iterator[FakeLLMServer]:
    fake_llm_server.reset()
    yield fake_llm_server
    fake_llm_server.reset()


@pytest.fixture
def router_settings(settings: Settings, fake: FakeLLMServer) -> Settings:
    return settings.model_copy(update=router_overrides(fake))


@pytest.fixture
async def llm_app(router_settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(router_settings)
    async with LifespanManager(application):
        yield application


@pytest.fixture
def chain(llm_app: FastAPI) -> ProviderChain:
    chain: ProviderChain = llm_app.state.resources.provider_chain
    return chain


@pytest.fixture
async def llm_client(llm_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    caller = await caller_factory(llm_app.state.resources.session_factory)(role=Role.reader)
    transport = httpx.ASGITransport(app=llm_app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=caller.headers
    ) as http:
        yield http


@dataclass
class RouterApp:
    """A running app whose chain talks to the fake, and a reader's HTTP client for it."""

    app: FastAPI
    chain: ProviderChain
    client: httpx.AsyncClient
    settings: Settings

    async def providers(self) -> dict[str, dict[str, Any]]:
        response = await self.client.get("/api/v1/providers")
        assert response.status_code == 200, response.text
        return {p["name"]: p for p in response.json()["providers"]}


StartRouterApp = Callable[..., AbstractAsyncContextManager[RouterApp]]


@pytest.fixture
def start_router_app(settings: Settings, fake: FakeLLMServer) -> StartRouterApp:
    """``async with start_router_app(**settings_overrides) as router:`` for per-test settings."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[RouterApp]:
        configured = settings.model_copy(update={**router_overrides(fake), **overrides})
        application = create_app(configured)
        async with LifespanManager(application):
            resources = application.state.resources
            # an admin: the router state it reads includes last_error (admins only)
            caller = await caller_factory(resources.session_factory)(role=Role.admin)
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://testserver", headers=caller.headers
            ) as http:
                yield RouterApp(application, resources.provider_chain, http, configured)

    return start


@dataclass
class PeerProcess:
    """Another OS process that reads cooldowns from Redis with the service's own code."""

    process: subprocess.Popen[str]
    redis_url: str

    def states(self, prefix: str, providers: tuple[str, ...] = SDK_PROVIDERS) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        request = {"redis_url": self.redis_url, "prefix": prefix, "providers": list(providers)}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer: dict[str, Any] = json.loads(self.process.stdout.readline())
        assert answer["pid"] != os.getpid()
        states: dict[str, Any] = answer["states"]
        return states


@pytest.fixture(scope="session")
def peer(redis_server: RedisForTests) -> Iterator[PeerProcess]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.llm.peer_process"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    yield PeerProcess(process=process, redis_url=redis_server.url)
    assert process.stdin is not None and process.stdout is not None
    process.stdin.close()
    process.wait(timeout=10)
    process.stdout.close()
