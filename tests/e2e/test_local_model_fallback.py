"""The real server falls through to a real local model: every cloud provider answers 503 through
its own SDK, and SmolLM2-135M-Instruct (gpt4all, the copy `make local-model` prepares) answers,
with the extractive answerer still behind it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.local_model import smollm2
from tests.support.server import ServerProcess, create_api_key, fake_router_env, start_server, upload_and_wait
from tests.support.services import RedisForTests

pytestmark = pytest.mark.e2e

CLOUD = ("gemini", "groq", "openai")
MAX_TOKENS = 12  # a few tokens prove the model answered; more only cost time


@pytest.fixture(scope="session")
def smollm2_model() -> Path:
    return smollm2()


@pytest.fixture
def local_server(
    clean_database: str,
    redis_server: RedisForTests,
    redis_prefix: str,
    tmp_path: Path,
    fake: FakeLLMServer,
    smollm2_model: Path,
) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    env = {
        "DATABASE_URL": clean_database,
        "REDIS_URL": redis_server.url,
        "REDIS_KEY_PREFIX": redis_prefix,
        "DATA_DIR": str(tmp_path / "data"),
        "DEBUG": "true",
        "LOG_JSON": "true",
        "RUN_WORKER_IN_PROCESS": "true",
        **fake_router_env(fake, cooldown_s=60),
        "LLM_PROVIDERS": ",".join([*CLOUD, "local"]),
        "LOCAL_MODEL_PATH": str(smollm2_model),
        "LOCAL_PROMPT_FORMAT": "chatml",
        "LOCAL_THREADS": "1",  # llama.cpp's spinning threads crawl on an oversubscribed box
        "LOCAL_TIMEOUT_S": "120",
        "LOCAL_FIRST_TOKEN_TIMEOUT_S": "120",
    }
    key = create_api_key(env)
    server = start_server(env, tmp_path / "server.log", workers=1)
    try:
        yield server, {"X-API-Key": key}
    finally:
        server.stop()


def test_cloud_outage_is_answered_by_the_local_smollm2_model(
    local_server: tuple[ServerProcess, dict[str, str]], fake: FakeLLMServer
) -> None:
    server, headers = local_server
    for name in CLOUD:
        fake.configure(name, mode="error", status=503)
    upload_and_wait(server.base_url, headers, "# Kickoff\n\nThe project kickoff is on the fourth floor.")

    response = httpx.post(
        server.base_url + "/api/v1/chat",
        json={"question": "Where is the project kickoff?", "max_tokens": MAX_TOKENS, "temperature": 0},
        headers=headers,
        timeout=180,
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["provider"] == "local", body
    assert body["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert not body["degraded"]
    assert body["answer"].strip(), body
    assert 1 <= body["usage"]["completion_tokens"] <= MAX_TOKENS
    # Generated, not quoted: the extractive answerer would have returned the passage itself.
    assert "The project kickoff is on the fourth floor." not in body["answer"]
    assert all(fake.requests(name) >= 1 for name in CLOUD)  # each cloud link was tried first

    providers = httpx.get(server.base_url + "/api/v1/providers", headers=headers, timeout=10).json()
    order = [p["name"] for p in providers["providers"]]
    assert order == [*CLOUD, "local", "extractive"]  # the extractive answerer stays last
    local = next(p for p in providers["providers"] if p["name"] == "local")
    assert local["configured"] and local["state"] == "ok"
