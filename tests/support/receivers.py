"""Local stand-ins for telemetry endpoints: an OTLP/HTTP receiver (Langfuse's ingestion endpoint
speaks OTLP/HTTP too, and it takes Langfuse's JSON scores at /api/public/scores) that records, fails
or hangs, and a UDP socket for DogStatsD."""

from __future__ import annotations

import gzip
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

Mode = Literal["record", "error", "hang"]


@dataclass
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]


@dataclass
class OtlpReceiver:
    url: str
    mode: Mode
    spans: list[ReceivedSpan] = field(default_factory=list)
    metrics: dict[str, list[Any]] = field(default_factory=dict)
    scores: list[dict[str, Any]] = field(default_factory=list)  # Langfuse scores, as sent
    requests: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    received: threading.Event = field(default_factory=threading.Event)
    held: int = 0  # "hang": requests held right now, their senders still waiting for an answer
    _held_lock: threading.Lock = field(default_factory=threading.Lock)

    def hold(self) -> None:
        """Hold the request until ``release`` (or 60 s, so nothing waits forever)."""
        with self._held_lock:
            self.held += 1
        try:
            self.received.set()
            self.release.wait(timeout=60)
        finally:
            with self._held_lock:
                self.held -= 1

    def span(self, name: str) -> ReceivedSpan:
        matches = [span for span in self.spans if span.name == name]
        assert matches, f"no span {name!r} among {[s.name for s in self.spans]}"
        return matches[0]


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


def _record(receiver: OtlpReceiver, path: str, body: bytes) -> None:
    if path.endswith("/api/public/scores"):
        receiver.scores.extend(json.loads(body))
    elif path.endswith("/v1/traces"):
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    receiver.spans.append(
                        ReceivedSpan(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                        )
                    )
    elif path.endswith("/v1/metrics"):
        request_m = ExportMetricsServiceRequest.FromString(body)
        for resource_metrics in request_m.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    receiver.metrics.setdefault(metric.name, []).append(metric)


@contextmanager
def otlp_receiver(mode: Mode = "record") -> Iterator[OtlpReceiver]:
    receiver: OtlpReceiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            receiver.requests.append(self.path)
            receiver.headers.append(dict(self.headers.items()))
            if mode == "hang":
                receiver.hold()
                self.send_response(200)  # released: the sender's wait ends with an answer
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if mode == "error":
                self.send_response(500)
                self.end_headers()
                receiver.received.set()
                return
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            _record(receiver, self.path, body)
            if self.path.endswith("/api/public/scores"):
                accepted = b'{"message":"Accepted"}'
                self.send_response(202)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(accepted)))
                self.end_headers()
                self.wfile.write(accepted)
                receiver.received.set()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()
            receiver.received.set()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver = OtlpReceiver(url=f"http://127.0.0.1:{server.server_address[1]}", mode=mode)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def udp_listener() -> Iterator[tuple[socket.socket, int]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    try:
        yield sock, int(sock.getsockname()[1])
    finally:
        sock.close()


def drain(sock: socket.socket, *, idle_s: float = 0.3) -> list[str]:
    """Every datagram that arrives until the socket has been quiet for ``idle_s``."""
    packets: list[str] = []
    sock.settimeout(idle_s)
    while True:
        try:
            packets.append(sock.recv(65535).decode())
        except TimeoutError:
            return packets
