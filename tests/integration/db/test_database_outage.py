"""PostgreSQL stops mid-run: the API answers 503 ``database_unavailable`` with Retry-After (never a
500), and the first request after the server is back succeeds, with no restart of the app."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.auth.principal import Role
from app.db.migrations import upgrade_to_head
from app.embedded.postgres import EmbeddedPostgres
from app.settings import Settings
from tests.support.apps import readyz_turns, running_app

pytestmark = pytest.mark.integration


async def test_a_database_outage_is_a_503_and_the_return_is_seen_at_once(
    settings: Settings, embedded_data_dir: Path
) -> None:
    postgres = EmbeddedPostgres(embedded_data_dir)
    url = await asyncio.to_thread(postgres.start)
    try:
        await asyncio.to_thread(upgrade_to_head, url)
        async with running_app(settings, database_url=url) as (_, client, make):
            caller = await make(tenant="acme", role=Role.editor)
            assert (await client.get("/api/v1/docs", headers=caller.headers)).status_code == 200

            unseen = await make(tenant="acme", role=Role.editor)  # a key no request has shown yet

            await asyncio.to_thread(postgres.stop)
            # listing documents needs the database; so does checking a key this worker never verified
            for path, who in (("/api/v1/docs", caller), ("/api/v1/me", unseen)):
                down = await client.get(path, headers=who.headers)
                assert down.status_code == 503, down.text
                assert down.headers["content-type"].startswith("application/problem+json")
                assert down.json()["code"] == "database_unavailable"
                assert down.json()["trace_id"]
                assert int(down.headers["Retry-After"]) >= 1
            chat = await client.post(
                "/api/v1/chat", json={"question": "Anyone there?"}, headers=caller.headers
            )
            assert chat.status_code == 503, chat.text
            await readyz_turns(client, 503)  # within the second its answer is cached for

            postgres = EmbeddedPostgres(embedded_data_dir)
            await asyncio.to_thread(postgres.start)
            back = await client.get("/api/v1/docs", headers=caller.headers)  # the first request after
            assert back.status_code == 200, back.text
            await readyz_turns(client, 200)
    finally:
        await asyncio.to_thread(postgres.stop)
