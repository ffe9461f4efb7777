"""What the router does with each kind of failure before the first token, through the real SDKs
against the wire fake: which provider answers and how many attempts each one got.

- A silent or slow provider (no connection, no headers, no first token in time) is tried once:
  the next provider gets the request at once.
- Only failures that may pass on their own (5xx, a reset connection, 429) are retried on the same
  provider.
- A content-policy refusal is neither retried nor failed over (unless the operator says so): the
  caller gets ``AnswerRefused`` (422 ``content_filtered``) with the provider's reason.

Small budgets (tests/support/llm.py) keep each case to about a second; nothing asserts wall time."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any, Literal

import pytest
from redis.asyncio import Redis

from app.llm.errors import AnswerRefused
from app.llm.factory import build_provider_chain
from app.llm.observer import NoopObserver
from app.llm.types import ChatRequest, Message, StreamEnd, StreamStart, TextDelta
from app.settings import Settings
from tests.fakes.fake_llm_server import DEFAULT_TEXT, FakeLLMServer
from tests.support.llm import SDK_PROVIDERS, RouterApp, StartRouterApp, router_overrides

pytestmark = pytest.mark.integration

Mode = Literal["complete", "stream"]
MODES: tuple[Mode, ...] = ("complete", "stream")
REQUEST = ChatRequest(messages=(Message("user", "How long is the refund window?"),))
PRIMARY_THEN_FALLBACK = {"llm_providers": ["openai", "groq"]}  # the suite's chain


async def answer(router: RouterApp, mode: Mode) -> tuple[str, str]:
    """(provider, text) of a whole answer, JSON or streamed."""
    if mode == "complete":
        completion = await router.chain.complete(REQUEST)
        assert not completion.degraded, completion
        return completion.provider, completion.text
    events = [event async for event in router.chain.stream(REQUEST)]
    assert isinstance(events[0], StreamStart) and isinstance(events[-1], StreamEnd), events
    assert not events[-1].degraded
    return events[0].provider, "".join(e.text for e in events if isinstance(e, TextDelta))


SILENT_OR_SLOW = {
    "accepts_and_never_answers": {"mode": "hang"},
    "headers_late": {"mode": "slow", "latency_s": 5},
    "first_token_late": {"mode": "ok", "first_token_delay_s": 5},
}


@pytest.mark.parametrize("fault", list(SILENT_OR_SLOW), ids=list(SILENT_OR_SLOW))
async def test_a_silent_or_slow_provider_is_tried_once_then_the_fallback_answers(
    fault: str, start_router_app: StartRouterApp, fake: FakeLLMServer
) -> None:
    async with start_router_app(**PRIMARY_THEN_FALLBACK, router_max_retries=2) as router:
        for mode in MODES:
            fake.reset()
            await router.chain.cooldowns.clear("openai")  # the last mode's failure opened its circuit
            fake.configure("openai", **SILENT_OR_SLOW[fault])
            assert await answer(router, mode) == ("groq", DEFAULT_TEXT), mode
            assert fake.requests("openai") == 1, mode  # retries were allowed (2), not for a timeout
            assert fake.requests("groq") == 1, mode


TRANSIENT: dict[str, dict[str, Any]] = {
    "unavailable_503": {"mode": "error", "status": 503},
    "rate_limited_429_with_retry_after": {"mode": "error", "status": 429, "retry_after": 0.1},
    "connection_reset_before_the_first_token": {"mode": "cut", "cut_after_tokens": 0},
}


@pytest.mark.parametrize("fault", list(TRANSIENT), ids=list(TRANSIENT))
async def test_a_transient_failure_is_retried_on_the_same_provider(
    fault: str, start_router_app: StartRouterApp, fake: FakeLLMServer
) -> None:
    async with start_router_app(**PRIMARY_THEN_FALLBACK, router_max_retries=2) as router:
        for mode in MODES:
            fake.reset()
            fake.configure("openai", **TRANSIENT[fault], fail_times=1)
            assert await answer(router, mode) == ("openai", DEFAULT_TEXT), mode
            assert fake.requests("openai") == 2, mode  # the failure, then the retry that answered
            assert fake.requests("groq") == 0, mode


class AttemptLog(NoopObserver):
    def __init__(self) -> None:
        self.attempts: list[tuple[str, str]] = []

    def on_attempt(self, *, provider: str, model: str, outcome: str, latency_s: float, usage: Any) -> None:
        self.attempts.append((provider, outcome))


@pytest.fixture
def unaccepting_port() -> Iterator[int]:
    """A loopback port whose accept queue is full: a connection to it times out in connect."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = int(server.getsockname()[1])
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    yield port
    for filler in fillers:
        filler.close()
    server.close()


