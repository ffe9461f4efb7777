"""Token budgets per tenant and per API key, per UTC day and month: reserve, then settle.

In Redis, each budget of one period is a hash (``spent``: settled tokens, ``reserved``: the sum of
the open reservations, ``r:<id>``: each reservation's tokens) and a sorted set of its reservations
by expiry. The rate-limit script (``app.limits.limiter``) sweeps expired reservations, checks every
rate limit and every token budget, and charges and reserves all of them or none, in the one round
trip a chat request already made. ``TokenBudgets.settle`` turns a reservation into the tokens the
provider reported (one script: release the reservation, add the spend). Since each budget admits a
request only when ``spent + reserved + worst case <= limit``, and a settlement never exceeds its
reservation's worst case, the spend never exceeds the budget, however many workers and replicas
share the Redis.

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
from app.settings import Settings

logger = structlog.get_logger(__name__)

OVERRIDES_CACHE_S = 5.0  # an admin's change applies within this long on every worker
MAX_BUDGET_TOKENS = 10**12
ZERO_COST_PROVIDERS = frozenset({"none", "extractive"})  # answers no provider was paid for

# KEYS: per budget its hash and its reservation set; ARGV: the reservation id, then the tokens it
# settles to (0: a release). A reservation already swept still settles its spend.
_SETTLE = """
local rid = ARGV[1]
local tokens = tonumber(ARGV[2])
for j = 1, #KEYS / 2 do
  local h, z = KEYS[2 * j - 1], KEYS[2 * j]
  local held = redis.call('HGET', h, 'r:' .. rid)
  if held then
    redis.call('HDEL', h, 'r:' .. rid)
    redis.call('HINCRBY', h, 'reserved', -tonumber(held))
    redis.call('ZREM', z, rid)
  end
  if tokens > 0 and redis.call('HEXISTS', h, 'spent') == 1 then
    redis.call('HINCRBY', h, 'spent', tokens)
  end
