"""Budgets over HTTP: ``GET /api/v1/usage`` (the caller's token and money budgets: used, reserved
and remaining) and a tenant admin's per-key overrides (``PUT`` / ``DELETE /api/v1/budgets``).

A tenant's own budget is the operator's to set (``python -m app budgets``): a tenant admin may set
any of its keys' budgets, which only ever narrow what the tenant budget already allows (both are
checked on every request), but not the tenant's, or it could raise what its tenant may spend."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from app.api.auth import AdminPrincipal, CurrentPrincipal
from app.api.deps import LimiterDep, SessionDep
from app.auth.errors import PermissionDeniedError
from app.limits import repository
from app.limits.budgets import (
    MICRO,
    InvalidBudgetError,
    Period,
    TokenBudgets,
    Unit,
    validate_budget_tokens,
    validate_budget_usd,
)
from app.limits.limiter import RequestLimiter

router = APIRouter(prefix="/api/v1", tags=["limits"])


class BudgetUsage(BaseModel):
    budget: str = Field(description="e.g. tenant_tokens_per_day, key_usd_per_month")
    unit: str = Field(description="tokens, or usd (amounts in US dollars)")
    limit: int | float
    spent: int | float
    reserved: int | float = Field(description="worst cases held by answers still running")
    remaining: int | float
    reset_at: datetime


class Usage(BaseModel):
    worst_case_tokens: int = Field(description="what each answer reserves: PROMPT_BUDGET_TOKENS")
    worst_case_usd: float = Field(
        description="what each answer reserves on money budgets at ANSWER_MAX_TOKENS (0: no priced model)"
    )
    budgets: list[BudgetUsage]


class BudgetOverride(BaseModel):
    period: str = Field(description="day or month")
    tokens: Any = Field(default=None, description="a token budget: 1 to 10^12 tokens")
    usd: Any = Field(default=None, description="a money budget: 0.000001 to 10^6 US dollars")
    principal_id: str | None = Field(
        default=None, max_length=200, description="one API key's principal id (key:<uuid>)"
    )


def _budgets(limiter: RequestLimiter) -> TokenBudgets:
    budgets = limiter.token_budgets
    assert budgets is not None  # set by the lifespan
    return budgets


@router.get("/usage", response_model=Usage, summary="The caller's token and money budgets")
async def usage(principal: CurrentPrincipal, limiter: LimiterDep) -> Usage:
    budgets = _budgets(limiter)
    states = await budgets.states(await budgets.budgets_for(principal))
    return Usage(
        worst_case_tokens=budgets.worst_case_tokens,
        worst_case_usd=budgets.worst_case_micro_usd() / MICRO,
        budgets=[
            BudgetUsage(
                budget=s.budget.name,
                unit=s.budget.unit.value,
                limit=s.budget.unit.public(s.budget.limit),
                spent=s.budget.unit.public(s.spent),
                reserved=s.budget.unit.public(s.reserved),
                remaining=s.budget.unit.public(s.remaining),
                reset_at=s.reset_at,
            )
            for s in states
        ],
    )


def _key_of(principal_id: str | None) -> str:
    if not principal_id:
        raise PermissionDeniedError(
            "a tenant's own budget is set by the operator (python -m app budgets); "
            "a tenant admin sets its keys' budgets: give principal_id"
        )
    return principal_id


def _period(period: str) -> Period:
    if period not in {p.value for p in Period}:
        raise InvalidBudgetError(f"period must be 'day' or 'month'; got {period!r}")
    return Period(period)


def _unit(unit: str) -> Unit:
    if unit not in {u.value for u in Unit}:
        raise InvalidBudgetError(f"unit must be 'tokens' or 'usd'; got {unit!r}")
    return Unit(unit)


def _amount(body: BudgetOverride) -> tuple[Unit, int]:
    """The budget's unit and its limit in it (tokens, or micro-USD)."""
    if (body.tokens is None) == (body.usd is None):
        raise InvalidBudgetError("give exactly one of tokens (a token budget) or usd (a money budget)")
    if body.usd is not None:
        return Unit.usd, validate_budget_usd(body.usd)
    if isinstance(body.tokens, bool) or not isinstance(body.tokens, int):
        raise InvalidBudgetError(f"tokens must be a whole number of tokens; got {body.tokens!r}")
    return Unit.tokens, validate_budget_tokens(body.tokens)


@router.put("/budgets", status_code=204, summary="Set a token or money budget of one of the tenant's keys")
async def set_budget(
    body: BudgetOverride, admin: AdminPrincipal, db: SessionDep, limiter: LimiterDep
) -> Response:
    period = _period(body.period)
    unit, amount = _amount(body)
    principal_id = _key_of(body.principal_id)
    await repository.set_override(db, admin.tenant_id, principal_id, period.value, amount, unit.value)
    await db.commit()
    _budgets(limiter).forget_overrides(admin.tenant_id)
    return Response(status_code=204)


@router.delete("/budgets", status_code=204, summary="A key back to the default budget")
async def delete_budget(
    period: str,
    admin: AdminPrincipal,
    db: SessionDep,
    limiter: LimiterDep,
    principal_id: str | None = None,
    unit: str = "tokens",
) -> Response:
    checked, checked_unit = _period(period), _unit(unit)
    key = _key_of(principal_id)
    await repository.delete_override(db, admin.tenant_id, key, checked.value, checked_unit.value)
    await db.commit()
    _budgets(limiter).forget_overrides(admin.tenant_id)
    return Response(status_code=204)
