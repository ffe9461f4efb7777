"""Two server processes on one PostgreSQL and one Redis: the token budget is one budget, not one
per process. 50 parallel streamed answers split across them never spend more than it allows."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.server import ServerProcess, create_api_key, start_server
from tests.support.services import RedisForTests, libpq
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

WORST_CASE = 1200
BUDGET = 10 * WORST_CASE
GUIDE = "\n\n".join(
    f"Section {n}. The quarterly review of team {n} happens in the Blue Room on floor {n}; "
    + " ".join(f"detail{n}x{m} about the review agenda and its budget" for m in range(30))
    for n in range(12)
)


@pytest.fixture
def two_servers(
    clean_database: str, redis_server: RedisForTests, redis_prefix: str, tmp_path: Path
) -> Iterator[tuple[ServerProcess, ServerProcess, dict[str, str]]]:
    fake = FakeLLMServer().start()
    fake.configure("openai", text="The quarterly review happens in the Blue Room [1]. " * 8)
    env = {
        "DATABASE_URL": clean_database,
        "REDIS_URL": redis_server.url,
        "REDIS_KEY_PREFIX": redis_prefix,
        "LOG_JSON": "true",
        "LLM_PROVIDERS": "openai",
        "OPENAI_API_KEY": "test-key-openai",
        "OPENAI_BASE_URL": fake.openai_base_url,
        "PROMPT_BUDGET_TOKENS": str(WORST_CASE),
        "ANSWER_MAX_TOKENS": "200",
        "BUDGET_TOKENS_PER_DAY_TENANT": str(BUDGET),
        "RATE_LIMIT_PER_PRINCIPAL": "1000/minute",
        "RATE_LIMIT_PER_TENANT": "1000/minute",
        "RATE_LIMIT_PER_IP": "1000/minute",
        "MAX_STREAMS_PER_PRINCIPAL": "100",
    }
    headers = {"X-API-Key": create_api_key(env)}
    first = start_server(
        {**env, "DATA_DIR": str(tmp_path / "a"), "RUN_WORKER_IN_PROCESS": "true"},
        tmp_path / "a.log",
        workers=1,
    )
    second = start_server({**env, "DATA_DIR": str(tmp_path / "b")}, tmp_path / "b.log", workers=1)
    try:
        yield first, second, headers
    finally:
        second.stop()
        first.stop()
        fake.stop()


async def ask_all(
    servers: tuple[ServerProcess, ServerProcess], headers: dict[str, str]
) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60) as client:
        return await asyncio.gather(
            *(
                client.post(
                    servers[n % 2].base_url + "/api/v1/chat",
                    json={"question": f"Where does review {n} of team {n % 12} happen?", "stream": True},
                    headers=headers,
                )
                for n in range(50)
            )
        )


def test_fifty_parallel_streams_on_two_processes_never_overspend(
    two_servers: tuple[ServerProcess, ServerProcess, dict[str, str]], clean_database: str
) -> None:
    first, second, headers = two_servers
    accepted = httpx.post(
        first.base_url + "/api/v1/docs",
        files={"file": ("guide.md", GUIDE.encode(), "text/markdown")},
        headers=headers,
        timeout=30,
    ).json()

    def ingested() -> bool:
        status = httpx.get(first.base_url + accepted["status_url"], headers=headers, timeout=10).json()
        return status["status"] == "succeeded"

    wait_for(ingested, timeout=120, what="the guide is ingested")
    responses = asyncio.run(ask_all((first, second), headers))
    answered = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert answered and refused
    assert all("event: done" in r.text for r in answered)
    assert all(r.status_code == 429 and r.json()["code"] == "budget_exhausted" for r in refused)
    with psycopg.connect(libpq(clean_database)) as conn:
        row = conn.execute("SELECT coalesce(sum(tokens), 0) FROM token_usage").fetchone()
    assert row is not None
    spent = int(row[0])
    assert 0 < spent <= BUDGET
    assert spent / len(answered) * 50 > BUDGET  # unchecked, the 50 would have overspent
    for server in (first, second):
        usage = httpx.get(server.base_url + "/api/v1/usage", headers=headers, timeout=10).json()
        assert usage["budgets"][0]["spent"] == spent
        assert usage["budgets"][0]["reserved"] == 0  # every reservation released
