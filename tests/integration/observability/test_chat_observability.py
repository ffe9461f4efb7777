"""The acceptance path through the real chat endpoint: logs, metrics and Langfuse spans of one
chat request (real model, PostgreSQL, Redis; the provider is the wire-level fake)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from app.auth.principal import Role
from app.observability.logging import configure_logging
from app.rag.embeddings import LocalEmbedder
from app.settings import Settings
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.apps import running_app
from tests.support.library import Library, ask
from tests.support.llm import fake_openai_overrides
from tests.support.logs import read_json_lines
from tests.support.receivers import otlp_receiver

pytestmark = [pytest.mark.integration, pytest.mark.metrics]

QUESTION = "I am alice@example.com (key rk_0123456789ab_c2VjcmV0c2VjcmV0c2VjcmV0). How long are backups kept?"


@pytest.fixture
def log_dir(tmp_path: Path, settings: Settings) -> Iterator[Path]:
    yield tmp_path / "logs"
    configure_logging(settings)


async def test_a_chat_request_is_logged_measured_and_traced_under_one_id(
    settings: Settings, fake: FakeLLMServer, embedder: LocalEmbedder, log_dir: Path
) -> None:
    with otlp_receiver() as receiver:
        observed: dict[str, Any] = {
            "log_to_file": log_dir,
            "langfuse_public_key": f"pk-lf-chat-{uuid.uuid4().hex[:8]}",
            "langfuse_secret_key": SecretStr("sk-lf-chat-secret-value"),
            "langfuse_host": receiver.url,
        }
        async with running_app(settings, embedder=embedder, **fake_openai_overrides(fake), **observed) as (
            app,
            client,
            make_caller,
        ):
            resources = app.state.resources
            editor = await make_caller(tenant="acme", role=Role.editor)
            await Library(client, resources, editor).add(
                "# Backups\n\nBackups of customer databases are kept for exactly 35 days.",
                filename="b.md",
            )
            fake.configure("openai", text="Backups are kept for 35 days [1].")
            response = await ask(client, editor, QUESTION)
            metrics_text = (await client.get("/metrics")).text
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
