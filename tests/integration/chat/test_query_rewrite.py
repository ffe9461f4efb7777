"""CONVERSATION_REWRITE=llm: the router makes a follow-up standalone before retrieval, within its
own budget, cached by conversation and question; on any failure the offline query is searched."""

from __future__ import annotations

import time

import pytest
from redis.asyncio import Redis

from app.chat.rewrite import QueryRewriter
from app.db.redis import KeySpace
from app.llm.factory import build_provider_chain
from app.observability.telemetry import Telemetry
from app.rag.followup import retrieval_query
from app.rag.prompt import Turn
from app.settings import Settings
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.apps import running_app
from tests.support.library import Library, ask, new_session

pytestmark = pytest.mark.integration

HISTORY = [Turn("What is the Osprey switch used for?", "It is our desk switch [1].")]
FOLLOW_UP = "How many VLANs does it support?"
STANDALONE = "How many VLANs does the Osprey switch support?"
OFFLINE = retrieval_query(FOLLOW_UP, HISTORY)


async def rewrite(settings: Settings, question: str = FOLLOW_UP, history: list[Turn] = HISTORY) -> str:
    configured = settings.model_copy(update={"conversation_rewrite": "llm"})
    redis = Redis.from_url(configured.redis_url or "")
    chain = build_provider_chain(configured, redis)
    try:
        rewriter = QueryRewriter(
            configured, redis, KeySpace(configured.redis_key_prefix), Telemetry.disabled()
        )
        return await rewriter(question, history, chain)
    finally:
        await chain.aclose()
        await redis.aclose()


async def test_the_router_makes_the_follow_up_standalone_and_the_rewrite_is_cached(
    settings: Settings, fake: FakeLLMServer
) -> None:
    fake.configure("openai", text=f'"{STANDALONE}"\n')
    assert await rewrite(settings) == STANDALONE
    sent = fake.stats()["openai"]["last_request"]
    assert (
        sent["max_tokens"] == settings.conversation_rewrite_max_tokens
        or sent.get("max_completion_tokens") == settings.conversation_rewrite_max_tokens
    )
    assert "Osprey switch" in sent["messages"][-1]["content"]
    assert await rewrite(settings) == STANDALONE
    assert fake.requests("openai") == 1  # the second came from the cache
    # another conversation state is another rewrite
    assert (
        await rewrite(settings, history=[Turn("What is the Falcon router?", "A router [1].")]) == STANDALONE
    )
    assert fake.requests("openai") == 2


async def test_a_first_turn_is_never_sent_to_the_router(settings: Settings, fake: FakeLLMServer) -> None:
    assert await rewrite(settings, history=[]) == FOLLOW_UP
    assert fake.requests("openai") == 0


@pytest.mark.parametrize(
    "behaviour",
    [{"mode": "error", "status": 500}, {"mode": "error", "status": 429}, {"text": "   "}],
    ids=["server_error", "rate_limited", "empty"],
)
async def test_a_failed_rewrite_searches_the_offline_query(
    settings: Settings, fake: FakeLLMServer, behaviour: dict[str, object]
) -> None:
    fake.configure("openai", **behaviour)
    assert await rewrite(settings) == OFFLINE


async def test_a_slow_provider_costs_at_most_the_rewrite_budget(
    settings: Settings, fake: FakeLLMServer
) -> None:
    slow_s = 30.0
    fake.configure("openai", latency_s=slow_s)
    configured = settings.model_copy(update={"openai_timeout_s": 60.0, "conversation_rewrite_timeout_s": 0.5})
    started = time.perf_counter()
    assert await rewrite(configured) == OFFLINE
    assert time.perf_counter() - started < slow_s / 2  # cut at its budget, not at the provider's answer


async def test_in_the_app_the_rewrite_is_searched_measured_and_its_failure_falls_back(
    settings: Settings, fake: FakeLLMServer, embedder: object
) -> None:
    # A generous budget: this test is about the outcome, a loaded machine must not turn it into a timeout.
    llm = {"conversation_rewrite": "llm", "conversation_rewrite_timeout_s": 20.0, "openai_timeout_s": 20.0}
    async with running_app(settings, embedder=embedder, **llm) as (app, client, make):  # type: ignore[arg-type]
        editor = await make(tenant="acme")
        await Library(client, app.state.resources, editor).add(
            "# Osprey\n\nThe Osprey switch supports 8 VLANs."
        )
        session = new_session()
        fake.configure("openai", text=STANDALONE)
        assert (await ask(client, editor, HISTORY[0].question, session_id=session)).status_code == 200
        answer = (await ask(client, editor, FOLLOW_UP, session_id=session)).json()
        assert answer["retrieval_query"] == STANDALONE
        fake.configure("openai", mode="error", status=500)
        failed = (await ask(client, editor, "And the uplinks?", session_id=session)).json()
        metrics = (await client.get("/metrics")).text
    history = [HISTORY[0], Turn(FOLLOW_UP, STANDALONE)]
    assert failed["retrieval_query"] == retrieval_query("And the uplinks?", history)
    assert "osprey" in failed["retrieval_query"].lower()
    assert 'query_rewrite_duration_seconds_count{outcome="rewritten"} 1.0' in metrics
    assert 'query_rewrite_duration_seconds_count{outcome="failed"} 1.0' in metrics
