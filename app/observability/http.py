"""HTTP request metrics: prometheus-fastapi-instrumentator for the Prometheus backend; the
edge layer's access-log hook (``DomainMetrics.http_request``) for the others."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import Scope

from app.observability.metrics import DomainMetrics


def install_http_metrics(app: FastAPI, metrics: DomainMetrics) -> None:
    if metrics.backend.name != "prometheus":
        return
    from app.observability.metrics.prometheus import PrometheusBackend
    from app.observability.metrics.prometheus import install_http_metrics as instrument

    assert isinstance(metrics.backend, PrometheusBackend)
    instrument(app, metrics.backend)


def record_http_request(scope: Scope, status: int, duration_s: float) -> None:
    """Called by the edge layer (``app.api.middleware``) once per request; a no-op before the lifespan has
    built the resources and for backends that instrument HTTP themselves."""
    resources = getattr(getattr(scope.get("app"), "state", None), "resources", None)
    telemetry = getattr(resources, "telemetry", None)
    if telemetry is None:
        return
    route = getattr(scope.get("route"), "path", None)
    telemetry.metrics.http_request(str(scope.get("method", "")), route, status, duration_s)
