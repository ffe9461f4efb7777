"""Metrics: one ``MetricsBackend`` interface, five backends, one typed facade (``DomainMetrics``)."""

from app.observability.metrics.base import Counter, Gauge, Histogram, MetricsBackend
from app.observability.metrics.domain import DomainMetrics
from app.observability.metrics.factory import create_metrics_backend, resolve_backend_name

__all__ = [
    "Counter",
    "DomainMetrics",
    "Gauge",
    "Histogram",
    "MetricsBackend",
    "create_metrics_backend",
    "resolve_backend_name",
]
