"""A caller's own provider key (``X-Provider-Key-*``) is in no log line and no exported trace:
chat requests answered with it, JSON and streamed, and one refused by the provider (whose 401
quotes the key, as OpenAI's does), with debug logging, log files and Langfuse export all on."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from app.auth.principal import Role
from app.observability.logging import configure_logging
from app.rag.embeddings import LocalEmbedder
from app.settings import Settings
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.apps import running_app
from tests.support.library import Library
from tests.support.llm import fake_openai_overrides
from tests.support.receivers import otlp_receiver

pytestmark = [pytest.mark.integration, pytest.mark.metrics]

GOOD_KEY = "byok-good-0123456789abcdef"  # shaped like no known provider's key: masking patterns miss it
BAD_KEY = "byok-refused-fedcba9876543210"


@pytest.fixture
def log_dir(tmp_path: Path, settings: Settings) -> Iterator[Path]:
    yield tmp_path / "logs"
    configure_logging(settings)


async def test_a_callers_key_is_never_logged_or_traced(
    settings: Settings,
    fake: FakeLLMServer,
    embedder: LocalEmbedder,
    log_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake.configure("openai", text="Refunds take 30 days [1].", reject_keys=[BAD_KEY])
    with otlp_receiver() as receiver:
        observed = {
            "log_level": "DEBUG",
            "log_to_file": log_dir,
            "langfuse_public_key": f"pk-lf-byok-{uuid.uuid4().hex[:8]}",
            "langfuse_secret_key": SecretStr("sk-lf-byok-secret-value"),
            "langfuse_host": receiver.url,
        }
        async with running_app(settings, embedder=embedder, **fake_openai_overrides(fake), **observed) as (
            app,
            client,
            make_caller,
        ):
            editor = await make_caller(tenant="acme", role=Role.editor)
            await Library(client, app.state.resources, editor).add(
                "# Refunds\n\nRefunds take 30 days.", filename="refunds.md"
            )
            statuses = []
            for key, stream in ((GOOD_KEY, False), (GOOD_KEY, True), (BAD_KEY, False), (BAD_KEY, True)):
                response = await client.post(
                    "/api/v1/chat",
                    json={"question": "How long do refunds take?", "stream": stream},
                    headers={**editor.headers, "X-Provider-Key-Openai": key},
                )
                statuses.append(response.status_code)
                assert key not in response.text
            app.state.resources.telemetry.tracer.flush_blocking()

    assert statuses == [200, 200, 422, 200]
    assert fake.stats()["openai"]["authorization"] == f"Bearer {BAD_KEY}"  # the keys did reach the wire
    captured = capsys.readouterr()
    written = captured.out + captured.err + "".join(path.read_text() for path in log_dir.iterdir())
    assert "provider_failed" in written and "auth_failed" in written  # the refusal was logged,
    assert "Incorrect API key provided: [REDACTED]" in written  # with the key cut out of its text
    exported = json.dumps([(span.name, span.attributes) for span in receiver.spans])
    assert "llm_attempt:openai" in exported  # the attempts were traced
    for key in (GOOD_KEY, BAD_KEY):
        assert key not in written
        assert key not in exported
