"""Pooled connections are pinged only when in doubt (``app.db.pool_health``): one used moments ago
goes straight to work, one that sat idle is pinged first, and one whose server restarted meanwhile
is replaced before the request sees it, even when no request ran while the server was down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.db.engine import create_engine
from app.db.pool_health import PING_AFTER_IDLE_S, ping_when_in_doubt
from app.embedded.postgres import EmbeddedPostgres
from app.settings import Settings
from tests.support.clock import SteppedClock

pytestmark = pytest.mark.integration


@pytest.fixture
def pings(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every ping the pool sends (each one a round trip of a checkout)."""
    sent: list[object] = []
    from sqlalchemy.dialects.postgresql.psycopg import PGDialectAsync_psycopg

    real = PGDialectAsync_psycopg.do_ping

    def counted(self: Any, dbapi_connection: Any) -> bool:
        sent.append(dbapi_connection)
        return bool(real(self, dbapi_connection))

    monkeypatch.setattr(PGDialectAsync_psycopg, "do_ping", counted)
    return sent


@asynccontextmanager
async def watched(url: str, clock: SteppedClock) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(url, pool_size=1, max_overflow=0)
    ping_when_in_doubt(engine.sync_engine, clock=clock)
    try:
        yield engine
    finally:
        await engine.dispose()


async def _select_one(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text("SELECT 1"))).scalar_one())


async def test_a_connection_used_moments_ago_is_not_pinged_and_an_idle_one_is(
    clean_database: str, pings: list[object]
) -> None:
    clock = SteppedClock(base=lambda: 1000.0)
    async with watched(clean_database, clock) as engine:
        await _select_one(engine)  # connects: nothing to ping
        clock.advance(PING_AFTER_IDLE_S / 2)
        await _select_one(engine)
        assert pings == []
        clock.advance(PING_AFTER_IDLE_S + 0.1)
        await _select_one(engine)
        assert len(pings) == 1


async def test_a_connection_the_server_ended_is_replaced_before_use(
    clean_database: str, pings: list[object]
) -> None:
    clock = SteppedClock(base=lambda: 1000.0)
    async with watched(clean_database, clock) as engine:
        async with engine.connect() as connection:
            backend = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        admin = create_async_engine(clean_database)
        try:
            async with admin.connect() as connection:
                await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
        finally:
            await admin.dispose()
        await asyncio.sleep(0)  # the clock has not moved: only the socket tells
        async with engine.connect() as connection:
            replaced = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        assert replaced != backend
        assert len(pings) == 1


async def test_the_first_query_after_a_postgres_restart_succeeds_with_no_query_between(
    settings: Settings, embedded_data_dir: Path
) -> None:
    postgres = EmbeddedPostgres(embedded_data_dir)
    url = await asyncio.to_thread(postgres.start)
    try:
        engine = create_engine(settings.model_copy(update={"database_url": url}))
        try:
            assert await _select_one(engine) == 1
            await asyncio.to_thread(postgres.stop)
            postgres = EmbeddedPostgres(embedded_data_dir)
            await asyncio.to_thread(postgres.start)
            assert await _select_one(engine) == 1  # the pooled connection was dead: replaced
        finally:
            await engine.dispose()
    finally:
        await asyncio.to_thread(postgres.stop)
