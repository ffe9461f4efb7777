"""Against the real server: an anonymous client that announces an 11 MB upload gets its 401
from the headers alone, without sending a byte of the body."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.server import ServerProcess

pytestmark = pytest.mark.e2e


def test_an_anonymous_upload_is_answered_before_its_body_is_sent(served: ServerProcess) -> None:
    address = urlsplit(served.base_url)
    head = (
        "POST /api/v1/docs HTTP/1.1\r\n"
        f"Host: {address.netloc}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {11 * 1024 * 1024}\r\n"
        "\r\n"
    )
    with socket.create_connection((address.hostname, address.port), timeout=10) as conn:
        conn.sendall(head.encode())  # and not one byte of the announced body
        answer = conn.recv(65536).decode(errors="replace")  # times out if the server waits for it
    status_line = answer.split("\r\n", 1)[0]
    assert status_line.startswith("HTTP/1.1 401"), answer[:500]
    assert "application/problem+json" in answer


def test_a_huge_path_is_a_414_and_the_server_keeps_serving(served: ServerProcess) -> None:
    """The regex-bomb path of the access log (``a.a.a.…``, 64 KB): refused with a problem, and
    the worker is free for the next request."""
    hostile = "/" + "a." * 32_000
    with httpx.Client(base_url=served.base_url, timeout=30) as client:
        refused = client.get(hostile)
        assert refused.status_code == 414, refused.text[:300]
        assert refused.json()["code"] == "uri_too_long"
        assert refused.json()["trace_id"] == refused.headers["X-Trace-ID"]
        assert client.get("/healthz").status_code == 200
    lines = [line for line in served.log().splitlines() if line.startswith("{")]
    logged = [line for line in lines if json.loads(line).get("status") == 414]
    assert logged and all(len(line) < 2_000 for line in logged)  # the path is logged cut short
