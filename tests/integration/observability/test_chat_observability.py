"""The acceptance path through the real chat endpoint: logs, metrics and Langfuse spans of one
chat request (real model, PostgreSQL, Redis; the provider is the wire-level fake)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr

from app.auth.principal import Role
from app.main import create_app
from app.observability.logging import configure_logging
from app.rag.embeddings import LocalEmbedder
from app.settings import Settings
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.integration.chat.conftest import Library, ask
from tests.integration.observability.harness import read_json_lines
from tests.integration.observability.receivers import otlp_receiver
from tests.support.callers import caller_factory

pytestmark = [pytest.mark.integration, pytest.mark.metrics]

QUESTION = "I am alice@example.com (key rk_0123456789ab_c2VjcmV0c2VjcmV0c2VjcmV0). How long are backups kept?"


@pytest.fixture
def fake() -> Iterator[FakeLLMServer]:
    server = FakeLLMServer().start()
    yield server
    server.stop()


@pytest.fixture
def log_dir(tmp_path: Path, settings: Settings) -> Iterator[Path]:
    yield tmp_path / "logs"
    configure_logging(settings)


async def test_a_chat_request_is_logged_measured_and_traced_under_one_id(
    settings: Settings, fake: FakeLLMServer, embedder: LocalEmbedder, log_dir: Path
) -> None:
    with otlp_receiver() as receiver:
        chat_settings = settings.model_copy(
            update={
                "llm_providers": ["openai"],
                "openai_api_key": SecretStr("test-key-openai"),
                "openai_base_url": fake.openai_base_url,
                "openai_timeout_s": 2.0,
                "run_worker_in_process": False,
                "log_to_file": log_dir,
                "langfuse_public_key": f"pk-lf-chat-{uuid.uuid4().hex[:8]}",
                "langfuse_secret_key": SecretStr("sk-lf-chat-secret-value"),
                "langfuse_host": receiver.url,
            }
        )
        app = create_app(chat_settings, embedder=embedder)
        async with LifespanManager(app, startup_timeout=60):
            resources = app.state.resources
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://testserver", timeout=30
            ) as http:
                editor = await caller_factory(resources.session_factory)(tenant="acme", role=Role.editor)
                await Library(http, resources, editor).add(
                    "# Backups\n\nBackups of customer databases are kept for exactly 35 days.",
                    filename="b.md",
                )
                fake.configure("openai", text="Backups are kept for 35 days [1].")
                response = await ask(http, editor, QUESTION)
                metrics_text = (await http.get("/metrics")).text
            resources.telemetry.tracer.flush_blocking()

    assert response.status_code == 200, response.text
    request_id, trace_id = response.headers["X-Request-ID"], response.headers["X-Trace-ID"]
    assert response.json()["trace_id"] == trace_id

    # Logs: every line of the request carries its ids; nothing secret or personal is written.
    lines = [line for line in read_json_lines(log_dir) if line.get("request_id") == request_id]
    assert lines and {line["trace_id"] for line in lines} == {trace_id}
    (access,) = [line for line in lines if line["event"] == "request"]
    assert (access["route"], access["status"], access["principal_id"]) == (
        "/api/v1/chat",
        200,
        editor.principal_id,
    )
    written = "\n".join(path.read_text() for path in log_dir.iterdir())
    for secret in ("alice@example.com", "c2VjcmV0c2VjcmV0c2VjcmV0", editor.key, "test-key-openai"):
        assert secret not in written

    # Metrics: the provider attempt was counted.
    assert re.search(
        r'llm_requests_total\{[^}]*outcome="success"[^}]*provider="openai"[^}]*\} 1\.0', metrics_text
    )

    # Traces: the provider attempt is a generation in the request's trace, inputs masked.
    attempt = receiver.span("llm_attempt:openai")
    assert attempt.trace_id == trace_id
    assert attempt.attributes["langfuse.observation.model.name"]
    assert json.loads(attempt.attributes["langfuse.observation.metadata.outcome"]) == "success"
    everything = json.dumps([span.attributes for span in receiver.spans])
    assert "alice@example.com" not in everything
