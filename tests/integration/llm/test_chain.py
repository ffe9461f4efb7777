"""Chain behaviour beyond single faults: pinning, eager streaming, concurrency, metrics hooks."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from app.llm.chain import ProviderChain
from app.llm.errors import UnknownModelError
from app.llm.factory import build_provider_chain, cooldown_store
from app.llm.types import ChatRequest, Message, StreamEnd, StreamStart, TextDelta, Usage
from app.settings import Settings
from tests.fakes.fake_llm_server import DEFAULT_TEXT, FakeLLMServer
from tests.support.llm import SDK_PROVIDERS, RouterApp, StartRouterApp, router_overrides

pytestmark = pytest.mark.integration


def ask(model: str | None = None) -> ChatRequest:
    return ChatRequest(messages=(Message("user", "hello?"),), model=model)


@pytest.mark.parametrize(
    ("pin", "expected_model"),
    [
        ("groq", "llama-3.3-70b-versatile"),
        ("groq/llama-3.3-70b-versatile", "llama-3.3-70b-versatile"),
        ("llama-3.3-70b-versatile", "llama-3.3-70b-versatile"),
        ("groq/llama-3.1-8b-instant", "llama-3.1-8b-instant"),  # in GROQ_ALLOWED_MODELS
        ("llama-3.1-8b-instant", "llama-3.1-8b-instant"),
    ],
)
async def test_model_pins_a_provider_and_an_allowed_model(
    pin: str, expected_model: str, start_router_app: StartRouterApp, fake: FakeLLMServer
) -> None:
    async with start_router_app(groq_allowed_models=["llama-3.1-8b-instant"]) as router:
        completion = await router.chain.complete(ask(pin))
    assert completion.provider == "groq"
    assert fake.stats()["groq"]["last_request"]["model"] == expected_model
    assert fake.requests("gemini") == 0


@pytest.mark.parametrize(
    "pin", ["mistral", "mistral/large", "gpt-9000", "groq/llama-3.1-405b-reasoning", "openai/gpt-4o"]
)
async def test_unknown_model_is_a_422(pin: str, chain: ProviderChain, fake: FakeLLMServer) -> None:
    with pytest.raises(UnknownModelError) as raised:
        await chain.complete(ask(pin))
    assert raised.value.status == 422 and raised.value.code == "unknown_model"
    assert sum(fake.requests(name) for name in SDK_PROVIDERS) == 0


async def test_pinned_provider_that_fails_gets_the_apology_not_another_provider(
    chain: ProviderChain, fake: FakeLLMServer
) -> None:
    fake.configure("openai", mode="error", status=401)
    completion = await chain.complete(ask("openai"))
    assert completion.degraded and completion.provider == "none"
    assert fake.requests("gemini") == fake.requests("groq") == 0


async def test_gemini_429_before_the_first_token_falls_back_with_nothing_emitted(
    chain: ProviderChain, fake: FakeLLMServer
) -> None:
    fake.configure("gemini", mode="error", status=429, retry_after=30)
    events = [event async for event in chain.stream(ask())]
    assert events[0] == StreamStart(provider="groq", model="llama-3.3-70b-versatile")
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == DEFAULT_TEXT
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.provider == "groq" and end.usage is not None
    assert fake.stats()["gemini"]["stream_requests"] == 1


async def test_busy_provider_overflows_to_the_next_without_cooldown(
    start_router_app: StartRouterApp, fake: FakeLLMServer
) -> None:
    # The first token comes at once and the answer takes ~0.9 s: the one slot stays taken longer
    # than the second request waits for it (FIRST_TOKEN_S), without tripping any timeout.
    fake.configure("gemini", mode="ok", token_delay_s=0.1)
    async with start_router_app(gemini_max_concurrency=1) as router:
        first, second = await asyncio.gather(router.chain.complete(ask()), router.chain.complete(ask()))
        assert sorted([first.provider, second.provider]) == ["gemini", "groq"]
        assert fake.requests("gemini") == 1
        assert (await router.providers())["gemini"]["state"] == "ok"


async def test_observer_hears_attempts_skips_and_cooldowns(settings: Settings, fake: FakeLLMServer) -> None:
    heard: list[tuple[str, ...]] = []

    class Recorder:
        def on_attempt(
            self, *, provider: str, model: str, outcome: str, latency_s: float, usage: Usage | None
        ) -> None:
            heard.append(("attempt", provider, outcome))

        def on_skip(self, *, provider: str, reason: str) -> None:
            heard.append(("skip", provider, reason))

        def on_cooldown(self, *, provider: str, until: float, error_code: str) -> None:
            heard.append(("cooldown", provider, error_code))

    configured = settings.model_copy(update=router_overrides(fake))
    redis = Redis.from_url(configured.redis_url or "")
    chain = build_provider_chain(configured, redis, Recorder())
    try:
        fake.configure("gemini", mode="error", status=401)
        await chain.complete(ask())
        await chain.complete(ask())
    finally:
        await chain.aclose()
        await redis.aclose()
    assert heard == [
        ("attempt", "gemini", "auth_failed"),
        ("cooldown", "gemini", "auth_failed"),
        ("attempt", "groq", "success"),
        ("skip", "gemini", "cooling_down"),
        ("attempt", "groq", "success"),
    ]


async def test_half_open_provider_is_probed_by_one_request_at_a_time(
    router: RouterApp, fake: FakeLLMServer
) -> None:
    resources = router.app.state.resources
    store = cooldown_store(resources.settings, resources.redis)
    await store.bench("gemini", "server_error: test", base_s=0.0)  # open until now: half-open
    assert await store.claim_probe("gemini", 5.0)  # someone else is probing right now
    completion = await resources.provider_chain.complete(ask())
    assert completion.provider == "groq"
    assert fake.requests("gemini") == 0
