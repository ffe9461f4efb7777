"""``RequestLimiter``: named budgets over the ``limits`` library's async Redis storage.

Counting happens inside Redis, so every worker and replica sharing the Redis shares the counters
atomically. A request is charged to every budget it spends or to none: one budget refusing it
leaves the others untouched. With the fixed window (the default) one Lua script checks and then
charges every limit of every budget a request spends and returns their counts and expiries: one
atomic round trip per ``hit_many``. The sliding window uses the ``limits`` library's own scripts,
testing every limit before charging any.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.types import Scope

from app.db.redis import KeySpace, redis_retry
from app.limits.budgets import BudgetState, Reservation, TokenBudgets, exhausted
from app.limits.errors import RateLimitUnavailableError
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


# KEYS: the fixed-window counters; ARGV: each counter's limit and window in seconds, in pairs.
# Every counter is checked first and all are charged only when every one has room, so a request
# one budget refuses costs the others nothing (a principal flooding its own budget cannot use up
# its tenant's). The same counters as `limits`' FixedWindowRateLimiter (INCRBY, EXPIRE on the
# first hit), so `peek` reads them back. Returns 1 or 0 (charged), then a count and a TTL per key:
# the count after the charge, or the count the request would have made when refused.
_FIXED_WINDOW_HIT = """
local counts = {}
local charge = 1
for i, key in ipairs(KEYS) do
  counts[i] = tonumber(redis.call('GET', key) or '0') + 1
  if counts[i] > tonumber(ARGV[2 * i - 1]) then
    charge = 0
  end
