"""The router's circuit breaker, one per provider, in Redis: every worker and replica shares it.

- **closed**: no key; the provider is used.
- **open** (``cooling``): a failure opened the circuit until ``until``; the provider is skipped.
- **half-open**: ``until`` has passed and the key lingers. Exactly one request, the one that wins a
  short ``SET NX`` probe lock (across all workers), tries the provider. Success deletes the key
  (closed, escalation reset); failure re-opens it for twice as long as the last time.

How long the circuit opens escalates with consecutive openings (``strikes``): ``base_s * 2**strikes``
capped at ``max_s`` (``ROUTER_COOLDOWN_BASE_S`` doubling up to ``ROUTER_COOLDOWN_S``), and never
shorter than the provider's ``Retry-After``. The decision is one Lua script, so concurrent failures
on many workers open the circuit once: a failure while it is already open (a request that started
before it opened) neither extends nor escalates it.

A Redis outage never blocks a request: the circuit then reads as closed.

Keys are ``<prefix>cooldown:<provider>`` (JSON ``{"until", "error", "strikes", "seconds"}``) and
``<prefix>probe:<provider>``; whoever builds the store names the prefix (``app.llm.factory``:
``REDIS_KEY_PREFIX`` + ``"llm:"``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

logger = structlog.get_logger(__name__)

# How long after an open period the key lingers half-open (and remembers its strikes): a provider
# nobody asked for in that time starts again from the base cooldown.
HALF_OPEN_WINDOW_S = 3600.0

Phase = Literal["closed", "cooling", "half_open"]

# KEYS: cooldown key, probe key. ARGV: now, base_s, max_s, floor_s, error, half-open window, code.
# Returns the stored payload (the new one, or the one already open).
_TRIP = """
local now = tonumber(ARGV[1])
local base = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local floor = tonumber(ARGV[4])
local window = tonumber(ARGV[6])
local strikes = 0
local raw = redis.call('GET', KEYS[1])
if raw then
  local ok, data = pcall(cjson.decode, raw)
  if ok and type(data) == 'table' and tonumber(data['until']) then
    local open_until = tonumber(data['until'])
    if now < open_until then
      if now + floor <= open_until then
        return raw
      end
      data['until'] = now + floor
      local extended = cjson.encode(data)
      redis.call('SET', KEYS[1], extended, 'PX', math.floor((floor + window) * 1000))
      return extended
    end
    strikes = (tonumber(data['strikes']) or 0) + 1
  end
end
local seconds = math.min(cap, base * (2 ^ math.min(strikes, 30)))
if seconds < floor then
  seconds = floor
end
local payload = cjson.encode({
  ['until'] = now + seconds, error = ARGV[5], code = ARGV[7], strikes = strikes, seconds = seconds
})
redis.call('SET', KEYS[1], payload, 'PX', math.max(1, math.floor((seconds + window) * 1000)))
redis.call('DEL', KEYS[2])
return payload
"""


@dataclass(frozen=True)
class CooldownState:
    phase: Phase
    until: float | None = None
    error: str | None = None  # the failure that opened it, as described for operators (logs)
    code: str | None = None  # its stable code ("server_error"), safe to show to any caller
    strikes: int = 0  # consecutive openings before the current one (0: opened once)
    seconds: float | None = None  # how long the current opening lasts


CLOSED = CooldownState(phase="closed")


class CooldownStore:
    def __init__(self, redis: Redis, *, prefix: str, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._prefix = prefix
        self.clock = clock
        self._trip = redis.register_script(_TRIP)

    def _key(self, provider: str) -> str:
        return f"{self._prefix}cooldown:{provider}"

    def _probe_key(self, provider: str) -> str:
        return f"{self._prefix}probe:{provider}"

    async def states(self, providers: Sequence[str]) -> dict[str, CooldownState]:
        """Every provider's phase in one round trip."""
        if not providers:
            return {}
        try:
            raw = await self._redis.mget([self._key(p) for p in providers])
        except (RedisError, OSError) as exc:
            logger.warning("cooldown_read_failed", error=str(exc))
            return {p: CLOSED for p in providers}
        now = self.clock()
        return {p: self._parse(value, now) for p, value in zip(providers, raw, strict=True)}

    @staticmethod
    def _parse(value: bytes | str | None, now: float) -> CooldownState:
        if value is None:
            return CLOSED
        try:
            data = json.loads(value)
            until = float(data["until"])
            error = data.get("error")
            code = data.get("code") or None
            strikes = int(data.get("strikes") or 0)
            seconds = float(data["seconds"]) if data.get("seconds") is not None else None
        except (ValueError, KeyError, TypeError):
            return CLOSED
        return CooldownState(
            phase="cooling" if now < until else "half_open",
            until=until,
            error=error,
            code=code,
            strikes=strikes,
            seconds=seconds,
        )

    async def bench(
        self,
        provider: str,
        error: str,
        *,
        base_s: float,
        max_s: float | None = None,
        floor_s: float = 0.0,
        code: str = "",
    ) -> float:
        """Open ``provider``'s circuit after a failure; returns the epoch time it stays open until.

        Closed or half-open: open it for ``base_s * 2**strikes`` (at most ``max_s``, at least
        ``floor_s``), one strike more than the last opening. Already open: left as it is (only
        pushed out to ``floor_s`` from now, a ``Retry-After``)."""
        now = self.clock()
        cap = base_s if max_s is None else max(base_s, max_s)
        try:
            raw = await self._trip(
                keys=[self._key(provider), self._probe_key(provider)],
                args=[
                    repr(now),
                    repr(base_s),
                    repr(cap),
                    repr(floor_s),
                    error,
                    repr(HALF_OPEN_WINDOW_S),
                    code,
                ],
            )
        except (RedisError, OSError) as exc:
            logger.warning("cooldown_write_failed", provider=provider, error=str(exc))
            return now + max(min(base_s, cap), floor_s)
        state = self._parse(raw, now)
        return state.until if state.until is not None else now

    async def claim_probe(self, provider: str, hold_s: float) -> bool:
        """True for the one caller allowed to probe a half-open provider for ``hold_s``."""
        try:
            won = await self._redis.set(
                self._probe_key(provider), b"1", nx=True, px=max(1, int(hold_s * 1000))
            )
        except (RedisError, OSError) as exc:
            logger.warning("cooldown_probe_failed", provider=provider, error=str(exc))
            return True
        return bool(won)

    async def release_probe(self, provider: str) -> None:
        """The probe ended without a verdict on the provider: the next request may probe."""
        try:
            await self._redis.delete(self._probe_key(provider))
        except (RedisError, OSError) as exc:
            logger.warning("cooldown_probe_release_failed", provider=provider, error=str(exc))

    async def clear(self, provider: str) -> None:
        """The provider answered: circuit closed, escalation reset, no probe."""
        try:
            await self._redis.delete(self._key(provider), self._probe_key(provider))
        except (RedisError, OSError) as exc:
            logger.warning("cooldown_clear_failed", provider=provider, error=str(exc))
