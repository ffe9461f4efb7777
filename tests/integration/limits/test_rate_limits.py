from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from app.api.limits import ChatRateLimit, UploadRateLimit
from app.auth.principal import Role
from app.embedded.redis import EmbeddedRedis
from app.limits.limiter import STORAGE_RETRY_S
from app.settings import Settings
from tests.support.apps import running_app
from tests.support.clock import SteppedClock

pytestmark = pytest.mark.integration

# Stand-ins for the chat and upload endpoints, attached exactly as the real ones attach limits.
probe = APIRouter(prefix="/probe")


@probe.post("/chat")
async def chat(principal: ChatRateLimit) -> dict[str, str]:
    return {"principal": principal.id}


@probe.post("/chat/stream")
async def chat_stream(principal: ChatRateLimit) -> StreamingResponse:
    async def tokens() -> AsyncIterator[bytes]:
        yield b"data: hello\n\n"

    return StreamingResponse(tokens(), media_type="text/event-stream")


@probe.post("/upload")
async def upload(principal: UploadRateLimit) -> dict[str, str]:
    return {"principal": principal.id}


def assert_rate_limited(response: httpx.Response, limit: int) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "rate_limited"
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["X-RateLimit-Limit"] == str(limit)
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert int(response.headers["X-RateLimit-Reset"]) >= 1


async def test_chat_budget_is_per_principal_with_headers_on_every_response(settings: Settings) -> None:
    async with running_app(settings, routers=[probe], rate_limit_per_principal="3/minute") as (
        _,
        client,
        make,
    ):
        alice = await make(tenant="acme", role=Role.reader)
        bob = await make(tenant="acme", role=Role.reader)
        remaining = []
        for path in ("/probe/chat", "/probe/chat/stream", "/probe/chat"):
            response = await client.post(path, headers=alice.headers)
            assert response.status_code == 200
            assert response.headers["X-RateLimit-Limit"] == "3"
            remaining.append(response.headers["X-RateLimit-Remaining"])
        assert remaining == ["2", "1", "0"]
        assert_rate_limited(await client.post("/probe/chat", headers=alice.headers), 3)
        assert (await client.post("/probe/chat", headers=bob.headers)).status_code == 200


async def test_upload_budget_is_separate_from_chat_and_needs_an_editor(settings: Settings) -> None:
    async with running_app(
        settings, routers=[probe], rate_limit_uploads="2/hour", rate_limit_per_principal="10/minute"
    ) as (_, client, make):
        editor = await make(tenant="acme", role=Role.editor)
        reader = await make(tenant="acme", role=Role.reader)
        assert (await client.post("/probe/upload", headers=reader.headers)).status_code == 403
        for _ in range(2):
            assert (await client.post("/probe/upload", headers=editor.headers)).status_code == 200
        assert_rate_limited(await client.post("/probe/upload", headers=editor.headers), 2)
        chat = await client.post("/probe/chat", headers=editor.headers)
        assert chat.status_code == 200
        assert chat.headers["X-RateLimit-Remaining"] == "9"


async def test_ip_budget_covers_every_authenticated_request_of_all_principals(settings: Settings) -> None:
    async with running_app(settings, rate_limit_per_ip="4/minute") as (_, client, make):
        first = await make(tenant="acme", role=Role.reader)
        second = await make(tenant="globex", role=Role.admin)
        statuses = [
            (await client.get("/api/v1/me", headers=caller.headers)).status_code
            for caller in (first, second, first, second)
        ]
        assert statuses == [200] * 4
        assert_rate_limited(await client.get("/api/v1/me", headers=first.headers), 4)
        # Wrong credentials cost the budget too, so key guessing is throttled.
        assert (await client.get("/api/v1/me", headers={"X-API-Key": "rk_bad"})).status_code == 429
        # Unauthenticated health checks are not limited.
        assert (await client.get("/healthz")).status_code == 200


async def test_forwarded_for_picks_the_bucket_only_behind_a_trusted_proxy(settings: Settings) -> None:
    async with running_app(settings, rate_limit_per_ip="2/minute") as (_, client, make):
        caller = await make(tenant="acme", role=Role.reader)
        for n in range(2):
            headers = {**caller.headers, "X-Forwarded-For": f"198.51.100.{n}"}
            assert (await client.get("/api/v1/me", headers=headers)).status_code == 200
        spoofed = {**caller.headers, "X-Forwarded-For": "198.51.100.99"}
        assert (await client.get("/api/v1/me", headers=spoofed)).status_code == 429

    async with running_app(
        settings.model_copy(update={"redis_key_prefix": settings.redis_key_prefix + "proxy:"}),
        rate_limit_per_ip="2/minute",
        trusted_proxies=["127.0.0.0/8"],
    ) as (_, client, make):
        caller = await make(tenant="acme2", role=Role.reader)
        for n in range(4):
            headers = {**caller.headers, "X-Forwarded-For": f"198.51.100.{n}"}
            assert (await client.get("/api/v1/me", headers=headers)).status_code == 200
        status = await client.get(
            "/api/v1/rate-limit/status", headers={**caller.headers, "X-Forwarded-For": "198.51.100.7"}
        )
        assert status.json()["client_ip"] == "198.51.100.7"


