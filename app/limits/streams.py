"""Concurrent streamed answers per principal (``MAX_STREAMS_PER_PRINCIPAL``), across workers.

One sorted set per principal in Redis holds its open streams (member: a random id, score: when it
started). A stream takes a slot before its 200 is sent and gives it back however it ends; slots
older than ``STALE_AFTER_S`` are dropped, so a worker that died mid-stream cannot hold them
forever. Redis down: no cap (logged), like the rate limits when they fail open.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.limits.errors import TooManyStreamsError

logger = structlog.get_logger(__name__)

STALE_AFTER_S = 15 * 60  # longer than any answer may stream
RETRY_AFTER_S = 1


class StreamSlots:
    def __init__(
        self, redis: Redis, key_prefix: str, cap: int, clock: Callable[[], float] = time.time
    ) -> None:
        self._redis = redis
        self._prefix = key_prefix
        self.cap = cap
        self.clock = clock

    def _key(self, identity: str) -> str:
        return f"{self._prefix}{identity}"

    async def acquire(self, identity: str) -> str | None:
        """A slot id, or ``TooManyStreamsError`` at the cap; None when Redis is unavailable."""
        key, slot, now = self._key(identity), secrets.token_hex(8), self.clock()
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zremrangebyscore(key, "-inf", now - STALE_AFTER_S)
                pipe.zadd(key, {slot: now})
                pipe.zcard(key)
                pipe.expire(key, STALE_AFTER_S)
                _, _, open_streams, _ = await pipe.execute()
            if int(open_streams) > self.cap:
                await self._redis.zrem(key, slot)
                raise TooManyStreamsError(
                    f"at most {self.cap} answers may stream at once per caller "
                    "(MAX_STREAMS_PER_PRINCIPAL); retry when one has finished",
                    headers={"Retry-After": str(RETRY_AFTER_S)},
                )
        except (RedisError, OSError) as exc:
            logger.warning("stream_slots_unavailable", error_type=type(exc).__name__)
            return None
        return slot

    async def release(self, identity: str, slot: str | None) -> None:
        if slot is None:
            return
        try:
            await self._redis.zrem(self._key(identity), slot)
        except (RedisError, OSError) as exc:  # the slot expires by itself
            logger.warning("stream_slot_release_failed", error_type=type(exc).__name__)
