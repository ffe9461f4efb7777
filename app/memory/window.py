"""The Redis copy of each conversation's last answered turns, for speed. PostgreSQL is the record:
any Redis failure is logged and the window is rebuilt from PostgreSQL on the next read."""

from __future__ import annotations

import json
import uuid

import structlog
from redis.asyncio import Redis

from app.db.redis import KeySpace
from app.rag.prompt import Turn

logger = structlog.get_logger(__name__)


class WindowStore:
    def __init__(self, redis: Redis, keys: KeySpace, *, max_turns: int, ttl_s: int) -> None:
        self._redis = redis
        self._keys = keys
        self._max_turns = max_turns
        self._ttl_s = ttl_s

    def _key(self, conversation_id: uuid.UUID) -> str:
        # The internal id: unique per (tenant, principal, client id), unlike the client's string.
        return self._keys.key("memory", str(conversation_id))

    async def read(self, conversation_id: uuid.UUID) -> list[Turn] | None:
        """The stored window, or None when there is none (or Redis is unreachable)."""
        key = self._key(conversation_id)
        try:
            raw = await self._redis.lrange(key, 0, -1)
            exists = bool(raw) or bool(await self._redis.exists(key + ":built"))
        except Exception:
            logger.warning("memory_redis_unavailable")
            return None
        if not exists:
            return None
        return [Turn(**json.loads(item)) for item in raw]

    async def write(self, conversation_id: uuid.UUID, turns: list[Turn]) -> None:
        key = self._key(conversation_id)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                if turns:
                    pipe.rpush(key, *[json.dumps(turn.__dict__) for turn in turns])
                    pipe.expire(key, self._ttl_s)
                pipe.set(key + ":built", 1, ex=self._ttl_s)
                await pipe.execute()
        except Exception:
            logger.warning("memory_redis_unavailable")

    async def append(self, conversation_id: uuid.UUID, turn: Turn) -> None:
        """Extend a built window; an unbuilt one is left for the next read to rebuild."""
        key = self._key(conversation_id)
        try:
            if not await self._redis.exists(key + ":built"):
                return
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(key, json.dumps(turn.__dict__))
                pipe.ltrim(key, -self._max_turns, -1)
                pipe.expire(key, self._ttl_s)
                await pipe.execute()
        except Exception:
            logger.warning("memory_redis_unavailable")

    async def drop(self, conversation_id: uuid.UUID) -> None:
        key = self._key(conversation_id)
        try:
            await self._redis.delete(key, key + ":built")
        except Exception:
            logger.warning("memory_redis_unavailable")
