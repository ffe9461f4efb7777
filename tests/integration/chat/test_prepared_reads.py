"""A chat turn's retrieval ends its read with a COMMIT (``app.db.unit_of_work.end_read``), so
psycopg keeps what it prepared on the connection: PostgreSQL parses the hybrid search once per
connection. At a ROLLBACK psycopg drops every prepared statement, and the search was parsed anew
for every question. Each execution is still planned for its own values: a generic plan would scan
every passage (``app.rag.repository``)."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AsyncExitStack

import httpx
import pytest
from sqlalchemy import text

from app.rag.query import RetrievalMode, RetrievalQuery
from app.rag.retrieval import retrieve
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
    assert executions, "no connection holds the hybrid search prepared: it was parsed per question"
    assert sum(executions) >= 1


@pytest.mark.parametrize("mode", list(RetrievalMode))
async def test_every_search_is_planned_for_its_own_values(resources: Resources, mode: RetrievalMode) -> None:
    query = RetrievalQuery(
        tenant_id=uuid.uuid4(),
        text="where is the quarterly review",
        vector=None if mode is RetrievalMode.text else [1.0] + [0.0] * 383,
        top_k=5,
        mode=mode,
        ef_search=100,
    )
    async with resources.session_factory() as session:
        await retrieve(session, query)
        mode_now = (await session.execute(text("SHOW plan_cache_mode"))).scalar_one()
    assert mode_now == "force_custom_plan"
