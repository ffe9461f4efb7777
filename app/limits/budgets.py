"""Token and money budgets per tenant and per API key, per UTC day and month: reserve, then settle.

A budget counts provider tokens, or their cost in millionths of a US dollar by
``BUDGET_PRICE_TABLE`` (``app.limits.prices``). In Redis each budget of one period is a hash and a
sorted set of its reservations (``app.limits.scripts``). The rate-limit script sweeps expired
reservations, checks every rate limit and every budget, and charges and reserves all of them or
none, in the one round trip a chat request already made. ``TokenBudgets.settle`` turns a
reservation into what the provider reported (one script: release the reservation, add the spend).
Since each budget admits a request only when ``spent + reserved + worst case <= limit``, and a
settlement does not exceed its reservation's worst case, the spend never exceeds the budget,
however many workers and replicas share the Redis.

A budget hash without ``spent`` (a new period, or a Redis that lost its data) is seeded from
PostgreSQL's ``token_usage`` before the request is admitted (``TokenBudgets.seed``).
"""

from __future__ import annotations

import math
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.auth.principal import Principal
from app.db.unit_of_work import UnitOfWork
from app.errors import AppError
from app.limits import repository
from app.limits.prices import (
    ZERO_COST_PROVIDERS,
    Price,
    configured_models,
    log_unpriced_models,
    price_table,
    unpriced_models_sentence,
    worst_price,
)
from app.limits.scripts import SETTLE
from app.settings import Settings

__all__ = ["ZERO_COST_PROVIDERS", "Price", "log_unpriced_models", "unpriced_models_sentence"]

logger = structlog.get_logger(__name__)

OVERRIDES_CACHE_S = 5.0  # an admin's change applies within this long on every worker
MAX_BUDGET_TOKENS = 10**12
MAX_BUDGET_USD = 10**6
MICRO = 1_000_000  # money budgets count millionths of a US dollar


class Period(StrEnum):
    day = "day"
    month = "month"

    def start(self, now: datetime) -> date:
        today = now.astimezone(UTC).date()
        return today if self is Period.day else today.replace(day=1)

    def reset_at(self, now: datetime) -> datetime:
        start = self.start(now)
        if self is Period.day:
            nxt = start + timedelta(days=1)
        else:
            nxt = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
        return datetime(nxt.year, nxt.month, nxt.day, tzinfo=UTC)


class BudgetScope(StrEnum):
    tenant = "tenant"
    key = "key"


class Unit(StrEnum):
    """What a budget counts: provider tokens, or their cost in US dollars (kept in micro-USD)."""

    tokens = "tokens"
    usd = "usd"

    def show(self, amount: int) -> str:
        return f"{amount} tokens" if self is Unit.tokens else f"${amount / MICRO:.6f}"

    def public(self, amount: int) -> int | float:
        """An amount as the API shows it: tokens, or US dollars."""
        return amount if self is Unit.tokens else amount / MICRO


class InvalidBudgetError(AppError):
    status = 422
    code = "invalid_budget"
    title = "Invalid budget"


class BudgetExhaustedError(AppError):
    status = 429
    code = "budget_exhausted"
    title = "Budget used up"


def validate_budget_tokens(tokens: int) -> int:
    if not 1 <= tokens <= MAX_BUDGET_TOKENS:
        raise InvalidBudgetError(
            f"a token budget is 1 to {MAX_BUDGET_TOKENS} tokens; got {tokens}",
            extra={"tokens": tokens},
        )
    return tokens


def validate_budget_usd(usd: object) -> int:
    """A money budget in US dollars as micro-USD: at least one micro-dollar (0.000001), at most
    ``MAX_BUDGET_USD``; anything else (negative, zero, NaN, infinite, text) is ``invalid_budget``."""
    if isinstance(usd, bool) or not isinstance(usd, int | float) or not math.isfinite(usd):
        raise InvalidBudgetError(f"a money budget is a number of US dollars; got {usd!r}")
    micro = round(usd * MICRO)
    if not 1 <= micro <= MAX_BUDGET_USD * MICRO:
        raise InvalidBudgetError(
            f"a money budget is 0.000001 to {MAX_BUDGET_USD} US dollars; got {usd}", extra={"usd": usd}
        )
    return micro


@dataclass(frozen=True)
class TokenBudget:
    scope: BudgetScope
    tenant_id: uuid.UUID
    principal_id: str | None  # None: the whole tenant
    period: Period
    limit: int  # in the unit: tokens, or micro-USD
    unit: Unit = Unit.tokens

    @property
    def name(self) -> str:
        return f"{self.scope.value}_{self.unit.value}_per_{self.period.value}"

    def stamp(self, now: datetime) -> str:
        return self.period.start(now).isoformat()

    def ttl_s(self, now: datetime) -> int:
        """The Redis keys outlive their period by a day (the period is in the key's name)."""
        return math.ceil((self.period.reset_at(now) - now).total_seconds()) + 86400


