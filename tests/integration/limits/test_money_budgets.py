"""Money budgets (issue 32): a tenant's budget in US dollars, priced by BUDGET_PRICE_TABLE with
input and output apart. The real app, PostgreSQL and Redis; the OpenAI provider played by the wire
fake through the real SDK. Parallel streams never spend more money than the budget."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import psycopg
import pytest

from app.auth.principal import Role
from app.limits.budgets import BudgetScope, Period, TokenBudget, Unit
from app.rag.embeddings import OnnxEmbedder
from app.settings import Settings
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.integration.limits.test_token_budgets import (
    WORST_CASE,
    ask_stream,
    prepared_tenant,
    token_budgets,
)
from tests.support.apps import RunningApp, running_app
from tests.support.llm import fake_openai_overrides
from tests.support.services import libpq

pytestmark = pytest.mark.integration

ANSWER_MAX = 200
INPUT, OUTPUT = 500.0, 2000.0  # US dollars per million tokens: an output token costs 4 inputs
# The prompt at the input price and max_tokens at the output price, in micro-USD: $0.90.
WORST_MICRO_USD = (WORST_CASE - ANSWER_MAX) * 500 + ANSWER_MAX * 2000
BUDGET_USD = 10 * WORST_MICRO_USD / 1e6  # room for about ten answers at once


@pytest.fixture
def own_embedder() -> OnnxEmbedder:
    """The real model, loaded for this test alone: the session's embedder serialises inference on
    an asyncio lock, which parallel requests would bind to this test's event loop for good."""
    model = OnnxEmbedder("all-MiniLM-L6-v2", 384, batch_size=32)
    model.load()
    return model


@pytest.fixture
def app_embedder(own_embedder: OnnxEmbedder) -> OnnxEmbedder:
    return own_embedder


@pytest.fixture
def money_settings(settings: Settings, fake: FakeLLMServer) -> Settings:
    return settings.model_copy(
        update={
            **fake_openai_overrides(fake, timeout_s=30),  # a loaded machine is slow, not the fake
            "prompt_budget_tokens": WORST_CASE,
            "answer_max_tokens": ANSWER_MAX,
            "budget_usd_per_day_tenant": BUDGET_USD,
            "budget_price_table": {f"openai/{settings.openai_model}": {"input": INPUT, "output": OUTPUT}},
            "rate_limit_per_principal": "1000/minute",
            "rate_limit_per_tenant": "1000/minute",
            "max_streams_per_principal": 100,
            "budget_reservation_ttl_s": 10,
        }
    )


@pytest.fixture
async def money_app(money_settings: Settings, own_embedder: OnnxEmbedder) -> AsyncIterator[RunningApp]:
    async with running_app(money_settings, embedder=own_embedder) as running:
        yield running


def cost_in_postgres(database_url: str, tenant_id: uuid.UUID) -> tuple[int, int, int]:
    """(micro-USD, prompt tokens, completion tokens) settled for the tenant."""
    with psycopg.connect(libpq(database_url)) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(cost_micro_usd), 0), coalesce(sum(prompt_tokens), 0), "
            "coalesce(sum(completion_tokens), 0) FROM token_usage WHERE tenant_id = %s",
            (tenant_id,),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


