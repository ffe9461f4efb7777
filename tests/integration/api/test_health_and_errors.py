from __future__ import annotations

import httpx
import pytest

from app.embedded.redis import EmbeddedRedis
from app.settings import Settings
from tests.support.apps import readyz_turns, running_app
from tests.support.callers import MakeCaller

pytestmark = pytest.mark.integration


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, object] = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["trace_id"] == response.headers["X-Trace-ID"]
    assert {"type", "title", "detail"} <= body.keys()
    return body


async def test_healthz_is_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_reports_postgres_18_and_pgvector_0_8(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    checks = response.json()["checks"]
    assert checks["postgres"]["version"].startswith("18")
    assert checks["pgvector"]["version"].startswith("0.8")
    assert checks["migrations"]["ok"] and checks["redis"]["ok"]


async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    echoed = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["X-Request-ID"] == "abc-123"
    generated = await client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert generated.headers["X-Request-ID"] != "bad id\twith spaces"
    assert len(generated.headers["X-Trace-ID"]) == 32


async def test_unknown_route_is_problem_json(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/api/v1/does-not-exist"), 404, "not_found")


async def test_wrong_method_is_problem_json(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post("/healthz"), 405, "method_not_allowed")


async def test_allow_names_every_method_of_a_path_served_by_several_routes(client: httpx.AsyncClient) -> None:
    options = await client.options("/api/v1/docs")
    assert options.status_code == 204
    assert options.headers["Allow"] == "GET, OPTIONS, POST"
    wrong = await client.delete("/api/v1/docs")
    assert_problem(wrong, 405, "method_not_allowed")
    assert wrong.headers["Allow"] == "GET, OPTIONS, POST"


@pytest.mark.parametrize(
    ("query", "code"),
    [("offset=9223372036854775808", "invalid_offset"), ("limit=99999999999999999999", "invalid_limit")],
)
async def test_out_of_range_query_integers_are_a_422(
    client: httpx.AsyncClient, make_caller: MakeCaller, query: str, code: str
) -> None:
    caller = await make_caller()
    assert_problem(await client.get(f"/api/v1/docs?{query}", headers=caller.headers), 422, code)


async def test_readiness_follows_redis_down_and_back_without_restart(
    settings: Settings, stoppable_redis: EmbeddedRedis
) -> None:
    async with running_app(settings, redis_url=stoppable_redis.url) as (_, client, _make):
        assert (await client.get("/readyz")).status_code == 200
        stoppable_redis.stop()
        await readyz_turns(client, 503)  # within the second the answer is cached for
        body = assert_problem(await client.get("/readyz"), 503, "not_ready")
        assert "redis" in str(body["detail"])
        assert body["checks"]["redis"]["ok"] is False  # type: ignore[index]
        stoppable_redis.start()
        await readyz_turns(client, 200)
