from __future__ import annotations

import httpx
import pytest

from app.auth.principal import Role
from app.llm.types import ChatRequest, Message
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.callers import MakeCaller
from tests.support.llm import RouterApp

pytestmark = pytest.mark.integration


async def test_providers_requires_credentials(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/providers")
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_without_keys_every_model_is_unconfigured_and_extractive_answers(
    client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:
    caller = await make_caller(role=Role.reader)
    response = await client.get("/api/v1/providers", headers=caller.headers)
    assert response.status_code == 200
    providers = {p["name"]: p for p in response.json()["providers"]}
    assert list(providers) == ["gemini", "groq", "openai", "local", "extractive"]
    for name in ("gemini", "groq", "openai"):
        assert providers[name]["configured"] is False
        assert providers[name]["state"] == "unconfigured"
        assert providers[name]["detail"] == f"{name.upper()}_API_KEY is not set"
    assert providers["local"]["detail"] == "LOCAL_MODEL_PATH is not set"
    assert providers["extractive"] == {
        "name": "extractive",
        "model": "extractive-v1",
        "configured": True,
        "healthy": True,
        "state": "ok",
        "cooling_down_until": None,
        "last_error": None,
        "recent_latency_ms": None,
        "detail": None,
    }


async def test_configured_providers_report_latency_after_answering(router: RouterApp) -> None:
    reader = await router.make_caller(role=Role.reader)
    await router.chain.complete(ChatRequest(messages=(Message("user", "hi"),)))
    listed = await router.client.get("/api/v1/providers", headers=reader.headers)
    providers = {p["name"]: p for p in listed.json()["providers"]}
    assert providers["gemini"]["healthy"] is True
    assert providers["gemini"]["recent_latency_ms"] > 0
    assert providers["groq"]["recent_latency_ms"] is None


async def test_only_admins_see_last_error_which_may_come_from_another_tenant(
    router: RouterApp, fake: FakeLLMServer
) -> None:
    fake.configure("gemini", mode="error", status=500)
    await router.chain.complete(ChatRequest(messages=(Message("user", "hi"),)))
    seen = {}
    for role in (Role.reader, Role.admin):
        caller = await router.make_caller(role=role)
        listed = (await router.client.get("/api/v1/providers", headers=caller.headers)).json()["providers"]
        seen[role] = {p["name"]: p for p in listed}["gemini"]
    assert "server_error" in seen[Role.admin]["last_error"]
    assert seen[Role.reader]["last_error"] is None
    assert seen[Role.reader]["state"] == seen[Role.admin]["state"] == "cooling_down"
