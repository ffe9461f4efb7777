"""The pool pre-pings: a pooled connection whose server restarted is replaced before a request
uses it, even when no request ran while the server was down."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import create_engine
from app.embedded.postgres import EmbeddedPostgres
from app.settings import Settings

pytestmark = pytest.mark.integration


async def _select_one(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text("SELECT 1"))).scalar_one())


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
