"""The backend that records nothing (METRICS_BACKEND=noop)."""

from __future__ import annotations

from collections.abc import Sequence

from app.observability.metrics.base import DEFAULT_LATENCY_BUCKETS, Aggregation, KnownLabels


class _NoopInstrument:
    def inc(self, amount: float = 1.0, **labels: str) -> None:
        return None

    def observe(self, value: float, **labels: str) -> None:
        return None

    def set(self, value: float, **labels: str) -> None:
        return None


class NoopBackend:
    name = "noop"

    def counter(
        self, name: str, description: str, labelnames: Sequence[str] = (), known: KnownLabels = ()
    ) -> _NoopInstrument:
        return _NoopInstrument()

    def histogram(
        self,
        name: str,
        description: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_LATENCY_BUCKETS,
        known: KnownLabels = (),
    ) -> _NoopInstrument:
        return _NoopInstrument()

    def gauge(
        self, name: str, description: str, labelnames: Sequence[str] = (), aggregation: Aggregation = "last"
    ) -> _NoopInstrument:
        return _NoopInstrument()

    def start(self) -> None:
        return None

    def close(self) -> None:
        return None

    def exposition(self) -> tuple[bytes, str] | None:
        return None