async def test_one_ipv6_network_is_one_per_ip_bucket(settings: Settings) -> None:
    """Every address of a /64 (RATE_LIMIT_IPV6_PREFIX) shares one bucket; another /64 has its own."""
    async with running_app(settings, rate_limit_per_ip="3/minute", trusted_proxies=["127.0.0.0/8"]) as (
        _,
        client,
        make,
    ):
        caller = await make(tenant="acme", role=Role.reader)

        def from_address(address: str) -> dict[str, str]:
            return {**caller.headers, "X-Forwarded-For": address}

        codes = [
            (await client.get("/api/v1/me", headers=from_address(f"2001:db8:1:2::{n:x}"))).status_code
            for n in range(1, 6)
        ]
        assert codes == [200, 200, 200, 429, 429]
        neighbour = await client.get("/api/v1/rate-limit/status", headers=from_address("2001:db8:1:3::1"))
        assert neighbour.status_code == 200
        assert neighbour.json()["ip_bucket"] == "2001:db8:1:3::/64"


async def test_status_endpoint_agrees_with_the_counters_and_headers(settings: Settings) -> None:
    async with running_app(
        settings, routers=[probe], rate_limit_per_principal="5/minute", rate_limit_per_ip="50/minute"
    ) as (_, client, make):
        caller = await make(tenant="acme", role=Role.editor)
        for _ in range(3):
            await client.post("/probe/chat", headers=caller.headers)
        await client.post("/probe/upload", headers=caller.headers)
        response = await client.get("/api/v1/rate-limit/status", headers=caller.headers)
        assert response.status_code == 200
        body = response.json()
        budgets = {entry["budget"]: entry for entry in body["budgets"]}
        assert (body["strategy"], body["storage_available"]) == ("fixed", True)
        assert (budgets["chat"]["limit"], budgets["chat"]["remaining"]) == (5, 2)
        assert (budgets["uploads"]["limit"], budgets["uploads"]["remaining"]) == (30, 29)
        assert (budgets["ip"]["limit"], budgets["ip"]["remaining"]) == (50, 45)  # 5 requests so far
        # The status request's own headers report its IP budget, charged by this request.
        assert response.headers["X-RateLimit-Remaining"] == "45"
        assert 0 < budgets["chat"]["reset_after_s"] <= 60


async def test_sliding_window_strategy_limits_too(settings: Settings) -> None:
    async with running_app(
        settings, routers=[probe], rate_limit_per_principal="2/minute", rate_limit_strategy="sliding"
    ) as (_, client, make):
        caller = await make(tenant="acme", role=Role.reader)
        assert [(await client.post("/probe/chat", headers=caller.headers)).status_code for _ in range(3)] == [
            200,
            200,
            429,
        ]
        status = await client.get("/api/v1/rate-limit/status", headers=caller.headers)
        assert status.json()["strategy"] == "sliding"


async def test_fail_open_keeps_answering_without_redis_and_enforces_again_when_it_returns(
    settings: Settings, stoppable_redis: EmbeddedRedis
) -> None:
    async with running_app(
        settings, routers=[probe], redis_url=stoppable_redis.url, rate_limit_per_principal="2/minute"
    ) as (app, client, make):
        clock = app.state.resources.limiter.clock = SteppedClock()
        caller = await make(tenant="acme", role=Role.reader)
        assert (await client.post("/probe/chat", headers=caller.headers)).status_code == 200
        stoppable_redis.stop()
        for _ in range(4):
            response = await client.post("/probe/chat", headers=caller.headers)
            assert response.status_code == 200
            assert "X-RateLimit-Limit" not in response.headers
        assert app.state.resources.limiter.storage_failures >= 4
        status = (await client.get("/api/v1/rate-limit/status", headers=caller.headers)).json()
        assert status["storage_available"] is False
        assert status["budgets"][0]["remaining"] is None

        stoppable_redis.start()
        clock.advance(STORAGE_RETRY_S)
        codes = [(await client.post("/probe/chat", headers=caller.headers)).status_code for _ in range(3)]
        assert codes[-1] == 429  # enforced again, no restart


