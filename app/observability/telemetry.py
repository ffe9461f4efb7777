"""The process-wide observability objects on ``Resources.telemetry``: metrics and tracer.

``build_metrics`` runs in the app factory (declaring instruments does no I/O, and the HTTP
instrumentation must be installed before the app starts); ``open_telemetry`` runs in the
lifespan: it starts the backend, the tracer and the pool sampler, and stops them on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import structlog
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.observability.metrics import DomainMetrics, create_metrics_backend
from app.observability.metrics.noop import NoopBackend
from app.observability.tracing import Tracer, create_tracer
from app.settings import Settings

logger = structlog.get_logger(__name__)

_CONNECTION_STATE = "db.client.connection.state"


@dataclass(frozen=True)
class Telemetry:
    metrics: DomainMetrics = field(default_factory=lambda: DomainMetrics(NoopBackend()))
    tracer: Tracer = field(default_factory=Tracer.disabled)

    @classmethod
    def disabled(cls) -> Telemetry:
        return cls()


def build_metrics(settings: Settings) -> DomainMetrics:
    return DomainMetrics(create_metrics_backend(settings))


def sample_pools(metrics: DomainMetrics, engine: AsyncEngine | None, redis_pools: dict[str, Redis]) -> None:
    """Records pool usage now (public pool APIs only; pools without them are skipped)."""
    if engine is not None:
        pool = engine.sync_engine.pool
        checked_out = getattr(pool, "checkedout", None)
        checked_in = getattr(pool, "checkedin", None)
        if callable(checked_out) and callable(checked_in):
            metrics.db_pool(in_use=int(checked_out()), idle=int(checked_in()))
    for name, client in redis_pools.items():
        counts = getattr(client.connection_pool, "get_connection_count", None)
        if not callable(counts):
            continue
        by_state = {attributes.get(_CONNECTION_STATE): count for count, attributes in counts()}
        metrics.redis_pool(name, in_use=int(by_state.get("used", 0)), idle=int(by_state.get("idle", 0)))


async def _sample_periodically(
    metrics: DomainMetrics, engine: AsyncEngine | None, redis_pools: dict[str, Redis], interval_s: float
) -> None:
    while True:
        try:
            sample_pools(metrics, engine, redis_pools)
        except Exception as exc:  # a metrics bug must not kill the sampler
            logger.warning("pool_sampling_failed", error_type=type(exc).__name__)
        await asyncio.sleep(interval_s)


@asynccontextmanager
async def open_telemetry(
    settings: Settings,
    metrics: DomainMetrics,
    *,
    engine: AsyncEngine | None = None,
    redis_pools: dict[str, Redis] | None = None,
) -> AsyncIterator[Telemetry]:
    backend = metrics.backend
    await asyncio.to_thread(backend.start)  # may resolve the agent's address
    tracer = create_tracer(settings)
    sampler = asyncio.create_task(
        _sample_periodically(metrics, engine, redis_pools or {}, settings.metrics_sample_interval_s),
        name="pool-sampler",
    )
    logger.info("telemetry_started", metrics_backend=backend.name, tracing=tracer.enabled)
    try:
        yield Telemetry(metrics=metrics, tracer=tracer)
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        await tracer.aclose()
        # Push-based backends flush here (bounded by their exporter timeout).
        await asyncio.to_thread(backend.close)
