"""The router's cooldowns are one state for every process: a provider benched by one process
shows as cooling down on both gunicorn workers of a real server, and comes back for all of
them once a probe succeeds."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from app.llm.factory import build_provider_chain
from app.llm.types import ChatRequest, Message
from app.settings import Settings
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.server import ServerProcess, create_api_key, fake_router_env
from tests.support.services import PostgresForTests, RedisForTests
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

COOLDOWN_S = 4.0


@pytest.fixture(scope="module")
def database_url(postgres_server: PostgresForTests, worker_name: str) -> str:
    return postgres_server.create_database(f"ragchat_test_router_e2e_{worker_name}_{os.getpid()}")


@pytest.fixture
def fake() -> Iterator[FakeLLMServer]:
    server = FakeLLMServer().start()
    yield server
    server.stop()


def router_env(fake: FakeLLMServer, redis_url: str, prefix: str) -> dict[str, str]:
    fake_chain = fake_router_env(fake, cooldown_s=COOLDOWN_S)
    return {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix, **fake_chain}


@pytest.fixture
def served_env(fake: FakeLLMServer) -> dict[str, str]:
    """``served`` answers through the fake's fail-over chain, a failing provider benched COOLDOWN_S."""
    return fake_router_env(fake, cooldown_s=COOLDOWN_S)


async def ask_once(settings: Settings) -> str:
    """One request through a chain in this (third) process, on the server's Redis."""
    redis = Redis.from_url(settings.redis_url or "")
    chain = build_provider_chain(settings, redis)
    try:
        completion = await chain.complete(ChatRequest(messages=(Message("user", "hi"),)))
    finally:
        await chain.aclose()
        await redis.aclose()
    return completion.provider


def gemini_as_seen_by_workers(
    server: ServerProcess, key: str, rounds: int = 12
) -> tuple[list[dict[str, Any]], set[int]]:
    seen = []
    for _ in range(rounds):
        # A fresh connection each time, so gunicorn hands requests to both workers.
        with httpx.Client(base_url=server.base_url, headers={"X-API-Key": key}, timeout=10) as http:
            response = http.get("/api/v1/providers")
        assert response.status_code == 200, response.text
        seen.append({p["name"]: p for p in response.json()["providers"]}["gemini"])
    pids = set()
    for line in server.log().splitlines():
        if '"/api/v1/providers"' in line and line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == "request" and "pid" in record:
                pids.add(int(record["pid"]))
    return seen, pids


def test_cooldown_set_in_one_process_is_seen_by_every_worker_and_lifted_by_the_probe(
    served: ServerProcess,
    fake: FakeLLMServer,
    redis_server: RedisForTests,
    redis_prefix: str,
) -> None:
    key = create_api_key(served.env, tenant="e2e", role="admin")
    settings = Settings(**{k.lower(): v for k, v in router_env(fake, redis_server.url, redis_prefix).items()})  # type: ignore[arg-type]

    fake.configure("gemini", mode="error", status=503)
    assert asyncio.run(ask_once(settings)) == "groq"

    # Until both workers have answered: on a loaded machine one worker can take a long run of
    # connections, so the number of rounds is a bound, not a guess at the kernel's scheduling.
    seen, pids = gemini_as_seen_by_workers(served, key)
    for _ in range(20):
        if len(pids) >= 2:
            break
        more, pids = gemini_as_seen_by_workers(served, key)
        seen += more
    assert len(pids) >= 2, f"only worker(s) {pids} answered"
    assert all(p["state"] == "cooling_down" and not p["healthy"] for p in seen), seen
    assert all(p["last_error_code"] == "server_error" for p in seen)

    fake.reset()
    wait_for(
        lambda: all(p["state"] != "cooling_down" for p in gemini_as_seen_by_workers(served, key, 2)[0]),
        timeout=COOLDOWN_S + 10,
        interval=0.1,
        what="gemini's cooldown to end",
    )
    assert asyncio.run(ask_once(settings)) == "gemini"  # the half-open probe succeeds

    seen, _ = gemini_as_seen_by_workers(served, key, rounds=6)
    assert all(p["state"] == "ok" and p["healthy"] and p["cooling_down_until"] is None for p in seen), seen
