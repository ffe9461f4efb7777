from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import pytest
from fastapi import APIRouter
from pydantic import SecretStr

from app.api.deps import TelemetryDep
from app.llm.telemetry_observer import TelemetryRouterObserver
from app.llm.types import Usage
from app.observability.context import current_trace_id
from app.observability.tracing import NOOP_SPAN, create_tracer
from app.settings import Settings
from tests.support.apps import running_app
from tests.support.receivers import OtlpReceiver, otlp_receiver

pytestmark = [pytest.mark.integration, pytest.mark.metrics]

API_KEY = "rk_0123456789ab_Zm9vYmFyYmF6cXV4LXNlY3JldC1wYXJ0LTEyMzQ1Njc4"
INPUT = "alice@example.com asks: what is my password=hunter2hunter2 for key " + API_KEY

chat_like = APIRouter()


@chat_like.post("/test/chat")
async def chat_like_endpoint(telemetry: TelemetryDep) -> dict[str, Any]:
    """The chat pipeline's shape: a trace with cache, retrieval and two router attempts."""
    tracer = telemetry.tracer
    observer = TelemetryRouterObserver(telemetry)
    async with tracer.trace("chat", input={"question": INPUT}, user_id="key:42", session_id="conv-1"):
        async with tracer.span("cache_lookup") as span:
            span.update(output={"hit": False})
        async with tracer.span("retrieval", kind="retriever", input={"query": INPUT}) as span:
            span.update(output={"chunks": 2}, metadata={"mode": "hybrid"})
        observer.on_attempt(
            provider="gemini", model="gemini-2.5-flash", outcome="rate_limited", latency_s=0.2, usage=None
        )
        observer.on_attempt(
            provider="groq", model="llama-3.3-70b", outcome="success", latency_s=0.5, usage=Usage(10, 5)
        )
    return {"trace_id": current_trace_id()}


def langfuse_settings(settings: Settings, receiver: OtlpReceiver, **overrides: Any) -> dict[str, Any]:
    return {
        # Langfuse keeps one client per public key per process: a fresh key isolates each test.
        "langfuse_public_key": f"pk-lf-test-{uuid.uuid4().hex[:8]}",
        "langfuse_secret_key": SecretStr("sk-lf-test-secret-value"),
        "langfuse_host": receiver.url,
        "langfuse_timeout_s": 1,
        "langfuse_flush_timeout_s": 1.0,
        **overrides,
    }


def decoded(value: Any) -> Any:
    """Langfuse stores inputs, outputs and metadata values as JSON strings."""
    return json.loads(value)


async def test_a_chat_trace_has_spans_for_each_step_and_attempt_with_masked_inputs(
    settings: Settings,
) -> None:
    with otlp_receiver() as receiver:
        async with running_app(settings, routers=[chat_like], **langfuse_settings(settings, receiver)) as (
            app,
            client,
            _,
        ):
            response = await client.post("/test/chat")
            app.state.resources.telemetry.tracer.flush_blocking()
    assert response.status_code == 200
    trace_id = response.headers["X-Trace-ID"]
    assert response.json()["trace_id"] == trace_id

    assert {span.name for span in receiver.spans} == {
        "chat",
        "cache_lookup",
        "retrieval",
        "llm_attempt:gemini",
        "llm_attempt:groq",
    }
    assert {span.trace_id for span in receiver.spans} == {trace_id}  # the id clients and logs see
    root = receiver.span("chat")
    assert all(span.parent_span_id == root.span_id for span in receiver.spans if span is not root)
    assert root.attributes["user.id"] == "key:42"
    assert root.attributes["session.id"] == "conv-1"

    retrieval = receiver.span("retrieval")
    assert retrieval.attributes["langfuse.observation.type"] == "retriever"
    query = decoded(retrieval.attributes["langfuse.observation.input"])["query"]
    assert query == "[EMAIL] asks: what is my password=[REDACTED] for key rk_0123456789ab_[REDACTED]"

    failed = receiver.span("llm_attempt:gemini")
    assert failed.attributes["langfuse.observation.type"] == "generation"
    assert failed.attributes["langfuse.observation.model.name"] == "gemini-2.5-flash"
    assert failed.attributes["langfuse.observation.level"] == "ERROR"
    assert failed.attributes["langfuse.observation.status_message"] == "rate_limited"
    assert decoded(failed.attributes["langfuse.observation.metadata.provider"]) == "gemini"
    assert decoded(failed.attributes["langfuse.observation.metadata.latency_s"]) == 0.2

    succeeded = receiver.span("llm_attempt:groq")
    assert decoded(succeeded.attributes["langfuse.observation.usage_details"]) == {
        "input": 10,
        "output": 5,
        "total": 15,
    }
    everything = json.dumps([span.attributes for span in receiver.spans])
    for secret in ("alice@example.com", "hunter2hunter2", API_KEY):
        assert secret not in everything
    # The exporter authenticated with the configured keys.
    assert receiver.requests[0] == "/api/public/otel/v1/traces"
    headers = {key.lower(): value for key, value in receiver.headers[0].items()}
    assert headers["authorization"].startswith("Basic ")