@pytest.mark.parametrize("mode", MODES)
async def test_a_connect_timeout_fails_over_at_once(
    mode: Mode, settings: Settings, fake: FakeLLMServer, unaccepting_port: int
) -> None:
    configured = settings.model_copy(
        update={
            **router_overrides(fake),
            **PRIMARY_THEN_FALLBACK,
            "router_max_retries": 2,
            "openai_base_url": f"http://127.0.0.1:{unaccepting_port}/v1",
            "openai_connect_timeout_s": 0.2,
            "openai_first_token_timeout_s": 5.0,  # so the SDK's connect timeout is what fires
            "openai_timeout_s": 5.0,
        }
    )
    log = AttemptLog()
    redis = Redis.from_url(configured.redis_url or "")
    chain = build_provider_chain(configured, redis, log)
    try:
        if mode == "complete":
            provider = (await chain.complete(REQUEST)).provider
        else:
            events = [event async for event in chain.stream(REQUEST)]
            assert isinstance(events[0], StreamStart) and isinstance(events[-1], StreamEnd)
            provider = events[0].provider
    finally:
        await chain.aclose()
        await redis.aclose()
    assert provider == "groq"
    assert log.attempts == [("openai", "timeout"), ("groq", "success")]


# --- content-policy refusals -------------------------------------------------------------------

REFUSALS = [
    pytest.param("openai", {"mode": "content_policy"}, id="openai-400-content_policy_violation"),
    pytest.param("groq", {"mode": "content_policy"}, id="groq-400-content_filter"),
    pytest.param("openai", {"mode": "blocked"}, id="openai-finish_reason-content_filter"),
    pytest.param("gemini", {"mode": "content_policy"}, id="gemini-finish_reason-SAFETY"),
    pytest.param("gemini", {"mode": "blocked"}, id="gemini-promptFeedback-blockReason"),
]


def first_then_next(provider: str) -> tuple[dict[str, Any], str]:
    """Settings where ``provider`` comes first and another SDK provider after it; that one's name."""
    nxt = next(name for name in SDK_PROVIDERS if name != provider)
    return {"llm_providers": [provider, nxt]}, nxt


@pytest.mark.parametrize(("provider", "refusal"), REFUSALS)
async def test_a_content_policy_refusal_is_neither_retried_nor_failed_over(
    provider: str, refusal: dict[str, Any], start_router_app: StartRouterApp, fake: FakeLLMServer
) -> None:
    overrides, nxt = first_then_next(provider)
    fake.configure(provider, **refusal)
    async with start_router_app(**overrides, router_max_retries=2) as router:
        for count, mode in enumerate(MODES, start=1):
            with pytest.raises(AnswerRefused) as refused:
                await answer(router, mode)
            assert refused.value.code == "content_filtered" and refused.value.status == 422
            assert provider in refused.value.detail
            assert fake.requests(provider) == count, mode  # one attempt per request, no retry
            assert fake.requests(nxt) == 0, mode
            shown = (await router.providers())[provider]
            assert (shown["circuit"], shown["last_error_code"]) == ("closed", "content_filtered")


@pytest.mark.parametrize("mode", MODES)
async def test_the_operator_may_fail_over_on_a_content_filter(
    mode: Mode, start_router_app: StartRouterApp, fake: FakeLLMServer
) -> None:
    fake.configure("openai", mode="content_policy")
    async with start_router_app(**PRIMARY_THEN_FALLBACK, router_failover_on_content_filter=True) as router:
        assert await answer(router, mode) == ("groq", DEFAULT_TEXT)
    assert fake.requests("openai") == 1
