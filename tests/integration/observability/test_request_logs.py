from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from fastapi import APIRouter, Request

from app.observability.logging import configure_logging
from app.settings import Settings
from tests.support.apps import running_app
from tests.support.logs import read_json_lines

pytestmark = [pytest.mark.integration, pytest.mark.metrics]

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXBhcnQ"

careless = APIRouter()


@careless.get("/test/careless")
async def careless_endpoint(request: Request) -> dict[str, bool]:
    """Logs what careless code logs: every header, a user's e-mail, a library's password."""
    structlog.get_logger("app.test").info(
        "careless_debug",
        headers=dict(request.headers),
        note=f"bob@example.com called with {request.headers.get('x-api-key')}",
    )
    logging.getLogger("some.library").warning("connecting with password=%s", "hunter2hunter2")
    return {"ok": True}


@pytest.fixture
def log_dir(tmp_path: Path, settings: Settings) -> Iterator[Path]:
    yield tmp_path / "logs"
    configure_logging(settings)  # close this test's file handler


async def test_request_log_lines_share_the_request_id_and_never_show_secrets(
    settings: Settings, log_dir: Path
) -> None:
    async with running_app(settings, routers=[careless], log_to_file=log_dir) as (_, client, make_caller):
        caller = await make_caller()
        me = await client.get("/api/v1/me", headers={**caller.headers, "X-Request-ID": "req-me-1"})
        sloppy = await client.get(
            "/test/careless",
            headers={**caller.headers, "Authorization": f"Bearer {JWT}", "X-Request-ID": "req-careless-1"},
        )
    assert me.status_code == 200 and sloppy.status_code == 200
    lines = read_json_lines(log_dir)
    text = "\n".join(path.read_text() for path in log_dir.iterdir())

    me_lines = [line for line in lines if line.get("request_id") == "req-me-1"]
    assert me_lines and all(line["trace_id"] == me.headers["X-Trace-ID"] for line in me_lines)
    (access,) = [line for line in me_lines if line["event"] == "request"]
    assert access["method"] == "GET"
    assert access["route"] == "/api/v1/me"
    assert access["status"] == 200
    assert access["principal_id"] == caller.principal_id
    assert access["duration_ms"] >= 0

    sloppy_lines = [line for line in lines if line.get("request_id") == "req-careless-1"]
    assert {line["event"] for line in sloppy_lines} >= {
        "careless_debug",
        "connecting with password=[REDACTED]",
        "request",
    }
    assert all(line["trace_id"] == sloppy.headers["X-Trace-ID"] for line in sloppy_lines)
    debug = next(line for line in sloppy_lines if line["event"] == "careless_debug")
    assert debug["headers"]["x-api-key"] == "[REDACTED]"
    assert debug["headers"]["authorization"] == "[REDACTED]"
    prefix = caller.key.split("_")[1]
    assert debug["note"] == f"[EMAIL] called with rk_{prefix}_[REDACTED]"

    secret = caller.key.split("_", 2)[2]
    for leaked in (secret, JWT, "hunter2hunter2", "bob@example.com"):
        assert leaked not in text
