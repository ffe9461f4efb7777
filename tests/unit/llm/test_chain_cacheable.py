"""The chain says whether an answer may be cached: generated answers yes; the apology never; the
extractive answerer's quotes only when no generating provider is configured at all."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from app.llm.chain import NO_PROVIDER, ProviderChain
from app.llm.cooldown import CooldownStore
from app.llm.errors import ServerError
from app.llm.extractive import EXTRACTIVE, ExtractiveAnswerer
from app.llm.link import ProviderLink
from app.llm.observer import NoopObserver
from app.llm.policy import ProviderPolicy
from app.llm.types import ChatRequest, Completion, Message, Passage, StreamEnd
from tests.support.scripted import ScriptedProvider, Step

pytestmark = pytest.mark.unit

# No cooldowns: the chain then never touches Redis, and these tests need none.
POLICY = ProviderPolicy(
    total_timeout_s=1.0,
    first_token_timeout_s=1.0,
    stream_idle_timeout_s=1.0,
    max_retries=0,
    cooldown_enabled=False,
)
REQUEST = ChatRequest(
    messages=(Message("user", "How long is the refund window?"),),
    passages=(Passage(1, "The refund window is 30 days from delivery.", "Returns policy"),),
)


def generator(name: str, *, configured: bool = True, fails: bool = False) -> ScriptedProvider:
    step = Step(error=ServerError("503")) if fails else Step()
    return ScriptedProvider([step], provider_name=name, configured=configured)


def chain_of(*providers: ScriptedProvider | ExtractiveAnswerer) -> ProviderChain:
    links = [ProviderLink(provider=p, policy=POLICY, observer=NoopObserver()) for p in providers]  # type: ignore[arg-type]
    unused = Redis(host="127.0.0.1", port=1)  # never called (cooldowns are off)
    return ProviderChain(links, CooldownStore(unused, prefix="test:llm:"), NoopObserver())


async def answer_both_ways(chain: ProviderChain) -> tuple[Completion, StreamEnd]:
    completion = await chain.complete(REQUEST)
    events = [event async for event in chain.stream(REQUEST)]
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert (end.provider, end.degraded) == (completion.provider, completion.degraded)
    return completion, end


async def test_a_generated_answer_is_cacheable() -> None:
    completion, end = await answer_both_ways(chain_of(generator("groq"), ExtractiveAnswerer()))
    assert completion.provider == "groq"
    assert completion.cacheable and end.cacheable


async def test_quotes_standing_in_for_a_configured_generator_are_not_cacheable() -> None:
    completion, end = await answer_both_ways(chain_of(generator("groq", fails=True), ExtractiveAnswerer()))
    assert completion.provider == EXTRACTIVE
    assert not completion.cacheable and not end.cacheable


async def test_quotes_are_cacheable_when_no_generator_is_configured() -> None:
    chain = chain_of(
        generator("groq", configured=False), generator("openai", configured=False), ExtractiveAnswerer()
    )
    completion, end = await answer_both_ways(chain)
    assert completion.provider == EXTRACTIVE
    assert completion.cacheable and end.cacheable


async def test_the_apology_is_never_cacheable() -> None:
    completion, end = await answer_both_ways(chain_of(generator("groq", fails=True)))
    assert completion.provider == NO_PROVIDER and completion.degraded
    assert not completion.cacheable and not end.cacheable
