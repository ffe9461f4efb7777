"""Charging budgets for a request and remembering the outcome for the response headers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.requests import Request

from app.auth.principal import Principal
from app.limits.budgets import BudgetExhaustedError, Reservation, TokenBudgets
from app.limits.errors import RateLimitedError
from app.limits.limiter import Budget, LimitState, RequestLimiter

STATE_KEY = "rate_limits"
DEFERRED_IP_KEY = "deferred_ip_charge"


def principal_identity(principal: Principal) -> str:
    return f"{principal.tenant_id}/{principal.id}"


async def charge_ip(request: Request, limiter: RequestLimiter) -> None:
    await charge(request, limiter, Budget.ip, limiter.ip_bucket(request.scope))


def defer_ip_charge(request: Request, limiter: RequestLimiter) -> None:
    """Leave the request's per-IP charge to its first budget charge (``charge_all``), in the
    same round trip, ahead of the other budgets, as if charged first. Whoever defers it must
    call ``charge_deferred_ip`` before the response starts: a request that charges no budget
    still pays its per-IP hit."""
    request.scope.setdefault("state", {})[DEFERRED_IP_KEY] = limiter.ip_bucket(request.scope)


async def charge_deferred_ip(request: Request, limiter: RequestLimiter) -> None:
    """The per-IP charge ``defer_ip_charge`` left, unless a budget charge has taken it since."""
    identity = request.scope.get("state", {}).get(DEFERRED_IP_KEY)
    if identity is not None:
        await charge_all(request, limiter, [])


async def charge_chat(
    request: Request,
    limiter: RequestLimiter,
    principal: Principal,
    *,
    token_budgets: TokenBudgets | None = None,
    max_tokens: int | None = None,
) -> Reservation | None:
    """The chat budgets, for every request that reads the tenant's documents or answers (REST
    and OpenAI chat, the MCP tools, feedback): the tenant's (``RATE_LIMIT_PER_TENANT``) and the
    principal's own (``RATE_LIMIT_PER_PRINCIPAL``), both or neither. With ``token_budgets`` (a
    request the operator's providers may answer), its worst case is reserved on the tenant's and
    the key's token and money budgets in the same round trip (the money worst case prices
    ``max_tokens``, default ``ANSWER_MAX_TOKENS``, as output): the reservation to settle, or None
    when no budget applies (or Redis is down and the limiter fails open)."""
    charges = [(Budget.tenant, str(principal.tenant_id)), (Budget.chat, principal_identity(principal))]
    if token_budgets is None:
        await charge_all(request, limiter, charges)
        return None
    applying = await token_budgets.budgets_for(principal)
    if not applying:
        await charge_all(request, limiter, charges)
        return None
    reservation = token_budgets.reservation(applying, max_tokens)
    charged = await charge_all(request, limiter, charges, reserve=(token_budgets, reservation))
    return reservation if charged else None


def _remember(request: Request, state: LimitState) -> None:
    scope_state: dict[str, Any] = request.scope.setdefault("state", {})
    scope_state.setdefault(STATE_KEY, []).append(state)


async def charge(request: Request, limiter: RequestLimiter, budget: Budget, identity: str) -> None:
    """One hit on ``budget`` for ``identity``: 429 when exhausted; headers for the response."""
    await charge_all(request, limiter, [(budget, identity)])


async def charge_all(
    request: Request,
    limiter: RequestLimiter,
    charges: Sequence[tuple[Budget, str]],
    *,
    reserve: tuple[TokenBudgets, Reservation] | None = None,
) -> bool:
    """One hit on each budget, in one Redis round trip, or none when one is exhausted: 429 naming
    the first exhausted one. False when Redis is down and the limiter fails open. A deferred
    per-IP charge (``defer_ip_charge``) is taken first, in the same round trip."""
    deferred_ip = request.scope.setdefault("state", {}).pop(DEFERRED_IP_KEY, None)
    if deferred_ip is not None:
        charges = [(Budget.ip, deferred_ip), *charges]
    try:
        states = await limiter.hit_many(charges, reserve=reserve)
    except BudgetExhaustedError:
        if deferred_ip is not None:  # the per-IP hit stands, as when it was charged first
            await charge(request, limiter, Budget.ip, deferred_ip)
        raise
    if states is None:  # storage down, failing open
        return False
    for state in states:
        if not state.allowed:
            if deferred_ip is not None and state.budget is not Budget.ip:
                # refused by a later budget: the script charged none, the per-IP hit stands
                await charge(request, limiter, Budget.ip, deferred_ip)
            raise RateLimitedError(
                f"the {state.budget.value} rate limit of {state.window} is used up; retry after "
                f"{max(1, state.reset_after_s)} s",
                headers=state.headers(),
            )
    for state in states:
        _remember(request, state)
    return True


def remembered(scope_state: dict[str, Any]) -> list[LimitState]:
    states = scope_state.get(STATE_KEY) or []
    return [state for state in states if isinstance(state, LimitState)]