end
return 1
"""


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


class InvalidBudgetError(AppError):
    status = 422
    code = "invalid_budget"
    title = "Invalid budget"


class BudgetExhaustedError(AppError):
    status = 429
    code = "budget_exhausted"
    title = "Token budget used up"


def validate_budget_tokens(tokens: int) -> int:
    if not 1 <= tokens <= MAX_BUDGET_TOKENS:
        raise InvalidBudgetError(
            f"a token budget is 1 to {MAX_BUDGET_TOKENS} tokens; got {tokens}",
            extra={"tokens": tokens},
        )
    return tokens


@dataclass(frozen=True)
class TokenBudget:
    scope: BudgetScope
    tenant_id: uuid.UUID
    principal_id: str | None  # None: the whole tenant
    period: Period
    limit: int

    @property
    def name(self) -> str:
        return f"{self.scope.value}_tokens_per_{self.period.value}"

    def stamp(self, now: datetime) -> str:
        return self.period.start(now).isoformat()

    def ttl_s(self, now: datetime) -> int:
        """The Redis keys outlive their period by a day (the period is in the key's name)."""
        return math.ceil((self.period.reset_at(now) - now).total_seconds()) + 86400


@dataclass
class Reservation:
    """Tokens held for one request until it settles or releases (once; later calls do nothing)."""

    id: str
    tokens: int
    budgets: tuple[TokenBudget, ...]
    at: datetime
    open: bool = True


@dataclass(frozen=True)
class BudgetState:
    budget: TokenBudget
    spent: int
    reserved: int
    reset_at: datetime

    @property
    def remaining(self) -> int:
        return max(0, self.budget.limit - self.spent - self.reserved)


@dataclass(frozen=True)
class Price:
    input: float  # USD per 1M tokens
    output: float

    def micro_usd(self, prompt_tokens: int, completion_tokens: int) -> int:
        return round(prompt_tokens * self.input + completion_tokens * self.output)


@dataclass
class _CachedOverrides:
    at: float
    values: dict[tuple[str, str], int] = field(default_factory=dict)


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
        self._settle_script = redis.register_script(_SETTLE)
        self.reservation_ttl_s = settings.budget_reservation_ttl_s
        self.worst_case_tokens = settings.prompt_budget_tokens
        self.clock = clock
        self._defaults = {
            (BudgetScope.tenant, Period.day): settings.budget_tokens_per_day_tenant,
            (BudgetScope.tenant, Period.month): settings.budget_tokens_per_month_tenant,
            (BudgetScope.key, Period.day): settings.budget_tokens_per_day_key,
            (BudgetScope.key, Period.month): settings.budget_tokens_per_month_key,
        }
        self.prices = {
            name: Price(p["input"], p["output"]) for name, p in settings.budget_price_table.items()
        }
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
        base = f"{self._prefix}{budget.scope.value}:{who}:{budget.period.value}:{budget.stamp(now)}"
        return base, base + ":reservations"

    # --- which budgets apply --------------------------------------------------------------------

    async def _override_values(self, tenant_id: uuid.UUID) -> dict[tuple[str, str], int]:
        cached = self._overrides.get(tenant_id)
        if cached is not None and self.clock() - cached.at < OVERRIDES_CACHE_S:
            return cached.values
        async with self._unit_of_work() as db:
            rows = await repository.overrides(db, tenant_id)
        values = {(row.principal_id, row.period): row.tokens for row in rows}
        self._overrides[tenant_id] = _CachedOverrides(self.clock(), values)
        return values

    def forget_overrides(self, tenant_id: uuid.UUID) -> None:
        self._overrides.pop(tenant_id, None)

    async def budgets_for(self, principal: Principal) -> list[TokenBudget]:
        overrides = await self._override_values(principal.tenant_id)
        budgets = []
        for (scope, period), default in self._defaults.items():
            principal_id = None if scope is BudgetScope.tenant else principal.id
            limit = overrides.get((principal_id or "", period.value), default)
            if limit is not None:
                budgets.append(TokenBudget(scope, principal.tenant_id, principal_id, period, limit))
        return budgets

    def reservation(self, budgets: Sequence[TokenBudget]) -> Reservation:
        return Reservation(secrets.token_hex(8), self.worst_case_tokens, tuple(budgets), self.now())

    # --- Redis ----------------------------------------------------------------------------------

    async def seed(self, budgets: Sequence[TokenBudget], now: datetime) -> None:
        """Set ``spent`` of each budget's hash from PostgreSQL, where Redis has none."""
        for budget in budgets:
            async with self._unit_of_work() as db:
                spent = await repository.tokens_spent(
                    db, budget.tenant_id, budget.principal_id, budget.period.start(now)
                )
            key, _ = self.keys(budget, now)
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hsetnx(key, "spent", spent)
                pipe.expire(key, budget.ttl_s(now))
                await pipe.execute()
            logger.info(
                "token_budget_seeded", budget=budget.name, tenant_id=str(budget.tenant_id), spent=spent
            )

    async def settle(self, reservation: Reservation | None, tokens: int) -> None:
        """Release ``reservation`` and add ``tokens`` to its budgets' spend (0: a plain release).
        Redis down: the reservation expires by itself; the spend is in PostgreSQL."""
        if reservation is None or not reservation.open:
            return
        reservation.open = False
        keys = [k for budget in reservation.budgets for k in self.keys(budget, reservation.at)]
        try:
            await self._settle_script(keys=keys, args=[reservation.id, max(0, tokens)])
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
            if spent_raw is None:
                async with self._unit_of_work() as db:
                    spent = await repository.tokens_spent(
                        db, budget.tenant_id, budget.principal_id, budget.period.start(now)
                    )
            else:
                spent = int(spent_raw)
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


def exhausted(state: BudgetState, asked: int) -> BudgetExhaustedError:
    reset_after = max(1, math.ceil((state.reset_at - datetime.now(UTC)).total_seconds()))
    return BudgetExhaustedError(
        f"the {state.budget.name} budget of {state.budget.limit} tokens has {state.remaining} left, "
        f"less than this request's worst case of {asked}; it resets at {state.reset_at.isoformat()}",
        headers={"Retry-After": str(reset_after)},
        extra={
            "budget": state.budget.name,
            "limit": state.budget.limit,
            "spent": state.spent,
            "reserved": state.reserved,
            "remaining": state.remaining,
            "reset_at": state.reset_at.isoformat(),
        },
    )


def unpriced_models_sentence(settings: Settings) -> str | None:
    """With a price table, the one sentence naming the configured models it does not price (they
    cost tokens only); None when all are priced or there is no table."""
    if not settings.budget_price_table:
        return None
    configured = [f"{name}/{getattr(settings, f'{name}_model', '')}" for name in settings.llm_providers]
    configured += [
        f"{name}/{model}"
        for name in ("gemini", "groq", "openai")
        for model in getattr(settings, f"{name}_allowed_models")
    ]
    unpriced = sorted(
        {m for m in configured if m not in settings.budget_price_table and not m.startswith("local/")}
    )
    if not unpriced:
        return None
    return f"BUDGET_PRICE_TABLE prices none of {', '.join(unpriced)}: they cost tokens only"


def log_unpriced_models(settings: Settings) -> None:
    sentence = unpriced_models_sentence(settings)
    if sentence is not None:
        logger.warning("unpriced_models", message=sentence)
