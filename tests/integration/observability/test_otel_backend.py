from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from app.observability.metrics import DomainMetrics
from app.observability.metrics.otel import OpenTelemetryBackend
from app.settings import Settings
from tests.support.apps import running_app
from tests.support.receivers import otlp_receiver

pytestmark = [pytest.mark.integration, pytest.mark.metrics]


def test_in_memory_reader_sees_domain_metrics() -> None:
    reader = InMemoryMetricReader()
    backend = OpenTelemetryBackend(None, reader=reader)
    metrics = DomainMetrics(backend)  # declared before start: bound when the provider exists
    backend.start()
    try:
        metrics.llm_request("openai", "gpt-4o-mini", "success", 1.25)
        metrics.vector_search(0.01)
        data = reader.get_metrics_data()
    finally:
        backend.close()
    assert data is not None
    points = {
        metric.name: list(metric.data.data_points)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    (requests,) = points["llm_requests"]
    assert requests.value == 1
    assert dict(requests.attributes or {}) == {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "outcome": "success",
    }
    (latency,) = points["vector_search_duration_seconds"]
    assert latency.count == 1


def test_otlp_export_reaches_a_local_receiver_on_close() -> None:
    with otlp_receiver() as receiver:
        backend = OpenTelemetryBackend(receiver.url, export_interval_s=60)
        metrics = DomainMetrics(backend)
        backend.start()
        metrics.cache_lookup(hit=True)
        metrics.vector_search(0.02, mode="vector")
        backend.close()  # flushes
    assert receiver.requests == ["/v1/metrics"]
    hits = receiver.metrics["cache_hits"][0]
    (point,) = hits.sum.data_points
    assert point.as_double == 1 or point.as_int == 1
    search = receiver.metrics["vector_search_duration_seconds"][0]
    assert search.unit == "s"
    assert search.histogram.data_points[0].count == 1


async def test_app_configured_for_opentelemetry_pushes_http_metrics(settings: Settings) -> None:
    with otlp_receiver() as receiver:
        async with running_app(
            settings, metrics_backend="auto", otel_exporter_otlp_endpoint=receiver.url
        ) as (_, client, _):
            assert (await client.get("/healthz")).status_code == 200
        # the lifespan's shutdown flushed the exporter
    requests = receiver.metrics["http_requests"][0]
    attributes = [
        {a.key: a.value.string_value for a in point.attributes} for point in requests.sum.data_points
    ]
    assert {"method": "GET", "handler": "/healthz", "status": "2xx"} in attributes
