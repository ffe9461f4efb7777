from __future__ import annotations

import asyncio

import pytest

from app.llm.errors import (
    AuthFailed,
    EmptyResponse,
    ProviderBusy,
    ProviderTimeout,
    RateLimited,
    ServerError,
)
from app.llm.link import ProviderLink
from app.llm.observer import NoopObserver
from app.llm.policy import ProviderPolicy
from app.llm.types import ChatRequest, Message, Usage
from tests.support.scripted import ScriptedProvider, Step

pytestmark = pytest.mark.unit

REQUEST = ChatRequest(messages=(Message("user", "hi"),))


def make_link(steps: list[Step], **policy: object) -> tuple[ProviderLink, ScriptedProvider]:
    values: dict[str, object] = {
        "total_timeout_s": 1.0,
        "first_token_timeout_s": 0.2,
        "stream_idle_timeout_s": 0.2,
        "max_retries": 2,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.02,
    }
    values.update(policy)
    provider = ScriptedProvider(steps)
    link = ProviderLink(provider=provider, policy=ProviderPolicy(**values), observer=NoopObserver())  # type: ignore[arg-type]
    return link, provider


async def test_retries_transient_errors_then_answers() -> None:
    link, provider = make_link([Step(error=ServerError("500")), Step(error=RateLimited("429")), Step()])
    generation = await link.complete(REQUEST, "m")
    assert generation.text == "hello world"
    assert provider.calls == 3


async def test_gives_up_after_max_retries() -> None:
    link, provider = make_link([Step(error=ServerError("500"))], max_retries=2)
    with pytest.raises(ServerError):
        await link.complete(REQUEST, "m")
    assert provider.calls == 3


async def test_auth_failures_are_not_retried() -> None:
    link, provider = make_link([Step(error=AuthFailed("401"))])
    with pytest.raises(AuthFailed):
        await link.complete(REQUEST, "m")
    assert provider.calls == 1


async def test_a_silent_provider_costs_at_most_its_total_budget() -> None:
    # Each attempt is abandoned at the 0.2 s first-token timeout; without the 0.3 s total budget
    # the link would make all 3 attempts (max_retries=2).
    link, provider = make_link([Step(delay_s=60)], total_timeout_s=0.3)
    with pytest.raises(ProviderTimeout):
        await link.complete(REQUEST, "m")
    assert provider.calls < 3, "the total budget did not stop the retries"


async def test_retry_after_longer_than_the_budget_gives_up_at_once() -> None:
    link, provider = make_link([Step(error=RateLimited("429", retry_after=30))], total_timeout_s=1.0)
    with pytest.raises(RateLimited):
        # a guard, not a measurement: waiting out the 30 s Retry-After would trip it
        await asyncio.wait_for(link.complete(REQUEST, "m"), timeout=15)
    assert provider.calls == 1


async def test_stream_opens_only_when_the_first_token_arrives_in_time() -> None:
    link, provider = make_link([Step(delay_s=0.01), Step()], first_token_timeout_s=1.0)
    opened = await link.open_stream(REQUEST, "m")
    assert opened.first == "hello"
    assert provider.calls == 1
    rest = [text async for text in opened.rest()]
    assert rest == [" world"]
    assert opened.usage == Usage(1, 2)
    await opened.aclose()


async def test_a_first_token_timeout_is_not_retried_on_the_same_provider() -> None:
    """A provider silent past the first-token timeout had its chance: the chain's next provider
    gets the request at once instead of a second wait on this one."""
    link, provider = make_link([Step(delay_s=5), Step()], first_token_timeout_s=0.1)
    with pytest.raises(ProviderTimeout):
        await link.open_stream(REQUEST, "m")
    assert provider.calls == 1
    with pytest.raises(ProviderTimeout):
        await make_link([Step(delay_s=5), Step()], first_token_timeout_s=0.1)[0].complete(REQUEST, "m")


async def test_stream_that_goes_silent_after_the_first_token_fails_at_the_idle_timeout() -> None:
    link, _ = make_link([Step(tokens=("a", "b"), token_delay_s=10)], stream_idle_timeout_s=0.1)
    opened = await link.open_stream(REQUEST, "m")
    with pytest.raises(ProviderTimeout):  # waited for, the tokens would come (after 10 s each)
        _ = [text async for text in opened.rest()]
    await opened.aclose()


