"""No way for one caller to hurt the others, through the real SDKs against the fake provider:

- only the models the operator configured can be pinned (anything else is a 422 ``unknown_model``
  before any provider call, so nobody picks a pricier model on the operator's bill);
- a failure the request itself caused (its body, a model only it pinned, an answer far longer than
  the operator's ANSWER_MAX_TOKENS, going away) never benches a provider for everyone else, while
  the same fault on an ordinary request, and the operator's key being refused, still do.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from app.llm.errors import UnknownModelError
from app.llm.types import ChatRequest, Message, Passage, StreamStart, TextDelta
from tests.fakes.fake_llm_server import DEFAULT_TEXT, FakeLLMServer
from tests.support.llm import SDK_PROVIDERS, RouterApp, StartRouterApp

pytestmark = pytest.mark.integration

Mode = Literal["complete", "stream"]

ANSWER_MAX_TOKENS = 512  # the settings' default: what the chat service asks for when not told
ORDINARY = ChatRequest(
    messages=(
        Message("system", "Answer from the numbered passages and cite them."),
        Message("user", "How long is the refund window?"),
    ),
    passages=(Passage(1, "The refund window is 30 days from delivery.", "Returns policy", 2),),
    max_tokens=ANSWER_MAX_TOKENS,
)
LONG_ANSWER = ChatRequest(ORDINARY.messages, ORDINARY.passages, max_tokens=8 * ANSWER_MAX_TOKENS)
PRICIER = "gemini-2.5-pro"
PINNED = ChatRequest(
    ORDINARY.messages, ORDINARY.passages, max_tokens=ANSWER_MAX_TOKENS, model=f"gemini/{PRICIER}"
)


@dataclass
class Answer:
    provider: str
    text: str


async def ask(router: RouterApp, mode: Mode, request: ChatRequest = ORDINARY) -> Answer:
    if mode == "complete":
        completion = await router.chain.complete(request)
        return Answer(completion.provider, completion.text)
    events = [event async for event in router.chain.stream(request)]
    start = events[0]
    assert isinstance(start, StreamStart), events
    return Answer(start.provider, "".join(e.text for e in events if isinstance(e, TextDelta)))


# --- 1. only configured models can be pinned ----------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("pin", ["openai/gpt-4o", "groq/llama-3.1-405b-reasoning", f"gemini/{PRICIER}"])
async def test_pinning_a_model_the_operator_did_not_allow_is_unknown_model_before_any_provider_call(
    pin: str, stream: bool, start_router_app: StartRouterApp, fake: FakeLLMServer
) -> None:
    async with start_router_app() as router:
        response = await router.client.post(
            "/api/v1/chat",
            json={"question": "How long is the refund window?", "model": pin, "stream": stream},
        )
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["code"] == "unknown_model"
        provider, _, model = pin.partition("/")
        assert repr(model) in problem["detail"] and provider in problem["detail"]
        stats = fake.stats()
        assert {name: stats[name]["requests"] for name in SDK_PROVIDERS} == dict.fromkeys(SDK_PROVIDERS, 0)


async def test_the_allow_list_is_per_provider_and_the_default_model_is_always_on_it(
    start_router_app: StartRouterApp, fake: FakeLLMServer
) -> None:
    async with start_router_app(openai_allowed_models=["gpt-4o", "o3-mini"]) as router:
        for pin, sent in [
            ("openai/gpt-4o", "gpt-4o"),
            ("gpt-4o", "gpt-4o"),  # a bare model name finds the provider that allows it
            ("openai/gpt-4o-mini", "gpt-4o-mini"),  # OPENAI_MODEL
            ("openai", "gpt-4o-mini"),
        ]:
            completion = await router.chain.complete(ChatRequest(ORDINARY.messages, model=pin))
            assert completion.provider == "openai"
            assert fake.stats()["openai"]["last_request"]["model"] == sent
        for pin in ["groq/gpt-4o", "gemini/o3-mini", "openai/gpt-4.5-preview"]:
            with pytest.raises(UnknownModelError):
                router.chain.routes(pin)
    assert fake.requests("gemini") == fake.requests("groq") == 0


# --- 2. a failure the request caused never benches the provider for the others -------------------


@dataclass(frozen=True)
class Blame:
    name: str
    behaviour: dict[str, Any]
    request: ChatRequest
    benches: bool
    overrides: dict[str, Any] = field(default_factory=dict)


ALLOW_PRICIER = {"gemini_allowed_models": [PRICIER]}
# A second for the first token (not half of one) so the next caller's answer is not itself late on
# a busy machine; the faults below are slower than that, or slow after their first token.
ROOMY = {f"{name}_first_token_timeout_s": 1.0 for name in SDK_PROVIDERS}
SLOW_TOKENS = {"mode": "ok", "token_delay_s": 0.25}  # ~2.3 s for the answer: past the 1.5 s budget

BLAMES = [
    # The provider's fault: an ordinary request (default model, ANSWER_MAX_TOKENS) fails.
    Blame("500s_on_an_ordinary_request", {"mode": "error", "status": 500}, ORDINARY, benches=True),
    Blame("too_slow_for_an_ordinary_answer", SLOW_TOKENS, ORDINARY, benches=True),
    Blame("never_starts_an_ordinary_answer", {"mode": "slow", "latency_s": 5}, ORDINARY, benches=True),
    # The operator's key is refused: every request would fail alike, whoever sent this one.
    Blame("401_on_an_unusual_request", {"mode": "error", "status": 401}, LONG_ANSWER, benches=True),
    Blame("403_on_a_pinned_model", {"mode": "error", "status": 403}, PINNED, True, ALLOW_PRICIER),
    # The request's own doing: its body, a model nobody else uses, an answer 8x the usual length.
    Blame("400_for_the_request_body", {"mode": "error", "status": 400}, ORDINARY, benches=False),
    Blame("413_for_the_request_body", {"mode": "error", "status": 413}, ORDINARY, benches=False),
    Blame("422_for_the_request_body", {"mode": "error", "status": 422}, ORDINARY, benches=False),
    Blame("500s_on_a_pinned_model", {"mode": "error", "status": 500}, PINNED, False, ALLOW_PRICIER),
    Blame("429_on_a_pinned_model", {"mode": "error", "status": 429}, PINNED, False, ALLOW_PRICIER),
    Blame("too_slow_for_an_answer_8x_longer_than_usual", SLOW_TOKENS, LONG_ANSWER, benches=False),
    Blame("slow_to_start_an_answer_8x_longer", {"mode": "slow", "latency_s": 5}, LONG_ANSWER, benches=False),
]


@pytest.mark.parametrize("mode", ["complete", "stream"])
@pytest.mark.parametrize("blame", BLAMES, ids=[b.name for b in BLAMES])
async def test_only_failures_the_provider_caused_bench_it_for_the_next_caller(
    blame: Blame, mode: Mode, start_router_app: StartRouterApp, fake: FakeLLMServer
) -> None:
    fake.configure("gemini", **blame.behaviour)
    async with start_router_app(**ROOMY, **blame.overrides) as router:
        first = await ask(router, mode, blame.request)
        assert first.provider != "gemini" or mode == "stream"  # a stream may fail in band
        shown = (await router.providers())["gemini"]
        assert shown["state"] == ("cooling_down" if blame.benches else "ok"), shown
        assert shown["last_error_code"]  # the failure is reported either way

        fake.reset()
        nxt = await ask(router, mode)  # the next, ordinary caller
        if blame.benches:
            assert nxt.provider == "groq" and fake.requests("gemini") == 0
        else:
            assert nxt.provider == "gemini" and nxt.text == DEFAULT_TEXT
            assert fake.requests("gemini") == 1


async def _until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("mode", ["complete", "stream"])
async def test_a_caller_who_goes_away_benches_nothing_and_gives_its_slot_back(
    mode: Mode, start_router_app: StartRouterApp, fake: FakeLLMServer
) -> None:
    """Cancelled while waiting for the first token (the client disconnected): no cooldown, no
    error recorded, and the one concurrency slot is free for the next caller at once."""
    fake.configure("gemini", mode="slow", latency_s=60)
    budgets = {"gemini_timeout_s": 60.0, "gemini_first_token_timeout_s": 30.0, "gemini_max_concurrency": 1}
    async with start_router_app(**budgets) as router:
        leaving = asyncio.create_task(ask(router, mode))
        await _until(lambda: fake.requests("gemini") == 1)
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving

        shown = (await router.providers())["gemini"]
        assert shown["state"] == "ok" and shown["last_error_code"] is None, shown
        fake.reset()
        nxt = await asyncio.wait_for(ask(router, mode), timeout=5)  # a leaked slot would wait 30 s
        assert nxt.provider == "gemini" and nxt.text == DEFAULT_TEXT
