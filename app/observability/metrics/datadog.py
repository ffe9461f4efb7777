"""DogStatsD backend: one UDP datagram per recorded value, to the Datadog agent.

Wire format (https://docs.datadoghq.com/developers/dogstatsd/datagram_shell/):
``<name>:<value>|<type>|#<tag>:<value>,…`` with type ``c`` (counter), ``h`` (histogram) or
``g`` (gauge). UDP is fire-and-forget: a missing agent costs nothing and never raises.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Sequence

from app.observability.metrics.base import DEFAULT_LATENCY_BUCKETS, Aggregation, KnownLabels, check_labels

_TAG_UNSAFE = re.compile(r"[|,#\s]")


def _format_value(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return format(value, ".10g")


def format_datagram(name: str, value: float, kind: str, tags: Sequence[str]) -> bytes:
    line = f"{name}:{_format_value(value)}|{kind}"
    if tags:
        line += "|#" + ",".join(tags)
    return line.encode()


class _Instrument:
    def __init__(self, backend: DogStatsdBackend, name: str, kind: str, labelnames: Sequence[str]) -> None:
        self._backend, self._name, self._kind, self._labelnames = backend, name, kind, tuple(labelnames)

    def _send(self, value: float, labels: dict[str, str]) -> None:
        check_labels(self._name, self._labelnames, labels)
        tags = [*self._backend.constant_tags]
        tags += [f"{key}:{_TAG_UNSAFE.sub('_', str(labels[key]))}" for key in self._labelnames]
        self._backend.send(format_datagram(self._name, value, self._kind, tags))

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        self._send(amount, labels)

    def observe(self, value: float, **labels: str) -> None:
        self._send(value, labels)

    def set(self, value: float, **labels: str) -> None:
        self._send(value, labels)


class DogStatsdBackend:
    name = "datadog"

    def __init__(self, host: str, port: int = 8125, constant_tags: Sequence[str] = ()) -> None:
        self.host, self.port = host, port
        self.constant_tags = tuple(constant_tags)
        self._socket: socket.socket | None = None

    def counter(
        self, name: str, description: str, labelnames: Sequence[str] = (), known: KnownLabels = ()
    ) -> _Instrument:
        return _Instrument(self, name, "c", labelnames)

    def histogram(
        self,
        name: str,
        description: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_LATENCY_BUCKETS,
        known: KnownLabels = (),
    ) -> _Instrument:
        return _Instrument(self, name, "h", labelnames)

    def gauge(
        self, name: str, description: str, labelnames: Sequence[str] = (), aggregation: Aggregation = "last"
    ) -> _Instrument:
        return _Instrument(self, name, "g", labelnames)

    def start(self) -> None:
        # Resolve once: a DNS lookup per datagram would block the event loop.
        family, kind, proto, _, address = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        sock.connect(address)
        self._socket = sock

    def send(self, datagram: bytes) -> None:
        sock = self._socket
        if sock is None:
            return
        try:
            sock.send(datagram)
        except OSError:
            # Agent down (ICMP port unreachable) or buffer full: metrics are best effort.
            return

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def exposition(self) -> tuple[bytes, str] | None:
        return None