end
local out = {charge}
for i, key in ipairs(KEYS) do
  local window = tonumber(ARGV[2 * i])
  if charge == 1 then
    counts[i] = redis.call('INCRBY', key, 1)
  end
  local ttl = redis.call('PTTL', key)
  if ttl < 0 then
    if charge == 1 then
      redis.call('EXPIRE', key, window)
    end
    ttl = window * 1000
  end
  out[#out + 1] = counts[i]
  out[#out + 1] = ttl
end
return out
"""


# The same, and a token reservation (``app.limits.budgets``) in the same atomic step: KEYS are the
# n rate-limit counters, then per token budget its hash and its reservation set. ARGV: n, the n
# (limit, window) pairs, the reserved tokens, the reservation id, now and its expiry (epoch s),
# then per token budget its limit and its keys' TTL. Expired reservations are swept first. A
# budget hash without ``spent`` stops the script before anything is charged: it returns 2 and the
# budgets' numbers, to be seeded from PostgreSQL. Else 1 or 0 (all charged and reserved, or
# nothing), a count and TTL per counter, and per budget its spent and reserved tokens.
_FIXED_WINDOW_HIT_AND_RESERVE = """
local n = tonumber(ARGV[1])
local a = 2 * n + 2
local amount = tonumber(ARGV[a])
local rid = ARGV[a + 1]
local now = tonumber(ARGV[a + 2])
local expires = tonumber(ARGV[a + 3])
local nb = (#KEYS - n) / 2
local missing = {2}
for j = 1, nb do
  local h, z = KEYS[n + 2 * j - 1], KEYS[n + 2 * j]
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', z, '-inf', now)) do
    local held = tonumber(redis.call('HGET', h, 'r:' .. id) or '0')
    redis.call('HDEL', h, 'r:' .. id)
    redis.call('HINCRBY', h, 'reserved', -held)
    redis.call('ZREM', z, id)
  end
  if redis.call('HEXISTS', h, 'spent') == 0 then
    missing[#missing + 1] = j
  end
end
if #missing > 1 then
  return missing
end
local charge = 1
local counts = {}
for i = 1, n do
  counts[i] = tonumber(redis.call('GET', KEYS[i]) or '0') + 1
  if counts[i] > tonumber(ARGV[2 * i]) then
    charge = 0
  end
end
local spent, reserved = {}, {}
for j = 1, nb do
  local h = KEYS[n + 2 * j - 1]
  spent[j] = tonumber(redis.call('HGET', h, 'spent') or '0')
  reserved[j] = tonumber(redis.call('HGET', h, 'reserved') or '0')
  if spent[j] + reserved[j] + amount > tonumber(ARGV[a + 2 + 2 * j]) then
    charge = 0
  end
end
local out = {charge}
for i = 1, n do
  local window = tonumber(ARGV[2 * i + 1])
  if charge == 1 then
    counts[i] = redis.call('INCRBY', KEYS[i], 1)
  end
  local ttl = redis.call('PTTL', KEYS[i])
  if ttl < 0 then
    if charge == 1 then
      redis.call('EXPIRE', KEYS[i], window)
    end
    ttl = window * 1000
  end
  out[#out + 1] = counts[i]
  out[#out + 1] = ttl
end
for j = 1, nb do
  local h, z = KEYS[n + 2 * j - 1], KEYS[n + 2 * j]
  if charge == 1 then
    redis.call('HSET', h, 'r:' .. rid, amount)
    reserved[j] = redis.call('HINCRBY', h, 'reserved', amount)
    redis.call('ZADD', z, expires, rid)
    local keep = tonumber(ARGV[a + 3 + 2 * j])
    redis.call('EXPIRE', h, keep)
    redis.call('EXPIRE', z, keep)
  end
  out[#out + 1] = spent[j]
  out[#out + 1] = reserved[j]
end
return out
"""


class Budget(StrEnum):
    """``chat`` and ``uploads`` are per principal, ``tenant`` is chat for a whole tenant; ``ip``
    covers every ``/api/`` request, anonymous ones included."""

    chat = "chat"
    uploads = "uploads"
    tenant = "tenant"
    ip = "ip"


@dataclass(frozen=True)
class LimitState:
    budget: Budget
    limit: int
    remaining: int
    reset_at: float  # epoch seconds when the window frees capacity
    window: str  # the limit as `limits` prints it, e.g. "60 per 1 minute"
    allowed: bool = True

    @property
    def reset_after_s(self) -> int:
        return max(0, math.ceil(self.reset_at - time.time()))

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.remaining)),
            "X-RateLimit-Reset": str(self.reset_after_s),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, self.reset_after_s))
        return headers


def most_restrictive(states: Sequence[LimitState]) -> LimitState:
    """A refused state wins; otherwise the one with the least capacity left."""
    return min(states, key=lambda s: (s.allowed, s.remaining, -s.reset_at))


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
        self._fixed_window_hit = None if sliding else self._client().register_script(_FIXED_WINDOW_HIT)
        self._hit_and_reserve = self._client().register_script(_FIXED_WINDOW_HIT_AND_RESERVE)
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

    def _client(self) -> Redis:
        client: Redis = self._storage.bridge.storage  # type: ignore[attr-defined]
        return client

    async def aclose(self) -> None:
        await self._client().aclose()
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
        """``_FIXED_WINDOW_HIT_AND_RESERVE``; once more after seeding budgets Redis had no spend of."""
        items = self._items(charges)
        bridge = self._storage.bridge
        now = reservation.at
        keys = [
            bridge.prefixed_key(item.key_for(budget.value, identity)) for _, budget, item, identity in items
        ]
        args: list[int | float | str] = [len(items)]
        args += [value for _, _, item, _ in items for value in (item.amount, item.get_expiry())]
        args += [
            reservation.tokens,
            reservation.id,
            now.timestamp(),
            now.timestamp() + budgets.reservation_ttl_s,
        ]
        for token_budget in reservation.budgets:
            keys.extend(budgets.keys(token_budget, now))
            args += [token_budget.limit, token_budget.ttl_s(now)]
        raw = await self._hit_and_reserve(keys=keys, args=args)
        if int(raw[0]) == 2:
            await budgets.seed([reservation.budgets[int(j) - 1] for j in raw[1:]], now)
            raw = await self._hit_and_reserve(keys=keys, args=args)
            if int(raw[0]) == 2:  # seeded a moment ago: only a flush in between gets here
                raise RedisError("token budget counters vanished while seeding")
        per_charge = self._fixed_window_states(charges, items, raw)
        charged = int(raw[0]) == 1
        offset = 1 + 2 * len(items)
        refused: list[BudgetState] = []
        for j, token_budget in enumerate(reservation.budgets):
            spent, reserved = int(raw[offset + 2 * j]), int(raw[offset + 2 * j + 1])
            state = BudgetState(token_budget, spent, reserved, token_budget.period.reset_at(now))
            if spent + reserved + (0 if charged else reservation.tokens) > token_budget.limit:
                refused.append(state)
        rate_refused = any(not s.allowed for states in per_charge for s in states)
        if not charged:
            reservation.open = False
            if refused and not rate_refused:
                raise exhausted(min(refused, key=lambda s: s.remaining), reservation.tokens)
        return per_charge

    def _items(self, charges: Sequence[tuple[Budget, str]]) -> list[tuple[int, Budget, RateLimitItem, str]]:
        return [
            (charge, budget, item, identity)
            for charge, (budget, identity) in enumerate(charges)
            for item in self.budgets[budget]
        ]

    async def _hit_fixed_windows(self, charges: Sequence[tuple[Budget, str]]) -> list[list[LimitState]]:
        assert self._fixed_window_hit is not None
        items = [
            (charge, budget, item, identity)
            for charge, (budget, identity) in enumerate(charges)
            for item in self.budgets[budget]
        ]
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
