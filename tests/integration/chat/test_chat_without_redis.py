"""With Redis down the service keeps answering (limits fail open, cache and memory window
bypassed, history still durable in PostgreSQL) and recovers without a restart."""

from __future__ import annotations

import uuid

import pytest

from app.embedded.redis import EmbeddedRedis
from app.limits.limiter import STORAGE_RETRY_S
from app.rag.embeddings import LocalEmbedder
from app.settings import Settings
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.apps import running_app
from tests.support.clock import SteppedClock
from tests.support.library import Library

pytestmark = pytest.mark.integration


async def test_chat_keeps_answering_while_redis_is_down_and_recovers(
    settings: Settings, embedder: LocalEmbedder, fake: FakeLLMServer, stoppable_redis: EmbeddedRedis
) -> None:
    async with running_app(
        settings, embedder=embedder, redis_url=stoppable_redis.url, rate_limit_fail_open=True
    ) as (app, client, make_caller):
        resources = app.state.resources
        clock = resources.limiter.clock = SteppedClock()
        editor = await make_caller(tenant="acme")
        await Library(client, resources, editor).add("The night shift starts at ten.", filename="shifts.txt")
        session = str(uuid.uuid4())
        body = {"question": "When does the night shift start?", "session_id": session}

        stoppable_redis.stop()
        down = await client.post("/api/v1/chat", json=body, headers=editor.headers)
        assert down.status_code == 200, down.text
        assert down.json()["provider"] == "openai"
        assert down.json()["cached"] is False
        assert "X-RateLimit-Limit" not in down.headers  # failed open: nothing to count with

        stoppable_redis.start()
        clock.advance(STORAGE_RETRY_S)  # the limiter re-probes a failed Redis after this
        up = await client.post("/api/v1/chat", json=body, headers=editor.headers)
        assert up.status_code == 200, up.text
        assert "X-RateLimit-Limit" in up.headers  # enforcing again, no restart
        history = await client.get(f"/api/v1/sessions/{session}/messages", headers=editor.headers)
        assert [m["role"] for m in history.json()["messages"]] == ["user", "assistant"] * 2
        # the answer cache is back too: what the request after Redis returned stored, is served
        stateless = {"question": "When does the night shift start?"}
        assert up.json()["cached"] is False
        cached = await client.post("/api/v1/chat", json=stateless, headers=editor.headers)
        assert cached.json()["cached"] is True
