"""Redis clients and key spaces.

Every Redis key this service writes starts with ``REDIS_KEY_PREFIX``. A store receives its
``KeySpace`` when it is built (by the composition root), so no store reads settings to name keys
and no leaf module imports the composition root."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


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


def create_redis(url: str) -> Redis:
    # Short timeouts: a Redis outage must surface quickly as "degraded", not hang requests.
    return Redis.from_url(
        url,
        socket_connect_timeout=1.0,
        socket_timeout=2.0,
        health_check_interval=15,
        retry_on_timeout=False,
        retry=redis_retry(),
    )
