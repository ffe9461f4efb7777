"""Async engine and session factory (SQLAlchemy 2 + psycopg 3)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from app.db.pool_health import ping_when_in_doubt
from app.db.replicas import ReadSessions, ReadTarget, ReplicaMetrics, target_name
from app.settings import Settings


def _engine(url: str, settings: Settings) -> AsyncEngine:
    engine = create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=False,  # pinged only when in doubt (``app.db.pool_health``)
        pool_recycle=1800,
        connect_args={"connect_timeout": 5},
    )
    ping_when_in_doubt(engine.sync_engine)
    return engine


def create_engine(settings: Settings) -> AsyncEngine:
    if settings.database_url is None:
        raise ValueError("DATABASE_URL must be resolved (embedded or external) before the engine")
    return _engine(settings.database_url, settings)


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def create_read_sessions(
    settings: Settings,
    primary: AsyncEngine,
    primary_sessions: async_sessionmaker[AsyncSession],
    metrics: ReplicaMetrics,
) -> ReadSessions:
    """The read-only session source over ``DATABASE_REPLICA_URLS`` (the primary alone if none)."""
    replicas = []
    for index, url in enumerate(settings.database_replica_urls, start=1):
        engine = _engine(url, settings)
        replicas.append(ReadTarget(target_name(url, index), engine, create_session_factory(engine)))
    return ReadSessions(
        primary,
        primary_sessions,
        replicas,
        max_lag_s=settings.replica_max_lag_s,
        interval_s=settings.replica_check_interval_s,
        metrics=metrics,
    )
