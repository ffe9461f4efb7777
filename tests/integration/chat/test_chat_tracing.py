"""A real chat request produces one Langfuse trace (received by a local OTLP endpoint) with a span
per pipeline step and per provider attempt, under the trace id the client sees, inputs masked."""

from __future__ import annotations

import uuid

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr

from app.main import create_app
from app.rag.embeddings import LocalEmbedder
from app.settings import Settings
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.integration.chat.conftest import Library
from tests.integration.observability.receivers import otlp_receiver
from tests.support.callers import caller_factory

pytestmark = [pytest.mark.integration, pytest.mark.metrics]


async def test_a_chat_request_is_one_trace_with_retrieval_and_provider_attempt_spans(
    chat_settings: Settings, embedder: LocalEmbedder, fake: FakeLLMServer
) -> None:
    fake.configure("openai", mode="error", status=503, fail_times=1)  # first attempt fails, retry answers
    with otlp_receiver() as receiver:
        settings = chat_settings.model_copy(
            update={
                "langfuse_public_key": f"pk-lf-test-{uuid.uuid4().hex[:8]}",
                "langfuse_secret_key": SecretStr("sk-lf-test-secret-value"),
                "langfuse_host": receiver.url,
                "langfuse_flush_timeout_s": 1.0,
            }
        )
        app = create_app(settings, embedder=embedder)
        async with LifespanManager(app, startup_timeout=60):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=30) as http:
                resources = app.state.resources
                editor = await caller_factory(resources.session_factory)(tenant="acme")
                await Library(http, resources, editor).add(
                    "Invoices are due within 14 days.", filename="terms.txt"
                )
                response = await http.post(
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