async def test_sample_rate_zero_exports_nothing_and_requests_still_work(settings: Settings) -> None:
    with otlp_receiver() as receiver:
        overrides = langfuse_settings(settings, receiver, langfuse_sample_rate=0.0)
        async with running_app(settings, routers=[chat_like], **overrides) as (app, client, _):
            response = await client.post("/test/chat")
            app.state.resources.telemetry.tracer.flush_blocking()
    assert response.status_code == 200
    assert receiver.spans == []


def test_tracing_is_disabled_cleanly_without_keys(settings: Settings) -> None:
    tracer = create_tracer(settings)
    assert not tracer.enabled
    with tracer.span("retrieval", input={"q": "x"}) as span:
        assert span is NOOP_SPAN
        span.update(output="ignored")


async def test_an_exception_marks_the_span_with_a_masked_message_and_propagates(settings: Settings) -> None:
    with otlp_receiver() as receiver:
        tracer = create_tracer(settings.model_copy(update=langfuse_settings(settings, receiver)))
        with pytest.raises(RuntimeError), tracer.span("embedding", kind="embedding"):
            raise RuntimeError("upstream rejected key " + API_KEY)
        tracer.flush_blocking()
        await tracer.aclose()
    span = receiver.span("embedding")
    assert span.attributes["langfuse.observation.level"] == "ERROR"
    assert span.attributes["langfuse.observation.status_message"] == (
        "RuntimeError: upstream rejected key rk_0123456789ab_[REDACTED]"
    )
    assert API_KEY not in json.dumps(span.attributes)


def join_langfuse_shutdown(receiver: OtlpReceiver) -> None:
    """The bounded wait gave up on Langfuse; let its shutdown finish before the receiver goes
    away, so no exporter retries a dead endpoint during the next test."""
    receiver.release.set()
    for thread in threading.enumerate():
        if thread.name == "langfuse-shutdown":
            thread.join(timeout=30)


async def test_a_hanging_langfuse_holds_neither_requests_nor_shutdown(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The endpoint holds each export until released, and the exporter waits for it as long (its
    timeout is longer than the hold): whatever finishes while an export is still held did not
    wait for Langfuse."""
    monkeypatch.setenv("LANGFUSE_FLUSH_AT", "1")  # export after every span: the exporter is busy at once
    held_after_requests = held_after_shutdown = 0
    with otlp_receiver("hang") as receiver:
        overrides = langfuse_settings(
            settings, receiver, langfuse_timeout_s=120, langfuse_flush_timeout_s=1.0
        )
        app_context = running_app(settings, routers=[chat_like], **overrides)
        _, client, _ = await app_context.__aenter__()
        try:
            first = await client.post("/test/chat")
            assert receiver.received.wait(timeout=10), "the exporter never reached the endpoint"
            # The exporter thread is now stuck on the endpoint.
            statuses = [(await client.post("/test/chat")).status_code for _ in range(5)]
            held_after_requests = receiver.held
        finally:
            await app_context.__aexit__(None, None, None)
            held_after_shutdown = receiver.held
            join_langfuse_shutdown(receiver)
    assert first.status_code == 200
    assert statuses == [200] * 5
    assert held_after_requests > 0, "the requests were answered only once Langfuse let go of the export"
    assert held_after_shutdown > 0, "shutdown waited for Langfuse instead of giving up after its bound"


async def test_a_failing_langfuse_fails_neither_requests_nor_shutdown(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LANGFUSE_FLUSH_AT", "1")
    with otlp_receiver("error") as receiver:
        overrides = langfuse_settings(settings, receiver, langfuse_flush_timeout_s=1.0)
        async with running_app(settings, routers=[chat_like], **overrides) as (_, client, _):
            first = await client.post("/test/chat")
            assert receiver.received.wait(timeout=10), "the exporter never reached the endpoint"
            # Every export from now on is refused with a 500.
            statuses = [(await client.post("/test/chat")).status_code for _ in range(5)]
        join_langfuse_shutdown(receiver)
    assert first.status_code == 200
    assert statuses == [200] * 5
    assert receiver.requests and not receiver.spans  # it tried, and nothing was accepted