async def test_concurrency_is_bounded_and_a_full_provider_reports_busy() -> None:
    # The first token at once, the answer ~0.3 s later: slots stay taken without any timeout.
    link, provider = make_link([Step(token_delay_s=0.15)], max_concurrency=2, first_token_timeout_s=0.1)
    results = await asyncio.gather(*(link.complete(REQUEST, "m") for _ in range(3)), return_exceptions=True)
    assert provider.peak_active == 2
    assert sum(isinstance(r, ProviderBusy) for r in results) == 1
    assert provider.calls == 2


async def test_observer_sees_every_attempt() -> None:
    seen: list[tuple[str, str]] = []

    class Recorder(NoopObserver):
        def on_attempt(
            self, *, provider: str, model: str, outcome: str, latency_s: float, usage: Usage | None
        ) -> None:
            seen.append((provider, outcome))

    link, _ = make_link([Step(error=ServerError("500")), Step()])
    link.observer = Recorder()
    await link.complete(REQUEST, "m")
    assert seen == [("scripted", "server_error"), ("scripted", "success")]


async def test_complete_abandons_a_slow_start_at_the_first_token_timeout() -> None:
    """JSON answers are streamed from the provider too, so a slow start ends the attempt at the
    first-token timeout (then the chain's next provider), not at the end of the whole budget."""
    link, provider = make_link([Step(delay_s=5), Step()], first_token_timeout_s=0.1, total_timeout_s=5.0)
    with pytest.raises(ProviderTimeout, match="first-token timeout"):
        await link.complete(REQUEST, "m")
    assert provider.calls == 1


async def test_complete_retries_a_stream_broken_part_way_and_never_returns_the_part() -> None:
    link, provider = make_link(
        [Step(tokens=("par", "tial"), fail_after_tokens=ServerError("connection reset")), Step()]
    )
    generation = await link.complete(REQUEST, "m")
    assert generation.text == "hello world"
    assert provider.calls == 2


async def test_complete_holds_the_idle_timeout_between_tokens() -> None:
    link, provider = make_link(
        [Step(tokens=("a", "b"), token_delay_s=10)], stream_idle_timeout_s=0.1, max_retries=0
    )
    with pytest.raises(ProviderTimeout):  # waited for, the tokens would come (after 10 s each)
        await link.complete(REQUEST, "m")
    assert provider.calls == 1


@pytest.mark.parametrize("tokens", [(), ("",), (" ", "\n\t", "  ")], ids=["nothing", "empty", "whitespace"])
async def test_an_answer_without_text_is_an_empty_response_in_both_modes(tokens: tuple[str, ...]) -> None:
    link, provider = make_link([Step(tokens=tokens)])
    with pytest.raises(EmptyResponse):
        await link.complete(REQUEST, "m")
    with pytest.raises(EmptyResponse):
        await link.open_stream(REQUEST, "m")
    assert provider.calls == 2  # one each: an empty answer is not retried
    assert provider.active == 0


async def test_whitespace_before_the_first_real_token_is_kept_with_it() -> None:
    link, _ = make_link([Step(tokens=("\n", " ", "Hi", " there"))])
    opened = await link.open_stream(REQUEST, "m")
    assert opened.first == "\n Hi"
    assert [text async for text in opened.rest()] == [" there"]
    await opened.aclose()


@pytest.mark.parametrize("mode", ["complete", "stream"])
async def test_a_request_cancelled_before_its_first_token_gives_its_slot_back(mode: str) -> None:
    link, provider = make_link(
        [Step(delay_s=30), Step()], max_concurrency=1, first_token_timeout_s=10.0, total_timeout_s=20.0
    )
    call = link.complete(REQUEST, "m") if mode == "complete" else link.open_stream(REQUEST, "m")
    leaving = asyncio.create_task(call)
    while provider.calls == 0:
        await asyncio.sleep(0.01)
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    opened = await asyncio.wait_for(link.open_stream(REQUEST, "m"), timeout=1.0)  # not busy
    await opened.aclose()
    assert provider.active == 0
