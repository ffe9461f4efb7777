"""A stream that breaks after its first token is continued by the next provider that continues
prefills, through the real SDKs against the wire fake; and the model and usage the chain reports
are the answering call's own.

The router settings (tests/support/llm.py) order the chain Gemini → Groq → OpenAI; ``order``
changes it per test so each wire both breaks and continues somewhere."""

from __future__ import annotations

from typing import Any

import pytest

from app.llm.types import (
    Answerer,
    ChatRequest,
    Message,
    StreamContinued,
    StreamEnd,
    StreamEvent,
    StreamFailed,
    StreamStart,
    TextDelta,
)
from tests.fakes.fake_llm_server import DEFAULT_TEXT, PREFILL_REFUSAL, FakeLLMServer, tokens_of
from tests.support.llm import RouterApp, StartRouterApp

pytestmark = pytest.mark.integration

REQUEST = ChatRequest(messages=(Message("user", "What does the fake answer?"),))
MODELS = {"gemini": "gemini-2.5-flash", "groq": "llama-3.3-70b-versatile", "openai": "gpt-4o-mini"}
BREAK_AFTER = 3  # tokens the broken provider sends first

BREAKS = {
    "cut": ({"mode": "cut", "cut_after_tokens": BREAK_AFTER}, "server_error"),
    "stall": ({"mode": "stall", "stall_after_tokens": BREAK_AFTER}, "timeout"),  # idle timeout IDLE_S
    "invalid_chunk": ({"invalid_chunk_after": BREAK_AFTER}, "malformed_response"),
}

# (broken, continuer, settings): every wire breaks once and continues once.
PAIRS = [
    ("gemini", "groq", {}),
    ("groq", "openai", {"llm_providers": ["groq", "openai"], "openai_continues_prefill": True}),
    ("openai", "gemini", {"llm_providers": ["openai", "gemini", "groq"]}),
]


async def events_of(router: RouterApp, request: ChatRequest = REQUEST) -> list[StreamEvent]:
    return [event async for event in router.chain.stream(request)]


