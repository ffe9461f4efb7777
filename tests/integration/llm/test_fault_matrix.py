"""The router's fault matrix: every fault, at every provider position it applies to, through the
real SDKs against the fake provider server.

Positions: the failing provider is Gemini (first), Groq (second: Gemini unconfigured) or OpenAI
(third: both before it unconfigured, the extractive answerer after it). For each case the test
checks what the client gets, that the time spent stays inside the configured budgets, that the
cooldown is set and visible in ``GET /api/v1/providers`` and from another OS process, that the
provider is skipped while cooling, and that it is used again once the half-open probe succeeds.

The router streams from the provider in both modes, so a JSON answer is held to the same
first-token and idle timeouts as a stream, and a stream broken part-way is a failure it falls back
from (nothing has reached the client yet); only a stream that already sent text fails in band.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import pytest

from app.llm.chain import NO_PROVIDER
from app.llm.types import (
    ChatRequest,
    Message,
    Passage,
    StreamEnd,
    StreamEvent,
    StreamFailed,
    StreamStart,
    TextDelta,
)
from tests.fakes.fake_llm_server import DEFAULT_TEXT, FakeLLMServer
from tests.support.clock import SteppedClock
from tests.support.llm import (
    COOLDOWN_S,
    FIRST_TOKEN_S,
    IDLE_S,
    SDK_PROVIDERS,
    TOTAL_S,
    PeerProcess,
    RouterApp,
    StartRouterApp,
)

pytestmark = pytest.mark.integration

# Scheduling slack on a shared 2-core machine; every bound is "configured budget + MARGIN_S".
MARGIN_S = 3.0

REQUEST = ChatRequest(
    messages=(
        Message("system", "Answer from the numbered passages and cite them."),
        Message("user", "How long is the refund window?"),
    ),
    passages=(Passage(1, "The refund window is 30 days from delivery.", "Returns policy", 2),),
)

Mode = Literal["complete", "stream"]


@dataclass(frozen=True)
class Fault:
    name: str
    behaviour: dict[str, Any]
    code: str  # the typed error the failing provider must end with
    modes: tuple[Mode, ...] = ("complete", "stream")
    in_band: bool = False  # stream mode: fails after the first token, an in-band error, no fallback
    cools_down: bool = True
    attempts: int | None = None  # exact requests the failing provider must receive
    min_attempts: int = 1  # e.g. tries each abandoned at the first-token timeout, not the budget
    min_elapsed_s: float = 0.0  # e.g. a Retry-After that must have been honoured
    budget_s: float = TOTAL_S  # the configured number the elapsed time is held to (in-band: the stream's)
    stream_behaviour: dict[str, Any] = field(default_factory=dict)  # overrides for the stream mode


FAULTS = [
    # Silent, slow before the response headers, or slow after them before the first token: in
    # both modes the one try is abandoned at FIRST_TOKEN_S and the next provider gets the request
    # at once (a timeout is not retried on the same provider).
    Fault("never_answers", {"mode": "hang"}, "timeout", attempts=1),
    Fault("slow_to_start", {"mode": "slow", "latency_s": 5}, "timeout", attempts=1),
    Fault("slow_first_token", {"mode": "ok", "first_token_delay_s": 5}, "timeout", attempts=1),
    Fault(
        "stream_cut_after_n_tokens",
        {"mode": "cut", "cut_after_tokens": 3},
        "server_error",
        in_band=True,
    ),
    Fault(
        "stream_ends_without_its_end_marker",
        {"mode": "cut", "cut_after_tokens": 3, "cut_clean": True},
        "truncated_stream",
        in_band=True,
        attempts=1,
    ),
    Fault(
        "stream_stalls",
        {"mode": "stall", "stall_after_tokens": 3},
        "timeout",
        in_band=True,
        budget_s=IDLE_S,
    ),
    # Retry-After 1 s is honoured once; the next wait would overrun the 1.5 s budget, so no third try.
    Fault(
        "rate_limited_with_retry_after",
        {"mode": "error", "status": 429, "retry_after": 1},
        "rate_limited",
        attempts=2,
        min_elapsed_s=1.0,
    ),
    Fault("server_error_500", {"mode": "error", "status": 500}, "server_error", attempts=3),
    Fault("unavailable_503", {"mode": "error", "status": 503}, "server_error", attempts=3),
    Fault("unauthorized_401", {"mode": "error", "status": 401}, "auth_failed", attempts=1),
    Fault("malformed_json", {"mode": "malformed"}, "malformed_response", attempts=1),
    # A prompt too long for one provider says nothing about its health: fall back, do not bench.
    Fault("context_too_long", {"mode": "context_too_long"}, "context_too_long", attempts=1, cools_down=False),
    # Answers that are not answers: fall back, never returned. Not benched either: what a model
    # says depends on the prompt, and any caller can ask for nothing or trip a content filter.
    Fault("empty_answer", {"mode": "empty"}, "empty_response", attempts=1, cools_down=False),
    Fault(
        "whitespace_only_answer",
        {"mode": "ok", "text": " \n\n  "},
        "empty_response",
        attempts=1,
        cools_down=False,
    ),
    # A content filter's refusal is not failed over at all: tests/integration/llm/test_failover_policy.py.
]

CASES = [
    pytest.param(fault, mode, provider, id=f"{fault.name}-{mode}-{provider}")
    for fault in FAULTS
    for mode in fault.modes
    for provider in SDK_PROVIDERS
]


# The budgets of the providers that stand in: a healthy fallback answers at the machine's pace,
# and on a loaded machine half a second to its first token would make it look like a fault (a
# timeout fails over at once). Only the failing provider is held to the small budgets.
STAND_IN_S = 5.0


def positioned(failing: str) -> dict[str, Any]:
    """Settings where ``failing`` is reached first: the providers before it have no key, the ones
    after it get budgets a loaded machine cannot exceed by accident."""
    index = SDK_PROVIDERS.index(failing)
    values: dict[str, Any] = {f"{name}_api_key": None for name in SDK_PROVIDERS[:index]}
    for name in SDK_PROVIDERS[index + 1 :]:
        values[f"{name}_first_token_timeout_s"] = STAND_IN_S
        values[f"{name}_timeout_s"] = 2 * STAND_IN_S
    return values


def next_provider(failing: str) -> str:
    index = SDK_PROVIDERS.index(failing)
    return SDK_PROVIDERS[index + 1] if index + 1 < len(SDK_PROVIDERS) else "extractive"


@dataclass
class Outcome:
    provider: str
    text: str
    elapsed_s: float
    degraded: bool
    trace_id: str | None
    events: list[StreamEvent]

    @property
    def failure(self) -> StreamFailed | None:
        failed = [e for e in self.events if isinstance(e, StreamFailed)]
        return failed[0] if failed else None


async def ask(router: RouterApp, mode: Mode, request: ChatRequest = REQUEST) -> Outcome:
    started = time.monotonic()
    if mode == "complete":
        completion = await router.chain.complete(request)
        return Outcome(
            completion.provider,
            completion.text,
            time.monotonic() - started,
            completion.degraded,
            completion.trace_id,
            [],
        )
    events = [event async for event in router.chain.stream(request)]
    elapsed = time.monotonic() - started
    start = events[0]
    assert isinstance(start, StreamStart), events
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    end = events[-1]
    trace_id = end.trace_id if isinstance(end, StreamEnd | StreamFailed) else None
    return Outcome(start.provider, text, elapsed, start.degraded, trace_id, events)


def expected_text(provider: str) -> str:
    return "[1]" if provider == "extractive" else DEFAULT_TEXT


async def assert_cooling(router: RouterApp, peer: PeerProcess, provider: str, code: str) -> float:
    """The provider is benched, here and in another process; returns when the bench ends."""
    shown = (await router.providers())[provider]
    assert shown["state"] == "cooling_down", shown
    assert shown["healthy"] is False
    assert shown["cooling_down_until"] is not None
    until = datetime.fromisoformat(shown["cooling_down_until"]).timestamp()
    assert time.time() < until <= time.time() + COOLDOWN_S + 0.1
    assert shown["last_error_code"] == code
    seen_elsewhere = peer.states(router.settings.redis_key_prefix)[provider]
    assert seen_elsewhere["phase"] == "cooling"
    assert abs(seen_elsewhere["until"] - until) < 0.01
    return until


async def assert_probe_brings_it_back(
    router: RouterApp,
    fake: FakeLLMServer,
    peer: PeerProcess,
    provider: str,
    mode: Mode,
    until: float,
    clock: SteppedClock,
) -> None:
    fake.reset()
    clock.advance(until - clock() + 0.01)  # the cooldown ends, here; no waiting it out
    assert (await router.providers())[provider]["state"] == "half_open"
    probe = await ask(router, mode)
    assert probe.provider == provider
    assert fake.requests(provider) == 1
    shown = (await router.providers())[provider]
    assert shown["state"] == "ok" and shown["healthy"] is True and shown["cooling_down_until"] is None
    assert peer.states(router.settings.redis_key_prefix)[provider]["phase"] == "closed"


@pytest.mark.parametrize(("fault", "mode", "failing"), CASES)
async def test_fault(
    fault: Fault,
    mode: Mode,
    failing: str,
    start_router_app: StartRouterApp,
    fake: FakeLLMServer,
    peer: PeerProcess,
) -> None:
    behaviour = {**fault.behaviour, **(fault.stream_behaviour if mode == "stream" else {})}
    fake.configure(failing, **behaviour)
    # In-band failures as they are where no provider continues the answer (continuations:
    # test_stream_continuation.py).
    no_continuation = {f"{name}_continues_prefill": False for name in SDK_PROVIDERS}
    async with start_router_app(**positioned(failing), **no_continuation) as router:
        clock = router.chain.cooldowns.clock = SteppedClock(time.time)
        outcome = await ask(router, mode)

        in_band = fault.in_band and mode == "stream"
        if in_band:
            # The answer had started: it ends with a typed error, never as a complete answer.
            assert outcome.provider == failing
            failure = outcome.failure
            assert failure is not None and failure.code == fault.code, outcome.events
            assert failure.trace_id
            assert not any(isinstance(e, StreamEnd) for e in outcome.events)
            assert 0 < len(outcome.text) < len(DEFAULT_TEXT)
        else:
            nxt = next_provider(failing)
            assert outcome.provider == nxt, outcome
            assert expected_text(nxt) in outcome.text
            assert not outcome.degraded
            if mode == "stream":
                assert isinstance(outcome.events[-1], StreamEnd)
                # nothing from the failed provider reached the client
                assert [e.provider for e in outcome.events if isinstance(e, StreamStart)] == [nxt]

        assert outcome.elapsed_s >= fault.min_elapsed_s
        budget = fault.budget_s if in_band else TOTAL_S
        assert outcome.elapsed_s <= budget + MARGIN_S, outcome.elapsed_s
        attempts = fake.requests(failing)
        if fault.attempts is not None:
            assert attempts == fault.attempts
        else:
            assert attempts >= fault.min_attempts

        if not fault.cools_down:
            shown = (await router.providers())[failing]
            assert shown["state"] == "ok" and shown["cooling_down_until"] is None
            assert shown["last_error_code"] == fault.code
            fake.reset()
            # Not benched: the next request goes to it at once. (Whether it then answers inside its
            # half-second first-token budget depends on the machine's load, not on the router.)
            before = fake.requests(failing)
            await ask(router, mode)
            assert fake.requests(failing) > before
            return

        until = await assert_cooling(router, peer, failing, fault.code)
        # While it cools down it is skipped without a request reaching it.
        before = fake.requests(failing)
        skipped = await ask(router, mode)
        assert skipped.provider == next_provider(failing)
        assert fake.requests(failing) == before

        await assert_probe_brings_it_back(router, fake, peer, failing, mode, until, clock)


ALL_DOWN_COOLDOWN_S = 60.0


@pytest.mark.parametrize("mode", ["complete", "stream"])
async def test_all_providers_down(
    mode: Mode, start_router_app: StartRouterApp, fake: FakeLLMServer, peer: PeerProcess
) -> None:
    fake.configure("gemini", mode="hang")
    fake.configure("groq", mode="error", status=429, retry_after=1)
    fake.configure("openai", mode="error", status=503)
    no_passages = ChatRequest(messages=REQUEST.messages)
    async with start_router_app(router_cooldown_s=ALL_DOWN_COOLDOWN_S) as router:
        outcome = await ask(router, mode, no_passages)

        assert outcome.provider == NO_PROVIDER
        assert outcome.degraded is True
        assert outcome.trace_id and outcome.trace_id in outcome.text
        assert outcome.text.startswith("Sorry")
        if mode == "stream":
            assert isinstance(outcome.events[-1], StreamEnd) and outcome.events[-1].degraded
        assert outcome.elapsed_s <= len(SDK_PROVIDERS) * TOTAL_S + MARGIN_S

        shown = await router.providers()
        elsewhere = peer.states(router.settings.redis_key_prefix)
        for name in SDK_PROVIDERS:
            assert shown[name]["state"] == "cooling_down", shown[name]
            assert elsewhere[name]["phase"] == "cooling"
        assert shown["extractive"]["state"] == "ok"  # never cooled down

        # With passages, the extractive answerer still answers while every model cools down,
        # and no request reaches a cooling provider.
        before = {name: fake.requests(name) for name in SDK_PROVIDERS}
        extractive = await ask(router, mode)
        assert extractive.provider == "extractive" and "[1]" in extractive.text
        assert {name: fake.requests(name) for name in SDK_PROVIDERS} == before


@pytest.mark.parametrize("mode", ["complete", "stream"])
@pytest.mark.parametrize("failing", SDK_PROVIDERS)
@pytest.mark.parametrize(
    "slow",
    [
        {"mode": "slow", "latency_s": FIRST_TOKEN_S + 0.6},
        {"mode": "ok", "first_token_delay_s": FIRST_TOKEN_S + 0.6},
    ],
    ids=["before_headers", "after_headers"],
)
async def test_first_token_timeout_is_the_configured_one(
    slow: dict[str, Any], failing: str, mode: Mode, start_router_app: StartRouterApp, fake: FakeLLMServer
) -> None:
    """A first token later than FIRST_TOKEN_S abandons the attempt well before the total budget,
    in JSON mode as in a stream (the provider would have answered inside TOTAL_S)."""
    fake.configure(failing, **slow)
    async with start_router_app(router_max_retries=0, **positioned(failing)) as router:
        outcome = await ask(router, mode)
    assert outcome.provider == next_provider(failing), outcome
    assert expected_text(outcome.provider) in outcome.text
    assert fake.requests(failing) == 1
    assert FIRST_TOKEN_S <= outcome.elapsed_s <= FIRST_TOKEN_S + MARGIN_S
