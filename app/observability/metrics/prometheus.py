"""prometheus_client backend, with multiprocess mode under gunicorn.

Each app gets its own ``CollectorRegistry`` (tests build many apps in one process; the global
registry would reject the second declaration). Under gunicorn the launcher exports a fresh
``PROMETHEUS_MULTIPROC_DIR`` before the workers start: prometheus_client then writes every value
to per-process files there, and a scrape of any worker aggregates all of them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    multiprocess,
)
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge as PromGauge
from prometheus_client import Histogram as PromHistogram

from app.observability.metrics.base import DEFAULT_LATENCY_BUCKETS, Aggregation, KnownLabels, check_labels

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_GAUGE_MODES: dict[Aggregation, Literal["livesum", "livemax", "livemostrecent"]] = {
    "sum": "livesum",
    "max": "livemax",
    "last": "livemostrecent",
}


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class _Counter:
    def __init__(self, metric: PromCounter, name: str, labelnames: Sequence[str]) -> None:
        self._metric, self._name, self._labelnames = metric, name, tuple(labelnames)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        check_labels(self._name, self._labelnames, labels)
        (self._metric.labels(**labels) if labels else self._metric).inc(amount)


class _Histogram:
    def __init__(self, metric: PromHistogram, name: str, labelnames: Sequence[str]) -> None:
        self._metric, self._name, self._labelnames = metric, name, tuple(labelnames)

    def observe(self, value: float, **labels: str) -> None:
        check_labels(self._name, self._labelnames, labels)
        (self._metric.labels(**labels) if labels else self._metric).observe(value)


class _Gauge:
    def __init__(self, metric: PromGauge, name: str, labelnames: Sequence[str]) -> None:
        self._metric, self._name, self._labelnames = metric, name, tuple(labelnames)

    def set(self, value: float, **labels: str) -> None:
        check_labels(self._name, self._labelnames, labels)
        (self._metric.labels(**labels) if labels else self._metric).set(value)


class PrometheusBackend:
    name = "prometheus"

    def __init__(self) -> None:
        self.multiprocess = multiprocess_enabled()
        self.registry = CollectorRegistry(auto_describe=True)
        if not self.multiprocess:
            # Process metrics are per process; in multiprocess mode they cannot be aggregated.
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)

    def counter(
        self, name: str, description: str, labelnames: Sequence[str] = (), known: KnownLabels = ()
    ) -> _Counter:
        # prometheus_client appends _total to counters itself.
        base = name.removesuffix("_total")
        metric = PromCounter(base, description, labelnames=tuple(labelnames), registry=self.registry)
        for labels in known:
            metric.labels(**labels)
        return _Counter(metric, name, labelnames)

    def histogram(
        self,
        name: str,
        description: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_LATENCY_BUCKETS,
        known: KnownLabels = (),
    ) -> _Histogram:
        metric = PromHistogram(
            name, description, labelnames=tuple(labelnames), buckets=tuple(buckets), registry=self.registry
        )
        for labels in known:
            metric.labels(**labels)
        return _Histogram(metric, name, labelnames)

    def gauge(
        self, name: str, description: str, labelnames: Sequence[str] = (), aggregation: Aggregation = "last"
    ) -> _Gauge:
        metric = PromGauge(
            name,
            description,
            labelnames=tuple(labelnames),
            registry=self.registry,
            multiprocess_mode=_GAUGE_MODES[aggregation],
        )
        return _Gauge(metric, name, labelnames)

    def start(self) -> None:
        return None

    def close(self) -> None:
        return None

    def exposition(self) -> tuple[bytes, str] | None:
        if self.multiprocess:
            scrape = CollectorRegistry()
            multiprocess.MultiProcessCollector(scrape)  # type: ignore[no-untyped-call]
            return generate_latest(scrape), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


@contextmanager
def multiprocess_directory() -> Iterator[Path]:
    """A fresh, empty ``PROMETHEUS_MULTIPROC_DIR`` exported for the gunicorn about to start and
    removed when it exits (stale files from an earlier run would be counted again)."""
    directory = Path(tempfile.mkdtemp(prefix="ragchat-prometheus-"))
    previous = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = str(directory)
    try:
        yield directory
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = previous
        shutil.rmtree(directory, ignore_errors=True)


def mark_worker_dead(pid: int) -> None:
    """gunicorn ``child_exit``: drop the dead worker's live gauges from the aggregate."""
    if multiprocess_enabled():
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
