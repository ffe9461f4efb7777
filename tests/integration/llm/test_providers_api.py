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
        "circuit": "closed",
        "cooling_down_until": None,
        "circuit_open_s": None,
        "last_error_code": None,
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


async def test_no_tenant_sees_a_providers_error_text_which_may_come_from_another_tenant(
    router: RouterApp, fake: FakeLLMServer
) -> None:
    """The provider's error text about one tenant's request (it can quote the prompt) reaches no
    tenant's caller, admins included: this service has no operator role above the tenants'
    admins. Every caller sees the stable code; the operator's log has the text."""
    fake.configure("gemini", mode="error", status=500)
    await router.chain.complete(ChatRequest(messages=(Message("user", "acme's question"),)))
    gemini = router.chain.links[0]
    assert gemini.health.last_error is not None  # kept for the operator's logs
    for tenant, role in (("acme", Role.admin), ("globex", Role.admin), ("globex", Role.reader)):
        caller = await router.make_caller(tenant=tenant, role=role)
        response = await router.client.get("/api/v1/providers", headers=caller.headers)
        shown = {p["name"]: p for p in response.json()["providers"]}["gemini"]
        assert "last_error" not in shown
        assert shown["last_error_code"] == "server_error"
        assert (shown["state"], shown["circuit"]) == ("cooling_down", "open")
        assert "upstream failed" not in response.text  # the fake provider's error text