async def test_parallel_streams_never_spend_more_money_than_the_budget(
    money_app: RunningApp, money_settings: Settings, fake: FakeLLMServer
) -> None:
    callers = await prepared_tenant(money_app, fake)
    usage = (await money_app.client.get("/api/v1/usage", headers=callers[0].headers)).json()
    assert usage["worst_case_usd"] == pytest.approx(WORST_MICRO_USD / 1e6)
    responses = await asyncio.gather(
        *(ask_stream(money_app.client, callers[n % len(callers)], n) for n in range(30))
    )
    answered = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert answered and refused
    for response in refused:
        assert response.status_code == 429, response.text
        problem = response.json()
        assert (problem["code"], problem["budget"], problem["unit"]) == (
            "budget_exhausted",
            "tenant_usd_per_day",
            "usd",
        )
        assert problem["limit"] == pytest.approx(BUDGET_USD)
    micro_usd, prompt, completion = cost_in_postgres(money_settings.database_url, callers[0].tenant_id)
    # Settled to the real cost: input and output at their own prices, never over the budget.
    assert micro_usd == pytest.approx(prompt * INPUT + completion * OUTPUT, abs=len(answered))
    assert 0 < micro_usd <= BUDGET_USD * 1e6
    assert micro_usd / len(answered) * 30 > BUDGET_USD * 1e6  # the budget is what held them back
    budget = TokenBudget(
        BudgetScope.tenant, callers[0].tenant_id, None, Period.day, round(BUDGET_USD * 1e6), Unit.usd
    )
    (state,) = await token_budgets(money_app).states([budget])
    assert (state.spent, state.reserved) == (micro_usd, 0)  # Redis and PostgreSQL agree, all released
    usage = (await money_app.client.get("/api/v1/usage", headers=callers[0].headers)).json()
    (shown,) = usage["budgets"]
    assert shown["budget"] == "tenant_usd_per_day" and shown["unit"] == "usd"
    assert shown["spent"] == pytest.approx(micro_usd / 1e6)
    assert shown["remaining"] == pytest.approx(BUDGET_USD - micro_usd / 1e6)
    assert datetime.fromisoformat(shown["reset_at"]) > datetime.now(UTC)
    metrics = (await money_app.client.get("/metrics")).text
    counted = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("budget_cost_usd_total{") and f'tenant="{callers[0].tenant_id}"' in line
    ]
    assert sum(counted) == pytest.approx(micro_usd / 1e6)


async def test_a_tenant_admin_sets_its_keys_budgets_but_not_its_tenants(
    money_app: RunningApp, fake: FakeLLMServer
) -> None:
    callers = await prepared_tenant(money_app, fake)
    admin = await money_app.make_caller(tenant="budgeted", role=Role.admin)
    client = money_app.client
    for body in ({"period": "day", "usd": -1}, {"period": "day", "usd": 0}, {"period": "day", "usd": 1e7}):
        response = await client.put(
            "/api/v1/budgets", json={**body, "principal_id": callers[1].principal_id}, headers=admin.headers
        )
        assert (response.status_code, response.json()["code"]) == (422, "invalid_budget"), body
    both = {"period": "day", "usd": 1, "tokens": 5, "principal_id": callers[1].principal_id}
    assert (await client.put("/api/v1/budgets", json=both, headers=admin.headers)).status_code == 422
    # Raising its own tenant's budget is the operator's call (the CLI), in tokens or in money.
    for body in ({"period": "day", "usd": 1000.0}, {"period": "month", "tokens": 10**9}):
        raised = await client.put("/api/v1/budgets", json=body, headers=admin.headers)
        assert (raised.status_code, raised.json()["code"]) == (403, "forbidden")
    cleared = await client.delete(
        "/api/v1/budgets", params={"period": "day", "unit": "usd"}, headers=admin.headers
    )
    assert cleared.status_code == 403
    # One key gets less money than one worst case: it is refused, its colleagues are not.
    response = await client.put(
        "/api/v1/budgets",
        json={"period": "day", "usd": WORST_MICRO_USD / 2e6, "principal_id": callers[1].principal_id},
        headers=admin.headers,
    )
    assert response.status_code == 204, response.text
    problem = (await ask_stream(client, callers[1], 1)).json()
    assert (problem["code"], problem["budget"]) == ("budget_exhausted", "key_usd_per_day")
    assert (await ask_stream(client, callers[2], 1)).status_code == 200
    usage = (await client.get("/api/v1/usage", headers=callers[1].headers)).json()
    assert [(b["budget"], b["limit"]) for b in usage["budgets"]] == [
        ("tenant_usd_per_day", pytest.approx(BUDGET_USD)),
        ("key_usd_per_day", pytest.approx(WORST_MICRO_USD / 2e6)),
    ]
    deleted = await client.delete(
        "/api/v1/budgets",
        params={"period": "day", "unit": "usd", "principal_id": callers[1].principal_id},
        headers=admin.headers,
    )
    assert deleted.status_code == 204
    assert (await ask_stream(client, callers[1], 1)).status_code == 200
