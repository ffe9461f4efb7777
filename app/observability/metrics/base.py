"""The one metrics interface every backend implements.

Instruments are declared once (name, help text, label names) and then recorded with label
values as keyword arguments: ``requests.inc(provider="groq", outcome="ok")``. Application code
does not call backends directly: it calls ``DomainMetrics`` (``metrics/domain.py``), which owns
every metric name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, Protocol

KnownLabels = Sequence[Mapping[str, str]]
Aggregation = Literal["sum", "max", "last"]
"""How a gauge set by several worker processes is combined when scraped (Prometheus
multiprocess mode): ``sum`` (pool usage: per-worker values add up), ``max`` (a shared state every
worker observes, e.g. a provider in cooldown) or ``last`` (the most recent write wins)."""

DEFAULT_LATENCY_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class Counter(Protocol):
    def inc(self, amount: float = 1.0, **labels: str) -> None: ...


class Histogram(Protocol):
    def observe(self, value: float, **labels: str) -> None: ...


class Gauge(Protocol):
    def set(self, value: float, **labels: str) -> None: ...


class MetricsBackend(Protocol):
    """A metrics sink. Declaring instruments never does I/O; ``start`` may (sockets, exporter
    threads) and ``close`` releases whatever ``start`` acquired (flushing what it can)."""

    name: str

    def counter(
        self, name: str, description: str, labelnames: Sequence[str] = (), known: KnownLabels = ()
    ) -> Counter:
        """``known``: label sets exposed at zero before their first sample (scrape-based
        backends), so a family is visible and ``rate()`` starts from zero."""
        ...

    def histogram(
        self,
        name: str,
        description: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_LATENCY_BUCKETS,
        known: KnownLabels = (),
    ) -> Histogram: ...

    def gauge(
        self, name: str, description: str, labelnames: Sequence[str] = (), aggregation: Aggregation = "last"
    ) -> Gauge: ...

    def start(self) -> None: ...

    def close(self) -> None: ...

    def exposition(self) -> tuple[bytes, str] | None:
        """The scrape payload and its content type, or None for push-based backends."""
        ...


def check_labels(name: str, declared: Sequence[str], given: dict[str, str]) -> None:
    if set(given) != set(declared):
        raise ValueError(f"metric {name} takes labels {sorted(declared)}, got {sorted(given)}")