@dataclass
class Reservation:
    """The worst case held for one request until it settles or releases (once; later calls do
    nothing): ``tokens`` on token budgets, ``micro_usd`` on money budgets."""

    id: str
    tokens: int
    budgets: tuple[TokenBudget, ...]
    at: datetime
    open: bool = True
    micro_usd: int = 0

    def amount(self, budget: TokenBudget) -> int:
        return self.tokens if budget.unit is Unit.tokens else self.micro_usd


@dataclass(frozen=True)
class BudgetState:
    budget: TokenBudget
    spent: int
    reserved: int
    reset_at: datetime

    @property
    def remaining(self) -> int:
        return max(0, self.budget.limit - self.spent - self.reserved)


@dataclass
class _CachedOverrides:
    at: float
    values: dict[tuple[str, str, str], int] = field(default_factory=dict)


class TokenBudgets:
    def __init__(
        self,
        redis: Redis,
        key_prefix: str,
        settings: Settings,
        unit_of_work: UnitOfWork,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._prefix = key_prefix
        self._unit_of_work = unit_of_work
        self._settle_script = redis.register_script(SETTLE)
        self.reservation_ttl_s = settings.budget_reservation_ttl_s
        self.worst_case_tokens = settings.prompt_budget_tokens
        self.answer_max_tokens = settings.answer_max_tokens
        self.clock = clock
        self._defaults = _defaults(settings)
        self.prices = price_table(settings)
        self.worst_price = worst_price(self.prices, configured_models(settings))
        self._overrides: dict[uuid.UUID, _CachedOverrides] = {}
        self._unpriced_logged: set[str] = set()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def keys(self, budget: TokenBudget, now: datetime) -> tuple[str, str]:
        who = (
            str(budget.tenant_id)
            if budget.principal_id is None
            else f"{budget.tenant_id}/{budget.principal_id}"
        )
        unit = "" if budget.unit is Unit.tokens else f"{budget.unit.value}:"
        base = f"{self._prefix}{budget.scope.value}:{who}:{budget.period.value}:{unit}{budget.stamp(now)}"
        return base, base + ":reservations"

    # --- which budgets apply --------------------------------------------------------------------

    async def _override_values(self, tenant_id: uuid.UUID) -> dict[tuple[str, str, str], int]:
        cached = self._overrides.get(tenant_id)
        if cached is not None and self.clock() - cached.at < OVERRIDES_CACHE_S:
            return cached.values
        async with self._unit_of_work() as db:
            rows = await repository.overrides(db, tenant_id)
        values = {(row.principal_id, row.period, row.unit): row.tokens for row in rows}
        self._overrides[tenant_id] = _CachedOverrides(self.clock(), values)
        return values

    def forget_overrides(self, tenant_id: uuid.UUID) -> None:
        self._overrides.pop(tenant_id, None)

    async def budgets_for(self, principal: Principal) -> list[TokenBudget]:
        overrides = await self._override_values(principal.tenant_id)
        budgets = []
        for (scope, period, unit), default in self._defaults.items():
            principal_id = None if scope is BudgetScope.tenant else principal.id
            limit = overrides.get((principal_id or "", period.value, unit.value), default)
            if limit is not None:
                budgets.append(TokenBudget(scope, principal.tenant_id, principal_id, period, limit, unit))
        return budgets

    def worst_case_micro_usd(self, max_tokens: int | None = None) -> int:
        """The most one answer can cost: its prompt at the dearest input price and its
        ``max_tokens`` at the dearest output price of the models it may be routed to."""
        if self.worst_price is None:
            return 0
        answer = max_tokens or self.answer_max_tokens
        return self.worst_price.worst_micro_usd(self.worst_case_tokens, answer)

    def reservation(self, budgets: Sequence[TokenBudget], max_tokens: int | None = None) -> Reservation:
        return Reservation(
            secrets.token_hex(8),
            self.worst_case_tokens,
            tuple(budgets),
            self.now(),
            micro_usd=self.worst_case_micro_usd(max_tokens),
        )

    # --- Redis ----------------------------------------------------------------------------------

    async def _spent_in_postgres(self, budget: TokenBudget, now: datetime) -> int:
        async with self._unit_of_work() as db:
            return await repository.spent(
                db,
                budget.tenant_id,
                budget.principal_id,
                budget.period.start(now),
                money=budget.unit is Unit.usd,
            )

    async def seed(self, budgets: Sequence[TokenBudget], now: datetime) -> None:
        """Set ``spent`` of each budget's hash from PostgreSQL, where Redis has none."""
        for budget in budgets:
            spent = await self._spent_in_postgres(budget, now)
            key, _ = self.keys(budget, now)
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hsetnx(key, "spent", spent)
                pipe.expire(key, budget.ttl_s(now))
                await pipe.execute()
            logger.info(
                "token_budget_seeded", budget=budget.name, tenant_id=str(budget.tenant_id), spent=spent
            )

    async def settle(self, reservation: Reservation | None, tokens: int, micro_usd: int = 0) -> None:
        """Release ``reservation`` and add ``tokens`` (and ``micro_usd``) to its budgets' spend (0:
        a plain release). Redis down: the reservation expires by itself; the spend is in PostgreSQL."""
        if reservation is None or not reservation.open:
            return
        reservation.open = False
        keys = [k for budget in reservation.budgets for k in self.keys(budget, reservation.at)]
        amounts = [
            max(0, tokens if budget.unit is Unit.tokens else micro_usd) for budget in reservation.budgets
        ]
        try:
            await self._settle_script(keys=keys, args=[reservation.id, *amounts])
        except (RedisError, OSError) as exc:
            logger.warning("token_budget_settle_failed", error_type=type(exc).__name__)

    async def release(self, reservation: Reservation | None) -> None:
        await self.settle(reservation, 0)

    async def states(self, budgets: Sequence[TokenBudget]) -> list[BudgetState]:
        """Each budget's spent, reserved and reset time, without charging; Redis missing a budget's
        spend: PostgreSQL's."""
        now = self.now()
        out = []
        for budget in budgets:
            key, _ = self.keys(budget, now)
            spent_raw, reserved_raw = await self._redis.hmget(key, ["spent", "reserved"])
            spent = await self._spent_in_postgres(budget, now) if spent_raw is None else int(spent_raw)
            out.append(BudgetState(budget, spent, int(reserved_raw or 0), budget.period.reset_at(now)))
        return out

    # --- prices ---------------------------------------------------------------------------------

    def cost_micro_usd(self, provider: str, model: str, prompt_tokens: int, completion_tokens: int) -> int:
        price = self.prices.get(f"{provider}/{model}")
        if price is None:
            name = f"{provider}/{model}"
            if self.prices and name not in self._unpriced_logged and provider not in ZERO_COST_PROVIDERS:
                self._unpriced_logged.add(name)
                logger.warning(
                    "unpriced_model", message=f"{name} has no BUDGET_PRICE_TABLE entry; it costs tokens only"
                )
            return 0
        return price.micro_usd(prompt_tokens, completion_tokens)


def _defaults(settings: Settings) -> dict[tuple[BudgetScope, Period, Unit], int | None]:
    """The budgets from the settings, in the order they are listed (tokens before money)."""

    def usd(value: float | None) -> int | None:
        return None if value is None else round(value * MICRO)

    return {
        (BudgetScope.tenant, Period.day, Unit.tokens): settings.budget_tokens_per_day_tenant,
        (BudgetScope.tenant, Period.day, Unit.usd): usd(settings.budget_usd_per_day_tenant),
        (BudgetScope.tenant, Period.month, Unit.tokens): settings.budget_tokens_per_month_tenant,
        (BudgetScope.tenant, Period.month, Unit.usd): usd(settings.budget_usd_per_month_tenant),
        (BudgetScope.key, Period.day, Unit.tokens): settings.budget_tokens_per_day_key,
        (BudgetScope.key, Period.day, Unit.usd): usd(settings.budget_usd_per_day_key),
        (BudgetScope.key, Period.month, Unit.tokens): settings.budget_tokens_per_month_key,
        (BudgetScope.key, Period.month, Unit.usd): usd(settings.budget_usd_per_month_key),
    }


def exhausted(state: BudgetState, asked: int) -> BudgetExhaustedError:
    reset_after = max(1, math.ceil((state.reset_at - datetime.now(UTC)).total_seconds()))
    unit = state.budget.unit
    return BudgetExhaustedError(
        f"the {state.budget.name} budget of {unit.show(state.budget.limit)} has "
        f"{unit.show(state.remaining)} left, less than this request's worst case of {unit.show(asked)}; "
        f"it resets at {state.reset_at.isoformat()}",
        headers={"Retry-After": str(reset_after)},
        extra={
            "budget": state.budget.name,
            "unit": unit.value,
            "limit": unit.public(state.budget.limit),
            "spent": unit.public(state.spent),
            "reserved": unit.public(state.reserved),
            "remaining": unit.public(state.remaining),
            "reset_at": state.reset_at.isoformat(),
        },
    )
