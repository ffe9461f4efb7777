from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from app.llm.cooldown import CooldownStore
from app.llm.factory import cooldown_store
from app.settings import Settings
from tests.support.clock import SteppedClock
from tests.support.server import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[CooldownStore]:
    redis = Redis.from_url(settings.redis_url or "")
    yield cooldown_store(settings, redis)
    await redis.aclose()


async def test_bench_then_half_open_then_cleared(store: CooldownStore) -> None:
    clock = store.clock = SteppedClock(time.time)
    until = await store.bench("groq", "rate_limited (HTTP 429): slow down", base_s=30)
    state = (await store.states(["groq", "openai"]))["groq"]
    assert state.phase == "cooling" and state.until == pytest.approx(until)
    assert state.error == "rate_limited (HTTP 429): slow down"
    clock.advance(30)
    assert (await store.states(["groq"]))["groq"].phase == "half_open"
    assert await store.claim_probe("groq", 1.0)
    assert not await store.claim_probe("groq", 1.0)  # one probe at a time, across processes
    await store.clear("groq")
    assert (await store.states(["groq"]))["groq"].phase == "closed"
    assert await store.claim_probe("groq", 1.0)


async def test_keys_use_the_service_prefix(store: CooldownStore, settings: Settings) -> None:
    await store.bench("openai", "auth_failed", base_s=5)
    redis = Redis.from_url(settings.redis_url or "")
    try:
        keys = [k.decode() async for k in redis.scan_iter(match=settings.redis_key_prefix + "llm:*")]
    finally:
        await redis.aclose()
    assert keys == [settings.redis_key_prefix + "llm:cooldown:openai"]


async def test_redis_outage_reads_as_not_cooling(settings: Settings) -> None:
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    store = cooldown_store(settings, dead)
    try:
        assert (await store.states(["gemini"]))["gemini"].phase == "closed"
        await store.bench("gemini", "timeout", base_s=5)  # logged, not raised
        assert await store.claim_probe("gemini", 1.0)
    finally:
        await dead.aclose()
