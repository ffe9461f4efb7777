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


async def _executions_of_prepared_searches(resources: Resources, patterns: list[str]) -> dict[str, list[int]]:
    """For each pattern, and each statement held prepared on any pooled connection whose text is
    LIKE it: how many times PostgreSQL executed it. One look: the look itself ends in a ROLLBACK,
    at which psycopg drops what the connection had prepared."""
    idle = resources.engine.sync_engine.pool.checkedin()
    counts: dict[str, list[int]] = {pattern: [] for pattern in patterns}
    async with AsyncExitStack() as stack:
        connections = [await stack.enter_async_context(resources.engine.connect()) for _ in range(idle)]
        for connection in connections:
            for pattern in patterns:
                rows = await connection.execute(
                    text(
                        "SELECT generic_plans + custom_plans FROM pg_prepared_statements "
                        "WHERE statement LIKE :pattern"
                    ),
                    {"pattern": pattern},
                )
                counts[pattern].extend(int(n) for n in rows.scalars())
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

    # psycopg prepares a statement at its sixth execution on a connection: twelve questions over
    # the one or two connections a sequential caller's turns take. Both of the hybrid search's
    # searches: the full-text one, and the vector one with the full-text matches' similarities.
    searches = {"full-text": "%ts_rank%", "vector": "%by_vector%"}
    executions = await _executions_of_prepared_searches(resources, list(searches.values()))
    for search, pattern in searches.items():
        assert executions[pattern], f"no connection holds the {search} search prepared: parsed per question"
        assert sum(executions[pattern]) >= 1


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
