"""Two server processes on the same PostgreSQL and Redis: an answer cached through one is served
by the other, and a document change made through one makes the next answer on the other fresh."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.server import ServerProcess, create_api_key, start_server
from tests.support.services import RedisForTests

pytestmark = pytest.mark.e2e


@pytest.fixture
def two_servers(
    clean_database: str, redis_server: RedisForTests, redis_prefix: str, tmp_path: Path
) -> Iterator[tuple[ServerProcess, ServerProcess, dict[str, str], FakeLLMServer]]:
    fake = FakeLLMServer().start()
    env = {
        "DATABASE_URL": clean_database,
        "REDIS_URL": redis_server.url,
        "REDIS_KEY_PREFIX": redis_prefix,
        "DEBUG": "true",
        "LOG_JSON": "true",
        "LLM_PROVIDERS": "openai",
        "OPENAI_API_KEY": "test-key-openai",
        "OPENAI_BASE_URL": fake.openai_base_url,
    }
    headers = {"X-API-Key": create_api_key(env)}
    first = start_server(
        {**env, "DATA_DIR": str(tmp_path / "a"), "RUN_WORKER_IN_PROCESS": "true"},
        tmp_path / "a.log",
        workers=1,
    )
    second = start_server({**env, "DATA_DIR": str(tmp_path / "b")}, tmp_path / "b.log", workers=1)
    try:
        yield first, second, headers, fake
    finally:
        second.stop()
        first.stop()
        fake.stop()


def ask(server: ServerProcess, headers: dict[str, str]) -> dict[str, object]:
    response = httpx.post(
        server.base_url + "/api/v1/chat",
        json={"question": "Which floor hosts the archive?", "mode": "text"},
        headers=headers,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def test_cache_hits_and_invalidation_hold_across_server_processes(
    two_servers: tuple[ServerProcess, ServerProcess, dict[str, str], FakeLLMServer],
) -> None:
    first, second, headers, fake = two_servers
    accepted = httpx.post(
        first.base_url + "/api/v1/docs",
        files={"file": ("archive.md", b"# Archive\n\nThe archive floor is the basement.", "text/markdown")},
        headers=headers,
        timeout=30,
    ).json()
    deadline = time.monotonic() + 120
    while httpx.get(first.base_url + accepted["status_url"], headers=headers, timeout=10).json()[
        "status"
    ] != ("succeeded"):
        assert time.monotonic() < deadline, "ingestion did not finish"
        time.sleep(0.2)

    assert ask(first, headers)["cached"] is False
    assert ask(second, headers)["cached"] is True  # the other process finds it in Redis
    assert fake.stats()["openai"]["chat_requests"] == 1

    patched = httpx.patch(
        f"{first.base_url}/api/v1/docs/{accepted['document_id']}",
        json={"title": "Archive (moved)"},
        headers=headers,
        timeout=10,
    )
    assert patched.status_code == 200, patched.text
    fresh = ask(second, headers)
    assert fresh["cached"] is False
    assert fresh["sources"][0]["title"] == "Archive (moved)"  # type: ignore[index]
    assert fake.stats()["openai"]["chat_requests"] == 2
