"""Provider cooldowns in Redis, so every worker and replica benches the same providers.

One key per benched provider holds ``{"until": epoch, "error": "..."}``. Before ``until`` the
provider is skipped. After it the key lingers (half-open): one request, the one that wins a short
``SET NX`` probe lock, tries the provider; success deletes the key, failure benches it again.
A Redis outage never blocks a request: cooldowns then read as "not cooling".

Keys are ``<prefix>cooldown:<provider>`` and ``<prefix>probe:<provider>``; whoever builds the store
names the prefix (``app.llm.factory``: ``REDIS_KEY_PREFIX`` + ``"llm:"``).
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

HALF_OPEN_WINDOW_S = 3600.0  # how long after a cooldown the next success is still a "probe"

Phase = Literal["closed", "cooling", "half_open"]


@dataclass(frozen=True)
class CooldownState:
    phase: Phase
    until: float | None = None
    error: str | None = None


CLOSED = CooldownState(phase="closed")


class CooldownStore:
    def __init__(self, redis: Redis, *, prefix: str, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._prefix = prefix
        self.clock = clock

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
        except (ValueError, KeyError, TypeError):
            return CLOSED
        return CooldownState(phase="cooling" if now < until else "half_open", until=until, error=error)

    async def bench(self, provider: str, seconds: float, error: str) -> float:
        """Cool ``provider`` down for ``seconds``; returns the epoch time it ends."""
        until = self.clock() + seconds
        payload = json.dumps({"until": until, "error": error})
        ttl_ms = int((seconds + HALF_OPEN_WINDOW_S) * 1000)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self._key(provider), payload, px=ttl_ms)
                pipe.delete(self._probe_key(provider))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            logger.warning("cooldown_write_failed", provider=provider, error=str(exc))
        return until

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
        """The provider answered: no cooldown, no probe."""
        try:
            await self._redis.delete(self._key(provider), self._probe_key(provider))
        except (RedisError, OSError) as exc:
            logger.warning("cooldown_clear_failed", provider=provider, error=str(exc))