@pytest.mark.parametrize("fail_open", [True, False])
async def test_limits_come_back_one_retry_window_after_redis_under_steady_traffic(
    settings: Settings, stoppable_redis: EmbeddedRedis, fail_open: bool
) -> None:
    """Requests decided while Redis is marked down must not push the retry further: with traffic
    that never pauses, the first request after the window tries Redis again."""
    async with running_app(
        settings,
        routers=[probe],
        redis_url=stoppable_redis.url,
        rate_limit_per_principal="1000/minute",
        rate_limit_fail_open=fail_open,
    ) as (app, client, make):
        clock = app.state.resources.limiter.clock = SteppedClock()
        caller = await make(tenant="acme", role=Role.reader)
        stoppable_redis.stop()
        for _ in range(10):  # a request every 0.2 s for 2 s of outage
            response = await client.post("/probe/chat", headers=caller.headers)
            assert response.status_code == (200 if fail_open else 503), response.text
            clock.advance(0.2)
        stoppable_redis.start()
        for _ in range(int(STORAGE_RETRY_S / 0.2)):  # still steady: one retry window at most
            await client.post("/probe/chat", headers=caller.headers)
            clock.advance(0.2)
        response = await client.post("/probe/chat", headers=caller.headers)
        assert response.status_code == 200, response.text
        assert "X-RateLimit-Limit" in response.headers  # counted in Redis again
        status = (await client.get("/api/v1/rate-limit/status", headers=caller.headers)).json()
        assert status["storage_available"] is True


async def test_fail_closed_refuses_with_503_while_redis_is_down(
    settings: Settings, stoppable_redis: EmbeddedRedis
) -> None:
    async with running_app(
        settings, routers=[probe], redis_url=stoppable_redis.url, rate_limit_fail_open=False
    ) as (app, client, make):
        clock = app.state.resources.limiter.clock = SteppedClock()
        caller = await make(tenant="acme", role=Role.reader)
        stoppable_redis.stop()
        response = await client.post("/probe/chat", headers=caller.headers)
        assert response.status_code == 503
        assert response.json()["code"] == "rate_limit_unavailable"
        assert int(response.headers["Retry-After"]) >= 1
        stoppable_redis.start()
        clock.advance(STORAGE_RETRY_S)
        assert (await client.post("/probe/chat", headers=caller.headers)).status_code == 200


async def test_a_redis_restart_between_requests_is_not_an_outage(
    settings: Settings, stoppable_redis: EmbeddedRedis
) -> None:
    """The pooled connection is stale after a restart: it is retried once, not counted as an
    outage, and the limits keep counting."""
    async with running_app(
        settings, routers=[probe], redis_url=stoppable_redis.url, rate_limit_per_principal="5/minute"
    ) as (app, client, make):
        caller = await make(tenant="acme", role=Role.reader)
        assert (await client.post("/probe/chat", headers=caller.headers)).headers[
            "X-RateLimit-Remaining"
        ] == "4"
        stoppable_redis.stop()
        stoppable_redis.start()
        response = await client.post("/probe/chat", headers=caller.headers)
        assert response.status_code == 200
        assert "X-RateLimit-Remaining" in response.headers  # counted in Redis, first try
        assert app.state.resources.limiter.storage_failures == 0
        status = (await client.get("/api/v1/rate-limit/status", headers=caller.headers)).json()
        assert status["storage_available"] is True


async def test_a_tenant_shares_one_chat_budget_across_its_principals(settings: Settings) -> None:
    async with running_app(
        settings, routers=[probe], rate_limit_per_tenant="3/minute", rate_limit_per_principal="100/minute"
    ) as (_, client, make):
        alice, bob = await make(tenant="acme"), await make(tenant="acme")
        carol = await make(tenant="globex")
        codes = [
            (await client.post("/probe/chat", headers=caller.headers)).status_code
            for caller in (alice, bob, alice, bob)
        ]
        assert codes == [200, 200, 200, 429]
        refused = await client.post("/probe/chat", headers=alice.headers)
        assert_rate_limited(refused, 3)
        assert (await client.post("/probe/chat", headers=carol.headers)).status_code == 200
        status = (await client.get("/api/v1/rate-limit/status", headers=bob.headers)).json()
        tenant_row = next(row for row in status["budgets"] if row["budget"] == "tenant")
        assert tenant_row["scope"] == "tenant" and tenant_row["remaining"] == 0


