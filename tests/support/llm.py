"""In-process apps whose LLM providers are the wire-level fake (tests/fakes/fake_llm_server.py):
settings for one OpenAI link (chat tests) or for the whole SDK chain with small budgets (router
tests), a running router app, and a second OS process reading the same cooldowns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import SecretStr

from app.auth.principal import Role
from app.llm.chain import ProviderChain
from app.llm.gemini import GeminiProvider
from app.llm.groq_provider import GroqProvider
from app.llm.openai_provider import OpenAIProvider
from app.llm.types import ChatRequest, Message
from app.settings import Settings
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.apps import running_app
from tests.support.callers import MakeCaller
from tests.support.services import ROOT

SDK_PROVIDERS = ("gemini", "groq", "openai")

# Small budgets so every fault resolves in about a second; tests assert against these numbers.
TOTAL_S = 1.5
FIRST_TOKEN_S = 0.5
IDLE_S = 0.5
# Long: no test waits a cooldown out; they jump the cooldown store's clock (SteppedClock), so a
# slow, loaded machine can never end one mid-assertion.
COOLDOWN_S = 60.0
# Connecting to the loopback fake is instant on an idle machine; on a loaded one it can take longer
# than any fault-sized budget, and a connect timeout fails over at once. No fault here is about
# connecting (test_failover_policy.py sets its own for that), so the budget is generous.
CONNECT_S = 5.0


def fake_openai_overrides(fake: FakeLLMServer, *, timeout_s: float = 2.0) -> dict[str, Any]:
    """Settings for chat answered by the fake's OpenAI wire only, ingestion left to the test."""
    return {
        "llm_providers": ["openai"],
        "openai_api_key": SecretStr("test-key-openai"),
        "openai_base_url": fake.openai_base_url,
        "openai_timeout_s": timeout_s,
        "run_worker_in_process": False,
    }


def router_overrides(fake: FakeLLMServer) -> dict[str, Any]:
    values: dict[str, Any] = {
        "llm_providers": list(SDK_PROVIDERS),
        "router_cooldown_s": COOLDOWN_S,
        "router_cooldown_base_s": COOLDOWN_S,
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
        values[f"{name}_connect_timeout_s"] = CONNECT_S
    return values


async def warm_up_sdks(fake: FakeLLMServer) -> None:
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


@dataclass
class RouterApp:
    """A running app whose chain talks to the fake, and an admin's HTTP client for it."""

    app: FastAPI
    chain: ProviderChain
    client: httpx.AsyncClient
    settings: Settings
    make_caller: MakeCaller

    async def providers(self) -> dict[str, dict[str, Any]]:
        response = await self.client.get("/api/v1/providers")
        assert response.status_code == 200, response.text
        return {p["name"]: p for p in response.json()["providers"]}


StartRouterApp = Callable[..., AbstractAsyncContextManager[RouterApp]]


@asynccontextmanager
async def router_app(settings: Settings, **overrides: Any) -> AsyncIterator[RouterApp]:
    """``settings`` (already pointing at the fake) with ``overrides``, running."""
    configured = settings.model_copy(update=overrides)
    async with running_app(configured) as (app, client, make_caller):
        admin = await make_caller(role=Role.admin)
        client.headers.update(admin.headers)
        yield RouterApp(app, app.state.resources.provider_chain, client, configured, make_caller)


@dataclass
class PeerProcess:
    """Another OS process that reads cooldowns from Redis with the service's own code
    (tests/support/peer_process.py)."""

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

    @classmethod
    def start(cls, redis_url: str) -> PeerProcess:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.peer_process"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        return cls(process=process, redis_url=redis_url)

    def stop(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        self.process.wait(timeout=10)
        self.process.stdout.close()
