"""The record of who received an answer lives in Redis. When it cannot be written, the chat answer
is still given (the failure is logged and counted); when it cannot be read, rating is a 503 the
client may retry, never a misleading 404 or a 500."""

from __future__ import annotations

import pytest

from app.embedded.redis import EmbeddedRedis
from app.rag.embeddings import LocalEmbedder
from app.settings import Settings
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.apps import running_app
from tests.support.library import Library

pytestmark = pytest.mark.integration


async def test_a_chat_answer_is_given_when_its_record_cannot_be_written(
    settings: Settings, embedder: LocalEmbedder, fake: FakeLLMServer, stoppable_redis: EmbeddedRedis
) -> None:
    async with running_app(
        settings, embedder=embedder, redis_url=stoppable_redis.url, rate_limit_fail_open=True
    ) as (app, client, make_caller):
        editor = await make_caller(tenant="acme")
        await Library(client, app.state.resources, editor).add(
            "Refunds are paid within 30 days.", filename="refunds.txt"
        )
        stoppable_redis.stop()
        answer = await client.post(
            "/api/v1/chat", json={"question": "How fast are refunds paid?"}, headers=editor.headers
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["provider"] == "openai"
        trace_id = answer.json()["trace_id"]
        metrics = (await client.get("/metrics")).text
        assert 'answer_records_total{outcome="failed"} 1.0' in metrics

        unavailable = await client.post(
            "/api/v1/feedback", json={"trace_id": trace_id, "score": 1}, headers=editor.headers
        )
        assert unavailable.status_code == 503, unavailable.text
        assert unavailable.json()["code"] == "feedback_unavailable"
        assert unavailable.headers["Retry-After"] == "1"

        stoppable_redis.start()
        missing = await client.post(
            "/api/v1/feedback", json={"trace_id": trace_id, "score": 1}, headers=editor.headers
        )
        assert missing.status_code == 404 and missing.json()["code"] == "trace_not_found"
