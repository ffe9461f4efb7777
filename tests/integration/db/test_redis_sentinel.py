"""Redis that fails over, for real: a master, a replica and three sentinels from the embedded
redis-server binary. The service reaches Redis through ``redis+sentinel://`` only; the master is
killed, Sentinel promotes the replica, and the service follows it without a restart."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.auth.principal import Role
from app.cli.server import check_sentinels
from app.embedded.errors import StartupError
from app.limits.limiter import STORAGE_RETRY_S
from app.settings import Settings
from tests.integration.limits.test_rate_limits import probe
from tests.support.apps import running_app
from tests.support.clock import SteppedClock
from tests.support.sentinel import MASTER_NAME, SentinelRedis, sentinel_redis

pytestmark = pytest.mark.integration


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelRedis]:
    with sentinel_redis(Path("/tmp") / f"ragchat-sentinel-{os.getpid()}-{tmp_path.name}") as servers:
        yield servers


async def test_the_service_follows_a_failover_without_a_restart(
    settings: Settings, sentinels: SentinelRedis
) -> None:
    async with running_app(
        settings, routers=[probe], redis_url=sentinels.url, rate_limit_per_principal="3/minute"
    ) as (app, client, make):
        resources = app.state.resources
        clock = resources.limiter.clock = SteppedClock()
        alice = await make(tenant="acme", role=Role.reader)
        statuses = [(await client.post("/probe/chat", headers=alice.headers)).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]  # the limits live in the Sentinel-managed master
        await resources.redis.set(settings.redis_key_prefix + "probe", "before")

        sentinels.master.kill()
        # while no master answers: requests keep succeeding (the limiter fails open)
        bob = await make(tenant="acme", role=Role.reader)
        during = [(await client.post("/probe/chat", headers=bob.headers)).status_code for _ in range(2)]
        assert during == [200, 200]
        await asyncio.to_thread(sentinels.wait_promoted)

        clock.advance(STORAGE_RETRY_S)  # the limiter's pause after a Redis failure is over
        carol = await make(tenant="acme", role=Role.reader)
        after = [(await client.post("/probe/chat", headers=carol.headers)).status_code for _ in range(4)]
        assert after == [200, 200, 200, 429]  # limits resume on the promoted replica
        # the same clients, no restart: they now talk to the promoted replica
        assert await resources.redis.get(settings.redis_key_prefix + "probe") == b"before"
        await resources.redis.set(settings.redis_key_prefix + "probe", "after")
        assert sentinels.master_port() == sentinels.replica.port
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["redis"]["ok"] is True


def test_bad_sentinel_configuration_is_one_sentence_at_start(sentinels: SentinelRedis) -> None:
    def configured(url: str) -> Settings:
        return Settings(debug=True, redis_url=url, _env_file=None)  # type: ignore[call-arg]

    unknown = sentinels.url.replace(MASTER_NAME, "nosuchmaster")
    with pytest.raises(StartupError, match="does not know a master named 'nosuchmaster'"):
        check_sentinels(configured(unknown))
    with pytest.raises(StartupError, match=r"cannot reach any Redis Sentinel at 127\.0\.0\.1:1"):
        check_sentinels(configured(f"redis+sentinel://127.0.0.1:1/{MASTER_NAME}"))
    with pytest.raises(StartupError, match="is not a Sentinel URL"):
        check_sentinels(configured("redis+sentinel://127.0.0.1:26379"))
    check_sentinels(configured(sentinels.url))  # a known master passes
