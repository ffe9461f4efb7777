"""OpenTelemetry backend: instruments on a private ``MeterProvider`` whose periodic reader pushes
OTLP/HTTP to ``OTEL_EXPORTER_OTLP_ENDPOINT`` (``…/v1/metrics``).

The provider is never installed as the global one, so several apps (tests) and other
OpenTelemetry users in the process do not interfere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource

from app.observability.metrics.base import DEFAULT_LATENCY_BUCKETS, Aggregation, KnownLabels, check_labels

EXPORT_TIMEOUT_S = 5.0


class _Instrument:
    """Declared before the provider exists; bound to a real instrument by ``start``."""

    def __init__(self, name: str, kind: str, description: str, labelnames: Sequence[str], **options: Any):
        self.name, self.kind, self.description = name, kind, description
        self.labelnames = tuple(labelnames)
        self.options = options
        self.bound: Any = None

    def _record(self, value: float, labels: dict[str, str]) -> None:
        check_labels(self.name, self.labelnames, labels)
        bound = self.bound
        if bound is None:
            return
        if self.kind == "counter":
            bound.add(value, attributes=labels)
        elif self.kind == "histogram":
            bound.record(value, attributes=labels)
        else:
            bound.set(value, attributes=labels)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        self._record(amount, labels)

    def observe(self, value: float, **labels: str) -> None:
        self._record(value, labels)

    def set(self, value: float, **labels: str) -> None:
        self._record(value, labels)


class OpenTelemetryBackend:
    name = "opentelemetry"

    def __init__(
        self,
        endpoint: str | None,
        *,
        service_name: str = "ragchat",
        export_interval_s: float = 15.0,
        reader: MetricReader | None = None,
    ) -> None:
        """``reader`` replaces the OTLP exporter (tests pass an ``InMemoryMetricReader``)."""
        self.endpoint = endpoint
        self.service_name = service_name
        self.export_interval_s = export_interval_s
        self._reader = reader
        self._instruments: list[_Instrument] = []
        self.provider: MeterProvider | None = None

    def _declare(self, instrument: _Instrument) -> _Instrument:
        self._instruments.append(instrument)
        if self.provider is not None:
            self._bind(instrument)
        return instrument

    def counter(
        self, name: str, description: str, labelnames: Sequence[str] = (), known: KnownLabels = ()
    ) -> _Instrument:
        # OpenTelemetry names counters without the Prometheus _total suffix; exporters add it.
        return self._declare(_Instrument(name.removesuffix("_total"), "counter", description, labelnames))

    def histogram(
        self,
        name: str,
        description: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_LATENCY_BUCKETS,
        known: KnownLabels = (),
    ) -> _Instrument:
        return self._declare(_Instrument(name, "histogram", description, labelnames, buckets=tuple(buckets)))

    def gauge(
        self, name: str, description: str, labelnames: Sequence[str] = (), aggregation: Aggregation = "last"
    ) -> _Instrument:
        return self._declare(_Instrument(name, "gauge", description, labelnames))

    def _bind(self, instrument: _Instrument) -> None:
        assert self.provider is not None
        meter = self.provider.get_meter("ragchat")
        unit = "s" if instrument.name.endswith("_seconds") else ""
        if instrument.kind == "counter":
            instrument.bound = meter.create_counter(instrument.name, unit, instrument.description)
        elif instrument.kind == "histogram":
            instrument.bound = meter.create_histogram(
                instrument.name,
                unit,
                instrument.description,
                explicit_bucket_boundaries_advisory=instrument.options["buckets"],
            )
        else:
            instrument.bound = meter.create_gauge(instrument.name, unit, instrument.description)

    def start(self) -> None:
        reader = self._reader
        if reader is None:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            endpoint = (self.endpoint or "http://localhost:4318").rstrip("/") + "/v1/metrics"
            reader = PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=endpoint, timeout=EXPORT_TIMEOUT_S),
                export_interval_millis=self.export_interval_s * 1000,
                export_timeout_millis=EXPORT_TIMEOUT_S * 1000,
            )
        self.provider = MeterProvider(
            metric_readers=[reader],
            resource=Resource.create({SERVICE_NAME: self.service_name}),
            shutdown_on_exit=False,
        )
        for instrument in self._instruments:
            self._bind(instrument)

    def close(self) -> None:
        """Exports what is pending (bounded by the exporter timeout) and stops the reader."""
        if self.provider is not None:
            self.provider.shutdown(timeout_millis=EXPORT_TIMEOUT_S * 1000)
            self.provider = None
            for instrument in self._instruments:
                instrument.bound = None

    def exposition(self) -> tuple[bytes, str] | None:
        return None
