"""Process-wide resources created by the app's lifespan and disposed of when it ends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.settings import Settings

if TYPE_CHECKING:
    from app.auth.jwt import JwtVerifier
    from app.documents.queue import JobQueue
    from app.limits.limiter import RequestLimiter
    from app.limits.streams import StreamSlots
    from app.llm.chain import ProviderChain
    from app.memory.service import ConversationMemory
    from app.observability.telemetry import Telemetry
    from app.rag.chat import ChatService
    from app.rag.embeddings import Embedder


@dataclass(frozen=True)
class Resources:
    settings: Settings
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    redis: Redis
    cache_redis: Redis
    migration_head: str
    limiter: RequestLimiter
    stream_slots: StreamSlots
    jwt_verifier: JwtVerifier | None
    telemetry: Telemetry
    embedder: Embedder
    job_queue: JobQueue
    provider_chain: ProviderChain
    memory: ConversationMemory
    chat: ChatService


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


def redis_key(settings: Settings, *parts: str) -> str:
    """Every Redis key this service writes: ``REDIS_KEY_PREFIX`` + colon-joined parts."""
    return settings.redis_key_prefix + ":".join(parts)
