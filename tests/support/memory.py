"""Conversation memory driven the way a request drives it: one unit of work per call, committed,
then the Redis window published."""

from __future__ import annotations

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.principal import Principal
from app.db.redis import KeySpace
from app.memory.service import ConversationMemory, SessionHistory, TurnRecord
from app.memory.window import WindowStore
from app.rag.prompt import Turn
from app.settings import Settings


def build_memory(redis: Redis, settings: Settings) -> ConversationMemory:
    window = WindowStore(
        redis,
        KeySpace(settings.redis_key_prefix),
        max_turns=settings.memory_max_turns,
        ttl_s=settings.memory_retention_days * 86400,
    )
    return ConversationMemory(window, max_turns=settings.memory_max_turns)


class MemoryCalls:
    def __init__(self, memory: ConversationMemory, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.memory = memory
        self._sessions = sessions

    async def window(self, who: Principal, session_id: str) -> list[Turn]:
        async with self._sessions() as db:
            return await self.memory.window(db, who, session_id)

    async def record_turn(self, who: Principal, session_id: str, turn: TurnRecord) -> None:
        async with self._sessions() as db:
            recorded = await self.memory.record_turn(db, who, session_id, turn)
            await db.commit()
        await self.memory.publish(recorded)

    async def messages(self, who: Principal, session_id: str) -> SessionHistory:
        async with self._sessions() as db:
            return await self.memory.messages(db, who, session_id)

    async def delete(self, who: Principal, session_id: str) -> None:
        async with self._sessions() as db:
            await self.memory.delete(db, who, session_id)
            await db.commit()


def memory_calls(redis: Redis, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> MemoryCalls:
    return MemoryCalls(build_memory(redis, settings), sessions)
