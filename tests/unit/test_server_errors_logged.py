"""A 5xx from the service's own error tree reaches the client as a problem without internals, and
the operator's log with them."""

from __future__ import annotations

import json

import pytest
import structlog
from starlette.requests import Request
from structlog.testing import capture_logs

from app import errors
from app.errors import problem_for_exception
from app.memory.service import SessionNotFoundError
from app.rag.embeddings import EmbeddingError

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def fresh_error_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    """``app.errors``' logger caches its processors on first use (``cache_logger_on_first_use``):
    a fresh one sees ``capture_logs`` whatever logged before this test in the same process."""
    monkeypatch.setattr(errors, "logger", structlog.get_logger("app.errors"))


async def test_an_embedding_outage_is_a_generic_500_for_the_client_and_logged_in_full() -> None:
    request = Request({"type": "http", "method": "POST", "path": "/api/v1/chat", "headers": []})
    with capture_logs() as logs:
        response = await problem_for_exception(request, EmbeddingError("embedding provider: 401 bad key"))
    assert response is not None and response.status_code == 500
    body = json.loads(bytes(response.body))
    assert body["code"] == "internal_error" and "401" not in body["detail"]
    (entry,) = [log for log in logs if log["event"] == "server_error"]
    assert entry["error"] == "embedding provider: 401 bad key" and entry["error_type"] == "EmbeddingError"


async def test_a_client_error_is_not_logged_as_a_server_error() -> None:
    request = Request({"type": "http", "method": "GET", "path": "/api/v1/sessions/x", "headers": []})
    with capture_logs() as logs:
        response = await problem_for_exception(request, SessionNotFoundError("no session x"))
    assert response is not None and response.status_code == 404
    assert not [log for log in logs if log["event"] == "server_error"]