def text_of(events: list[StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def streamed_before(events: list[StreamEvent], kind: type) -> str:
    index = next(i for i, e in enumerate(events) if isinstance(e, kind))
    return text_of(events[:index])


@pytest.mark.parametrize("fault", list(BREAKS))
@pytest.mark.parametrize(
    ("broken", "continuer", "overrides"), PAIRS, ids=[f"{b}-then-{c}" for b, c, _ in PAIRS]
)
async def test_a_broken_stream_is_finished_by_the_next_provider(
    fault: str,
    broken: str,
    continuer: str,
    overrides: dict[str, Any],
    start_router_app: StartRouterApp,
    fake: FakeLLMServer,
) -> None:
    behaviour, code = BREAKS[fault]
    fake.configure(broken, **behaviour)
    async with start_router_app(**overrides) as router:
        events = await events_of(router)

    assert events[0] == StreamStart(provider=broken, model=MODELS[broken])
    assert text_of(events) == DEFAULT_TEXT  # the whole answer, nothing repeated
    continued = [e for e in events if isinstance(e, StreamContinued)]
    assert continued == [StreamContinued(provider=continuer, model=MODELS[continuer], code=code)]
    end = events[-1]
    assert isinstance(end, StreamEnd), events
    assert (end.provider, end.model) == (broken, MODELS[broken])
    assert end.continued_by == Answerer(continuer, MODELS[continuer])
    assert end.usage is None  # the broken call never reported its usage: the whole is unknown
    assert not any(isinstance(e, StreamFailed) for e in events)
    # The continuer got the same prompt with exactly the streamed text as an assistant prefill.
    before = streamed_before(events, StreamContinued)
    assert before == "".join(tokens_of(DEFAULT_TEXT)[:BREAK_AFTER])
    stats = fake.stats()[continuer]
    assert stats["prefill_requests"] == 1 and stats["last_prefill"] == before
    assert "What does the fake answer?" in str(stats["last_request"])


async def test_a_refused_prefill_ends_with_the_break_not_the_refusal(
    start_router_app: StartRouterApp, fake: FakeLLMServer
) -> None:
    fake.configure("gemini", mode="cut", cut_after_tokens=BREAK_AFTER)
    fake.configure("groq", prefill="refuse")
    async with start_router_app() as router:
        events = await events_of(router)
        shown = await router.providers()

    failed = events[-1]
    assert isinstance(failed, StreamFailed), events
    assert (failed.provider, failed.code) == ("gemini", "server_error")
    assert PREFILL_REFUSAL not in failed.message and "prefill" not in failed.message.lower()
    assert not any(isinstance(e, StreamEnd | StreamContinued) for e in events)
    assert fake.stats()["groq"]["prefill_requests"] == 1
    assert fake.stats()["openai"]["prefill_requests"] == 0  # OpenAI does not continue prefills
    assert shown["groq"]["state"] == "ok"  # a refused prefill is the request's, not groq's health


async def test_a_provider_that_does_not_continue_prefills_is_never_sent_one(
    start_router_app: StartRouterApp, fake: FakeLLMServer
) -> None:
    fake.configure("gemini", mode="cut", cut_after_tokens=BREAK_AFTER)
    async with start_router_app(groq_continues_prefill=False) as router:
        events = await events_of(router)

    failed = events[-1]
    assert isinstance(failed, StreamFailed) and failed.code == "server_error", events
    assert 0 < len(text_of(events)) < len(DEFAULT_TEXT)
    assert fake.stats()["groq"]["requests"] == fake.stats()["openai"]["requests"] == 0


async def test_a_continuation_that_breaks_too_is_continued_again(
    start_router_app: StartRouterApp, fake: FakeLLMServer
) -> None:
    fake.configure("gemini", mode="cut", cut_after_tokens=2)
    fake.configure("groq", mode="cut", cut_after_tokens=2)
    async with start_router_app(openai_continues_prefill=True) as router:
        events = await events_of(router)

    assert text_of(events) == DEFAULT_TEXT
    assert [e.provider for e in events if isinstance(e, StreamContinued)] == ["groq", "openai"]
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.continued_by == Answerer("openai", "gpt-4o-mini")


@pytest.mark.parametrize("provider", ["openai", "groq"])
async def test_a_stream_without_done_after_its_finish_reason_is_complete(
    provider: str, start_router_app: StartRouterApp, fake: FakeLLMServer
) -> None:
    fake.configure(provider, omit_done=True)
    async with start_router_app(**{"llm_providers": [provider]}) as router:
        events = await events_of(router)
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.provider == provider and end.continued_by is None
    assert text_of(events) == DEFAULT_TEXT


@pytest.mark.parametrize("provider", ["gemini", "groq", "openai"])
async def test_model_and_usage_are_the_answering_calls_own(
    provider: str, start_router_app: StartRouterApp, fake: FakeLLMServer
) -> None:
    fake.configure(provider, response_model=f"{MODELS[provider]}-2026-01-01")
    async with start_router_app(llm_providers=[provider]) as router:
        events = await events_of(router)
        completion = await router.chain.complete(REQUEST)
        fake.configure(provider, stream_usage=False)
        unreported = await events_of(router)

    start, end = events[0], events[-1]
    assert isinstance(start, StreamStart) and start.model == f"{MODELS[provider]}-2026-01-01"
    assert isinstance(end, StreamEnd) and end.model == start.model
    words = len(tokens_of(DEFAULT_TEXT))
    assert end.usage is not None and end.usage.completion_tokens == words  # streams are asked for it
    assert completion.model == start.model and completion.usage == end.usage
    last = fake.stats()[provider]["last_request"]
    if provider != "gemini":
        assert last["stream_options"] == {"include_usage": True}
    unreported_end = unreported[-1]
    assert isinstance(unreported_end, StreamEnd) and unreported_end.usage is None  # unknown, not zeros


@pytest.mark.parametrize("wrong_body", ["broken_json", "html"])
@pytest.mark.parametrize("provider", ["gemini", "openai"])
async def test_a_body_that_is_not_the_protocol_falls_back_before_anything_is_sent(
    provider: str, wrong_body: str, start_router_app: StartRouterApp, fake: FakeLLMServer
) -> None:
    fake.configure(provider, wrong_body=wrong_body)
    async with start_router_app(llm_providers=[provider, "groq"], router_max_retries=0) as router:
        events = await events_of(router)
    assert [e.provider for e in events if isinstance(e, StreamStart)] == ["groq"]
    assert text_of(events) == DEFAULT_TEXT and isinstance(events[-1], StreamEnd)
    assert fake.stats()[provider]["requests"] == 1
