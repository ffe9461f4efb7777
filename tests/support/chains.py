"""Provider chains of in-memory providers, for unit tests: no network, no Redis (cooldowns off)."""

from __future__ import annotations

from redis.asyncio import Redis

from app.llm.chain import ProviderChain
from app.llm.cooldown import CooldownStore
from app.llm.extractive import ExtractiveAnswerer
from app.llm.link import ProviderLink
from app.llm.observer import NoopObserver
from app.llm.policy import ProviderPolicy
from app.llm.provider import Provider

POLICY = ProviderPolicy(
    total_timeout_s=1.0,
    first_token_timeout_s=1.0,
    stream_idle_timeout_s=1.0,
    max_retries=0,
    cooldown_enabled=False,
)


def chain_of(*providers: Provider | ExtractiveAnswerer) -> ProviderChain:
    links = [ProviderLink(provider=p, policy=POLICY, observer=NoopObserver()) for p in providers]
    unused = Redis(host="127.0.0.1", port=1)  # never called: cooldowns are off
    return ProviderChain(links, CooldownStore(unused, prefix="test:llm:"), NoopObserver())
