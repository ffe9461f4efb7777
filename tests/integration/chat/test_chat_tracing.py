"""A real chat request produces one Langfuse trace (received by a local OTLP endpoint) with a span
per pipeline step and per provider attempt, under the trace id the client sees, inputs masked."""

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


async def test_a_chat_request_is_one_trace_with_retrieval_and_provider_attempt_spans(
    settings: Settings, embedder: LocalEmbedder, fake: FakeLLMServer
) -> None:
    fake.configure("openai", mode="error", status=503, fail_times=1)  # first attempt fails, retry answers
    with otlp_receiver() as receiver:
        langfuse: dict[str, Any] = {
            "langfuse_public_key": f"pk-lf-test-{uuid.uuid4().hex[:8]}",
            "langfuse_secret_key": SecretStr("sk-lf-test-secret-value"),
            "langfuse_host": receiver.url,
            "langfuse_flush_timeout_s": 1.0,
        }
        async with running_app(settings, embedder=embedder, **langfuse) as (app, client, make_caller):
            resources = app.state.resources
            editor = await make_caller(tenant="acme")
            await Library(client, resources, editor).add(
                "Invoices are due within 14 days.", filename="terms.txt"
            )
            response = await client.post(
                "/api/v1/chat",
                json={
                    "question": "When are invoices due? Mail me at bob@example.com",
                    "session_id": str(uuid.uuid4()),
                },
                headers=editor.headers,
            )
            assert response.status_code == 200, response.text
            resources.telemetry.tracer.flush_blocking()
    trace_id = response.headers["X-Trace-ID"]
    spans = [span for span in receiver.spans if span.trace_id == trace_id]
    names = [span.name for span in spans]
    for step in ("chat", "memory", "cache_lookup", "embedding", "retrieval", "generation"):
        assert step in names, names
    assert names.count("llm_attempt:openai") >= 1
    retrieval = next(span for span in spans if span.name == "retrieval")
    assert "bob@example.com" not in str(retrieval.attributes)
    assert "[EMAIL]" in str(retrieval.attributes)
