"""Backend selection: ``METRICS_BACKEND`` names one, ``auto`` picks from settings and what is
installed. Switching backends is configuration only."""

from __future__ import annotations

from importlib.util import find_spec
from typing import Literal

from app.observability.metrics.base import MetricsBackend
from app.observability.metrics.noop import NoopBackend
from app.settings import Settings

BackendName = Literal["prometheus", "datadog", "opentelemetry", "noop"]


def _installed(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def resolve_backend_name(settings: Settings) -> BackendName:
    """``auto``: Datadog when an agent is configured (``DD_AGENT_HOST``), OpenTelemetry when an
    OTLP endpoint is (``OTEL_EXPORTER_OTLP_ENDPOINT``) and the SDK is installed, otherwise
    Prometheus when prometheus_client is installed, otherwise nothing."""
    if settings.metrics_backend != "auto":
        return settings.metrics_backend
    if settings.dd_agent_host:
        return "datadog"
    if settings.otel_exporter_otlp_endpoint and _installed("opentelemetry.sdk.metrics"):
        return "opentelemetry"
    if _installed("prometheus_client"):
        return "prometheus"
    return "noop"


def create_metrics_backend(settings: Settings) -> MetricsBackend:
    """A backend that has done no I/O yet (``start`` does it, in the app's lifespan)."""
    name = resolve_backend_name(settings)
    if name == "prometheus":
        from app.observability.metrics.prometheus import PrometheusBackend

        return PrometheusBackend()
    if name == "datadog":
        from app.observability.metrics.datadog import DogStatsdBackend

        return DogStatsdBackend(
            settings.dd_agent_host or "127.0.0.1",
            settings.dd_dogstatsd_port,
            constant_tags=[f"service:{settings.otel_service_name}"],
        )
    if name == "opentelemetry":
        from app.observability.metrics.otel import OpenTelemetryBackend

        return OpenTelemetryBackend(
            settings.otel_exporter_otlp_endpoint,
            service_name=settings.otel_service_name,
            export_interval_s=settings.otel_metric_export_interval_s,
        )
    return NoopBackend()
