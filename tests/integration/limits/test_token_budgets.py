"""Token budgets (issue 32): the real app, real PostgreSQL and Redis, the OpenAI provider played by
the wire fake through the real SDK. Reserve, then settle: parallel streams never overspend."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import event

from app.auth.principal import Role
from app.embedded.redis import EmbeddedRedis
from app.limits.budgets import BudgetScope, Period, TokenBudget, TokenBudgets
from app.limits.limiter import STORAGE_RETRY_S
from app.rag.embeddings import LocalEmbedder
from app.settings import Settings
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.integration.api.test_mcp import error_text, mcp_session, structured
from tests.support.apps import RunningApp, running_app
from tests.support.callers import Caller
from tests.support.clock import SteppedClock
from tests.support.library import Library
from tests.support.llm import fake_openai_overrides
from tests.support.services import libpq

pytestmark = pytest.mark.integration

WORST_CASE = 1200  # PROMPT_BUDGET_TOKENS: the prompt is fitted into it minus max_tokens
BUDGET = 10 * WORST_CASE  # room for about ten answers at once
# Enough text that the prompt is filled: each answer costs close to its worst case.
GUIDE = "\n\n".join(
    f"Section {n}. The quarterly review of team {n} happens in the Blue Room on floor {n}; "
    + " ".join(f"detail{n}x{m} about the review agenda and its budget" for m in range(30))
    for n in range(12)
)
ANSWER = "The quarterly review happens in the Blue Room [1]. " * 8


@pytest.fixture
def app_embedder(embedder: LocalEmbedder) -> LocalEmbedder:
    return embedder


@pytest.fixture
def budget_settings(settings: Settings, fake: FakeLLMServer) -> Settings:
    return settings.model_copy(
        update={
            **fake_openai_overrides(fake, timeout_s=30),  # a loaded machine is slow, not the fake
            "prompt_budget_tokens": WORST_CASE,
            "answer_max_tokens": 200,
            "budget_tokens_per_day_tenant": BUDGET,
            "rate_limit_per_principal": "1000/minute",
            "rate_limit_per_tenant": "1000/minute",
            "max_streams_per_principal": 100,
            "budget_reservation_ttl_s": 10,
        }
    )


@pytest.fixture
async def budget_app(budget_settings: Settings, embedder: LocalEmbedder) -> AsyncIterator[RunningApp]:
    async with running_app(budget_settings, embedder=embedder) as running:
        yield running


def token_budgets(running: RunningApp) -> TokenBudgets:
    budgets = running.resources.limiter.token_budgets
    assert budgets is not None
    return budgets


def tenant_day_budget(caller: Caller) -> TokenBudget:
    return TokenBudget(BudgetScope.tenant, caller.tenant_id, None, Period.day, BUDGET)


def settled_in_postgres(database_url: str, tenant_id: uuid.UUID) -> int:
    with psycopg.connect(libpq(database_url)) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(tokens), 0) FROM token_usage WHERE tenant_id = %s", (tenant_id,)
        ).fetchone()
    assert row is not None
    return int(row[0])


async def open_reservations(running: RunningApp, caller: Caller) -> tuple[int, int]:
    """(the budget's reserved tokens, the reservations listed) in Redis."""
    budgets = token_budgets(running)
    key, reservations = budgets.keys(tenant_day_budget(caller), datetime.now(UTC))
    redis = running.resources.redis
    reserved = await redis.hget(key, "reserved")
    return int(reserved or 0), int(await redis.zcard(reservations))


async def ask_stream(client: httpx.AsyncClient, caller: Caller, n: int) -> httpx.Response:
    return await client.post(
        "/api/v1/chat",
        json={"question": f"Where does the quarterly review of team {n % 12} happen?", "stream": True},
        headers=caller.headers,
    )


async def prepared_tenant(running: RunningApp, fake: FakeLLMServer) -> list[Caller]:
    editor = await running.make_caller(tenant="budgeted", role=Role.editor)
    await Library(running.client, running.resources, editor).add(GUIDE, filename="guide.md")
    fake.configure("openai", text=ANSWER)
    return [editor] + [await running.make_caller(tenant="budgeted", role=Role.reader) for _ in range(4)]


def assert_budget_exhausted(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 429, response.text
    problem: dict[str, Any] = response.json()
    assert problem["code"] == "budget_exhausted"
    assert problem["budget"] == "tenant_tokens_per_day"
    assert datetime.fromisoformat(problem["reset_at"]) > datetime.now(UTC)
    assert int(response.headers["Retry-After"]) >= 1
    return problem


async def test_fifty_parallel_streams_never_spend_more_than_the_budget(
    budget_app: RunningApp, budget_settings: Settings, fake: FakeLLMServer
) -> None:
    callers = await prepared_tenant(budget_app, fake)
    responses = await asyncio.gather(
        *(ask_stream(budget_app.client, callers[n % len(callers)], n) for n in range(50))
    )
    answered = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert answered and refused
    for response in answered:
        assert "event: done" in response.text, response.text[-300:]
    for response in refused:
        assert_budget_exhausted(response)
    spent = settled_in_postgres(budget_settings.database_url, callers[0].tenant_id)
    assert 0 < spent <= BUDGET
    # Unchecked, the answers given would have cost this much: the budget is what held them back.
    assert spent / len(answered) * 50 > BUDGET
    (state,) = await token_budgets(budget_app).states([tenant_day_budget(callers[0])])
    assert state.spent == spent  # Redis and PostgreSQL agree
    assert await open_reservations(budget_app, callers[0]) == (0, 0)


async def test_a_worst_case_above_what_is_left_is_refused_before_the_router(
    budget_app: RunningApp, fake: FakeLLMServer
) -> None:
    callers = await prepared_tenant(budget_app, fake)
    budget = tenant_day_budget(callers[0])
    key, _ = token_budgets(budget_app).keys(budget, datetime.now(UTC))
    await budget_app.resources.redis.hset(key, "spent", BUDGET - WORST_CASE + 1)
    before = fake.requests("openai")
    problem = assert_budget_exhausted(await ask_stream(budget_app.client, callers[1], 1))
    assert problem["remaining"] == WORST_CASE - 1
    assert fake.requests("openai") == before  # the provider was never asked
    openai = await budget_app.client.post(
        "/v1/chat/completions",
        json={"model": "rag", "messages": [{"role": "user", "content": "Where is the review?"}]},
        headers=callers[1].headers,
    )
    assert openai.status_code == 429
    assert openai.json()["error"]["code"] == "budget_exhausted"
    assert openai.json()["error"]["type"] == "rate_limit_error"
    assert await open_reservations(budget_app, callers[0]) == (0, 0)


async def test_cache_hits_and_unmatched_questions_cost_nothing(
    budget_app: RunningApp, fake: FakeLLMServer
) -> None:
    callers = await prepared_tenant(budget_app, fake)
    first = await ask_stream(budget_app.client, callers[0], 3)
    assert first.status_code == 200
    (after_first,) = await token_budgets(budget_app).states([tenant_day_budget(callers[0])])
    assert after_first.spent > 0
    again = await ask_stream(budget_app.client, callers[0], 3)  # the same question: a cache hit
    assert '"cached":true' in again.text
    nothing = await budget_app.client.post(
        "/api/v1/chat", json={"question": "zyzzyva quokka"}, headers=callers[0].headers
    )
    assert nothing.status_code == 200 and nothing.json()["provider"] == "none"
    (after,) = await token_budgets(budget_app).states([tenant_day_budget(callers[0])])
    assert (after.spent, after.reserved) == (after_first.spent, 0)
    # The settled tokens are counted per tenant, provider and model, once.
    metrics = (await budget_app.client.get("/metrics")).text
    counted = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("budget_tokens_total{") and f'tenant="{callers[0].tenant_id}"' in line
    ]
    assert sum(counted) == after_first.spent


async def test_a_reservation_whose_worker_died_expires(budget_app: RunningApp, fake: FakeLLMServer) -> None:
    callers = await prepared_tenant(budget_app, fake)
    budgets = token_budgets(budget_app)
    budget = tenant_day_budget(callers[0])
    # A worker reserved ten worst cases and died: nothing is left until its reservations expire.
    dead = [budgets.reservation([budget]) for _ in range(10)]
    limiter = budget_app.resources.limiter
    for reservation in dead:
        assert await limiter.hit_many([], reserve=(budgets, reservation)) == []
    assert_budget_exhausted(await ask_stream(budget_app.client, callers[1], 2))
    # Their expiry passes (the budgets' clock, injected: no sleeping).
    budgets.clock = lambda: datetime.now(UTC).timestamp() + budgets.reservation_ttl_s + 1
    response = await ask_stream(budget_app.client, callers[1], 2)
    assert response.status_code == 200, response.text
    assert await open_reservations(budget_app, callers[0]) == (0, 0)


async def test_settled_spend_survives_losing_redis(
    budget_app: RunningApp, budget_settings: Settings, fake: FakeLLMServer
) -> None:
    callers = await prepared_tenant(budget_app, fake)
    assert (await ask_stream(budget_app.client, callers[0], 4)).status_code == 200
    spent = settled_in_postgres(budget_settings.database_url, callers[0].tenant_id)
    key, _ = token_budgets(budget_app).keys(tenant_day_budget(callers[0]), datetime.now(UTC))
    await budget_app.resources.redis.delete(key)  # what a Redis without persistence restarts with
    assert (await ask_stream(budget_app.client, callers[1], 5)).status_code == 200
    (state,) = await token_budgets(budget_app).states([tenant_day_budget(callers[0])])
    assert state.spent == settled_in_postgres(budget_settings.database_url, callers[0].tenant_id)
    assert state.spent > spent


async def test_a_redis_restart_mid_run_loses_no_settled_spend(
    budget_settings: Settings, embedder: LocalEmbedder, fake: FakeLLMServer, stoppable_redis: EmbeddedRedis
) -> None:
    async with running_app(budget_settings, embedder=embedder, redis_url=stoppable_redis.url) as running:
        clock = running.resources.limiter.clock = SteppedClock()
        callers = await prepared_tenant(running, fake)
        assert (await ask_stream(running.client, callers[0], 1)).status_code == 200
        stoppable_redis.stop()
        for dump in stoppable_redis.directory.rglob("*.rdb"):
            dump.unlink()  # a Redis that comes back empty
        # Redis down, limits failing open: answered, and its spend is still written down.
        assert (await ask_stream(running.client, callers[1], 2)).status_code == 200
        stoppable_redis.start()
        clock.advance(STORAGE_RETRY_S)
        assert (await ask_stream(running.client, callers[2], 3)).status_code == 200
        settled = settled_in_postgres(budget_settings.database_url, callers[0].tenant_id)
        (state,) = await token_budgets(running).states([tenant_day_budget(callers[0])])
        assert state.spent == settled  # reseeded from PostgreSQL: all three answers
        usage = (await running.client.get("/api/v1/usage", headers=callers[0].headers)).json()
        assert usage["budgets"] == [
            {
                "budget": "tenant_tokens_per_day",
                "unit": "tokens",
                "limit": BUDGET,
                "spent": settled,
                "reserved": 0,
                "remaining": BUDGET - settled,
                "reset_at": state.reset_at.isoformat().replace("+00:00", "Z"),
            }
        ]


async def test_admins_set_budgets_per_tenant_and_key_and_bad_ones_are_invalid_budget(
    budget_app: RunningApp, fake: FakeLLMServer
) -> None:
    callers = await prepared_tenant(budget_app, fake)
    admin = await budget_app.make_caller(tenant="budgeted", role=Role.admin)
    client = budget_app.client
    for body in (
        {"period": "day", "tokens": -5},
        {"period": "day", "tokens": 0},
        {"period": "day", "tokens": 10**13},
        {"period": "day", "tokens": 1.5},
        {"period": "week", "tokens": 1000},
    ):
        response = await client.put("/api/v1/budgets", json=body, headers=admin.headers)
        assert response.status_code == 422, body
        assert response.json()["code"] == "invalid_budget"
    reader = callers[1]
    refused = await client.put(
        "/api/v1/budgets", json={"period": "day", "tokens": 5000}, headers=reader.headers
    )
    assert refused.status_code == 403
    # One key gets less than one worst case a month: it is refused, the tenant's others are not.
    response = await client.put(
        "/api/v1/budgets",
        json={"period": "month", "tokens": WORST_CASE - 1, "principal_id": reader.principal_id},
        headers=admin.headers,
    )
    assert response.status_code == 204, response.text
    problem = (await ask_stream(client, reader, 1)).json()
    assert problem["code"] == "budget_exhausted" and problem["budget"] == "key_tokens_per_month"
    assert (await ask_stream(client, callers[2], 1)).status_code == 200
    usage = (await client.get("/api/v1/usage", headers=reader.headers)).json()
    assert [b["budget"] for b in usage["budgets"]] == ["tenant_tokens_per_day", "key_tokens_per_month"]
    assert usage["budgets"][1]["limit"] == WORST_CASE - 1
    deleted = await client.delete(
        "/api/v1/budgets",
        params={"period": "month", "principal_id": reader.principal_id},
        headers=admin.headers,
    )
    assert deleted.status_code == 204
    assert (await ask_stream(client, reader, 1)).status_code == 200


async def test_answers_on_the_callers_own_key_do_not_draw_on_the_operators_budget(
    budget_app: RunningApp, fake: FakeLLMServer
) -> None:
    callers = await prepared_tenant(budget_app, fake)
    key, _ = token_budgets(budget_app).keys(tenant_day_budget(callers[0]), datetime.now(UTC))
    await budget_app.resources.redis.hset(key, "spent", BUDGET)  # the operator's budget is used up
    assert_budget_exhausted(await ask_stream(budget_app.client, callers[0], 6))
    own = await budget_app.client.post(
        "/api/v1/chat",
        json={"question": "Where does the quarterly review of team 6 happen?", "stream": True},
        headers={**callers[0].headers, "X-Provider-Key-Openai": "sk-callers-own-key"},
    )
    assert own.status_code == 200 and "event: done" in own.text
    (state,) = await token_budgets(budget_app).states([tenant_day_budget(callers[0])])
    assert (state.spent, state.reserved) == (BUDGET, 0)


async def test_the_mcp_ask_tool_reserves_and_settles_on_the_same_budgets(
    budget_app: RunningApp, fake: FakeLLMServer
) -> None:
    callers = await prepared_tenant(budget_app, fake)
    async with mcp_session(budget_app.app, callers[0].headers) as session:
        answered = structured(
            await session.call_tool("ask", {"question": "Where does the quarterly review of team 7 happen?"})
        )
        assert answered["provider"] == "openai"
        (state,) = await token_budgets(budget_app).states([tenant_day_budget(callers[0])])
        assert state.spent > 0 and state.reserved == 0
        key, _ = token_budgets(budget_app).keys(tenant_day_budget(callers[0]), datetime.now(UTC))
        await budget_app.resources.redis.hset(key, "spent", BUDGET - 1)
        refused = await session.call_tool(
            "ask", {"question": "Where does the quarterly review of team 8 happen?"}
        )
        assert "budget_exhausted: the tenant_tokens_per_day budget" in error_text(refused)
        # Searching costs no provider tokens: it reserves nothing and is not refused.
        structured(await session.call_tool("search_documents", {"query": "quarterly review"}))


async def test_an_answer_outside_a_session_settles_in_one_statement_one_in_a_session_with_its_turn(
    budget_app: RunningApp, budget_settings: Settings, fake: FakeLLMServer
) -> None:
    """Without a session the usage upsert is the unit of work's only write: it runs without BEGIN
    and COMMIT around it (one round trip, not three). In a session it shares one transaction with
    the turn, so neither is kept without the other."""
    callers = await prepared_tenant(budget_app, fake)
    upserts: list[bool] = []  # for each usage upsert: whether a transaction was open around it

    def record(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "INSERT INTO token_usage" in statement:
            upserts.append(not conn.connection.dbapi_connection.autocommit)

    engine = budget_app.resources.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        alone = {"question": "Where does the quarterly review of team 3 happen?"}
        in_session = {"question": "Where does the quarterly review of team 4 happen?", "session_id": "review"}
        for body in (alone, in_session):
            response = await budget_app.client.post("/api/v1/chat", json=body, headers=callers[1].headers)
            assert response.status_code == 200 and response.json()["provider"] == "openai", response.text
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert upserts == [False, True]
    assert settled_in_postgres(budget_settings.database_url, callers[0].tenant_id) > 0