def rate_limited_count(exposition: str, scope: str) -> float:
    for line in exposition.splitlines():
        if line.startswith("rate_limited_total{") and f'scope="{scope}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_every_refusal_is_counted_on_metrics_by_budget(settings: Settings) -> None:
    async with running_app(
        settings, routers=[probe], rate_limit_per_principal="2/minute", rate_limit_per_ip="100/minute"
    ) as (_, client, make):
        alice = await make(tenant="acme", role=Role.reader)
        before = (await client.get("/metrics")).text
        for _ in range(5):
            await client.post("/probe/chat", headers=alice.headers)
        after = (await client.get("/metrics")).text
    assert rate_limited_count(after, "chat") - rate_limited_count(before, "chat") == 3
    assert rate_limited_count(after, "ip") == rate_limited_count(before, "ip")


def budget_row(status: dict, budget: str) -> dict:  # type: ignore[type-arg]
    return next(row for row in status["budgets"] if row["budget"] == budget)


@pytest.mark.parametrize("strategy", ["fixed", "sliding"])
async def test_one_principal_flooding_does_not_lock_its_tenant_out(settings: Settings, strategy: str) -> None:
    """Requests a principal's own budget refuses charge nothing: the tenant counter holds only the
    allowed ones, so a colleague of the flooding key still gets through."""
    async with running_app(
        settings,
        routers=[probe],
        rate_limit_strategy=strategy,
        rate_limit_per_principal="6/minute",
        rate_limit_per_tenant="10/minute",
        rate_limit_per_ip="1000/minute",
    ) as (_, client, make):
        flooder, colleague = await make(tenant="acme"), await make(tenant="acme")
        codes = [(await client.post("/probe/chat", headers=flooder.headers)).status_code for _ in range(60)]
        assert codes == [200] * 6 + [429] * 54
        status = (await client.get("/api/v1/rate-limit/status", headers=colleague.headers)).json()
        assert budget_row(status, "tenant")["remaining"] == 10 - 6  # the allowed ones only
        response = await client.post("/probe/chat", headers=colleague.headers)
        assert response.status_code == 200, response.text


async def test_a_request_the_tenant_budget_refuses_costs_the_principal_nothing(settings: Settings) -> None:
    async with running_app(
        settings,
        routers=[probe],
        rate_limit_per_principal="100/minute",
        rate_limit_per_tenant="2/minute",
        rate_limit_per_ip="1000/minute",
    ) as (_, client, make):
        alice, bob = await make(tenant="acme"), await make(tenant="acme")
        assert (await client.post("/probe/chat", headers=bob.headers)).status_code == 200
        codes = [(await client.post("/probe/chat", headers=alice.headers)).status_code for _ in range(5)]
        assert codes == [200, 429, 429, 429, 429]
        status = (await client.get("/api/v1/rate-limit/status", headers=alice.headers)).json()
        assert budget_row(status, "chat")["remaining"] == 99
        assert budget_row(status, "tenant")["remaining"] == 0


# The same stand-ins under /api/, where the authentication middleware authenticates first.
api_probe = APIRouter(prefix="/api/v1/probe")
api_probe.add_api_route("/chat", chat, methods=["POST"])
api_probe.add_api_route("/upload", upload, methods=["POST"])


async def test_every_authenticated_request_pays_its_per_ip_hit_whatever_its_outcome(
    settings: Settings,
) -> None:
    """A trusted key's per-IP hit rides on the request's first budget charge, in its round trip;
    a request refused by a later budget, forbidden, or charging no budget still pays it, and an
    exhausted per-IP budget still refuses before anything else is answered."""
    async with running_app(
        settings, routers=[api_probe], rate_limit_per_principal="1/minute", rate_limit_per_ip="6/minute"
    ) as (app, client, make):
        app.state.resources.authenticator.clock = SteppedClock(base=lambda: 0.0)  # keys stay trusted
        reader = await make(tenant="acme", role=Role.reader)
        outcomes = [
            (await client.get("/api/v1/me", headers=reader.headers)).status_code,  # verifies the key
            (await client.post("/api/v1/probe/chat", headers=reader.headers)).status_code,
            (await client.post("/api/v1/probe/chat", headers=reader.headers)).status_code,  # chat spent
            (await client.post("/api/v1/probe/upload", headers=reader.headers)).status_code,  # a reader
        ]
        assert outcomes == [200, 200, 429, 403]
        status = await client.get("/api/v1/rate-limit/status", headers=reader.headers)
        assert budget_row(status.json(), "ip")["remaining"] == 1  # five requests, this one included
        assert status.headers["X-RateLimit-Remaining"] == "1"
        assert (await client.get("/api/v1/me", headers=reader.headers)).status_code == 200
        refused = await client.post("/api/v1/probe/upload", headers=reader.headers)  # else a 403
        assert refused.status_code == 429 and "the ip rate limit" in refused.json()["detail"]
        assert_rate_limited(await client.post("/api/v1/probe/chat", headers=reader.headers), 6)
