"""A chat turn's retrieval ends its read with a COMMIT (``app.db.unit_of_work.end_read``), so
psycopg keeps what it prepared on the connection: PostgreSQL parses and plans the hybrid search
once per connection, then only executes it. At a ROLLBACK psycopg drops every prepared statement,
and the search was parsed and planned anew for every question (about 2.4 ms of the server's time
per question on the demo documents)."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import httpx
import pytest
from sqlalchemy import text

from app.resources import Resources
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.callers import Caller
from tests.support.library import Library, ask

pytestmark = [pytest.mark.integration, pytest.mark.pgvector]

QUESTIONS = 12


async def _executions_of_prepared_searches(resources: Resources) -> list[int]:
    """For each statement held prepared on any pooled connection that looks like the hybrid
    search: how many times PostgreSQL executed it."""
    idle = resources.engine.sync_engine.pool.checkedin()
    counts: list[int] = []
    async with AsyncExitStack() as stack:
        connections = [await stack.enter_async_context(resources.engine.connect()) for _ in range(idle)]
        for connection in connections:
            rows = await connection.execute(
                text(
                    "SELECT generic_plans + custom_plans FROM pg_prepared_statements "
                    "WHERE statement LIKE '%by_vector%by_text%'"
                )
            )
            counts.extend(int(n) for n in rows.scalars())
    return counts


async def test_the_hybrid_search_is_prepared_once_and_executed_for_each_question(
    client: httpx.AsyncClient, library: Library, editor: Caller, resources: Resources, fake: FakeLLMServer
) -> None:
    await library.add("The quarterly review happens in the Blue Room.", filename="review.txt")
    fake.configure("openai", text="In the Blue Room [1].")
    for n in range(QUESTIONS):
        response = await ask(client, editor, f"Where is the quarterly review, take {n}?")
        assert response.status_code == 200, response.text
        assert response.json()["cached"] is False and response.json()["provider"] == "openai"
        await asyncio.sleep(0)

    executions = await _executions_of_prepared_searches(resources)
    # psycopg prepares a statement at its sixth execution on a connection: twelve questions over
    # the one or two connections a sequential caller's turns take.
    assert executions, "no connection holds the hybrid search prepared: it was planned per question"
    assert sum(executions) >= 1
