"""The caller's rate-limit budgets, read without charging them (the request itself is charged
to the per-IP budget like any authenticated request)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from limits import RateLimitItem
from pydantic import BaseModel, Field

from app.api.auth import CurrentPrincipal
from app.api.deps import LimiterDep
from app.limits.enforcement import charge_deferred_ip, principal_identity
from app.limits.limiter import Budget, LimitState

router = APIRouter(prefix="/api/v1/rate-limit", tags=["limits"])


class BudgetStatus(BaseModel):
    budget: Budget
    scope: str
    window: str
    limit: int
    remaining: int | None
    reset_after_s: int | None
    reset_at: float | None


class RateLimitStatus(BaseModel):
    strategy: str
    fail_open: bool
    storage_available: bool
    client_ip: str
    ip_bucket: str = Field(description="what the per-IP budget counts: the address, IPv6 by network")
    budgets: list[BudgetStatus]


Scope = Literal["principal", "tenant", "ip"]


def _row(budget: Budget, scope: Scope, item: RateLimitItem, state: LimitState | None) -> BudgetStatus:
    return BudgetStatus(
        budget=budget,
        scope=scope,
        window=str(item),
        limit=item.amount,
        remaining=state.remaining if state else None,
        reset_after_s=state.reset_after_s if state else None,
        reset_at=round(state.reset_at, 3) if state else None,
    )


@router.get("/status", response_model=RateLimitStatus, summary="The caller's rate-limit budgets")
async def rate_limit_status(
    request: Request, principal: CurrentPrincipal, limiter: LimiterDep
) -> RateLimitStatus:
    await charge_deferred_ip(request, limiter)  # this request's own hit, before the counters are read
    ip = limiter.proxies.client_ip(request.scope)
    checks: list[tuple[Budget, Scope, str]] = [
        (Budget.chat, "principal", principal_identity(principal)),
        (Budget.uploads, "principal", principal_identity(principal)),
        (Budget.tenant, "tenant", str(principal.tenant_id)),
        (Budget.ip, "ip", limiter.ip_bucket(request.scope)),
    ]
    budgets: list[BudgetStatus] = []
    for budget, scope, identity in checks:
        states = await limiter.peek(budget, identity)
        for index, item in enumerate(limiter.budgets[budget]):
            budgets.append(_row(budget, scope, item, states[index] if states else None))
    return RateLimitStatus(
        strategy=limiter.strategy_name,
        fail_open=limiter.fail_open,
        storage_available=limiter.storage_available,
        client_ip=ip,
        ip_bucket=limiter.ip_bucket(request.scope),
        budgets=budgets,
    )
