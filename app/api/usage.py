"""Token budgets over HTTP: ``GET /api/v1/usage`` (the caller's budgets: used, reserved and
remaining) and the tenant admin's overrides (``PUT`` / ``DELETE /api/v1/budgets``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from app.api.auth import AdminPrincipal, CurrentPrincipal
from app.api.deps import LimiterDep, SessionDep
from app.limits import repository
from app.limits.budgets import InvalidBudgetError, Period, TokenBudgets, validate_budget_tokens
from app.limits.limiter import RequestLimiter

router = APIRouter(prefix="/api/v1", tags=["limits"])


class BudgetUsage(BaseModel):
    budget: str = Field(description="e.g. tenant_tokens_per_day, key_tokens_per_month")
    limit: int
    spent: int
    reserved: int = Field(description="worst cases held by answers still running")
    remaining: int
    reset_at: datetime


class Usage(BaseModel):
    worst_case_tokens: int = Field(description="what each answer reserves: PROMPT_BUDGET_TOKENS")
    budgets: list[BudgetUsage]


class BudgetOverride(BaseModel):
    period: str = Field(description="day or month")
    tokens: Any = Field(description="1 to 10^12 tokens")
    principal_id: str | None = Field(
        default=None,
        max_length=200,
        description="one API key's principal id (key:<uuid>); omitted: the tenant",
    )


def _budgets(limiter: RequestLimiter) -> TokenBudgets:
    budgets = limiter.token_budgets
    assert budgets is not None  # set by the lifespan
    return budgets


@router.get("/usage", response_model=Usage, summary="The caller's token budgets")
async def usage(principal: CurrentPrincipal, limiter: LimiterDep) -> Usage:
    budgets = _budgets(limiter)
    states = await budgets.states(await budgets.budgets_for(principal))
    return Usage(
        worst_case_tokens=budgets.worst_case_tokens,
        budgets=[
            BudgetUsage(
                budget=s.budget.name,
                limit=s.budget.limit,
                spent=s.spent,
                reserved=s.reserved,
                remaining=s.remaining,
                reset_at=s.reset_at,
            )
            for s in states
        ],
    )


def _checked(body: BudgetOverride) -> tuple[str, Period]:
    if body.period not in {p.value for p in Period}:
        raise InvalidBudgetError(f"period must be 'day' or 'month'; got {body.period!r}")
    if isinstance(body.tokens, bool) or not isinstance(body.tokens, int):
        raise InvalidBudgetError(f"tokens must be a whole number of tokens; got {body.tokens!r}")
    validate_budget_tokens(body.tokens)
    return body.principal_id or "", Period(body.period)


@router.put(
    "/budgets", status_code=204, summary="Set a token budget of the admin's tenant or one of its keys"
)
async def set_budget(
    body: BudgetOverride, admin: AdminPrincipal, db: SessionDep, limiter: LimiterDep
) -> Response:
    principal_id, period = _checked(body)
    await repository.set_override(db, admin.tenant_id, principal_id, period.value, body.tokens)
    await db.commit()
    _budgets(limiter).forget_overrides(admin.tenant_id)
    return Response(status_code=204)


@router.delete("/budgets", status_code=204, summary="Back to the default token budget")
async def delete_budget(
    period: str, admin: AdminPrincipal, db: SessionDep, limiter: LimiterDep, principal_id: str | None = None
) -> Response:
    key, checked = _checked(BudgetOverride(period=period, tokens=1, principal_id=principal_id))
    await repository.delete_override(db, admin.tenant_id, key, checked.value)
    await db.commit()
    _budgets(limiter).forget_overrides(admin.tenant_id)
    return Response(status_code=204)
