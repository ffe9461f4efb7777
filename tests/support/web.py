"""A local web server for URL ingestion tests: loopback only, routes set by the test, every request
recorded. A route can answer, redirect, stream without a length, honour validators, or hang until
the test ends."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False  # no Content-Length: the size is only known by reading
    hang: bool = False  # send nothing until the server stops


@dataclass(frozen=True)
class SeenRequest:
    path: str
    headers: dict[str, str]


@dataclass
class WebServer:
    host: str
    port: int
    scheme: str = "http"
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[SeenRequest] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str, *, host: str | None = None) -> str:
        name = host or self.host
        return f"{self.scheme}://{name}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [seen.path for seen in self.requests]


def _handler(server: WebServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 10  # a keep-alive connection the client forgot cannot hold the teardown forever

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            server.requests.append(SeenRequest(self.path, {k.lower(): v for k, v in self.headers.items()}))
            route = server.routes.get(self.path)
            if route is None:
                route = Route(b"not found", status=404)
            if route.hang:
                server.stopping.wait(60)
                return
            etag = route.headers.get("ETag")
            if etag is not None and self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(route.status)
            for name, value in route.headers.items():
                self.send_header(name, value)
            if route.chunked:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for start in range(0, len(route.body), 4096):
                    piece = route.body[start : start + 4096]
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
                return
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            self.wfile.write(route.body)

    return Handler


@contextmanager
def web_server(host: str = "127.0.0.1", *, tls: ssl.SSLContext | None = None) -> Iterator[WebServer]:
    """Serve on ``host`` (an IPv4 loopback address) and an ephemeral port until the block ends."""
    state = WebServer(host=host, port=0, scheme="https" if tls else "http")
    httpd = ThreadingHTTPServer((host, 0), _handler(state))
    httpd.daemon_threads = False
    httpd.block_on_close = True  # server_close waits for the handler threads
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    state.port = httpd.server_address[1]
    thread = threading.Thread(
        target=httpd.serve_forever, args=(0.02,), name=f"web-server-{state.port}", daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        state.stopping.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)
