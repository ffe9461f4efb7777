"""``RequestLimiter``: named budgets over the ``limits`` library's async Redis storage.

Counting happens inside Redis, so every worker and replica sharing the Redis shares the counters
atomically. A request is charged to every budget it spends or to none: one budget refusing it
leaves the others untouched. With the fixed window (the default) one Lua script checks and then
charges every limit of every budget a request spends and returns their counts and expiries: one
atomic round trip per ``hit_many``, token and money budget reservations included (the scripts and
their KEYS/ARGV layout: ``app.limits.scripts``). The sliding window uses the ``limits`` library's
own scripts, testing every limit before charging any.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.types import Scope

from app.db.redis import KeySpace, redis_retry
from app.limits.budgets import BudgetState, Reservation, TokenBudgets, exhausted
from app.limits.errors import RateLimitUnavailableError
from app.limits.scripts import (
    FIXED_WINDOW_HIT,
    FIXED_WINDOW_HIT_AND_RESERVE,
    SEEDING,
    BudgetSlot,
    budget_numbers,
    hit_and_reserve_layout,
)
from app.limits.states import Budget, LimitState, most_restrictive
from app.security.proxies import TrustedProxies, address_bucket
from app.settings import Settings
from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisSentinelStorage, RedisStorage
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.errors import StorageError

logger = structlog.get_logger(__name__)

# After a Redis failure, skip Redis for this long instead of paying a connect timeout per request;
# the first request after it tries again, so recovery needs no restart.
STORAGE_RETRY_S = 1.0
_STORAGE_ERRORS = (RedisError, StorageError, OSError, TimeoutError)

__all__ = ["STORAGE_RETRY_S", "Budget", "LimitState", "RequestLimiter", "most_restrictive", "storage_uri"]


def storage_uri(redis_url: str) -> str:
    """``limits`` storage URI for a redis-py URL (``unix:///path/redis.sock`` included)."""
    for scheme, replacement in (
        ("unix://", "async+redis+unix://"),
        ("redis+sentinel://", "async+redis+sentinel://"),
        ("redis://", "async+redis://"),
        ("rediss://", "async+rediss://"),
    ):
        if redis_url.startswith(scheme):
            return replacement + redis_url[len(scheme) :]
    raise ValueError(f"unsupported Redis URL scheme in {redis_url.split('://', 1)[0]!r}")


class RequestLimiter:
    def __init__(
        self,
        storage: RedisStorage,
        budgets: dict[Budget, list[RateLimitItem]],
        *,
        sliding: bool = False,
        fail_open: bool = True,
        retry_after_failure_s: float = STORAGE_RETRY_S,
        proxies: TrustedProxies | None = None,
        ipv6_prefix: int = 64,
        clock: Callable[[], float] = time.monotonic,
        on_refused: Callable[[Budget], None] | None = None,
    ) -> None:
        self._storage = storage
        self._on_refused = on_refused
        self._sliding = sliding
        self._fixed_window_hit = None if sliding else self.redis.register_script(FIXED_WINDOW_HIT)
        self._hit_and_reserve = self.redis.register_script(FIXED_WINDOW_HIT_AND_RESERVE)
        self.proxies = proxies or TrustedProxies()
        self.ipv6_prefix = ipv6_prefix
        self._strategy: RateLimiter = (
            SlidingWindowCounterRateLimiter(storage) if sliding else FixedWindowRateLimiter(storage)
        )
        self.budgets = budgets
        self.strategy_name = "sliding" if sliding else "fixed"
        self.fail_open = fail_open
        self._retry_after_failure_s = retry_after_failure_s
        self.clock = clock
        self._down_until = 0.0
        self.storage_failures = 0  # requests decided without Redis since start
        # Set by the app once its database is open: the token budgets the chat charges reserve on.
        self.token_budgets: TokenBudgets | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        redis_url: str,
        keys: KeySpace,
        *,
        on_refused: Callable[[Budget], None] | None = None,
    ) -> RequestLimiter:
        """``on_refused`` is told of every request a budget refuses (the ``rate_limited_total``
        metric)."""
        # A redis+sentinel:// URL: the limits library's Sentinel storage follows a failover.
        sentinel = redis_url.startswith("redis+sentinel://")
        storage = (RedisSentinelStorage if sentinel else RedisStorage)(
            storage_uri(redis_url),
            implementation="redispy",
            key_prefix=keys.key("limits"),
            socket_connect_timeout=1.0,
            socket_timeout=2.0,
            retry=redis_retry(),  # type: ignore[arg-type]  # passed through to redis-py
            **({"use_replicas": False} if sentinel else {}),  # type: ignore[arg-type]
        )
        budgets = {
            Budget.chat: parse_many(settings.rate_limit_per_principal),
            Budget.uploads: parse_many(settings.rate_limit_uploads),
            Budget.tenant: parse_many(settings.rate_limit_per_tenant),
            Budget.ip: parse_many(settings.rate_limit_per_ip),
        }
        return cls(
            storage,
            budgets,
            sliding=settings.rate_limit_strategy == "sliding",
            fail_open=settings.rate_limit_fail_open,
            proxies=TrustedProxies(tuple(settings.trusted_proxies)),
            ipv6_prefix=settings.rate_limit_ipv6_prefix,
            on_refused=on_refused,
        )

    def ip_bucket(self, scope: Scope) -> str:
        """The per-IP budget's identity for a request: its client address, IPv6 by network
        (``RATE_LIMIT_IPV6_PREFIX``)."""
        return address_bucket(self.proxies.client_ip(scope), self.ipv6_prefix)

    @property
    def storage_available(self) -> bool:
        return self.clock() >= self._down_until

    @property
    def redis(self) -> Redis:
        """The client the counters are kept through: the ``limits`` storage's own connections."""
        client: Redis = self._storage.bridge.storage  # type: ignore[attr-defined]
        return client

    async def aclose(self) -> None:
        await self.redis.aclose()
        sentinel = getattr(self._storage.bridge, "sentinel", None)
        if sentinel is not None:  # redis+sentinel://: the sentinels' own connections too
            for client in sentinel.sentinels:
                await client.aclose()

    async def hit(self, budget: Budget, identity: str) -> LimitState | None:
        """Charge one request; the most restrictive state of the budget's limits, or None when
        Redis is down and the limiter fails open (it raises ``RateLimitUnavailableError`` if not)."""
        states = await self.hit_many([(budget, identity)])
        return None if states is None else states[0]

    async def hit_many(
        self,
        charges: Sequence[tuple[Budget, str]],
        *,
        reserve: tuple[TokenBudgets, Reservation] | None = None,
    ) -> list[LimitState] | None:
        """Charge one request to each (budget, identity), or, when any limit is used up, to none of
        them: per budget, the most restrictive state of its limits (in ``charges`` order); None
        when Redis is down and the limiter fails open. With ``reserve``, the reservation's tokens
        are reserved on its token budgets in the same script, all or nothing with the charges: a
        token budget without room for them raises ``BudgetExhaustedError`` (when no rate limit
        refused the request first)."""
        if not self.storage_available:
            self._decide_without_storage(charges[0][0])
            return None
        try:
            if reserve is not None and reserve[1].budgets and self._fixed_window_hit is not None:
                per_budget = await self._hit_and_reserve_tokens(charges, *reserve)
            elif self._fixed_window_hit is not None:
                per_budget = await self._hit_fixed_windows(charges)
            else:
                per_budget = await self._hit_sliding_windows(charges)
                if (
                    reserve is not None
                    and reserve[1].budgets
                    and all(s.allowed for states in per_budget for s in states)
                ):
                    await self._hit_and_reserve_tokens([], *reserve)  # its own round trip
        except _STORAGE_ERRORS as exc:
            self._mark_down(exc)
            self._decide_without_storage(charges[0][0])
            return None
        states = [most_restrictive(budget_states) for budget_states in per_budget]
        for state in states:
            if not state.allowed and self._on_refused is not None:
                self._on_refused(state.budget)
        return states

    async def _hit_and_reserve_tokens(
        self, charges: Sequence[tuple[Budget, str]], budgets: TokenBudgets, reservation: Reservation
    ) -> list[list[LimitState]]:
        """``FIXED_WINDOW_HIT_AND_RESERVE``; once more after seeding budgets Redis had no spend of."""
        items = self._items(charges)
        keys, args = self._reserve_layout(items, budgets, reservation)
        raw = await self._hit_and_reserve(keys=keys, args=args)
        if int(raw[0]) == SEEDING:
            await budgets.seed([reservation.budgets[int(j) - 1] for j in raw[1:]], reservation.at)
            raw = await self._hit_and_reserve(keys=keys, args=args)
            if int(raw[0]) == SEEDING:  # seeded a moment ago: only a flush in between gets here
                raise RedisError("budget counters vanished while seeding")
        per_charge = self._fixed_window_states(charges, items, raw)
        if int(raw[0]) == 1:
            return per_charge
        reservation.open = False
        refused = self._refused_budgets(
            reservation, budget_numbers(raw, len(items), len(reservation.budgets))
        )
        if refused and all(s.allowed for states in per_charge for s in states):
            tightest = min(refused, key=lambda s: s.remaining / s.budget.limit)
            raise exhausted(tightest, reservation.amount(tightest.budget))
        return per_charge

    def _reserve_layout(
        self,
        items: Sequence[tuple[int, Budget, RateLimitItem, str]],
        budgets: TokenBudgets,
        reservation: Reservation,
    ) -> tuple[list[str], list[int | float | str]]:
        bridge = self._storage.bridge
        now = reservation.at
        counters = [
            (bridge.prefixed_key(item.key_for(budget.value, identity)), item.amount, item.get_expiry())
            for _, budget, item, identity in items
        ]
        slots = [
            BudgetSlot(*budgets.keys(b, now), b.limit, b.ttl_s(now), reservation.amount(b))
            for b in reservation.budgets
        ]
        expires = now.timestamp() + budgets.reservation_ttl_s
        return hit_and_reserve_layout(counters, slots, reservation.id, now.timestamp(), expires)

    @staticmethod
    def _refused_budgets(reservation: Reservation, numbers: Sequence[tuple[int, int]]) -> list[BudgetState]:
        """The budgets without room for the reservation's worst case (a refused script's numbers)."""
        refused = []
        for budget, (spent, reserved) in zip(reservation.budgets, numbers, strict=True):
            if spent + reserved + reservation.amount(budget) > budget.limit:
                refused.append(BudgetState(budget, spent, reserved, budget.period.reset_at(reservation.at)))
        return refused

    def _items(self, charges: Sequence[tuple[Budget, str]]) -> list[tuple[int, Budget, RateLimitItem, str]]:
        return [
            (charge, budget, item, identity)
            for charge, (budget, identity) in enumerate(charges)
            for item in self.budgets[budget]
        ]

    async def _hit_fixed_windows(self, charges: Sequence[tuple[Budget, str]]) -> list[list[LimitState]]:
        assert self._fixed_window_hit is not None
        items = self._items(charges)
        bridge = self._storage.bridge
        keys = [
            bridge.prefixed_key(item.key_for(budget.value, identity)) for _, budget, item, identity in items
        ]
        args = [value for _, _, item, _ in items for value in (item.amount, item.get_expiry())]
        raw = await self._fixed_window_hit(keys=keys, args=args)
        return self._fixed_window_states(charges, items, raw)

    def _fixed_window_states(
        self,
        charges: Sequence[tuple[Budget, str]],
        items: Sequence[tuple[int, Budget, RateLimitItem, str]],
        raw: Sequence[int],
    ) -> list[list[LimitState]]:
        now = time.time()
        charged = int(raw[0]) == 1
        per_charge: list[list[LimitState]] = [[] for _ in charges]
        for index, (charge, budget, item, _) in enumerate(items):
            count, ttl_ms = int(raw[1 + 2 * index]), int(raw[2 + 2 * index])
            allowed = count <= item.amount
            used = count if charged else count - 1  # a refused request left every counter as it was
            per_charge[charge].append(
                LimitState(
                    budget,
                    item.amount,
                    max(0, item.amount - used) if allowed else 0,
                    now + ttl_ms / 1000,
                    str(item),
                    allowed=allowed,
                )
            )
        return per_charge

    async def peek(self, budget: Budget, identity: str) -> list[LimitState] | None:
        """The budget's current state without charging it; None when Redis is unavailable."""
        if not self.storage_available:
            return None
        try:
            return [await self._state(budget, item, identity) for item in self.budgets[budget]]
        except _STORAGE_ERRORS as exc:
            self._mark_down(exc)
            return None

    async def _hit_sliding_windows(self, charges: Sequence[tuple[Budget, str]]) -> list[list[LimitState]]:
        """Test every limit, then charge them all only if every one has room. Not one atomic step
        like the fixed window's script: two concurrent requests may both pass the test."""
        tested = [
            [(item, await self._strategy.test(item, budget.value, identity)) for item in self.budgets[budget]]
            for budget, identity in charges
        ]
        charge = all(room for limits in tested for _, room in limits)
        per_budget: list[list[LimitState]] = []
        for (budget, identity), limits in zip(charges, tested, strict=True):
            states = []
            for item, room in limits:
                if charge:
                    room = await self._strategy.hit(item, budget.value, identity)
                state = await self._state(budget, item, identity)
                states.append(state if room else dataclasses.replace(state, remaining=0, allowed=False))
            per_budget.append(states)
        return per_budget

    async def _state(self, budget: Budget, item: RateLimitItem, identity: str) -> LimitState:
        stats = await self._strategy.get_window_stats(item, budget.value, identity)
        reset_at = stats.reset_time
        if stats.remaining == item.amount and reset_at <= time.time():
            reset_at = time.time() + item.get_expiry()  # untouched window: a full one ahead
        return LimitState(budget, item.amount, stats.remaining, reset_at, str(item))

    def _mark_down(self, exc: BaseException) -> None:
        """A real Redis failure: skip Redis until the retry window ends. Only failed calls to
        Redis move the window, so the first request after it always tries Redis again, however
        steady the traffic (requests decided while marked down never push it further)."""
        logger.warning("rate_limit_storage_unavailable", error_type=type(exc).__name__)
        self._down_until = self.clock() + self._retry_after_failure_s

    def _decide_without_storage(self, budget: Budget) -> None:
        """Let the request through (fail open) or raise ``RateLimitUnavailableError``."""
        self.storage_failures += 1
        logger.debug(
            "rate_limit_not_enforced" if self.fail_open else "rate_limit_refused",
            budget=budget.value,
            fail_open=self.fail_open,
            storage_failures=self.storage_failures,
        )
        if not self.fail_open:
            raise RateLimitUnavailableError(
                "rate limiting is temporarily unavailable; retry shortly",
                headers={"Retry-After": str(max(1, math.ceil(self._retry_after_failure_s)))},
            )
