"""With tracing on, a rating reaches Langfuse as a score on the very trace the chat answer was
traced under (received by a local endpoint that speaks Langfuse's APIs), its comment masked."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import SecretStr

from app.rag.embeddings import LocalEmbedder
from app.settings import Settings
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.apps import running_app
from tests.support.library import Library
from tests.support.receivers import otlp_receiver

pytestmark = [pytest.mark.integration, pytest.mark.metrics]


async def test_a_rating_is_a_langfuse_score_on_the_answer_trace(
    settings: Settings, embedder: LocalEmbedder, fake: FakeLLMServer
) -> None:
    with otlp_receiver() as receiver:
        langfuse: dict[str, Any] = {
            "langfuse_public_key": f"pk-lf-test-{uuid.uuid4().hex[:8]}",
            "langfuse_secret_key": SecretStr("sk-lf-test-secret-value"),
            "langfuse_host": receiver.url,
            "langfuse_flush_timeout_s": 5.0,
        }
        async with running_app(settings, embedder=embedder, **langfuse) as (app, client, make_caller):
            editor = await make_caller(tenant="acme")
            await Library(client, app.state.resources, editor).add(
                "Refunds are paid within 30 days.", filename="refunds.txt"
            )
            answer = await client.post(
                "/api/v1/chat", json={"question": "How fast are refunds paid?"}, headers=editor.headers
            )
            assert answer.status_code == 200, answer.text
            trace_id = answer.json()["trace_id"]
            rated = await client.post(
                "/api/v1/feedback",
                json={"trace_id": trace_id, "score": 4, "comment": "Good, but mail me at bob@example.com"},
                headers=editor.headers,
            )
            assert rated.status_code == 201, rated.text
            repeated = await client.post(
                "/api/v1/feedback",
                json={"trace_id": trace_id, "score": 4, "comment": "Good, but mail me at bob@example.com"},
                headers=editor.headers,
            )
            assert repeated.status_code == 200, repeated.text  # identical: no second score below
        # leaving the app flushed the spans and the score queue
    assert "chat" in [span.name for span in receiver.spans if span.trace_id == trace_id]
    [score] = [score for score in receiver.scores if score.get("traceId") == trace_id]
    assert (score["name"], score["value"], score["dataType"]) == ("user_feedback", 4.0, "NUMERIC")
    assert "bob@example.com" not in score["comment"] and "[EMAIL]" in score["comment"]


async def test_with_tracing_off_a_rating_is_stored_and_nothing_is_exported(
    settings: Settings, embedder: LocalEmbedder, fake: FakeLLMServer
) -> None:
    with otlp_receiver() as receiver:
        # the endpoint is known, but without keys tracing is off
        async with running_app(settings, embedder=embedder, langfuse_host=receiver.url) as (
            app,
            client,
            make_caller,
        ):
            assert not app.state.resources.telemetry.tracer.enabled
            editor = await make_caller(tenant="acme")
            await Library(client, app.state.resources, editor).add(
                "Refunds are paid within 30 days.", filename="refunds.txt"
            )
            answer = await client.post(
                "/api/v1/chat", json={"question": "How fast are refunds paid?"}, headers=editor.headers
            )
            rated = await client.post(
                "/api/v1/feedback",
                json={"trace_id": answer.json()["trace_id"], "score": 1},
                headers=editor.headers,
            )
            assert rated.status_code == 201, rated.text
    assert receiver.requests == []
