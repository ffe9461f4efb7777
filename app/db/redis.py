"""Redis clients and key spaces.

A ``redis+sentinel://[:password@]host:port[,host:port…]/master-name[/db]`` URL names a
Sentinel-managed Redis: the client asks the sentinels for the current master on every new
connection, so after a failover it follows the promoted replica without a restart (the
``limits`` storage does the same through its own Sentinel support, ``app.limits.limiter``).

Every Redis key this service writes starts with ``REDIS_KEY_PREFIX``. A store receives its
``KeySpace`` when it is built (by the composition root), so no store reads settings to name keys
and no leaf module imports the composition root."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from app.errors import InternalError

SENTINEL_SCHEME = "redis+sentinel://"
SENTINEL_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class KeySpace:
    """``prefix`` + colon-joined parts: ``KeySpace("rag:").key("answer", "t1")`` is
    ``"rag:answer:t1"``."""

    prefix: str

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)


def redis_retry() -> Retry:
    """One immediate retry: enough for a pooled connection that went stale when Redis restarted,
    without redis-py's default of ten backed-off retries (seconds per call during an outage)."""
    return Retry(NoBackoff(), retries=1)


@dataclass(frozen=True)
class SentinelTarget:
    """What a ``redis+sentinel://`` URL names: the sentinels and the master they watch."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> SentinelTarget | None:
        """None for any other URL; ``ValueError`` (one sentence) for a malformed sentinel URL."""
        if not url.startswith(SENTINEL_SCHEME):
            return None
        parts = urlsplit(url)
        hosts = parts.netloc.rsplit("@", 1)[-1]
        password = unquote(parts.password) if parts.password else None
        sentinels = []
        for host in filter(None, hosts.split(",")):
            name, _, port = host.rpartition(":") if ":" in host else (host, ":", "26379")
            sentinels.append((name.strip("[]"), int(port)))
        path = [p for p in parts.path.split("/") if p]
        if not sentinels or not path:
            raise ValueError(
                f"{url.split('@')[-1]!r} is not a Sentinel URL such as "
                "redis+sentinel://host:26379,host2:26379/mymaster"
            )
        return cls(tuple(sentinels), path[0], int(path[1]) if len(path) > 1 else 0, password)

    def sentinel(self) -> Sentinel:
        return Sentinel(  # type: ignore[no-untyped-call]
            list(self.sentinels),
            socket_timeout=SENTINEL_TIMEOUT_S,
            socket_connect_timeout=SENTINEL_TIMEOUT_S,
        )


class SentinelManagedRedis(Redis):
    """The master's client from ``Sentinel.master_for``; closing it closes the sentinels' too."""

    managing_sentinel: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.managing_sentinel is not None:
            for client in self.managing_sentinel.sentinels:
                await client.aclose()


def create_redis(url: str) -> Redis:
    # Short timeouts: a Redis outage must surface quickly as "degraded", not hang requests.
    options: dict[str, Any] = {
        "socket_connect_timeout": 1.0,
        "socket_timeout": 2.0,
        "health_check_interval": 15,
        "retry_on_timeout": False,
        "retry": redis_retry(),
    }
    target = SentinelTarget.parse(url)
    if target is None:
        return Redis.from_url(url, **options)
    sentinel = target.sentinel()
    master: SentinelManagedRedis = sentinel.master_for(
        target.master, redis_class=SentinelManagedRedis, db=target.db, password=target.password, **options
    )
    master.managing_sentinel = sentinel
    return master


class SentinelError(InternalError):
    """Sentinels unreachable, or a master they do not know; the message is one sentence."""


async def verify_sentinel(url: str) -> None:
    """Refuse, in one sentence, sentinels that cannot be reached or a master they do not know."""
    from redis.asyncio.sentinel import MasterNotFoundError

    target = SentinelTarget.parse(url)
    if target is None:
        return
    sentinel = target.sentinel()
    where = ",".join(f"{host}:{port}" for host, port in target.sentinels)
    try:
        answers = await asyncio.gather(
            *(client.ping() for client in sentinel.sentinels), return_exceptions=True
        )
        # one unreachable sentinel is tolerated (a quorum may remain); none reachable is not
        if all(isinstance(answer, BaseException) for answer in answers):
            raise SentinelError(f"cannot reach any Redis Sentinel at {where}")
        try:
            await sentinel.discover_master(target.master)
        except MasterNotFoundError as exc:
            raise SentinelError(
                f"Redis Sentinel at {where} does not know a master named {target.master!r}"
            ) from exc
    finally:
        for client in sentinel.sentinels:
            await client.aclose()
