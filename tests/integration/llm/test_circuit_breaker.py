"""The router's circuit breaker per provider (``app.llm.cooldown``), shared through Redis: a short
first opening that doubles on each failed half-open probe up to ``ROUTER_COOLDOWN_S``, exactly one
prober across workers, and a recovered provider serving again soon after its recovery.

Time is jumped, never waited: the store's clock and the fake provider's clock are both stepped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime

import pytest
from redis.asyncio import Redis

from app.llm.cooldown import CooldownStore
from app.llm.factory import build_provider_chain, cooldown_store
from app.llm.types import ChatRequest, Message, StreamEnd, StreamStart, TextDelta
from app.settings import Settings
from tests.fakes.fake_llm_server import DEFAULT_TEXT, FakeLLMServer
from tests.support.clock import SteppedClock
from tests.support.llm import StartRouterApp, router_overrides

pytestmark = pytest.mark.integration

REQUEST = ChatRequest(messages=(Message("user", "How long is the refund window?"),))
DEFAULTS = Settings.model_fields
BASE_S = float(DEFAULTS["router_cooldown_base_s"].default)
MAX_S = float(DEFAULTS["router_cooldown_s"].default)


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[CooldownStore]:
    redis = Redis.from_url(settings.redis_url or "")
    made = cooldown_store(settings, redis)
    made.clock = SteppedClock(time.time)
    yield made
    await redis.aclose()


async def open_for(store: CooldownStore, provider: str) -> float:
    """How long the circuit stays open after one more failure of ``provider`` (now)."""
    now = store.clock()
    until = await store.bench(provider, "server_error (HTTP 503)", base_s=5, max_s=20, code="server_error")
    return round(until - now, 3)


async def test_each_failed_probe_doubles_the_opening_up_to_the_cap_and_success_resets_it(
    store: CooldownStore,
) -> None:
    clock = store.clock
    assert isinstance(clock, SteppedClock)
    openings = []
    for _ in range(5):
        openings.append(await open_for(store, "openai"))
        clock.advance(openings[-1])  # the opening lapses: half-open
        state = (await store.states(["openai"]))["openai"]
        assert state.phase == "half_open" and state.code == "server_error"
        assert await store.claim_probe("openai", 1.0)  # this request probes ... and fails again
    assert openings == [5.0, 10.0, 20.0, 20.0, 20.0]

    await store.clear("openai")  # a probe succeeded: closed, escalation forgotten
    assert (await store.states(["openai"]))["openai"].phase == "closed"
    assert await open_for(store, "openai") == 5.0


async def test_failures_while_open_neither_extend_nor_escalate_it_but_retry_after_is_a_floor(
    store: CooldownStore,
) -> None:
    """Many in-flight requests fail at once when a provider goes down: one opening, not many."""
    assert await open_for(store, "groq") == 5.0
    first = (await store.states(["groq"]))["groq"]
    for _ in range(3):
        await store.bench("groq", "server_error", base_s=5, max_s=20)
    again = (await store.states(["groq"]))["groq"]
    assert (again.until, again.strikes) == (first.until, 0)
    now = store.clock()
    until = await store.bench("groq", "rate_limited", base_s=5, max_s=20, floor_s=60)
    assert until == pytest.approx(now + 60, abs=0.01)


async def test_two_workers_elect_exactly_one_prober(settings: Settings, fake: FakeLLMServer) -> None:
    """Two chains on two Redis connections (as two worker processes) meet a half-open provider
    with many requests at once: exactly one request reaches it; the others go to the next one."""
    configured = settings.model_copy(
        update={**router_overrides(fake), "gemini_api_key": None, "router_max_retries": 0}
    )
    connections = [Redis.from_url(configured.redis_url or ""), Redis.from_url(configured.redis_url or "")]
    workers = [build_provider_chain(configured, redis) for redis in connections]
    try:
        first = workers[0].cooldowns
        await first.bench("groq", "server_error", base_s=0.0, code="server_error")  # lapsed: half-open
        fake.configure("groq", hold_first_token=True)  # the probe stays in flight ...
        answered = await asyncio.gather(*(w.complete(REQUEST) for w in workers for _ in range(5)))
        # ... until it times out at the first-token timeout, and then it too is answered by openai.
        assert fake.requests("groq") == 1
        assert [c.provider for c in answered] == ["openai"] * 10
        state = (await workers[1].cooldowns.states(["groq"]))["groq"]
        assert state.phase == "cooling" and state.strikes == 1  # the failed probe re-opened it
    finally:
        for worker in workers:
            await worker.aclose()
        for redis in connections:
            await redis.aclose()


async def test_a_recovered_primary_serves_again_within_30_s_of_its_recovery(
    start_router_app: StartRouterApp, fake: FakeLLMServer
) -> None:
    """The failover suite's scenario, with the product's circuit defaults: the primary answers
    503 for 60 s and then recovers; 20 streamed requests arrive one every 4 s. Every one is
    answered in full, by the fallback while the primary is down, and by the primary again within
    30 s of its recovery, and only probes reach the primary while it is down."""
    outage_s, every_s = 60.0, 4.0
    async with start_router_app(
        llm_providers=["openai", "groq"],
        router_cooldown_s=MAX_S,
        router_cooldown_base_s=BASE_S,
        router_max_retries=0,
    ) as router:
        clock = router.chain.cooldowns.clock = SteppedClock(time.time)
        fake.configure("openai", mode="error", status=503, fail_for_s=outage_s)
        served: list[tuple[float, str]] = []
        circuits: set[str] = set()
        for index in range(20):
            at = index * every_s
            shown = (await router.providers())["openai"]  # what an operator sees as it comes in
            circuits.add(shown["circuit"])
            if shown["circuit"] == "open":
                until = datetime.fromisoformat(shown["cooling_down_until"]).timestamp()
                assert until > clock() and shown["circuit_open_s"] <= MAX_S
            events = [e async for e in router.chain.stream(REQUEST)]
            start, end = events[0], events[-1]
            assert isinstance(start, StreamStart) and isinstance(end, StreamEnd), events
            assert not end.degraded
            assert "".join(e.text for e in events if isinstance(e, TextDelta)) == DEFAULT_TEXT
            served.append((at, start.provider))
            clock.advance(every_s)
            fake.advance_clock(every_s)

    assert {provider for at, provider in served if at < outage_s} == {"groq"}
    back = next(at for at, provider in served if at >= outage_s and provider == "openai")
    assert back - outage_s <= 30.0, served
    assert all(provider == "openai" for at, provider in served if at >= back), served
    probes_while_down = fake.stats()["openai"]["requests"] - sum(1 for _, p in served if p == "openai")
    assert probes_while_down <= 1 + outage_s / BASE_S / 2, served  # probes only, not every request
    assert circuits == {"closed", "open", "half_open"}
