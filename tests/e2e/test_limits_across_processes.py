"""Two server processes (each its own gunicorn) sharing one PostgreSQL and one Redis: the
rate limits are one budget, not one per process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import ServerProcess, create_api_key, service_env, start_server
from tests.support.services import RedisForTests

pytestmark = pytest.mark.e2e

IP_LIMIT = 9


@pytest.fixture
def two_servers(
    clean_database: str, redis_server: RedisForTests, redis_prefix: str, tmp_path: Path
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    env = service_env(
        clean_database,
        redis_server.url,
        redis_prefix,
        tmp_path / "data",
        RATE_LIMIT_PER_IP=f"{IP_LIMIT}/hour",
    )
    first = start_server(env, tmp_path / "first.log", workers=1)
    try:
        second = start_server(env, tmp_path / "second.log", workers=1)
    except BaseException:
        first.stop()
        raise
    yield first, second
    second.stop()
    first.stop()


def test_ip_budget_is_shared_by_two_server_processes(
    two_servers: tuple[ServerProcess, ServerProcess],
) -> None:
    first, second = two_servers
    key = create_api_key(first.env, tenant="e2e", role="admin")
    headers = {"X-API-Key": key}
    remaining: list[int] = []
    for n in range(IP_LIMIT - 1):
        server = (first, second)[n % 2]
        response = httpx.get(server.base_url + "/api/v1/me", headers=headers, timeout=10)
        assert response.status_code == 200, response.text
        assert response.headers["X-RateLimit-Limit"] == str(IP_LIMIT)
        remaining.append(int(response.headers["X-RateLimit-Remaining"]))
    assert remaining == list(range(IP_LIMIT - 1, 0, -1))  # one counter across both processes

    status = httpx.get(second.base_url + "/api/v1/rate-limit/status", headers=headers, timeout=10)
    assert status.status_code == 200
    ip_budget = next(entry for entry in status.json()["budgets"] if entry["budget"] == "ip")
    assert ip_budget["remaining"] == 0 == int(status.headers["X-RateLimit-Remaining"])

    for server in (first, second):
        refused = httpx.get(server.base_url + "/api/v1/me", headers=headers, timeout=10)
        assert refused.status_code == 429
        assert refused.json()["code"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) > 0
        assert refused.headers["X-RateLimit-Remaining"] == "0"

    for server in (first, second):
        assert key not in server.log()
